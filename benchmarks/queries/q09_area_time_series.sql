-- id: Q09
-- category: area time series
-- lang: adql
-- question: Every detection of every object in a small field, ordered for time-series work.
SELECT o.objectId, s.sourceId, s.visit, s.band, s.psfFlux
FROM dp02.Object AS o JOIN dp02.Source AS s ON o.objectId = s.objectId
WHERE CONTAINS(POINT('ICRS', o.coord_ra, o.coord_dec), CIRCLE('ICRS', {ra}, {dec}, 0.2)) = 1
ORDER BY o.objectId, s.visit, s.band, s.sourceId
