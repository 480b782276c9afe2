-- id: Q26
-- category: full-scan colour cut
-- lang: qserv
-- question: SkyServer sample query "low-z QSO candidates": blue, point-like, bright objects.
SELECT COUNT(*) AS n FROM sdss.PhotoObjAll
WHERE type = 6 AND u - g < 0.4 AND g - r < 0.7 AND r - i > 0.4 AND i - z > 0.4 AND r < 21
