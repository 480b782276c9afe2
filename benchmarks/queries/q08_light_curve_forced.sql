-- id: Q08
-- category: light curve
-- lang: qserv
-- question: The forced-photometry light curve of one object, per band.
SELECT band, COUNT(*) AS n, AVG(psfFlux) AS mean_flux, STDDEV(psfFlux) AS sd_flux
FROM ForcedSource WHERE objectId = {oid} GROUP BY band
