"""Differential tests of the DuckDB SQL macros in worker.sqlfuncs.

Each function is evaluated in DuckDB over arrays of points (a registered Arrow
table, ``SELECT fn(...) FROM t``) and compared with the oracles: qengine.geometry
(region ``contains``, ``angular_separation``; itself verified against
lsst.sphgeom, astropy and sciSQL), astropy (separations, AB magnitudes) and the
formulas of sciSQL's UDF sources. Region parameters vary per row, so one query
checks many regions; a few tests use literal regions, the way queries do.
Containment answers may differ only within ~1e-9 degree of a boundary, where
both are rounding-dependent; RA/Dec boxes have no such slack (pure comparisons).
"""
from __future__ import annotations

import math

import astropy.units as u
import duckdb
import numpy as np
import pyarrow as pa
import pytest
from astropy.coordinates import SkyCoord
from hypothesis import example, given, settings
from hypothesis import strategies as st

from qengine.geometry import (
    Box,
    Circle,
    Ellipse,
    Polygon,
    angular_separation,
    unit_vectors,
)
from worker import sqlfuncs
from worker.sqlfuncs import MAX_POLYGON_VERTICES, SQL_FUNCTIONS, macro_sql, register

BOUNDARY_TOL_DEG = 1e-9
ras = st.floats(min_value=0.0, max_value=360.0, allow_nan=False)
decs = st.floats(min_value=-90.0, max_value=90.0, allow_nan=False)


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def con():
    c = duckdb.connect()
    register(c)
    # Everything below runs with external access off, as on a worker.
    c.execute("SET enable_external_access = false")
    yield c
    c.close()


