-- id: Q21
-- category: object by id
-- lang: adql
-- question: Positions of the objects detected at least 20 times in a field (an IN subquery).
SELECT objectId, coord_ra, coord_dec FROM dp02.Object
WHERE objectId IN (SELECT objectId FROM dp02.Source
                   WHERE CONTAINS(POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', {ra}, {dec}, 1.0)) = 1
                   GROUP BY objectId HAVING COUNT(*) >= 20)
