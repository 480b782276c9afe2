"""Differential tests of qengine.geometry against astropy and lsst.sphgeom.

Oracles: astropy (angular separation, unit vectors), lsst.sphgeom (containment,
chunk and sub-chunk selection, areas of circles and boxes), a literal port of
sciSQL's s2PtInEllipse arithmetic, Girard's theorem and Monte Carlo integration.
Points within ~1e-9 deg of a region boundary are skipped: there both answers
are legitimately rounding-dependent.
"""
from __future__ import annotations

import math

import astropy.units as u
import lsst.sphgeom as sg
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from hypothesis import example, given
from hypothesis import strategies as st

from qengine.errors import RegionError
from qengine.geometry import (
    Box,
    Circle,
    Ellipse,
    Polygon,
    Region,
    angular_separation,
    radec_from_unit_vectors,
    region_from_qserv,
    unit_vectors,
)

BOUNDARY_TOL_DEG = 1e-9
CHUNKER_PARAMS = [(85, 12), (340, 3), (18, 100)]

ras = st.floats(min_value=0.0, max_value=360.0, allow_nan=False)
decs = st.floats(min_value=-90.0, max_value=90.0, allow_nan=False)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


class FakeChunker:
    """Duck-typed chunker: only the two ints geometry needs."""

    def __init__(self, num_stripes: int, num_sub_stripes: int) -> None:
        self.num_stripes = num_stripes
        self.num_sub_stripes = num_sub_stripes


# ----------------------------------------------------------------------------- helpers


def _basis(ra0, dec0):
    """Centre, north and east unit vectors at (ra0, dec0) (scalars or arrays), computed test-side."""
    a, d = np.radians(ra0), np.radians(dec0)
    zero = np.zeros_like(a)
    c = np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=-1)
    n = np.stack([-np.sin(d) * np.cos(a), -np.sin(d) * np.sin(a), np.cos(d)], axis=-1)
    e = np.stack([-np.sin(a), np.cos(a), zero], axis=-1)
    return c, n, e


def _to_radec(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ra = np.degrees(np.arctan2(v[:, 1], v[:, 0])) % 360.0
    dec = np.degrees(np.arctan2(v[:, 2], np.hypot(v[:, 0], v[:, 1])))
    return ra, dec


def _offset(ra0, dec0, dist_deg, bearing_deg) -> tuple[np.ndarray, np.ndarray]:
    """Points at angular distance ``dist_deg`` from (ra0, dec0), bearing east of north.

    All arguments broadcast; the result is flattened.
    """
    ra0, dec0, dist_deg, bearing_deg = (
        np.atleast_1d(x).astype(float).ravel()
        for x in np.broadcast_arrays(ra0, dec0, dist_deg, bearing_deg)
    )
    c, n, e = _basis(ra0, dec0)
    d = np.radians(dist_deg)[:, None]
    b = np.radians(bearing_deg)[:, None]
    v = np.cos(d) * c + np.sin(d) * (np.cos(b) * n + np.sin(b) * e)
    return _to_radec(v)


def _cap_points(rng, ra0, dec0, radius_deg, n):
    """n points spread over the cap of ``radius_deg`` around (ra0, dec0)."""
    radius_deg = min(radius_deg, 180.0)
    dist = radius_deg * np.sqrt(rng.uniform(0.0, 1.0, n))
    return _offset(ra0, dec0, dist, rng.uniform(0.0, 360.0, n))


def _sphgeom_contains(region: sg.Region, ra, dec) -> np.ndarray:
    return np.array(
        [region.contains(sg.UnitVector3d(sg.LonLat.fromDegrees(a, d)))
         for a, d in zip(np.asarray(ra).tolist(), np.asarray(dec).tolist())],
        dtype=bool,
    )


def _assert_agrees(region: Region, oracle: sg.Region, ra, dec, near_boundary) -> int:
    """region.contains == oracle away from the boundary; returns points compared."""
    ours = region.contains(ra, dec)
    keep = ~near_boundary
    theirs = _sphgeom_contains(oracle, ra[keep], dec[keep])
    bad = np.flatnonzero(ours[keep] != theirs)
    if bad.size:
        i = bad[0]
        raise AssertionError(
            f"{region!r}: point ({ra[keep][i]!r}, {dec[keep][i]!r}) ours={ours[keep][i]} "
            f"sphgeom={theirs[i]} ({bad.size} disagreements)"
        )
    return int(keep.sum())


def _point_chunk_ids(chunker: sg.Chunker, ra, dec) -> list[list[int]]:
    """Chunks of single points, located by sphgeom on a degenerate box."""
    out = []
    for a, d in zip(np.asarray(ra).tolist(), np.asarray(dec).tolist()):
        p = sg.LonLat.fromDegrees(a, d)
        out.append(list(chunker.getChunksIntersecting(sg.Box(p, p))))
    return out


def _point_sub_chunks(chunker: sg.Chunker, ra, dec) -> list[tuple[int, int]]:
    out = []
    for a, d in zip(np.asarray(ra).tolist(), np.asarray(dec).tolist()):
        p = sg.LonLat.fromDegrees(a, d)
        for chunk, subs in chunker.getSubChunksIntersecting(sg.Box(p, p)):
            out.extend((chunk, s) for s in subs)
    return out


def _circle_near_boundary(c: Circle, ra, dec) -> np.ndarray:
    sep = SkyCoord(ra * u.deg, dec * u.deg).separation(SkyCoord(c.ra * u.deg, c.dec * u.deg)).deg
    return np.abs(sep - c.radius) <= BOUNDARY_TOL_DEG


def _lon_dist(a, b) -> np.ndarray:
    d = np.abs(np.asarray(a) - b) % 360.0
    return np.minimum(d, 360.0 - d)


def _box_near_boundary(b: Box, ra, dec) -> np.ndarray:
    near = (np.abs(dec - b.dec_min) <= BOUNDARY_TOL_DEG) | (np.abs(dec - b.dec_max) <= BOUNDARY_TOL_DEG)
    if not b.full_ra:
        cosd = np.cos(np.radians(dec))
        near |= cosd * np.minimum(_lon_dist(ra, b.ra_min), _lon_dist(ra, b.ra_max)) <= BOUNDARY_TOL_DEG
    return near


def _poly_vectors(vertices) -> np.ndarray:
    v = np.array(vertices, dtype=float)
    a, d = np.radians(v[:, 0]), np.radians(v[:, 1])
    return np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=1)


