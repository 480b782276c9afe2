-- id: Q18
-- category: Object-Source join
-- lang: qserv
-- question: Bright point sources and how often each was detected brightly.
SELECT o.objectId, COUNT(*) AS n_bright
FROM Object AS o JOIN Source AS s ON o.objectId = s.objectId
WHERE o.refExtendedness = 0 AND o.r_psfFlux > 20000 AND s.psfFlux > 10000
GROUP BY o.objectId
