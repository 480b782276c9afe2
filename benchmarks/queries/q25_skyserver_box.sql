-- id: Q25
-- category: box search
-- lang: qserv
-- question: SkyServer sample query "objects in a rectangle": photometry of objects in an RA/Dec box.
SELECT objID, ra, decl, u, g, r, i, z FROM sdss.PhotoObjAll
WHERE ra BETWEEN {sdss_ra_lo} AND {sdss_ra_hi} AND decl BETWEEN {sdss_dec_lo} AND {sdss_dec_hi} AND r < 22