def _poly_near_boundary(vertices, ra, dec) -> np.ndarray:
    """Within tolerance of any edge's great circle (a superset of the edges)."""
    vec = _poly_vectors(vertices)
    normals = np.cross(vec, np.roll(vec, -1, axis=0))
    normals /= np.linalg.norm(normals, axis=1)[:, None]
    a, d = np.radians(ra), np.radians(dec)
    p = np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=1)
    dist = np.degrees(np.abs(np.arcsin(np.clip(p @ normals.T, -1.0, 1.0))))
    return (dist <= BOUNDARY_TOL_DEG).any(axis=1)


def _scisql_ellipse_f(ra, dec, ra0, dec0, major_arcsec, minor_arcsec, pa_deg):
    """sciSQL s2PtInEllipse arithmetic, ported literally: inside iff f <= 1.

    Also returns v . centre (sciSQL does not look at it; qengine requires > 0).
    """
    lon0, lat0, pa = math.radians(ra0), math.radians(dec0), math.radians(pa_deg)
    a, d = np.radians(ra), np.radians(dec)
    vx, vy, vz = np.cos(a) * np.cos(d), np.sin(a) * np.cos(d), np.sin(d)
    xne = math.cos(lat0) * vz - math.sin(lat0) * (math.sin(lon0) * vy + math.cos(lon0) * vx)
    yne = math.cos(lon0) * vy - math.sin(lon0) * vx
    x = math.sin(pa) * yne + math.cos(pa) * xne
    y = math.cos(pa) * yne - math.sin(pa) * xne
    big = math.radians(major_arcsec / 3600.0)
    small = math.radians(minor_arcsec / 3600.0)
    f = x * x / (big * big) + y * y / (small * small)
    z = vx * math.cos(lat0) * math.cos(lon0) + vy * math.cos(lat0) * math.sin(lon0) + vz * math.sin(lat0)
    return f, z


def _ellipse_near_boundary(e: Ellipse, ra, dec) -> np.ndarray:
    f, _ = _scisql_ellipse_f(ra, dec, e.ra, e.dec, e.semi_major, e.semi_minor, e.position_angle)
    # f grows fastest across the minor axis: df = 2 * distance / minor (small angles).
    minor_rad = math.radians(e.semi_minor / 3600.0)
    return np.abs(f - 1.0) <= 2.0 * math.radians(BOUNDARY_TOL_DEG) / minor_rad + 1e-9


def _qserv_ellipse(ra, dec, major_arcsec, minor_arcsec, pa) -> sg.Ellipse:
    """sphgeom ellipse equal to sciSQL's: angular semi-axes asin(axis in radians)."""
    return sg.Ellipse(
        sg.UnitVector3d(sg.LonLat.fromDegrees(ra, dec)),
        sg.Angle(math.asin(math.radians(major_arcsec / 3600.0))),
        sg.Angle(math.asin(math.radians(minor_arcsec / 3600.0))),
        sg.Angle.fromDegrees(pa),
    )


def _qserv_poly(vertices) -> sg.ConvexPolygon:
    return sg.ConvexPolygon([sg.UnitVector3d(sg.LonLat.fromDegrees(a, d)) for a, d in vertices])


def _hull_vertices(rng, ra0, dec0, radius, n) -> list[tuple[float, float]]:
    """Vertices (counter-clockwise) of the sphgeom convex hull of random cap points."""
    # Spread the points to the rim so hulls are not slivers.
    dist = radius * (0.6 + 0.4 * rng.uniform(0.0, 1.0, n))
    ra, dec = _offset(ra0, dec0, dist, np.sort(rng.uniform(0.0, 360.0, n)))
    hull = sg.ConvexPolygon.convexHull([sg.UnitVector3d(sg.LonLat.fromDegrees(a, d)) for a, d in zip(ra, dec)])
    out = []
    for v in hull.getVertices():
        ll = sg.LonLat(v)
        out.append((ll.getLon().asDegrees(), ll.getLat().asDegrees()))
    return out


# ----------------------------------------------------------------------------- angular separation


def _astropy_sep(ra1, dec1, ra2, dec2) -> np.ndarray:
    return SkyCoord(np.asarray(ra1) * u.deg, np.asarray(dec1) * u.deg).separation(
        SkyCoord(np.asarray(ra2) * u.deg, np.asarray(dec2) * u.deg)
    ).deg


@given(ras, decs, ras, decs)
@example(0.0, 90.0, 123.0, 90.0)
@example(10.0, -90.0, 250.0, 90.0)
@example(359.9999999, 0.0, 0.0000001, 0.0)
@example(0.0, 0.0, 180.0, 0.0)
def test_separation_matches_astropy(ra1, dec1, ra2, dec2):
    ours = angular_separation(ra1, dec1, ra2, dec2)
    theirs = _astropy_sep(ra1, dec1, ra2, dec2)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)
    assert 0.0 <= ours <= 180.0


