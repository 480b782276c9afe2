-- id: Q22
-- category: near-neighbour
-- lang: qserv
-- question: How many close pairs (< 5 arcsec) are there in a 2 x 2 degree field?
SELECT COUNT(*) AS n_pairs
FROM Object AS o1, Object AS o2
WHERE qserv_areaspec_box({ra_lo2}, {dec_lo2}, {ra_hi2}, {dec_hi2})
  AND scisql_angSep(o1.coord_ra, o1.coord_dec, o2.coord_ra, o2.coord_dec) < 5.0 / 3600
  AND o1.objectId <> o2.objectId
-- oracle:
SELECT COUNT(*) AS n_pairs
FROM dp02.Object AS o1, dp02.Object AS o2
WHERE scisql_s2PtInBox(o1.coord_ra, o1.coord_dec, {ra_lo2}, {dec_lo2}, {ra_hi2}, {dec_hi2}) = 1
  AND o2.coord_dec BETWEEN {dec_lo2} - 0.01 AND {dec_hi2} + 0.01
  AND scisql_angSep(o1.coord_ra, o1.coord_dec, o2.coord_ra, o2.coord_dec) < 5.0 / 3600
  AND o1.objectId <> o2.objectId
