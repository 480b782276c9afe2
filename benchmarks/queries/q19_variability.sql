-- id: Q19
-- category: variability
-- lang: adql
-- question: Which objects vary more than their errors (light-curve scatter over mean error)?
SELECT objectId, COUNT(*) AS n, AVG(psfFlux) AS mean_flux, STDDEV(psfFlux) AS sd_flux
FROM dp02.Source
GROUP BY objectId
HAVING COUNT(*) >= 5 AND STDDEV(psfFlux) > 3 * AVG(psfFluxErr)