@given(ras, decs, st.floats(0.0, 1e-6), st.floats(0.0, 360.0))
@example(0.0, 90.0, 1e-9, 0.0)
@example(359.99999, -89.9999, 1e-9, 45.0)
@example(12.5, 30.0, 0.0, 0.0)
def test_separation_tiny(ra, dec, dist, bearing):
    ra2, dec2 = _offset(ra, dec, dist, bearing)
    ours = angular_separation(ra, dec, ra2[0], dec2[0])
    assert ours == pytest.approx(_astropy_sep(ra, dec, ra2[0], dec2[0]), rel=1e-9, abs=1e-12)
    # The generated offset itself is only accurate to rounding of the unit vectors.
    assert ours == pytest.approx(dist, abs=1e-11)


@given(ras, decs, st.floats(0.0, 1e-6), st.floats(0.0, 360.0))
@example(0.0, 0.0, 0.0, 0.0)
@example(0.0, 90.0, 0.0, 0.0)
def test_separation_near_antipode(ra, dec, miss, bearing):
    anti_ra, anti_dec = (ra + 180.0) % 360.0, -dec
    ra2, dec2 = _offset(anti_ra, anti_dec, miss, bearing)
    ours = angular_separation(ra, dec, ra2[0], dec2[0])
    assert ours == pytest.approx(_astropy_sep(ra, dec, ra2[0], dec2[0]), rel=1e-9, abs=1e-12)
    assert ours == pytest.approx(180.0 - miss, abs=1e-9)


def test_separation_exact_cases():
    assert angular_separation(12.3, -45.6, 12.3, -45.6) == 0.0
    assert angular_separation(0.0, 0.0, 180.0, 0.0) == 180.0
    # The pole is one point whatever its RA (up to cos(radians(90)) = 6e-17, not 0).
    assert np.all(angular_separation(np.arange(0, 360, 30.0), 90.0, 0.0, 90.0) < 1e-13)
    assert angular_separation(0.0, 90.0, 77.0, -90.0) == 180.0


def test_separation_broadcasts():
    rng = np.random.default_rng(1)
    ra = rng.uniform(0, 360, (4, 1))
    dec = rng.uniform(-90, 90, (1, 5))
    got = angular_separation(ra, dec, 10.0, 20.0)
    assert got.shape == (4, 5)
    np.testing.assert_allclose(got, _astropy_sep(*np.broadcast_arrays(ra, dec), 10.0, 20.0), rtol=1e-9)


@given(st.lists(st.tuples(ras, decs), min_size=1, max_size=20))
def test_unit_vectors_match_astropy_and_round_trip(points):
    ra = np.array([p[0] for p in points])
    dec = np.array([p[1] for p in points])
    vec = unit_vectors(ra, dec)
    assert vec.shape == (len(points), 3)
    xyz = SkyCoord(ra * u.deg, dec * u.deg).cartesian.xyz.value.T
    np.testing.assert_allclose(vec, xyz, rtol=0, atol=1e-15)
    ra2, dec2 = radec_from_unit_vectors(vec)
    assert np.all((ra2 >= 0.0) & (ra2 < 360.0))
    # Round trip: the same points on the sky (RA is arbitrary at the poles).
    np.testing.assert_allclose(angular_separation(ra, dec, ra2, dec2), 0.0, atol=1e-12)


