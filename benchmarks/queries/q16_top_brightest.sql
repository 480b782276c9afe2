-- id: Q16
-- category: top-N
-- lang: adql
-- question: The 20 brightest objects in r.
SELECT TOP 20 objectId, coord_ra, coord_dec, r_psfFlux
FROM dp02.Object ORDER BY r_psfFlux DESC, objectId
