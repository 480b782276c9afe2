-- id: Q11
-- category: full-scan colour cut
-- lang: qserv
-- question: Blue point sources (white-dwarf candidates in the style of SDSS sample queries).
SELECT objectId, scisql_nanojanskyToAbMag(g_psfFlux) AS g,
       scisql_nanojanskyToAbMag(g_psfFlux) - scisql_nanojanskyToAbMag(r_psfFlux) AS gr
FROM Object
WHERE refExtendedness = 0 AND g_psfFlux > 0 AND r_psfFlux > 0 AND u_psfFlux > 0
  AND scisql_nanojanskyToAbMag(g_psfFlux) - scisql_nanojanskyToAbMag(r_psfFlux) < -0.2
  AND scisql_nanojanskyToAbMag(u_psfFlux) - scisql_nanojanskyToAbMag(g_psfFlux) < 0.6
