-- id: Q24
-- category: crossmatch
-- lang: adql
-- question: Which catalogue objects lie within 1 arcsec of my targets (a TAP upload)?
SELECT t.target, o.objectId, o.r_psfFlux,
       DISTANCE(POINT('ICRS', o.coord_ra, o.coord_dec), POINT('ICRS', t.ra, t.dec)) * 3600 AS sep_arcsec
FROM TAP_UPLOAD.targets AS t JOIN dp02.Object AS o
  ON 1 = CONTAINS(POINT('ICRS', o.coord_ra, o.coord_dec), CIRCLE('ICRS', t.ra, t.dec, 1.0 / 3600))
