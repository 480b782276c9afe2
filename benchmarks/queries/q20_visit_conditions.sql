-- id: Q20
-- category: Object-Source join
-- lang: adql
-- question: Mean detected flux per band and seeing bin (Source joined with the replicated CcdVisit table).
SELECT c.band, FLOOR(c.seeing * 2) / 2 AS seeing_bin, COUNT(*) AS n, AVG(s.psfFlux) AS mean_flux
FROM dp02.Source AS s JOIN dp02.CcdVisit AS c ON s.ccdVisitId = c.ccdVisitId
GROUP BY c.band, FLOOR(c.seeing * 2) / 2
