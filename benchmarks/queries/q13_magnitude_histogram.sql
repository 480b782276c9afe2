-- id: Q13
-- category: full-scan aggregate
-- lang: adql
-- question: The r-band number counts (a magnitude histogram in 0.5 mag bins).
SELECT FLOOR(2 * (31.4 - 2.5 * LOG10(r_psfFlux))) / 2 AS rmag, COUNT(*) AS n
FROM dp02.Object WHERE r_psfFlux > 0
GROUP BY FLOOR(2 * (31.4 - 2.5 * LOG10(r_psfFlux))) / 2
ORDER BY rmag
