-- id: Q04
-- category: cone search
-- lang: adql
-- question: How many point sources and extended sources are there within 1 degree of a field centre?
SELECT refExtendedness, COUNT(*) AS n, AVG(r_psfFlux) AS mean_r_flux
FROM dp02.Object
WHERE DISTANCE(POINT('ICRS', coord_ra, coord_dec), POINT('ICRS', {ra}, {dec})) < 1.0
GROUP BY refExtendedness