def evaluate(con, expr: str, **columns) -> tuple[np.ndarray, np.ndarray]:
    """``SELECT expr FROM t`` over the given columns: (values as float64, NULL mask)."""
    n = len(next(iter(columns.values())))
    arrays = {k: pa.array(np.broadcast_to(np.asarray(v, dtype=float), (n,)) if not isinstance(v, pa.Array) else v)
              for k, v in columns.items()}
    arrays["_i"] = pa.array(np.arange(n))
    con.register("t", pa.table(arrays))
    try:
        res = con.sql(f"SELECT {expr} AS r FROM t ORDER BY _i").to_arrow_table()
    finally:
        con.unregister("t")
    col = res.column("r").combine_chunks()
    nulls = col.is_null().to_numpy(zero_copy_only=False)
    values = pa.compute.cast(col, pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
    return values, nulls


def scalar(con, sql: str):
    rows = con.execute(f"SELECT {sql}").fetchall()
    return rows[0][0]


def sphere_points(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    ra = rng.uniform(0.0, 360.0, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    return ra, dec


def offset_points(rng, ra0, dec0, scale_deg, n):
    """Points scattered around (ra0, dec0) by up to ~scale_deg, via the tangent plane."""
    c, north, east = _basis(ra0, dec0)
    x = rng.uniform(-1.0, 1.0, n) * math.radians(scale_deg)
    y = rng.uniform(-1.0, 1.0, n) * math.radians(scale_deg)
    v = c[None, :] + x[:, None] * east[None, :] + y[:, None] * north[None, :]
    return _radec(v)


def ellipse_points(rng, ra0, dec0, major, minor, pa, n):
    """Points in a box 1.3 times the ellipse (semi-axes in arcsec), aligned with it."""
    c, north, east = _basis(ra0, dec0)
    p = math.radians(pa)
    along = math.cos(p) * north + math.sin(p) * east
    across = math.cos(p) * east - math.sin(p) * north
    x = rng.uniform(-1.3, 1.3, n) * math.radians(major / 3600.0)
    y = rng.uniform(-1.3, 1.3, n) * math.radians(minor / 3600.0)
    return _radec(c[None, :] + x[:, None] * along[None, :] + y[:, None] * across[None, :])


def _basis(ra0, dec0):
    a, d = math.radians(ra0), math.radians(dec0)
    c = np.array([math.cos(d) * math.cos(a), math.cos(d) * math.sin(a), math.sin(d)])
    north = np.array([-math.sin(d) * math.cos(a), -math.sin(d) * math.sin(a), math.cos(d)])
    east = np.array([-math.sin(a), math.cos(a), 0.0])
    return c, north, east


def _radec(v):
    v = np.asarray(v, dtype=float)
    ra = np.degrees(np.arctan2(v[..., 1], v[..., 0])) % 360.0
    dec = np.degrees(np.arctan2(v[..., 2], np.hypot(v[..., 0], v[..., 1])))
    return ra, dec


def assert_same_membership(got, nulls, want, allowed, what=""):
    """got (0/1 floats) == want except where ``allowed`` (boundary slack)."""
    assert not nulls.any(), f"{what}: unexpected NULLs"
    got = got.astype(bool)
    bad = (got != want) & ~allowed
    assert not bad.any(), f"{what}: {bad.sum()} mismatches, first at {np.flatnonzero(bad)[:5]}"


# ----------------------------------------------------------------------------- registration


def test_every_documented_function_exists_and_is_idempotent(con):
    register(con)  # a second time on the same connection
    names = {r[0].lower() for r in con.execute(
        "SELECT function_name FROM duckdb_functions() WHERE function_type = 'macro'").fetchall()}
    for name in SQL_FUNCTIONS:
        assert name.lower() in names, name
    assert scalar(con, "SCISQL_ANGSEP(0, 0, 0, 90)") == pytest.approx(90.0)  # case-insensitive


def test_macro_sql_runs_on_a_fresh_connection_without_external_access():
    c = duckdb.connect()
    c.execute("SET enable_external_access = false")  # before or after: pure SQL either way
    for stmt in macro_sql():
        c.execute(stmt)
    assert c.execute("SELECT scisql_s2PtInCircle(10, 0, 10.5, 0, 1), qe_in_polygon(0.5, 0.5, 0, 0, 1, 0, 1, 1, 0, 1)"
                     ).fetchall() == [(1, True)]
    assert all(s.startswith("CREATE OR REPLACE TEMP MACRO ") for s in macro_sql())
    c.close()


def test_register_then_disable_external_access_and_lock():
    c = duckdb.connect()
    register(c)
    c.execute("SET enable_external_access = false")
    c.execute("SET lock_configuration = true")
    row = c.execute("SELECT scisql_angSep(0, 0, 1, 0), scisql_s2PtInBox(5, 5, 350, 0, 10, 10), "
                    "scisql_nanojanskyToAbMag(3630.780547701 * 1e9)").fetchall()[0]
    assert row[0] == pytest.approx(1.0) and row[1] == 1 and abs(row[2]) < 1e-9
    c.close()


def test_register_subset_for_sql():
    c = duckdb.connect()
    sql = "SELECT scisql_s2PtInCircle(ra, decl, 1, 2, 3) FROM Object WHERE qe_distance(ra, decl, 0, 0) < 1"
    register(c, sql=sql)
    assert c.execute("SELECT scisql_s2PtInCircle(1, 2, 1, 2.5, 1), qe_distance(0, 0, 0, 1)").fetchall() == [(1, 1.0)]
    with pytest.raises(duckdb.CatalogException):
        c.execute("SELECT scisql_s2PtInBox(1, 2, 0, 0, 3, 3)")
    assert len(sqlfuncs.needed_statements(sql)) < len(macro_sql()) // 4
    assert sqlfuncs.needed_statements("select 1") == []
    c.close()


def test_result_types(con):
    row = con.execute(
        "SELECT typeof(scisql_angSep(1, 2, 3, 4)), typeof(scisql_angSep(1, 0, 0, 0, 1, 0)), "
        "typeof(scisql_s2PtInBox(1, 2, 0, 0, 3, 3)), typeof(scisql_s2PtInCircle(1, 2, 1, 2, 1)), "
        "typeof(scisql_s2PtInEllipse(1, 2, 1, 2, 10, 5, 0)), "
        "typeof(scisql_s2PtInCPoly(0.5, 0.5, 0, 0, 1, 0, 1, 1)), typeof(scisql_fluxToAbMag(1e-20)), "
        "typeof(scisql_nanojanskyToAbMag(1)), typeof(qe_distance(1, 2, 3, 4)), typeof(qe_in_circle(1, 2, 1, 2, 1)), "
        "typeof(qe_in_range_box(1, 2, 0, 3, 0, 3)), typeof(qe_in_adql_box(1, 2, 1, 2, 1, 1)), "
        "typeof(qe_in_ellipse(1, 2, 1, 2, 1, 0.5, 0)), typeof(qe_in_polygon(0.5, 0.5, 0, 0, 1, 0, 1, 1))").fetchall()[0]
    assert row == ("DOUBLE", "DOUBLE", "INTEGER", "INTEGER", "INTEGER", "INTEGER", "DOUBLE", "DOUBLE", "DOUBLE",
                   "BOOLEAN", "BOOLEAN", "BOOLEAN", "BOOLEAN", "BOOLEAN")


def test_integer_and_decimal_arguments(con):
    assert scalar(con, "scisql_s2PtInCircle(1, 2, 1, 2, 1)") == 1
    assert scalar(con, "scisql_s2PtInCircle(1.5, 2.5, 1.5, 2.5, 0)") == 1
    assert scalar(con, "scisql_s2PtInBox(5::BIGINT, 5::SMALLINT, 350, 0, 10, 10)") == 1
    assert scalar(con, "scisql_angSep(10.25::DECIMAL(9,4), 0, 10.75::DECIMAL(9,4), 0)") == pytest.approx(0.5, abs=1e-14)
    assert scalar(con, "scisql_s2PtInCPoly(0.5::FLOAT, 0.5, 0, 0, 1, 0, 1, 1, 0, 1)") == 1


# ----------------------------------------------------------------------------- angular separation


def test_angsep_random_vs_geometry_and_astropy(con):
    rng = np.random.default_rng(1)
    ra1, dec1 = sphere_points(rng, 20000)
    ra2, dec2 = sphere_points(rng, 20000)
    got, nulls = evaluate(con, "scisql_angSep(ra1, dec1, ra2, dec2)", ra1=ra1, dec1=dec1, ra2=ra2, dec2=dec2)
    assert not nulls.any()
    np.testing.assert_allclose(got, angular_separation(ra1, dec1, ra2, dec2), rtol=1e-13, atol=1e-13)
    sep = SkyCoord(ra1 * u.deg, dec1 * u.deg).separation(SkyCoord(ra2 * u.deg, dec2 * u.deg)).deg
    np.testing.assert_allclose(got, sep, rtol=1e-12, atol=1e-12)
    dist, _ = evaluate(con, "qe_distance(ra1, dec1, ra2, dec2)", ra1=ra1, dec1=dec1, ra2=ra2, dec2=dec2)
    np.testing.assert_array_equal(dist, got)


def _separation_longdouble(ra1, dec1, ra2, dec2):
    """Haversine in extended precision, differences taken in degrees first."""
    ld = np.longdouble
    rad = np.arctan(ld(1)) * 4 / 180
    ra1, dec1, ra2, dec2 = (np.asarray(x, dtype=ld) for x in (ra1, dec1, ra2, dec2))
    h = np.sin((dec2 - dec1) * rad / 2) ** 2 + np.cos(dec1 * rad) * np.cos(dec2 * rad) * np.sin((ra2 - ra1) * rad / 2) ** 2
    return 2 * np.arcsin(np.sqrt(h)) / rad


def test_angsep_tiny_separations_keep_relative_precision(con):
    if np.finfo(np.longdouble).eps > 1e-18:
        pytest.skip("needs extended-precision long double for the reference")
    rng = np.random.default_rng(2)
    n = 5000
    ra = rng.uniform(0, 360, n)
    dec = rng.uniform(-89.0, 89.0, n)
    delta = 10.0 ** rng.uniform(-12, -3, n)  # degrees
    bearing = rng.uniform(0, 2 * np.pi, n)
    ra2 = ra + delta * np.sin(bearing) / np.cos(np.radians(dec))
    dec2 = dec + delta * np.cos(bearing)
    ra2[:100] -= 360.0  # across RA 0/360
    got, _ = evaluate(con, "scisql_angSep(ra1, dec1, ra2, dec2)", ra1=ra, dec1=dec, ra2=ra2, dec2=dec2)
    want = _separation_longdouble(ra, dec, np.asarray(ra2, np.longdouble) + np.where(np.arange(n) < 100, 360, 0), dec2)
    np.testing.assert_allclose(got[100:], want[100:].astype(float), rtol=1e-14)
    # Across RA 0/360, ra2 - ra1 ~ -360 is itself rounded (ulp(360) = 5.7e-14).
    np.testing.assert_allclose(got[:100], want[:100].astype(float), rtol=1e-14, atol=6e-14)
    # qengine.geometry's (and astropy's) Vincenty form is accurate to ~1e-16 rad absolute only.
    np.testing.assert_allclose(got, angular_separation(ra, dec, ra2, dec2), rtol=1e-12, atol=1e-13)
    # Along the equator the separation is exactly the RA difference.
    d_ra = 10.0 ** rng.uniform(-12, 1, 1000)
    ra1 = rng.uniform(0, 300, 1000)
    got, _ = evaluate(con, "scisql_angSep(ra1, 0, ra2, 0)", ra1=ra1, ra2=ra1 + d_ra)
    np.testing.assert_allclose(got, (ra1 + d_ra) - ra1, rtol=1e-14)


def test_angsep_near_antipodes_and_poles(con):
    rng = np.random.default_rng(3)
    n = 2000
    ra = rng.uniform(0, 360, n)
    dec = rng.uniform(-89.9, 89.9, n)
    eps = 10.0 ** rng.uniform(-9, -2, n)
    # Antipode offset by eps along the meridian: separation exactly 180 - eps.
    ra2 = (ra + 180.0) % 360.0
    dec2 = -dec + np.where(dec > 0, eps, -eps)
    got, _ = evaluate(con, "scisql_angSep(ra1, dec1, ra2, dec2)", ra1=ra, dec1=dec, ra2=ra2, dec2=dec2)
    # dec + dec2 is exact (Sterbenz); the result itself is a double near 180 (ulp 2.8e-14).
    np.testing.assert_allclose(180.0 - got, np.abs(dec + dec2), rtol=1e-9, atol=6e-14)
    np.testing.assert_allclose(got, angular_separation(ra, dec, ra2, dec2), rtol=0, atol=1e-13)
    # Exactly antipodal, poles, RA 0/360, identical points.
    assert scalar(con, "scisql_angSep(10, 20, 190, -20)") == 180.0
    assert scalar(con, "scisql_angSep(0, 90, 0, -90)") == 180.0
    assert scalar(con, "scisql_angSep(123, 90, 321, 90)") == pytest.approx(0.0, abs=1e-14)  # cos(pi/2) != 0
    assert scalar(con, "scisql_angSep(0, 89, 180, 89)") == pytest.approx(2.0, abs=1e-13)
    assert scalar(con, "scisql_angSep(359.9999, 0, 0.0001, 0)") == pytest.approx(0.0002, rel=1e-9)
    assert scalar(con, "scisql_angSep(-0.0001, 0, 360.0001, 0)") == pytest.approx(0.0002, rel=1e-9)
    assert scalar(con, "scisql_angSep(12.5, -33.25, 12.5, -33.25)") == 0.0


@given(ra1=ras, dec1=decs, ra2=ras, dec2=decs)
@example(0.0, 90.0, 180.0, -90.0)
@example(0.0, 0.0, 360.0, 0.0)
@example(359.999999999, -89.999999, 0.0, -89.999999)
def test_angsep_hypothesis(con, ra1, dec1, ra2, dec2):
    a, b = f"{ra1!r}::DOUBLE, {dec1!r}::DOUBLE", f"{ra2!r}::DOUBLE, {dec2!r}::DOUBLE"
    got, back = con.execute(f"SELECT scisql_angSep({a}, {b}), scisql_angSep({b}, {a})").fetchall()[0]
    want = float(angular_separation(ra1, dec1, ra2, dec2))
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert 0.0 <= got <= 180.0
    assert back == pytest.approx(got, rel=1e-14, abs=1e-14)


def test_angsep_vector_form(con):
    rng = np.random.default_rng(4)
    v1 = rng.normal(size=(3000, 3)) * 10.0 ** rng.uniform(-3, 3, (3000, 1))
    v2 = rng.normal(size=(3000, 3))
    v2[:10] = v1[:10] * 2.5        # parallel
    v2[10:20] = -v1[10:20] * 0.5   # antiparallel
    got, nulls = evaluate(con, "scisql_angSep(x1, y1, z1, x2, y2, z2)",
                          x1=v1[:, 0], y1=v1[:, 1], z1=v1[:, 2], x2=v2[:, 0], y2=v2[:, 1], z2=v2[:, 2])
    want = np.degrees(np.arctan2(np.linalg.norm(np.cross(v1, v2), axis=1), np.einsum("ij,ij->i", v1, v2)))
    assert not nulls.any()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert scalar(con, "scisql_angSep(0, 0, 0, 0, 0, 0)") == 0.0
    assert scalar(con, "scisql_angSep(1, 0, 0, 0, 1, 0)") == pytest.approx(90.0)
    assert scalar(con, "scisql_angSep('nan'::DOUBLE, 0, 0, 0, 1, 0)") is None


@pytest.mark.parametrize("args", [
    "NULL, 0, 0, 0", "0, NULL, 0, 0", "0, 0, NULL, 0", "0, 0, 0, NULL",
    "'nan'::DOUBLE, 0, 0, 0", "0, 'inf'::DOUBLE, 0, 0", "0, 0, '-inf'::DOUBLE, 0", "0, 0, 0, 'nan'::DOUBLE",
    "0, 90.0000001, 0, 0", "0, 0, 0, -91",
    "NULL, 0, 0, 0, 1, 0", "1, 0, 0, 0, 1, NULL", "1, 0, 0, 'inf'::DOUBLE, 1, 0",
])
def test_angsep_null_and_invalid(con, args):
    assert scalar(con, f"scisql_angSep({args})") is None
    if args.count(",") == 3:
        assert scalar(con, f"qe_distance({args})") is None


# ----------------------------------------------------------------------------- boxes


def _box_cases(rng, k):
    """(lonMin, latMin, lonMax, latMax) rows: plain, wrapping, outside [0, 360], full RA."""
    lo = rng.uniform(0, 360, k)
    width = np.where(rng.random(k) < 0.2, 10.0 ** rng.uniform(-6, 0, k), rng.uniform(0, 300, k))
    hi = lo + width
    wrap = hi > 360.0
    hi = np.where(wrap & (rng.random(k) < 0.5), hi - 360.0, hi)  # half wrap as lonMax < lonMin
    kind = rng.integers(0, 10, k)
    lo = np.where(kind == 0, lo - 360.0, lo)                      # e.g. -10 .. 10
    hi = np.where(kind == 0, np.maximum(hi - 360.0, lo), hi)
    full = kind == 1
    lo = np.where(full, rng.uniform(-400, 400, k), lo)
    hi = np.where(full, lo + rng.uniform(360, 800, k), hi)
    d1, d2 = np.sort(np.degrees(np.arcsin(rng.uniform(-1, 1, (2, k)))), axis=0)
    polar = kind == 2
    d2 = np.where(polar, 90.0, d2)
    d1 = np.where(kind == 3, -90.0, d1)
    return lo, d1, hi, d2


def test_box_vs_geometry(con):
    rng = np.random.default_rng(5)
    k, m = 300, 200
    lo, d1, hi, d2 = _box_cases(rng, k)
    rows = {name: np.repeat(a, m) for name, a in (("lo", lo), ("d1", d1), ("hi", hi), ("d2", d2))}
    ra, dec = sphere_points(rng, k * m)
    # Points exactly on the edges and corners, at RA 0 and 360, at the poles.
    sel = rng.random(k * m)
    ra = np.where(sel < 0.1, rows["lo"], np.where(sel < 0.2, rows["hi"], ra))
    ra = np.where((sel > 0.2) & (sel < 0.25), 360.0, np.where((sel > 0.25) & (sel < 0.3), 0.0, ra))
    ra = np.where((sel > 0.3) & (sel < 0.35), ra - 360.0, ra)
    dec = np.where((sel > 0.35) & (sel < 0.45), rows["d1"], np.where((sel > 0.45) & (sel < 0.55), rows["d2"], dec))
    dec = np.where((sel > 0.55) & (sel < 0.6), 90.0, np.where((sel > 0.6) & (sel < 0.62), -90.0, dec))
    got, nulls = evaluate(con, "scisql_s2PtInBox(ra, dec, lo, d1, hi, d2)", ra=ra, dec=dec, **rows)
    want = np.concatenate([Box.from_qserv(lo[i], d1[i], hi[i], d2[i]).contains(ra[i * m:(i + 1) * m],
                                                                                 dec[i * m:(i + 1) * m])
                           for i in range(k)])
    assert_same_membership(got, nulls, want, np.zeros_like(want), "s2PtInBox")
    assert 0.05 < want.mean() < 0.95
    qe, qnulls = evaluate(con, "qe_in_range_box(ra, dec, lo, hi, d1, d2)", ra=ra, dec=dec, **rows)
    assert_same_membership(qe, qnulls, want, np.zeros_like(want), "qe_in_range_box")


def test_box_literal_edges_and_wrap(con):
    cases = {
        "scisql_s2PtInBox(350, 5, 350, 0, 10, 10)": 1,       # on lonMin
        "scisql_s2PtInBox(10, 10, 350, 0, 10, 10)": 1,       # corner
        "scisql_s2PtInBox(0, 0, 350, 0, 10, 10)": 1,
        "scisql_s2PtInBox(360, 0, 350, 0, 10, 10)": 1,       # RA 360 = 0
        "scisql_s2PtInBox(-5, 0, 350, 0, 10, 10)": 1,        # RA -5 = 355
        "scisql_s2PtInBox(180, 5, 350, 0, 10, 10)": 0,
        "scisql_s2PtInBox(10.000000001, 5, 350, 0, 10, 10)": 0,
        "scisql_s2PtInBox(5, -0.000000001, 350, 0, 10, 10)": 0,
        "scisql_s2PtInBox(5, 5, -10, 0, 10, 10)": 1,         # lonMin < 0, not inverted
        "scisql_s2PtInBox(355, 5, 350, 0, 370, 10)": 1,      # lonMax > 360
        "scisql_s2PtInBox(123, 5, -400, 0, -40, 10)": 1,     # >= 360 wide: all RA
        "scisql_s2PtInBox(123, 89, 0, 80, 360, 90)": 1,
        "scisql_s2PtInBox(5, 5, 0, 10, 10, 0)": 0,           # latMin > latMax: empty
        "scisql_s2PtInBox(5, 90, 0, 90, 10, 90)": 1,         # degenerate at the pole
        "scisql_s2PtInBox(NULL, 5, 0, 0, 10, 10)": 0,        # sciSQL: NULL argument -> 0
        "scisql_s2PtInBox(5, 5, 0, 0, 10, NULL)": 0,
        "scisql_s2PtInBox(5, 5, 10, 0, -10, 10)": None,      # inverted with lonMax < 0
        "scisql_s2PtInBox(5, 5, 370, 0, 10, 10)": None,      # inverted with lonMin > 360
        "scisql_s2PtInBox(5, 91, 0, 0, 10, 10)": None,
        "scisql_s2PtInBox(5, 5, 0, -91, 10, 10)": None,
        "scisql_s2PtInBox('nan'::DOUBLE, 5, 0, 0, 10, 10)": None,
        "scisql_s2PtInBox(5, 5, 0, 0, 'inf'::DOUBLE, 10)": None,
        "qe_in_range_box(5, 5, 350, 10, 0, 10)": True,
        "qe_in_range_box(180, 5, 350, 10, 0, 10)": False,
        "qe_in_range_box(NULL, 5, 350, 10, 0, 10)": None,
        "qe_in_range_box(5, 5, 350, 10, 0, NULL)": None,
        "qe_in_range_box(5, 5, 0, 10, 10, 0)": False,
    }
    for sql, want in cases.items():
        assert scalar(con, sql) == want, sql


@given(ra=ras, dec=decs, lo=st.floats(-720, 720), hi=st.floats(-720, 720), d1=decs, d2=decs)
def test_box_hypothesis(con, ra, dec, lo, hi, d1, d2):
    got = scalar(con, f"scisql_s2PtInBox({ra!r}::DOUBLE, {dec!r}::DOUBLE, {lo!r}::DOUBLE, {d1!r}::DOUBLE, "
                      f"{hi!r}::DOUBLE, {d2!r}::DOUBLE)")
    if hi < lo and (hi < 0 or lo > 360):
        assert got is None
    elif d1 > d2:
        assert got == 0
    else:
        assert got == int(Box.from_qserv(lo, d1, hi, d2).contains(ra, dec))


# ----------------------------------------------------------------------------- circles


def test_circle_vs_geometry_and_astropy(con):
    rng = np.random.default_rng(6)
    k, m = 300, 200
    ra0, dec0 = sphere_points(rng, k)
    dec0[:10] = 90.0
    dec0[10:20] = -90.0
    ra0[20:40] = rng.choice([0.0, 359.9999999, 0.0000001], 20)
    radius = 10.0 ** rng.uniform(-6, np.log10(180.0), k)
    radius[40:45] = 180.0
    pts = [offset_points(rng, ra0[i], dec0[i], 1.6 * radius[i], m // 2) for i in range(k)]
    ra = np.concatenate([np.concatenate([p[0], sphere_points(rng, m - m // 2)[0]]) for p in pts])
    dec = np.concatenate([np.concatenate([p[1], sphere_points(rng, m - m // 2)[1]]) for p in pts])
    rows = {"ra0": np.repeat(ra0, m), "dec0": np.repeat(dec0, m), "r": np.repeat(radius, m)}
    got, nulls = evaluate(con, "scisql_s2PtInCircle(ra, dec, ra0, dec0, r)", ra=ra, dec=dec, **rows)
    want = np.concatenate([Circle(ra0[i], dec0[i], radius[i]).contains(ra[i * m:(i + 1) * m], dec[i * m:(i + 1) * m])
                           for i in range(k)])
    sep = angular_separation(ra, dec, rows["ra0"], rows["dec0"])
    near = np.abs(sep - rows["r"]) <= BOUNDARY_TOL_DEG
    assert_same_membership(got, nulls, want, near, "s2PtInCircle")
    assert 0.2 < want.mean() < 0.8
    astro = SkyCoord(ra * u.deg, dec * u.deg).separation(SkyCoord(rows["ra0"] * u.deg, rows["dec0"] * u.deg)).deg
    assert_same_membership(got, nulls, astro <= rows["r"], near, "s2PtInCircle vs astropy")
    qe, qnulls = evaluate(con, "qe_in_circle(ra, dec, ra0, dec0, r)", ra=ra, dec=dec, **rows)
    assert_same_membership(qe, qnulls, got.astype(bool), np.zeros_like(near), "qe_in_circle")


def test_circle_literal(con):
    # A literal circle, as queries write it, on the points of a small box around it.
    rng = np.random.default_rng(7)
    ra, dec = offset_points(rng, 359.99, -45.0, 0.02, 20000)
    got, nulls = evaluate(con, "scisql_s2PtInCircle(ra, dec, 359.99, -45.0, 0.01)", ra=ra, dec=dec)
    want = Circle(359.99, -45.0, 0.01).contains(ra, dec)
    near = np.abs(angular_separation(ra, dec, 359.99, -45.0) - 0.01) <= BOUNDARY_TOL_DEG
    assert_same_membership(got, nulls, want, near, "literal circle")
    cases = {
        "scisql_s2PtInCircle(0, 0, 0, 0, 0)": 1,               # radius 0: the centre only
        "scisql_s2PtInCircle(0, 1e-12, 0, 0, 0)": 0,
        "scisql_s2PtInCircle(0, -90, 123, 90, 180)": 1,
        "scisql_s2PtInCircle(17, 89.5, 197, 89.5, 1.0000001)": 1,  # across the pole
        "scisql_s2PtInCircle(17, 89.5, 197, 89.5, 0.9999999)": 0,
        "scisql_s2PtInCircle(NULL, 0, 0, 0, 1)": 0,
        "scisql_s2PtInCircle(0, 0, 0, 0, NULL)": 0,
        "scisql_s2PtInCircle(0, 0, 0, 0, -1)": None,
        "scisql_s2PtInCircle(0, 0, 0, 0, 180.5)": None,
        "scisql_s2PtInCircle(0, 0, 0, 91, 1)": None,
        "scisql_s2PtInCircle(0, 0, 'nan'::DOUBLE, 0, 1)": None,
        "scisql_s2PtInCircle(0, 0, 0, 0, 'nan'::DOUBLE)": None,
        "qe_in_circle(0, 0, 0.5, 0, 1)": True,
        "qe_in_circle(0, 0, 1.5, 0, 1)": False,
        "qe_in_circle(NULL, 0, 0, 0, 1)": None,
        "qe_in_circle(0, 0, 0, 0, -1)": None,
    }
    for sql, want in cases.items():
        assert scalar(con, sql) == want, sql


@given(ra=ras, dec=decs, ra0=ras, dec0=decs, r=st.floats(1e-9, 180.0))
def test_circle_hypothesis(con, ra, dec, ra0, dec0, r):
    got = scalar(con, f"scisql_s2PtInCircle({ra!r}::DOUBLE, {dec!r}::DOUBLE, {ra0!r}::DOUBLE, {dec0!r}::DOUBLE, "
                      f"{r!r}::DOUBLE)")
    if abs(float(angular_separation(ra, dec, ra0, dec0)) - r) > BOUNDARY_TOL_DEG:
        assert got == int(Circle(ra0, dec0, r).contains(ra, dec))


# ----------------------------------------------------------------------------- ellipses


def test_ellipse_vs_geometry(con):
    rng = np.random.default_rng(8)
    k, m = 300, 200
    ra0, dec0 = sphere_points(rng, k)
    dec0[:8] = rng.choice([90.0, -90.0, 89.99999, -89.9999], 8)
    ra0[8:20] = rng.choice([0.0, 359.9999999, 1e-9], 12)
    major = 10.0 ** rng.uniform(-3, np.log10(36000.0), k)
    major[20:25] = 35999.9  # (36000 itself is in test_ellipse_literal_and_invalid)
    minor = major * 10.0 ** rng.uniform(-3, 0, k)  # thin ellipses too
    minor[25:30] = major[25:30]                    # circles
    pa = rng.uniform(-360, 360, k)
    ra_l, dec_l = [], []
    for i in range(k):
        r, d = ellipse_points(rng, ra0[i], dec0[i], major[i], minor[i], pa[i], m - 20)
        # and the antipodal region, which sciSQL's bare orthographic test would accept
        ar, ad = offset_points(rng, (ra0[i] + 180.0) % 360.0, -dec0[i], 1.3 * major[i] / 3600.0, 20)
        ra_l.append(np.concatenate([r, ar]))
        dec_l.append(np.concatenate([d, ad]))
    ra, dec = np.concatenate(ra_l), np.concatenate(dec_l)
    rows = {"ra0": np.repeat(ra0, m), "dec0": np.repeat(dec0, m), "a": np.repeat(major, m),
            "b": np.repeat(minor, m), "pa": np.repeat(pa, m)}
    got, nulls = evaluate(con, "scisql_s2PtInEllipse(ra, dec, ra0, dec0, a, b, pa)", ra=ra, dec=dec, **rows)
    want = np.zeros(k * m, dtype=bool)
    allowed = np.zeros(k * m, dtype=bool)
    for i in range(k):
        s = slice(i * m, (i + 1) * m)
        want[s] = Ellipse(ra0[i], dec0[i], major[i], minor[i], pa[i]).contains(ra[s], dec[s])
        grown = Ellipse(ra0[i], dec0[i], major[i] * (1 + 1e-9), minor[i] * (1 + 1e-9), pa[i]).contains(ra[s], dec[s])
        shrunk = Ellipse(ra0[i], dec0[i], major[i] * (1 - 1e-9), minor[i] * (1 - 1e-9), pa[i]).contains(ra[s], dec[s])
        allowed[s] = grown & ~shrunk
    assert_same_membership(got, nulls, want, allowed, "s2PtInEllipse")
    assert 0.3 < want.mean() < 0.6
    antipodal = (np.arange(k * m) % m) >= m - 20
    assert not got[antipodal].any()
    qe, qnulls = evaluate(con, "qe_in_ellipse(ra, dec, ra0, dec0, a / 3600.0, b / 3600.0, pa)",
                          ra=ra, dec=dec, **rows)
    assert_same_membership(qe, qnulls, want, allowed, "qe_in_ellipse")


def test_ellipse_literal_and_invalid(con):
    # A 10 x 5 arcsec ellipse, major axis east-west (position angle 90).
    assert scalar(con, "scisql_s2PtInEllipse(0, 0, 0, 0, 10, 5, 90)") == 1
    assert scalar(con, "scisql_s2PtInEllipse(9.9 / 3600, 0, 0, 0, 10, 5, 90)") == 1
    assert scalar(con, "scisql_s2PtInEllipse(0, 4.9 / 3600, 0, 0, 10, 5, 90)") == 1
    assert scalar(con, "scisql_s2PtInEllipse(0, 5.1 / 3600, 0, 0, 10, 5, 90)") == 0
    assert scalar(con, "scisql_s2PtInEllipse(0, 9.9 / 3600, 0, 0, 10, 5, 0)") == 1  # north-south
    assert scalar(con, "scisql_s2PtInEllipse(180, 0, 0, 0, 10, 5, 90)") == 0       # antipode
    assert scalar(con, "scisql_s2PtInEllipse(359.99999, 0, 0.00001, 0, 100, 50, 90)") == 1  # RA wrap
    assert scalar(con, "scisql_s2PtInEllipse(0, 0, 0, 0, 10, 0, 90)") == 0         # minor 0: empty
    assert scalar(con, "scisql_s2PtInEllipse(0, 90, 45, 90, 10, 5, 0)") == 1       # at the pole
    for args in ["NULL, 0, 0, 0, 10, 5, 90", "0, 0, 0, 0, 10, 5, NULL", "0, 0, 0, NULL, 10, 5, 90"]:
        assert scalar(con, f"scisql_s2PtInEllipse({args})") == 0
        assert scalar(con, f"qe_in_ellipse({args})") is None
    for args in ["0, 0, 0, 0, 10, 11, 90", "0, 0, 0, 0, 10, -1, 90", "0, 0, 0, 0, 36001, 5, 90",
                 "0, 91, 0, 0, 10, 5, 90", "0, 0, 0, -91, 10, 5, 90", "0, 0, 0, 0, 10, 5, 'inf'::DOUBLE",
                 "'nan'::DOUBLE, 0, 0, 0, 10, 5, 90", "0, 0, 0, 0, 'nan'::DOUBLE, 5, 90"]:
        assert scalar(con, f"scisql_s2PtInEllipse({args})") is None, args
    assert scalar(con, "qe_in_ellipse(0, 0, 0, 0, 10.5, 5, 90)") is None             # > 10 degrees
    assert scalar(con, "qe_in_ellipse(0, 1.9, 0, 0, 2, 1, 0)") is True


# ----------------------------------------------------------------------------- polygons


def _convex_polygon(rng, n, ra0, dec0, radius):
    """n vertices on a circle of `radius` degrees around (ra0, dec0), counter-clockwise."""
    while True:
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        gaps = np.diff(np.concatenate([ang, [ang[0] + 2 * np.pi]]))
        if gaps.min() > 1e-2:
            break
    c, north, east = _basis(ra0, dec0)
    r = math.radians(radius)
    v = (math.cos(r) * c[None, :] + math.sin(r) * (np.cos(ang)[:, None] * east[None, :]
                                                    + np.sin(ang)[:, None] * north[None, :]))
    return np.stack(_radec(v), axis=-1)


_LD_RAD = np.arctan(np.longdouble(1)) / 45


def _side_ld(ra, dec, ra1, dec1, ra2, dec2):
    """p . (v1 x v2) in extended precision, from longitude differences."""
    ra, dec, ra1, dec1, ra2, dec2 = (np.asarray(x, dtype=np.longdouble) for x in (ra, dec, ra1, dec1, ra2, dec2))
    s, c = np.sin, np.cos
    r = _LD_RAD
    return (s(dec * r) * c(dec1 * r) * c(dec2 * r) * s((ra2 - ra1) * r)
            + c(dec * r) * (c(dec1 * r) * s(dec2 * r) * s((ra1 - ra) * r) + s(dec1 * r) * c(dec2 * r) * s((ra - ra2) * r)))


def _polygon_ld(verts, ra, dec):
    """Extended-precision oracle: (inside, angular distance in radians to the nearest edge circle)."""
    n = len(verts)
    a, b = verts, np.roll(verts, -1, axis=0)
    orient = sum(_side_ld(verts[k, 0], verts[k, 1], a[0, 0], a[0, 1], b[0, 0], b[0, 1]) for k in range(2, n))
    sign = -1 if orient < 0 else 1
    sides = np.stack([_side_ld(ra, dec, a[i, 0], a[i, 1], b[i, 0], b[i, 1]) for i in range(n)], axis=-1)
    # |v1 x v2| = sin of the edge length
    h = (np.sin((np.asarray(b[:, 1], np.longdouble) - a[:, 1]) * _LD_RAD / 2) ** 2
         + np.cos(np.asarray(a[:, 1], np.longdouble) * _LD_RAD) * np.cos(np.asarray(b[:, 1], np.longdouble) * _LD_RAD)
         * np.sin((np.asarray(b[:, 0], np.longdouble) - a[:, 0]) * _LD_RAD / 2) ** 2)
    length = 2 * np.arcsin(np.sqrt(h))
    dist = np.abs(sides) / np.sin(length)
    return (sign * sides >= 0).all(axis=-1), dist.min(axis=-1).astype(float), float(length.min())


def _polygon_expectations(verts, ra, dec):
    """(geometry answer, where geometry may differ, extended answer, where it may differ)."""
    inside_ld, dist, min_edge = _polygon_ld(verts, ra, dec)
    # qengine.geometry works with unit vectors, whose rounding (1e-16) tilts the
    # normal of an edge of length L by ~1e-16 / L. The macros work with longitude
    # differences, exact for nearby longitudes; across RA 0/360 these are ~360
    # and rounded (ulp 1e-15 rad), which tilts an edge by ~1e-15 / L too.
    lon = np.concatenate([verts[:, 0], np.asarray(ra, dtype=float)])
    wraps = np.ptp(lon) > 180.0
    return (Polygon(verts).contains(ra, dec), dist < 1e-12 + 1e-15 / min_edge,
            inside_ld, dist < 1e-14 + (2e-15 / min_edge if wraps else 0.0))


def _polygon_points(rng, verts, ra0, dec0, radius, m):
    r1, d1 = offset_points(rng, ra0, dec0, 1.5 * radius, m - 2 * len(verts) - 4)
    vec = unit_vectors(verts[:, 0], verts[:, 1])
    mid_r, mid_d = _radec(vec + np.roll(vec, -1, axis=0))  # edge midpoints
    ar, ad = (ra0 + 180.0) % 360.0, -dec0                # antipode of the centre
    ra = np.concatenate([r1, verts[:, 0], mid_r, [ar, ar, ra0, ra0]])
    dec = np.concatenate([d1, verts[:, 1], mid_d, [ad, ad, dec0, dec0]])
    return ra, dec


@pytest.mark.parametrize("n", [3, 4, 5, 6, 8, 13, 21, MAX_POLYGON_VERTICES])
def test_polygon_per_row_vertices_vs_geometry(con, n):
    rng = np.random.default_rng(100 + n)
    k, m = 12, 120
    cols = {f"lon{i}": np.empty(k * m) for i in range(1, n + 1)}
    cols.update({f"lat{i}": np.empty(k * m) for i in range(1, n + 1)})
    ra = np.empty(k * m)
    dec = np.empty(k * m)
    want, allowed, want_ld, allowed_ld = (np.empty(k * m, dtype=bool) for _ in range(4))
    for j in range(k):
        ra0, dec0 = (sphere_points(rng, 1)[0][0], sphere_points(rng, 1)[1][0])
        if j == 0:
            ra0, dec0 = 10.0, 89.9      # around the pole
        if j == 1:
            ra0 = 0.0                   # across RA 0
        radius = 10.0 ** rng.uniform(-4, math.log10(60.0))
        verts = _convex_polygon(rng, n, ra0, dec0, radius)
        if j % 2:
            verts = verts[::-1]         # clockwise
        s = slice(j * m, (j + 1) * m)
        ra[s], dec[s] = _polygon_points(rng, verts, ra0, dec0, radius, m)
        for i in range(n):
            cols[f"lon{i + 1}"][s] = verts[i, 0]
            cols[f"lat{i + 1}"][s] = verts[i, 1]
        want[s], allowed[s], want_ld[s], allowed_ld[s] = _polygon_expectations(verts, ra[s], dec[s])
    args = ", ".join(f"lon{i}, lat{i}" for i in range(1, n + 1))
    got, nulls = evaluate(con, f"scisql_s2PtInCPoly(ra, dec, {args})", ra=ra, dec=dec, **cols)
    assert_same_membership(got, nulls, want, allowed, f"s2PtInCPoly n={n}")
    assert_same_membership(got, nulls, want_ld, allowed_ld, f"s2PtInCPoly n={n} vs extended precision")
    assert 0.05 < want.mean() < 0.9


@pytest.mark.parametrize("n", range(3, MAX_POLYGON_VERTICES + 1))
def test_polygon_every_vertex_count(con, n):
    """Each overload, with literal vertices (the usual form), both orders and both names."""
    rng = np.random.default_rng(200 + n)
    ra0, dec0 = sphere_points(rng, 1)
    radius = 10.0 ** rng.uniform(-3, 1.5)
    verts = _convex_polygon(rng, n, ra0[0], dec0[0], radius)
    ra, dec = _polygon_points(rng, verts, ra0[0], dec0[0], radius, 300)
    want, allowed, want_ld, allowed_ld = _polygon_expectations(verts, ra, dec)
    order = verts if n % 2 else verts[::-1]
    args = ", ".join(f"{float(lon)!r}, {float(lat)!r}" for lon, lat in order)
    got, nulls = evaluate(con, f"scisql_s2PtInCPoly(ra, dec, {args})", ra=ra, dec=dec)
    assert_same_membership(got, nulls, want, allowed, f"s2PtInCPoly n={n}")
    assert_same_membership(got, nulls, want_ld, allowed_ld, f"s2PtInCPoly n={n} vs extended precision")
    qe, qnulls = evaluate(con, f"qe_in_polygon(ra, dec, {args})", ra=ra, dec=dec)
    assert_same_membership(qe, qnulls, got.astype(bool), np.zeros_like(allowed), f"qe_in_polygon n={n}")


@pytest.mark.parametrize("n,ra0,dec0,radius", [(3, 200.0, -30.0, 1.0), (4, 0.0, 0.0, 1e-4), (7, 359.5, 60.0, 20.0),
                                               (12, 45.0, -89.5, 2.0), (MAX_POLYGON_VERTICES, 123.0, 10.0, 0.5)])
def test_polygon_literal_vertices(con, n, ra0, dec0, radius):
    rng = np.random.default_rng(n)
    verts = _convex_polygon(rng, n, ra0, dec0, radius)
    ra, dec = _polygon_points(rng, verts, ra0, dec0, radius, 20000)
    want, allowed, want_ld, allowed_ld = _polygon_expectations(verts, ra, dec)
    for order in (verts, verts[::-1]):
        args = ", ".join(f"{float(lon)!r}, {float(lat)!r}" for lon, lat in order)
        got, nulls = evaluate(con, f"scisql_s2PtInCPoly(ra, dec, {args})", ra=ra, dec=dec)
        assert_same_membership(got, nulls, want, allowed, f"literal polygon n={n}")
        assert_same_membership(got, nulls, want_ld, allowed_ld, f"literal polygon n={n} vs extended precision")


def test_polygon_edges_and_invalid(con):
    square = "0, 0, 1, 0, 1, 1, 0, 1"
    cw = "0, 1, 1, 1, 1, 0, 0, 0"
    for verts in (square, cw):
        assert scalar(con, f"scisql_s2PtInCPoly(0.5, 0.5, {verts})") == 1
        assert scalar(con, f"scisql_s2PtInCPoly(0.5, 0, {verts})") == 1      # on the equator edge
        assert scalar(con, f"scisql_s2PtInCPoly(0, 0.5, {verts})") == 1      # on a meridian edge
        assert scalar(con, f"scisql_s2PtInCPoly(1.5, 0.5, {verts})") == 0
        assert scalar(con, f"scisql_s2PtInCPoly(180.5, -0.5, {verts})") == 0  # antipode
        assert scalar(con, f"scisql_s2PtInCPoly(0.5, -1e-9, {verts})") == 0
    # Collinear extra vertex (on the first edge): sciSQL accepts it.
    assert scalar(con, "scisql_s2PtInCPoly(0.5, 0.5, 0, 0, 0.5, 0, 1, 0, 1, 1, 0, 1)") == 1
    assert scalar(con, "scisql_s2PtInCPoly(0.5, 0.5, 0, 1, 1, 1, 1, 0, 0.5, 0, 0, 0)") == 1
    # An edge rises above its vertices (the arc from (0, 60) to (90, 60) peaks at 67.79).
    assert scalar(con, "scisql_s2PtInCPoly(45, 67.7, 0, 60, 90, 60, 45, 40)") == 1
    assert scalar(con, "scisql_s2PtInCPoly(45, 67.9, 0, 60, 90, 60, 45, 40)") == 0
    assert scalar(con, "scisql_s2PtInCPoly(45, -67.7, 0, -60, 45, -40, 90, -60)") == 1
    # Around a pole (vertices far below it), across RA 0.
    assert scalar(con, "scisql_s2PtInCPoly(123, 89.9, 0, 85, 90, 85, 180, 85, 270, 85)") == 1
    assert scalar(con, "scisql_s2PtInCPoly(17, -89.99, 0, -50, 270, -50, 180, -50, 90, -50)") == 1
    assert scalar(con, "scisql_s2PtInCPoly(17, -62, 0, -50, 270, -50, 180, -50, 90, -50)") == 1
    assert scalar(con, "scisql_s2PtInCPoly(45, -59, 0, -50, 270, -50, 180, -50, 90, -50)") == 0  # arc dips to -59.3
    assert scalar(con, "scisql_s2PtInCPoly(45, -45, 0, -50, 270, -50, 180, -50, 90, -50)") == 0
    assert scalar(con, "scisql_s2PtInCPoly(359.9, 86, 350, 85, 10, 85, 10, 87, 350, 87)") == 1
    for args in [f"NULL, 0.5, {square}", f"0.5, NULL, {square}", "0.5, 0.5, 0, 0, 1, NULL, 1, 1, 0, 1"]:
        assert scalar(con, f"scisql_s2PtInCPoly({args})") == 0, args
        assert scalar(con, f"qe_in_polygon({args})") is None, args
    for args in [f"'nan'::DOUBLE, 0.5, {square}", f"0.5, 90.5, {square}", "0.5, 0.5, 0, 0, 1, 'inf'::DOUBLE, 1, 1",
                 "0.5, 0.5, 0, 0, 1, 0, 1, 91"]:
        assert scalar(con, f"scisql_s2PtInCPoly({args})") is None, args
        assert scalar(con, f"qe_in_polygon({args})") is None, args
    assert scalar(con, f"qe_in_polygon(0.5, 0.5, {square})") is True
    assert scalar(con, f"qe_in_polygon(1.5, 0.5, {cw})") is False
    with pytest.raises(duckdb.BinderException):
        con.execute("SELECT scisql_s2PtInCPoly(0, 0, 1, 1, 2, 2)")  # 2 vertices


# ----------------------------------------------------------------------------- ADQL BOX


def _adql_box_polygon(ra0, dec0, width, height):
    """ADQL BOX as its four great-circle corners (gnomonic +/-tan(w/2), +/-tan(h/2))."""
    c, north, east = _basis(ra0, dec0)
    tx, ty = math.tan(math.radians(width / 2)), math.tan(math.radians(height / 2))
    corners = [c + sx * tx * east + sy * ty * north for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    return np.stack(_radec(np.array(corners)), axis=-1)


def test_adql_box_vs_great_circle_polygon(con):
    rng = np.random.default_rng(9)
    k, m = 200, 200
    ra0, dec0 = sphere_points(rng, k)
    dec0[:5] = 90.0
    dec0[5:10] = -90.0
    ra0[10:20] = 0.0
    width = 10.0 ** rng.uniform(-5, math.log10(170.0), k)
    height = width * 10.0 ** rng.uniform(-2, 0.5, k)
    height = np.minimum(height, 170.0)
    ra_l, dec_l, want_l, allowed_l = [], [], [], []
    for i in range(k):
        verts = _adql_box_polygon(ra0[i], dec0[i], width[i], height[i])
        r, d = offset_points(rng, ra0[i], dec0[i], 0.9 * max(width[i], height[i]), m)
        ra_l.append(r)
        dec_l.append(d)
        w, a, _, _ = _polygon_expectations(verts, r, d)
        want_l.append(w)
        allowed_l.append(a)
    ra, dec = np.concatenate(ra_l), np.concatenate(dec_l)
    want, allowed = np.concatenate(want_l), np.concatenate(allowed_l)
    rows = {"ra0": np.repeat(ra0, m), "dec0": np.repeat(dec0, m), "w": np.repeat(width, m),
            "h": np.repeat(height, m)}
    got, nulls = evaluate(con, "qe_in_adql_box(ra, dec, ra0, dec0, w, h)", ra=ra, dec=dec, **rows)
    assert_same_membership(got, nulls, want, allowed, "qe_in_adql_box")
    assert 0.05 < want.mean() < 0.8


def test_adql_box_literal(con):
    # Sides are great circles: at the box's top corners a small-circle (RA/Dec) box
    # and the ADQL box differ.
    assert scalar(con, "qe_in_adql_box(10, 60, 10, 60, 20, 2)") is True
    assert scalar(con, "qe_in_adql_box(10, 60.999, 10, 60, 20, 2)") is True
    assert scalar(con, "qe_in_adql_box(19.9, 60.9, 10, 60, 20, 2)") is False  # inside the RA/Dec box
    assert scalar(con, "qe_in_adql_box(10, 0, 10, 60, 20, 2)") is False
    assert scalar(con, "qe_in_adql_box(0.5, 0.5, 359.9, -0.1, 2, 2)") is True   # across RA 0
    assert scalar(con, "qe_in_adql_box(45, 89.5, 0, 90, 2, 2)") is True        # centred on the pole
    assert scalar(con, "qe_in_adql_box(10, 10, 100, 0, 180, 180)") is True     # hemisphere
    assert scalar(con, "qe_in_adql_box(250, 10, 100, 0, 180, 180)") is False
    for args in ["NULL, 0, 0, 0, 1, 1", "0, 0, 0, 0, 1, NULL", "0, 0, 0, 0, -1, 1", "0, 0, 0, 0, 1, 181",
                 "0, 0, 0, 95, 1, 1", "'nan'::DOUBLE, 0, 0, 0, 1, 1"]:
        assert scalar(con, f"qe_in_adql_box({args})") is None, args


# ----------------------------------------------------------------------------- photometry


def test_photometry_vs_astropy(con):
    rng = np.random.default_rng(10)
    flux = 10.0 ** rng.uniform(-6, 12, 5000)  # nJy
    sigma = flux * 10.0 ** rng.uniform(-4, 1, flux.size)
    mag, nulls = evaluate(con, "scisql_nanojanskyToAbMag(f)", f=flux)
    assert not nulls.any()
    np.testing.assert_allclose(mag, (flux * u.nJy).to(u.ABmag).value, rtol=0, atol=1e-12)
    back, _ = evaluate(con, "scisql_abMagToNanojansky(m)", m=mag)
    np.testing.assert_allclose(back, (mag * u.ABmag).to(u.nJy).value, rtol=1e-12)
    np.testing.assert_allclose(back, flux, rtol=1e-11)
    erg = flux * 1e-32  # 1 nJy = 1e-32 erg/s/cm^2/Hz
    fnu = u.erg / u.s / u.cm**2 / u.Hz
    mag_erg, _ = evaluate(con, "scisql_fluxToAbMag(f)", f=erg)
    np.testing.assert_allclose(mag_erg, (erg * fnu).to(u.ABmag).value, rtol=0, atol=1e-12)
    np.testing.assert_allclose(mag_erg, mag, rtol=0, atol=1e-12)
    back_erg, _ = evaluate(con, "scisql_abMagToFlux(m)", m=mag_erg)
    np.testing.assert_allclose(back_erg, (mag_erg * u.ABmag).to(fnu).value, rtol=1e-12)
    # Errors: sciSQL's 2.5/ln(10) * sigma/flux and sigma * flux * ln(10)/2.5.
    k = 2.5 / math.log(10.0)
    for fn, f in (("scisql_nanojanskyToAbMagSigma", flux), ("scisql_fluxToAbMagSigma", erg)):
        s = sigma * (f / flux)
        got, _ = evaluate(con, f"{fn}(f, s)", f=f, s=s)
        np.testing.assert_allclose(got, k * s / f, rtol=1e-14)
        # ... which is the first-order propagation through astropy's magnitudes.
        small = (f * (1 + 1e-7) * u.nJy).to(u.ABmag).value - (f * u.nJy).to(u.ABmag).value
        np.testing.assert_allclose(k * 1e-7, -small, rtol=1e-6)
    msig = 10.0 ** rng.uniform(-4, 0, flux.size)
    for fn, scale in (("scisql_abMagToNanojanskySigma", 1.0), ("scisql_abMagToFluxSigma", 1e-32)):
        got, _ = evaluate(con, f"{fn}(m, s)", m=mag, s=msig)
        np.testing.assert_allclose(got, msig * back * scale / k, rtol=1e-12)


@pytest.mark.parametrize("sql", [
    "scisql_nanojanskyToAbMag(0)", "scisql_nanojanskyToAbMag(-1)", "scisql_nanojanskyToAbMag(NULL)",
    "scisql_nanojanskyToAbMag('nan'::DOUBLE)", "scisql_nanojanskyToAbMag('inf'::DOUBLE)",
    "scisql_fluxToAbMag(0)", "scisql_fluxToAbMag(-1e-30)", "scisql_fluxToAbMag(NULL)",
    "scisql_nanojanskyToAbMagSigma(0, 1)", "scisql_nanojanskyToAbMagSigma(-5, 1)",
    "scisql_nanojanskyToAbMagSigma(5, -1)", "scisql_nanojanskyToAbMagSigma(NULL, 1)",
    "scisql_nanojanskyToAbMagSigma(5, NULL)", "scisql_nanojanskyToAbMagSigma(1e-310, 1e10)",
    "scisql_fluxToAbMagSigma(0, 1)", "scisql_fluxToAbMagSigma(-1, 1)", "scisql_fluxToAbMagSigma(1, -1)",
    "scisql_fluxToAbMagSigma(1, 'nan'::DOUBLE)",
    "scisql_abMagToNanojansky(NULL)", "scisql_abMagToNanojansky('nan'::DOUBLE)", "scisql_abMagToNanojansky(-1000)",
    "scisql_abMagToFlux(NULL)", "scisql_abMagToFlux('-inf'::DOUBLE)", "scisql_abMagToFlux(-1000)",
    "scisql_abMagToNanojanskySigma(20, -0.1)", "scisql_abMagToNanojanskySigma(NULL, 0.1)",
    "scisql_abMagToNanojanskySigma(20, NULL)", "scisql_abMagToFluxSigma(20, -0.1)",
    "scisql_abMagToFluxSigma('inf'::DOUBLE, 0.1)",
])
def test_photometry_null_rules(con, sql):
    assert scalar(con, sql) is None


def test_photometry_values(con):
    assert scalar(con, "scisql_nanojanskyToAbMag(1)") == pytest.approx(31.4, abs=1e-13)
    assert scalar(con, "scisql_abMagToNanojansky(31.4)") == pytest.approx(1.0, rel=1e-14)
    assert scalar(con, "scisql_fluxToAbMag(1)") == pytest.approx(-48.6, abs=1e-13)
    assert scalar(con, "scisql_abMagToFlux(0)") == pytest.approx(3.630780547701013425e-20, rel=1e-14)
    assert scalar(con, "scisql_nanojanskyToAbMagSigma(100, 0)") == 0.0
    assert scalar(con, "scisql_abMagToNanojanskySigma(20, 0)") == 0.0
    assert scalar(con, "scisql_abMagToNanojansky(1000)") == pytest.approx(10 ** (-0.4 * (1000 - 31.4)))


@settings(max_examples=50)
@given(f=st.floats(1e-300, 1e300), s=st.floats(0, 1e300))
def test_photometry_hypothesis(con, f, s):
    mag = scalar(con, f"scisql_nanojanskyToAbMag({f!r}::DOUBLE)")
    assert mag == pytest.approx(-2.5 * math.log10(f) + 31.4, abs=1e-12)
    sig = scalar(con, f"scisql_nanojanskyToAbMagSigma({f!r}::DOUBLE, {s!r}::DOUBLE)")
    want = 2.5 / math.log(10) * s / f
    if math.isfinite(want):
        assert sig == pytest.approx(want, rel=1e-14)
    else:
        assert sig is None
