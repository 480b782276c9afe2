-- id: Q03
-- category: cone search
-- lang: adql
-- question: Which objects lie within 10 arcsec of a target (e.g. a transient's host search)?
SELECT objectId, coord_ra, coord_dec, g_psfFlux, r_psfFlux, refExtendedness
FROM dp02.Object
WHERE CONTAINS(POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', {ra}, {dec}, 10.0/3600)) = 1