def test_radec_from_unit_vectors_edge_cases():
    ra, dec = radec_from_unit_vectors([[1.0, -1e-300, 0.0], [0.0, 0.0, 5.0], [0.0, 0.0, 0.0], [0, -2, 0]])
    assert ra.tolist() == [0.0, 0.0, 0.0, 270.0]
    assert dec.tolist() == [0.0, 90.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        radec_from_unit_vectors([1.0, 2.0])


# ----------------------------------------------------------------------------- circle


@given(ras, decs, st.floats(1e-6, 180.0), seeds)
@example(0.0, 90.0, 5.0, 1)             # centred on the north pole
@example(180.0, -89.5, 1.0, 2)          # pole inside the circle
@example(359.9, 10.0, 0.5, 3)           # across RA 0/360
@example(0.0, 0.0, 180.0, 4)            # whole sky
@example(123.0, 45.0, 1e-6, 5)          # ~3.6 mas
@example(10.0, 0.0, 90.0, 6)            # hemisphere
def test_circle_contains_matches_sphgeom_and_astropy(ra, dec, radius, seed):
    rng = np.random.default_rng(seed)
    c = Circle(ra, dec, radius)
    pra, pdec = _cap_points(rng, ra, dec, 1.5 * radius, 150)
    bra, bdec = _offset(ra, dec, np.clip(radius * (1 + rng.normal(0, 1e-6, 100)), 0, 180), rng.uniform(0, 360, 100))
    pra, pdec = np.concatenate([pra, bra]), np.concatenate([pdec, bdec])
    near = _circle_near_boundary(c, pra, pdec)
    oracle = sg.Circle(sg.UnitVector3d(sg.LonLat.fromDegrees(ra, dec)), sg.Angle.fromDegrees(radius))
    assert _assert_agrees(c, oracle, pra, pdec, near) > 0
    _assert_agrees(c, c.to_sphgeom(), pra, pdec, near)
    sep = _astropy_sep(pra, pdec, ra, dec)
    ours = c.contains(pra, pdec)
    assert np.array_equal(ours[~near], (sep <= radius)[~near])
    # Every contained point lies in the bounding box.
    assert c.bounding_box().contains(pra[ours], pdec[ours]).all()


# ----------------------------------------------------------------------------- box


@st.composite
def boxes(draw):
    ra_min = draw(st.floats(-20.0, 380.0))
    width = draw(st.one_of(st.floats(0.0, 370.0), st.floats(0.0, 1e-4)))
    d1, d2 = sorted([draw(decs), draw(decs)])
    return ra_min, ra_min + width, d1, d2


def _box_points(rng, b: Box, n: int):
    w = b.ra_width
    lo = b.ra_min - 0.2 * w - 1e-6
    ra = rng.uniform(lo, lo + 1.4 * w + 2e-6, n) % 360.0
    h = b.dec_max - b.dec_min
    dec = np.clip(b.dec_min - 0.2 * h - 1e-6 + (1.4 * h + 2e-6) * rng.uniform(0.0, 1.0, n), -90, 90)
    # Points hugging each edge.
    m = n // 4
    eps = rng.normal(0, 1e-6, m)
    ra_e = np.concatenate([np.full(m // 2, b.ra_min), np.full(m - m // 2, b.ra_max)]) + eps
    dec_e = b.dec_min + (b.dec_max - b.dec_min) * rng.uniform(0.0, 1.0, m)
    dec_f = np.clip(np.concatenate([np.full(m // 2, b.dec_min), np.full(m - m // 2, b.dec_max)]) + eps, -90, 90)
    ra_f = rng.uniform(lo, lo + 1.4 * w, m) % 360.0
    return np.concatenate([ra, ra_e % 360.0, ra_f]), np.concatenate([dec, dec_e, dec_f])


@given(boxes(), seeds)
@example((350.0, 10.0, -5.0, 5.0), 1)        # wraps through RA 0
@example((-10.0, 10.0, 80.0, 90.0), 2)       # negative ra_min, touches the pole
@example((0.0, 360.0, -90.0, -60.0), 3)      # full RA, south cap
@example((370.0, 380.0, 0.0, 1.0), 4)        # reduced modulo 360
@example((10.0, 10.0, -1.0, 1.0), 5)         # zero width
@example((100.0, 101.0, 30.0, 30.0), 6)      # zero height
def test_box_contains_matches_sphgeom(params, seed):
    ra_min, ra_max, dec_min, dec_max = params
    b = Box(ra_min, ra_max, dec_min, dec_max)
    assert Box.from_qserv(ra_min, dec_min, ra_max, dec_max) == b
    rng = np.random.default_rng(seed)
    pra, pdec = _box_points(rng, b, 200)
    near = _box_near_boundary(b, pra, pdec)
    # Qserv builds the sphgeom box from the raw arguments (geomAdapter.h).
    oracle = sg.Box.fromDegrees(ra_min, dec_min, ra_max, dec_max)
    _assert_agrees(b, oracle, pra, pdec, near)
    _assert_agrees(b, b.to_sphgeom(), pra, pdec, near)


def test_box_semantics():
    b = Box(350, 10, -5, 5)
    assert b.wraps and b.ra_width == pytest.approx(20.0)
    assert b.contains([350, 355, 0, 360, 10, 5, 349.99, 10.01, -5, 370], 0).tolist() == [
        True, True, True, True, True, True, False, False, True, True]
    assert b.contains(0, [-5, 5, -5.0001, 5.0001]).tolist() == [True, True, False, False]
    full = Box(10, 370, -1, 1)
    assert full.full_ra and full.contains(np.arange(0, 360, 7.0), 0).all()
    assert Box(0, 360, -90, 90).contains([0, 359.999], [-90, 90]).all()
    assert Box(370, 380, 0, 1) == Box(10, 20, 0, 1)
    assert Box(-10, 10, 0, 1) == Box(350, 10, 0, 1)


# ----------------------------------------------------------------------------- polygon


@st.composite
def polygons(draw):
    rng = np.random.default_rng(draw(seeds))
    centre = (draw(ras), draw(decs))
    radius = draw(st.one_of(st.floats(1e-4, 60.0), st.sampled_from([1e-4, 0.01, 1.0, 30.0, 80.0])))
    n = draw(st.integers(3, 12))
    return centre, radius, _hull_vertices(rng, centre[0], centre[1], radius, n)


@given(polygons(), st.booleans(), st.integers(0, 11), seeds)
def test_polygon_contains_matches_sphgeom(poly, clockwise, start, seed):
    (ra0, dec0), radius, verts = poly
    given_order = verts[::-1] if clockwise else verts
    start %= len(given_order)
    given_order = given_order[start:] + given_order[:start]
    p = Polygon(given_order)
    rng = np.random.default_rng(seed)
    pra, pdec = _cap_points(rng, ra0, dec0, 1.2 * radius, 150)
    # Points hugging the edges: along each great-circle edge, pushed slightly off it.
    vec = _poly_vectors(verts)
    k = rng.integers(0, len(verts), 100)
    t = rng.uniform(0, 1, (100, 1))
    on_edge = (1 - t) * vec[k] + t * vec[(k + 1) % len(verts)]
    on_edge /= np.linalg.norm(on_edge, axis=1)[:, None]
    era, edec = _to_radec(on_edge)
    era, edec = _offset(era, edec, np.abs(rng.normal(0, 1e-6 * max(radius, 1e-3), 100)), rng.uniform(0, 360, 100))
    pra, pdec = np.concatenate([pra, era]), np.concatenate([pdec, edec])
    near = _poly_near_boundary(verts, pra, pdec)
    assert _assert_agrees(p, _qserv_poly(verts), pra, pdec, near) > 0
    _assert_agrees(p, p.to_sphgeom(), pra, pdec, near)
    inside = p.contains(pra, pdec)
    assert p.bounding_box().contains(pra[inside], pdec[inside]).all()
    # Orientation and starting vertex do not matter.
    assert np.array_equal(Polygon(verts).contains(pra, pdec), inside)


@pytest.mark.parametrize(
    "verts",
    [
        [(0, 80), (120, 80), (240, 80)],                          # north pole inside
        [(45, -70), (135, -70), (225, -70), (315, -70)],          # south pole inside
        [(355, -2), (5, -2), (5, 2), (355, 2)],                   # across RA 0/360
        [(0, 0), (90, 0), (0, 90)],                               # an octant
        [(10, 10), (10.000001, 10), (10.000001, 10.000001)],      # 3.6 mas triangle
    ],
)
def test_polygon_special_cases_match_sphgeom(verts):
    rng = np.random.default_rng(7)
    p = Polygon(verts)
    vec = _poly_vectors(verts).mean(axis=0)
    ra0, dec0 = _to_radec(vec[None, :])
    size = float(np.max(_astropy_sep(ra0[0], dec0[0], *np.array(verts, dtype=float).T)))
    pra, pdec = _cap_points(rng, ra0[0], dec0[0], 1.3 * size, 2000)
    near = _poly_near_boundary(verts, pra, pdec)
    assert _assert_agrees(p, _qserv_poly(verts), pra, pdec, near) > 1000
    assert p.contains(pra, pdec).any() and not p.contains(pra, pdec).all()


def test_polygon_orientation_is_counter_clockwise():
    ccw = [(0, 0), (10, 0), (0, 10)]
    cw = ccw[::-1]
    assert Polygon(cw) == Polygon(ccw)
    # As stored, vertices run counter-clockwise: sciSQL's edge test accepts the centroid.
    vec = _poly_vectors(Polygon(cw).vertices)
    centroid = vec.mean(axis=0)
    edges = np.cross(vec, np.roll(vec, -1, axis=0))
    assert np.all(edges @ centroid > 0)
    # Pole-containing polygons, both ways round.
    ring = [(a, 85.0) for a in (0, 60, 120, 180, 240, 300)]
    assert Polygon(ring).contains(0, 90) and Polygon(ring[::-1]).contains(0, 90)


# ----------------------------------------------------------------------------- ellipse


@st.composite
def ellipses(draw):
    major = draw(st.one_of(st.floats(1e-2, 36000.0), st.sampled_from([0.01, 1.0, 3600.0, 36000.0])))
    ratio = draw(st.one_of(st.floats(0.01, 1.0), st.just(1.0)))
    return draw(ras), draw(decs), major, major * ratio, draw(st.floats(-360.0, 720.0))


def _ellipse_points(rng, e: Ellipse, n: int):
    size = math.degrees(math.asin(math.radians(e.semi_major / 3600.0)))
    pra, pdec = _cap_points(rng, e.ra, e.dec, 1.3 * size, n)
    # Points near the boundary: the ellipse parametrised in its tangent plane.
    t = rng.uniform(0, 2 * math.pi, n)
    scale = 1 + rng.normal(0, 1e-5, n)
    a_rad = math.radians(e.semi_major / 3600.0)
    b_rad = math.radians(e.semi_minor / 3600.0)
    x, y = a_rad * np.cos(t) * scale, b_rad * np.sin(t) * scale
    c, nn, ee = _basis(e.ra, e.dec)
    pa = math.radians(e.position_angle)
    major_dir = math.cos(pa) * nn + math.sin(pa) * ee
    minor_dir = -math.sin(pa) * nn + math.cos(pa) * ee
    z = np.sqrt(1 - x * x - y * y)
    v = z[:, None] * c + x[:, None] * major_dir + y[:, None] * minor_dir
    bra, bdec = _to_radec(v)
    return np.concatenate([pra, bra]), np.concatenate([pdec, bdec])


@given(ellipses(), seeds)
@example((0.0, 90.0, 3600.0, 1800.0, 0.0), 1)       # centred on the north pole
@example((359.99, -89.0, 7200.0, 100.0, 45.0), 2)   # south pole inside, across RA 0
@example((10.0, 20.0, 36000.0, 36000.0, 0.0), 3)    # a circle, largest allowed
@example((200.0, -30.0, 0.01, 0.001, 123.0), 4)     # 10 mas
def test_ellipse_contains_matches_sphgeom_and_scisql(params, seed):
    ra, dec, major, minor, pa = params
    e = Ellipse(ra, dec, major, minor, pa)
    rng = np.random.default_rng(seed)
    pra, pdec = _ellipse_points(rng, e, 150)
    near = _ellipse_near_boundary(e, pra, pdec)
    assert _assert_agrees(e, _qserv_ellipse(ra, dec, major, minor, pa), pra, pdec, near) > 0
    _assert_agrees(e, e.to_sphgeom(), pra, pdec, near)
    f, z = _scisql_ellipse_f(pra, pdec, ra, dec, major, minor, pa)
    ours = e.contains(pra, pdec)
    assert np.array_equal(ours[~near], ((f <= 1.0) & (z > 0))[~near])
    assert e.bounding_box().contains(pra[ours], pdec[ours]).all()


def test_ellipse_position_angle_is_east_of_north():
    ra0, dec0 = 150.0, 40.0
    major, minor = 3600.0, 600.0  # 1 deg x 10 arcmin
    north = _offset(ra0, dec0, 0.9, 0.0)
    east = _offset(ra0, dec0, 0.9, 90.0)
    at_0 = Ellipse(ra0, dec0, major, minor, 0.0)
    at_90 = Ellipse(ra0, dec0, major, minor, 90.0)
    assert at_0.contains(*north) and not at_0.contains(*east)
    assert at_90.contains(*east) and not at_90.contains(*north)
    # PA is periodic with period 180 degrees.
    pts = _cap_points(np.random.default_rng(3), ra0, dec0, 1.2, 3000)
    assert np.array_equal(Ellipse(ra0, dec0, major, minor, 30.0).contains(*pts),
                          Ellipse(ra0, dec0, major, minor, 210.0).contains(*pts))
    # sciSQL would also accept the antipode; qengine does not.
    assert not at_0.contains((ra0 + 180.0) % 360.0, -dec0)


# ----------------------------------------------------------------------------- invalid positions


@pytest.mark.parametrize(
    "region",
    [Circle(0, 0, 180), Box(0, 360, -90, 90), Polygon([(0, 0), (90, 0), (0, 90)]),
     Ellipse(0, 0, 36000, 36000, 0)],
    ids=["circle", "box", "polygon", "ellipse"],
)
def test_invalid_positions_are_not_contained(region):
    ra = np.array([np.nan, 0.0, np.inf, 0.0, 0.0, 1.0])
    dec = np.array([0.0, np.nan, 0.0, 90.5, -np.inf, 1.0])
    assert region.contains(ra, dec).tolist() == [False] * 5 + [True]
    scalar = region.contains(1.0, 1.0)
    assert isinstance(scalar, np.ndarray) and scalar.dtype == bool and bool(scalar)
    assert region.contains(np.ones((2, 3)), np.ones(3)).shape == (2, 3)


# ----------------------------------------------------------------------------- chunks


def _oracle_region(r: Region) -> sg.Region:
    """The sphgeom region Qserv's geomAdapter would build from the same arguments."""
    if isinstance(r, Circle):
        return sg.Circle(sg.UnitVector3d(sg.LonLat.fromDegrees(r.ra, r.dec)), sg.Angle.fromDegrees(r.radius))
    if isinstance(r, Box):
        return sg.Box.fromDegrees(r.ra_min, r.dec_min, r.ra_max, r.dec_max)
    if isinstance(r, Polygon):
        return _qserv_poly(r.vertices)
    return _qserv_ellipse(r.ra, r.dec, r.semi_major, r.semi_minor, r.position_angle)


def _points_around(region: Region, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n points spread over a cap a little larger than the region's sphgeom bounding circle."""
    bc = _oracle_region(region).getBoundingCircle()
    centre = sg.LonLat(bc.getCenter())
    radius = min(180.0, 1.1 * bc.getOpeningAngle().asDegrees())
    return _cap_points(np.random.default_rng(seed), centre.getLon().asDegrees(),
                       centre.getLat().asDegrees(), radius, n)


FIXED_REGIONS = [
    Circle(0.0, 90.0, 3.0),
    Circle(359.5, -10.0, 1.5),
    Circle(45.0, -89.9, 0.5),
    Circle(200.0, 30.0, 0.01),
    Box(350.0, 10.0, -3.0, 3.0),
    Box(0.0, 360.0, 85.0, 90.0),
    Box(100.0, 104.0, -60.0, -58.0),
    Polygon([(358, -1), (3, -1), (2, 2), (359, 3)]),
    Polygon([(0, 86), (120, 86), (240, 86)]),
    Ellipse(0.2, 0.3, 7200.0, 1800.0, 30.0),
    Ellipse(180.0, -88.0, 10000.0, 2000.0, 100.0),
]


@pytest.mark.parametrize("params", CHUNKER_PARAMS, ids=lambda p: f"{p[0]}x{p[1]}")
@pytest.mark.parametrize("region", FIXED_REGIONS, ids=repr)
def test_chunk_ids_match_sphgeom(region, params):
    chunker = FakeChunker(*params)
    sphgeom_chunker = sg.Chunker(*params)
    oracle = _oracle_region(region)
    ids = region.chunk_ids(chunker)
    assert ids.dtype == np.int32
    assert np.array_equal(ids, np.unique(ids))
    assert ids.tolist() == sorted(set(sphgeom_chunker.getChunksIntersecting(oracle)))
    subs = region.sub_chunk_ids(chunker)
    assert sorted(subs) == ids.tolist()
    expected = {c: sorted(set(s)) for c, s in sphgeom_chunker.getSubChunksIntersecting(oracle)}
    assert {c: s.tolist() for c, s in subs.items()} == expected
    for s in subs.values():
        assert s.dtype == np.int32 and np.array_equal(s, np.unique(s))
    # Brute force: points inside the region lie in the chunks and sub-chunks returned.
    ra, dec = _points_around(region, 4000, 11)
    inside = region.contains(ra, dec)
    assert inside.sum() > 50
    ra, dec = ra[inside][:300], dec[inside][:300]
    idset = set(ids.tolist())
    for point_ids in _point_chunk_ids(sphgeom_chunker, ra, dec):
        assert set(point_ids) <= idset
    for chunk, sub in _point_sub_chunks(sphgeom_chunker, ra[:100], dec[:100]):
        assert sub in set(subs[chunk].tolist())


@pytest.mark.parametrize("region", FIXED_REGIONS, ids=repr)
def test_contains_large_and_small_batches_agree(region):
    # Large batches take a declination pre-filter path; small ones do not.
    ra, dec = _points_around(region, 6000, 4)
    ra[::7] = np.nan
    whole = region.contains(ra, dec)
    parts = np.concatenate([region.contains(ra[i:i + 500], dec[i:i + 500]) for i in range(0, 6000, 500)])
    assert np.array_equal(whole, parts) and whole.any()
    assert np.array_equal(region.contains(ra.reshape(60, 100), dec.reshape(60, 100)).ravel(), whole)


@st.composite
def small_regions(draw):
    kind = draw(st.sampled_from(["circle", "box", "polygon", "ellipse"]))
    ra, dec = draw(ras), draw(decs)
    size = draw(st.floats(1e-3, 5.0))
    if kind == "circle":
        return Circle(ra, dec, size)
    if kind == "box":
        lo, hi = sorted([draw(decs), draw(decs)])
        hi = min(hi, lo + size)
        return Box(ra, ra + size, lo, hi)
    if kind == "polygon":
        rng = np.random.default_rng(draw(seeds))
        return Polygon(_hull_vertices(rng, ra, dec, size, draw(st.integers(3, 8))))
    return Ellipse(ra, dec, size * 3600.0, size * 3600.0 * draw(st.floats(0.05, 1.0)), draw(st.floats(0, 180)))


@given(small_regions(), st.sampled_from(CHUNKER_PARAMS), seeds)
def test_chunk_ids_cover_contained_points(region, params, seed):
    chunker = sg.Chunker(*params)
    ids = region.chunk_ids(FakeChunker(*params))
    assert ids.tolist() == sorted(set(chunker.getChunksIntersecting(_oracle_region(region))))
    ra, dec = _points_around(region, 400, seed)
    inside = region.contains(ra, dec)
    idset = set(ids.tolist())
    for point_ids in _point_chunk_ids(chunker, ra[inside][:60], dec[inside][:60]):
        assert set(point_ids) <= idset


def test_ellipse_chunks_cover_qserv_naive_ellipse():
    # Qserv passes the arcsec axes straight to sphgeom as angles (gnomonic): that ellipse
    # lies inside ours, so our chunk list must include its chunks.
    e = Ellipse(33.0, -12.0, 30000.0, 9000.0, 60.0)
    naive = sg.Ellipse(sg.UnitVector3d(sg.LonLat.fromDegrees(33.0, -12.0)),
                       sg.Angle.fromDegrees(30000.0 / 3600), sg.Angle.fromDegrees(9000.0 / 3600),
                       sg.Angle.fromDegrees(60.0))
    for params in CHUNKER_PARAMS:
        assert set(sg.Chunker(*params).getChunksIntersecting(naive)) <= set(e.chunk_ids(FakeChunker(*params)).tolist())


def test_chunker_accepts_sphgeom_chunker_and_rejects_others():
    c = Circle(10, 10, 1)
    assert np.array_equal(c.chunk_ids(sg.Chunker(85, 12)), c.chunk_ids(FakeChunker(85, 12)))
    with pytest.raises(TypeError, match="num_stripes"):
        c.chunk_ids(object())


# ----------------------------------------------------------------------------- areas


@given(ras, decs, st.floats(1e-6, 180.0))
def test_circle_area_matches_sphgeom(ra, dec, radius):
    c = Circle(ra, dec, radius)
    assert c.area() == pytest.approx(c.to_sphgeom().getArea() * (180 / math.pi) ** 2, rel=1e-9)


@given(boxes())
def test_box_area_matches_sphgeom(params):
    ra_min, ra_max, dec_min, dec_max = params
    b = Box(ra_min, ra_max, dec_min, dec_max)
    expected = sg.Box.fromDegrees(ra_min, dec_min, ra_max, dec_max).getArea() * (180 / math.pi) ** 2
    assert b.area() == pytest.approx(expected, rel=1e-9, abs=1e-9)


def _girard_area(vertices) -> float:
    """Spherical excess from the interior angles (square degrees)."""
    v = _poly_vectors(vertices)
    n = len(v)
    total = 0.0
    for i in range(n):
        p, q, r = v[i - 1], v[i], v[(i + 1) % n]
        t1 = p - (p @ q) * q
        t2 = r - (r @ q) * q
        total += math.atan2(np.linalg.norm(np.cross(t1, t2)), t1 @ t2)
    return (total - (n - 2) * math.pi) * (180 / math.pi) ** 2


def _gnomonic_area(vertices) -> float:
    """Planar (shoelace) area of the vertices projected about their mean (square degrees)."""
    v = _poly_vectors(vertices)
    ra0, dec0 = _to_radec(v.mean(axis=0)[None, :])
    c, n, e = _basis(ra0[0], dec0[0])
    z = v @ c
    x, y = (v @ e) / z, (v @ n) / z
    return abs(0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)) * (180 / math.pi) ** 2


@given(polygons())
@example(((0.0, 5.0), 0.5, [(0.04450227468979473, 5.425088359322861),
                            (359.6723296354421, 5.136952546007095),
                            (359.8387114859499, 5.263017388297306)]))  # a sliver
def test_polygon_area_matches_girard_and_flat_limit(poly):
    (_, _), radius, verts = poly
    p = Polygon(verts)
    area = p.area()
    if radius >= 0.5:
        # Girard sums angles taken from tangent vectors, which lose ~1e-16 / |edge| rad
        # each to cancellation: useless for small polygons, and needing an absolute term.
        assert area == pytest.approx(_girard_area(verts), rel=1e-8, abs=1e-9 * len(verts))
    if radius < 1.0:
        # Small polygons: the gnomonic image's planar area agrees to O(size^2).
        r = math.radians(radius)
        assert area == pytest.approx(_gnomonic_area(verts), rel=4 * r * r + 1e-8)
    assert 0.0 < area <= Circle(*poly[0], radius).area() * (1 + 1e-9)


def _monte_carlo_area(region: Region, ra0, dec0, cap_deg, n, seed) -> tuple[float, float]:
    """(estimate, standard error) in square degrees, sampling a cap uniformly."""
    rng = np.random.default_rng(seed)
    cos_r = math.cos(math.radians(cap_deg))
    dist = np.degrees(np.arccos(rng.uniform(cos_r, 1.0, n)))
    ra, dec = _offset(ra0, dec0, dist, rng.uniform(0, 360, n))
    frac = region.contains(ra, dec).mean()
    cap = 2 * math.pi * (1 - cos_r) * (180 / math.pi) ** 2
    return frac * cap, cap * math.sqrt(frac * (1 - frac) / n)


def test_polygon_and_ellipse_area_monte_carlo():
    p = Polygon([(20, 10), (60, 15), (50, 60), (15, 45)])
    est, err = _monte_carlo_area(p, 35.0, 35.0, 45.0, 400_000, 5)
    assert abs(p.area() - est) < 5 * err
    e = Ellipse(300.0, -70.0, 36000.0, 12000.0, 40.0)
    est, err = _monte_carlo_area(e, 300.0, -70.0, 10.2, 400_000, 6)
    assert abs(e.area() - est) < 5 * err
    # Exact values where they are known.
    assert Polygon([(0, 0), (90, 0), (0, 90)]).area() == pytest.approx(4 * math.pi / 8 * (180 / math.pi) ** 2, rel=1e-13)


@given(ras, decs, st.floats(1e-3, 36000.0), st.floats(0.0, 1.0), st.floats(0.0, 180.0))
def test_ellipse_area_limits(ra, dec, major, ratio, pa):
    minor = max(major * ratio, 1e-6)
    e = Ellipse(ra, dec, major, minor, pa)
    a, b = math.radians(major / 3600), math.radians(minor / 3600)
    flat = math.pi * a * b * (180 / math.pi) ** 2
    # The orthographic area element 1/z lies between 1 and 1/cos(asin(a)).
    assert flat * (1 - 1e-12) <= e.area() <= flat / math.sqrt(1 - a * a) * (1 + 1e-12)
    circle = Ellipse(ra, dec, major, major, pa)
    assert circle.area() == pytest.approx(Circle(ra, dec, math.degrees(math.asin(a))).area(), rel=1e-12)


# ----------------------------------------------------------------------------- bounding boxes


def test_bounding_boxes_are_conservative_and_tight():
    for region in FIXED_REGIONS:
        bb = region.bounding_box()
        sg_bb = _oracle_region(region).getBoundingBox()
        # Never more than a hair (plus sphgeom's own slack) beyond sphgeom's box ...
        assert bb.dec_min >= math.degrees(sg_bb.getLat().getA().asRadians()) - 1e-6
        assert bb.dec_max <= math.degrees(sg_bb.getLat().getB().asRadians()) + 1e-6
        # ... and containing every point of the region.
        ra, dec = _points_around(region, 20_000, 2)
        c = region.contains(ra, dec)
        assert c.sum() > 1000
        assert bb.contains(ra[c], dec[c]).all()
    assert Circle(0, 89, 1.0).bounding_box().full_ra
    assert Circle(0, -80, 10.5).bounding_box().full_ra
    near_wrap = Circle(0.5, 0, 1).bounding_box()
    assert near_wrap.wraps and near_wrap.contains([359.6, 1.4], 0).all()


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Circle(0, 0, 0), "radius"),
        (lambda: Circle(0, 0, -1), "radius"),
        (lambda: Circle(0, 0, 181), "radius"),
        (lambda: Circle(0, 0, float("nan")), "radius"),
        (lambda: Circle(0, 91, 1), "dec"),
        (lambda: Circle(float("inf"), 0, 1), "ra"),
        (lambda: Circle("a", 0, 1), "ra"),
        (lambda: Box(0, 10, 5, -5), "dec_min"),
        (lambda: Box(0, 10, -95, 5), "dec_min"),
        (lambda: Box(0, 10, 0, float("nan")), "dec_max"),
        (lambda: Box(400, 10, 0, 1), "wraps only"),
        (lambda: Box(10, -5, 0, 1), "wraps only"),
        (lambda: Polygon([(0, 0), (1, 1)]), "at least 3"),
        (lambda: Polygon([(0, 0), (1, 0), (1, 1), (1, 1)]), "coincide"),
        (lambda: Polygon([(0, 0), (180, 0), (90, 45)]), "antipodal"),
        (lambda: Polygon([(0, 0), (1, 0), (2, 0), (1, 1)]), "collinear"),
        (lambda: Polygon([(0, 0), (10, 0), (5, 2), (10, 10), (0, 10)]), "not convex"),
        (lambda: Polygon([(0, 0), (10, 10), (10, 0), (0, 10)]), "not convex"),  # bow tie
        (lambda: Polygon([(90 + 144 * k, 60) for k in range(5)]), "not convex"),  # pentagram
        (lambda: Polygon([(0, 0), (1, 95), (2, 0)]), "vertex 1 dec"),
        (lambda: Polygon([(0, 0, 0), (1, 0), (2, 1)]), "vertex 0"),
        (lambda: Ellipse(0, 0, 10, 20, 0), "semi_minor"),
        (lambda: Ellipse(0, 0, 10, 0, 0), "semi_minor"),
        (lambda: Ellipse(0, 0, -1, -2, 0), "semi_minor"),
        (lambda: Ellipse(0, 0, 40000, 10, 0), "semi_major"),
        (lambda: Ellipse(0, -90.5, 10, 5, 0), "dec"),
        (lambda: Ellipse(0, 0, 10, 5, float("nan")), "position_angle"),
    ],
)
def test_bad_regions_raise(make, message):
    with pytest.raises(RegionError, match=message):
        make()


def test_region_error_is_value_error():
    with pytest.raises(ValueError):
        Circle(0, 0, -1)


# ----------------------------------------------------------------------------- qserv


def test_region_from_qserv():
    assert region_from_qserv("qserv_areaspec_box", [350, -5, 10, 5]) == Box(350, 10, -5, 5)
    assert region_from_qserv("QSERV_AREASPEC_CIRCLE", [1, 2, 0.5]) == Circle(1, 2, 0.5)
    assert region_from_qserv("Qserv_AreaSpec_Ellipse", ["1.5", 3, 3500, 200, 0.5]) == Ellipse(1.5, 3, 3500, 200, 0.5)
    poly = region_from_qserv("qserv_areaspec_poly", [1.0, 3.0, 1.5, 2.0, 2.0, 4.0])
    assert poly == Polygon([(1.0, 3.0), (1.5, 2.0), (2.0, 4.0)])
    assert isinstance(poly, Polygon) and len(poly.vertices) == 3


@pytest.mark.parametrize(
    "name, args, message",
    [
        ("qserv_areaspec_box", [0, 1, 2], "expects 4 arguments"),
        ("qserv_areaspec_circle", [0, 1, 2, 3], "expects 3 arguments"),
        ("qserv_areaspec_ellipse", [0, 1, 2, 3], "expects 5 arguments"),
        ("qserv_areaspec_poly", [0, 1, 2, 3], "even number"),
        ("qserv_areaspec_poly", [0, 1, 2, 3, 4, 5, 6], "even number"),
        ("qserv_areaspec_hexagon", [0, 1], "unknown Qserv area restrictor"),
        ("qserv_areaspec_circle", [0, "x", 1], "argument 2"),
    ],
)
def test_region_from_qserv_errors(name, args, message):
    with pytest.raises(RegionError, match=message):
        region_from_qserv(name, args)
