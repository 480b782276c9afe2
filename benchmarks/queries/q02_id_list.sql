-- id: Q02
-- category: object by id
-- lang: qserv
-- question: Positions and r-band fluxes of a follow-up list of 20 objects.
SELECT objectId, coord_ra, coord_dec, r_psfFlux, r_psfFluxErr FROM Object WHERE objectId IN ({oids})
