-- id: Q10
-- category: full-scan colour cut
-- lang: adql
-- question: How many UV-excess point sources (quasar candidates, u-g < 0.6, 17 < g < 21) are there?
SELECT COUNT(*) AS n
FROM dp02.Object
WHERE refExtendedness = 0 AND u_psfFlux > 0 AND g_psfFlux > 0
  AND -2.5 * LOG10(u_psfFlux / g_psfFlux) < 0.6
  AND 31.4 - 2.5 * LOG10(g_psfFlux) BETWEEN 17 AND 21
