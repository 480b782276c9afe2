-- id: Q07
-- category: light curve
-- lang: adql
-- question: The light curve of one object from its single-epoch detections.
SELECT s.visit, s.band, s.sourceId, s.psfFlux, s.psfFluxErr
FROM dp02.Source AS s WHERE s.objectId = {oid}
ORDER BY s.visit, s.band, s.sourceId
