-- id: Q12
-- category: full-scan aggregate
-- lang: adql
-- question: How many objects are there and what area of sky do they span?
SELECT COUNT(*) AS n, MIN(coord_ra) AS ra_min, MAX(coord_ra) AS ra_max,
       MIN(coord_dec) AS dec_min, MAX(coord_dec) AS dec_max
FROM dp02.Object
