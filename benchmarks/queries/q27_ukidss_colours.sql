-- id: Q27
-- category: full-scan colour cut
-- lang: adql
-- question: WSA cookbook style: red J-K point sources in the UKIDSS LAS (brown-dwarf / AGN colour space).
SELECT COUNT(*) AS n, AVG(j_1mhPnt) AS mean_jh
FROM ukidssdr8.lasSource
WHERE mergedClass = -1 AND hmkPnt > 0.5 AND j_1mhPnt > 0.6
