-- id: Q17
-- category: Source scan
-- lang: adql
-- question: How many bright r-band detections are there and what is their mean flux?
SELECT COUNT(*) AS n, AVG(psfFlux) AS mean_flux, MAX(psfFlux) AS max_flux
FROM dp02.Source WHERE band = 'r' AND psfFlux > 5000
