-- id: Q23
-- category: near-neighbour
-- lang: adql
-- question: Close pairs (< 50 arcsec) with similar g-r colours in a field (candidate physical pairs).
SELECT o1.objectId AS id1, o2.objectId AS id2
FROM dp02.Object AS o1, dp02.Object AS o2
WHERE CONTAINS(POINT('ICRS', o1.coord_ra, o1.coord_dec), CIRCLE('ICRS', {ra}, {dec}, 1.0)) = 1
  AND DISTANCE(POINT('ICRS', o1.coord_ra, o1.coord_dec), POINT('ICRS', o2.coord_ra, o2.coord_dec)) < 50.0 / 3600
  AND o1.objectId <> o2.objectId
  AND o1.g_psfFlux > 0 AND o1.r_psfFlux > 0 AND o2.g_psfFlux > 0 AND o2.r_psfFlux > 0
  AND ABS(LOG10(o1.g_psfFlux / o1.r_psfFlux) - LOG10(o2.g_psfFlux / o2.r_psfFlux)) < 0.1
-- oracle:
SELECT o1.objectId AS id1, o2.objectId AS id2
FROM dp02.Object AS o1, dp02.Object AS o2
WHERE scisql_angSep(o1.coord_ra, o1.coord_dec, {ra}, {dec}) <= 1.0
  AND o2.coord_dec BETWEEN {dec} - 1.0 - 50.0 / 3600 - 1e-9 AND {dec} + 1.0 + 50.0 / 3600 + 1e-9
  AND scisql_angSep(o1.coord_ra, o1.coord_dec, o2.coord_ra, o2.coord_dec) < 50.0 / 3600
  AND o1.objectId <> o2.objectId
  AND o1.g_psfFlux > 0 AND o1.r_psfFlux > 0 AND o2.g_psfFlux > 0 AND o2.r_psfFlux > 0
  AND ABS(LOG10(o1.g_psfFlux / o1.r_psfFlux) - LOG10(o2.g_psfFlux / o2.r_psfFlux)) < 0.1
