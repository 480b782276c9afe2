-- id: Q05
-- category: box search
-- lang: qserv
-- question: All primary objects in a 1 x 1 degree box (Qserv's areaspec form).
SELECT objectId, coord_ra, coord_dec, i_psfFlux FROM Object
WHERE qserv_areaspec_box({ra_lo}, {dec_lo}, {ra_hi}, {dec_hi}) AND detect_isPrimary = 1
-- oracle:
SELECT objectId, coord_ra, coord_dec, i_psfFlux FROM dp02.Object
WHERE scisql_s2PtInBox(coord_ra, coord_dec, {ra_lo}, {dec_lo}, {ra_hi}, {dec_hi}) = 1 AND detect_isPrimary = 1
