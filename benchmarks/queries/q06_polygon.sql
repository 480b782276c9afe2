-- id: Q06
-- category: box search
-- lang: adql
-- question: Objects inside a survey-field polygon (a quadrilateral of about half a degree).
SELECT objectId, coord_ra, coord_dec FROM dp02.Object
WHERE 1 = CONTAINS(POINT('ICRS', coord_ra, coord_dec),
                   POLYGON('ICRS', {ra_lo}, {dec_lo}, {ra_hi}, {dec_lo}, {ra_hi}, {dec_hi}, {ra_lo}, {dec_hi}))
