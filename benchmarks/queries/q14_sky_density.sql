-- id: Q14
-- category: full-scan aggregate
-- lang: qserv
-- question: Sky density of objects in 10 x 10 degree cells.
SELECT FLOOR(coord_ra / 10) AS ra_cell, FLOOR(coord_dec / 10) AS dec_cell, COUNT(*) AS n
FROM Object GROUP BY ra_cell, dec_cell
