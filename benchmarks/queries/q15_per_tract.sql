-- id: Q15
-- category: full-scan aggregate
-- lang: adql
-- question: Per-tract statistics: object count, mean and spread of the r-band flux.
SELECT tract, COUNT(*) AS n, AVG(r_psfFlux) AS mean_r, STDDEV(r_psfFlux) AS sd_r, VAR_POP(coord_dec) AS var_dec
FROM dp02.Object GROUP BY tract HAVING COUNT(*) > 5
