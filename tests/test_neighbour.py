"""Near-neighbour self-joins: the planner rule on its own (detection, radius check, the zone/bin
SQL against brute force in one DuckDB), then end to end through LocalCluster against one DuckDB
over the unpartitioned table and astropy's search_around_sky, on catalogues dense at chunk edges,
RA 0/360 and the poles."""
from __future__ import annotations

import math

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from czar.dialects import parse
from czar.planner import neighbour as nb
from qengine.errors import QueryError
from worker.sqlfuncs import register

S1 = nb.Side("o1", frozenset({"o1"}))
S2 = nb.Side("o2", frozenset({"o2"}))


def _find(sql: str, lang: str = "adql") -> nb.NeighbourJoin | None:
    return nb.find(parse(sql, lang), [S1, S2], "ra", "decl")


# ----------------------------------------------------------------------------- detection
@pytest.mark.parametrize("sql,lang,radius", [
    ("SELECT o1.id FROM Object o1, Object o2 WHERE scisql_angSep(o1.ra, o1.decl, o2.ra, o2.decl) < 0.1", "qserv", 0.1),
    ("SELECT o1.id FROM Object o1, Object o2 WHERE 0.2 >= scisql_angSep(o2.ra, o2.decl, o1.ra, o1.decl)", "qserv", 0.2),
    ("SELECT o1.id FROM Object o1, Object o2 WHERE scisql_s2PtInCircle(o1.ra, o1.decl, o2.ra, o2.decl, 1/60.) = 1 "
     "AND o1.mag < 20", "qserv", 1 / 60),
    ("SELECT o1.id FROM Object o1 JOIN Object o2 ON scisql_angSep(o1.ra, o1.decl, o2.ra, o2.decl) < 0.05", "qserv", 0.05),
    ("SELECT o1.id FROM Object o1, Object o2 WHERE 1 = CONTAINS(POINT('ICRS', o1.ra, o1.decl), "
     "CIRCLE('ICRS', o2.ra, o2.decl, 0.3))", "adql", 0.3),
    ("SELECT o1.id FROM Object o1, Object o2 WHERE CONTAINS(POINT('ICRS', o2.ra, o2.decl), "
     "CIRCLE('ICRS', o1.ra, o1.decl, 0.3)) = 1 AND o1.id <> o2.id", "adql", 0.3),
    ("SELECT o1.id FROM Object o1 JOIN Object o2 ON DISTANCE(POINT('ICRS', o1.ra, o1.decl), "
     "POINT('ICRS', o2.ra, o2.decl)) < 0.01 WHERE o1.mag < 20", "adql", 0.01),
    ("SELECT o1.id FROM Object o1, Object o2 WHERE INTERSECTS(CIRCLE('ICRS', o1.ra, o1.decl, 0.4), "
     "POINT('ICRS', o2.ra, o2.decl)) = 1", "adql", 0.4),
    # two distance predicates: the smaller radius bounds the pairs
    ("SELECT o1.id FROM Object o1, Object o2 WHERE DISTANCE(POINT('ICRS', o1.ra, o1.decl), POINT('ICRS', o2.ra, "
     "o2.decl)) < 0.3 AND DISTANCE(POINT('ICRS', o1.ra, o1.decl), POINT('ICRS', o2.ra, o2.decl)) <= 0.1", "adql", 0.1),
])
def test_finds_every_distance_form(sql, lang, radius):
    nj = _find(sql, lang)
    assert nj is not None and (nj.near, nj.far) == (0, 1)
    assert nj.radius == pytest.approx(radius, rel=1e-15)
    assert len(nj.predicates) >= 1


@pytest.mark.parametrize("sql", [
    "SELECT o1.id FROM Object o1, Object o2 WHERE o1.mag = o2.mag",
    # the wrong direction, a disjunction, columns that are not the positions, one side only
    "SELECT o1.id FROM Object o1, Object o2 WHERE DISTANCE(POINT('ICRS', o1.ra, o1.decl), POINT('ICRS', o2.ra, o2.decl)) > 0.1",
    "SELECT o1.id FROM Object o1, Object o2 WHERE DISTANCE(POINT('ICRS', o1.ra, o1.decl), POINT('ICRS', o2.ra, o2.decl)) "
    "< 0.1 OR o1.mag < 3",
    "SELECT o1.id FROM Object o1, Object o2 WHERE DISTANCE(POINT('ICRS', o1.ra, o1.mag), POINT('ICRS', o2.ra, o2.decl)) < 0.1",
    "SELECT o1.id FROM Object o1, Object o2 WHERE DISTANCE(POINT('ICRS', o1.ra, o1.decl), POINT('ICRS', o1.ra, o2.decl)) < 0.1",
    "SELECT o1.id FROM Object o1, Object o2 WHERE DISTANCE(POINT('ICRS', o1.ra, o1.decl), POINT('ICRS', 10, 20)) < 0.1",
])
def test_other_conditions_are_not_near_neighbour_joins(sql):
    assert _find(sql) is None


def test_refusals_are_clear():
    with pytest.raises(QueryError, match="radius must be a constant"):
        _find("SELECT o1.id FROM Object o1, Object o2 WHERE DISTANCE(POINT('ICRS', o1.ra, o1.decl), "
              "POINT('ICRS', o2.ra, o2.decl)) < o1.mag")
    with pytest.raises(QueryError, match="LEFT OUTER near-neighbour"):
        _find("SELECT o1.id FROM Object o1 LEFT JOIN Object o2 ON DISTANCE(POINT('ICRS', o1.ra, o1.decl), "
              "POINT('ICRS', o2.ra, o2.decl)) < 0.1")
    nj = _find("SELECT o1.id FROM Object o1, Object o2 WHERE DISTANCE(POINT('ICRS', o1.ra, o1.decl), "
               "POINT('ICRS', o2.ra, o2.decl)) < 0.6")
    nb.check_radius(nj, 0.6, "db.Object")
    with pytest.raises(QueryError, match=r"larger than the overlap of db.Object \(0.5 deg = 1800 arcsec\)"):
        nb.check_radius(nj, 0.5, "db.Object")


# ----------------------------------------------------------------------------- the grid
@given(r=st.floats(1e-7, 10.0))
def test_grid_zones_are_at_least_the_reach_high(r):
    g = nb.grid_for(r)
    assert g.reach >= r and g.height >= g.reach and g.zones >= 1
    for z in {0, g.zones // 3, g.zones - 1}:
        n = g.bins(z)
        assert n == 1 or (n >= 3 and 360.0 / n >= g.ra_reach(z))
    # a zone touching a pole has one bin
    assert g.bins(0) == 1 and g.bins(g.zones - 1) == 1


def _offset(ra: float, dec: float, dist: float, bearing: float) -> tuple[float, float]:
    """The position ``dist`` degrees from (ra, dec) along ``bearing`` (degrees east of north)."""
    d, b, p = math.radians(dist), math.radians(bearing), math.radians(dec)
    lat = math.asin(min(1.0, max(-1.0, math.sin(p) * math.cos(d) + math.cos(p) * math.sin(d) * math.cos(b))))
    lon = math.radians(ra) + math.atan2(math.sin(b) * math.sin(d) * math.cos(p),
                                         math.cos(d) - math.sin(p) * math.sin(lat))
    return math.degrees(lon) % 360.0, math.degrees(lat)


_CON = None


def _con() -> duckdb.DuckDBPyConnection:
    global _CON
    if _CON is None:
        _CON = duckdb.connect()
        register(_CON, persistent=True)  # cursors see them
    return _CON


def _zone_join_pairs(con, table: str, r: float, factor: int = 1) -> list[tuple[int, int]]:
    g = nb.grid_for(r, factor)
    sql = (f"SELECT o1.id, o2.id FROM ({nb.near_sql(table, 'ra', 'decl', g)}) AS o1 "
           f"JOIN ({nb.far_sql([table], 'ra', 'decl', g)}) AS o2 ON o1.chunkId = o2.chunkId AND o1.{nb.CELL} = o2.{nb.CELL} "
           f"WHERE scisql_angSep(o1.ra, o1.decl, o2.ra, o2.decl) < {r!r}")
    return sorted(con.execute(sql).fetchall())


def _brute_pairs(con, table: str, r: float) -> list[tuple[int, int]]:
    return sorted(con.execute(f"SELECT o1.id, o2.id FROM {table} o1, {table} o2 "
                              f"WHERE scisql_angSep(o1.ra, o1.decl, o2.ra, o2.decl) < {r!r}").fetchall())


# where bucketing is hardest: poles, RA 0/360, the equator, zone edges at any latitude
_lat = st.one_of(st.floats(-90, 90), st.sampled_from([90.0, -90.0, 89.9999, -89.9999, 0.0, 60.0, -75.0]),
                 st.floats(85, 90), st.floats(-90, -85))
_lon = st.one_of(st.floats(0, 360, exclude_max=True), st.sampled_from([0.0, 359.9999999, 180.0, 1e-9]),
                 st.floats(359.5, 360, exclude_max=True), st.floats(0, 0.5))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(ra=_lon, dec=_lat, r=st.sampled_from([1e-5, 5 / 3600, 0.01, 0.3, 1.0, 7.0]),
       frac=st.floats(0.0, 1.0), bearing=st.floats(0, 360), factor=st.sampled_from([1, 1, 3]))
def test_a_pair_within_the_radius_always_shares_a_cell(ra, dec, r, frac, bearing, factor):
    """Two positions closer than r, anywhere: the zone join finds the pair, in both orders, once."""
    ra2, dec2 = _offset(ra, dec, r * frac, bearing)
    t = pa.table({"id": [1, 2], "ra": [ra, ra2], "decl": [dec, dec2], "chunkId": pa.array([7, 7], pa.int32())})
    con = _con().cursor()
    con.register("pair", t)
    want = _brute_pairs(con, "pair", r)
    assert _zone_join_pairs(con, "pair", r, factor) == want
    # every far row's cells are distinct and at most 9
    g = nb.grid_for(r, factor)
    cells = con.execute(f"SELECT id, count(*), count(DISTINCT {nb.CELL}) FROM ({nb.far_sql(['pair'], 'ra', 'decl', g)}) "
                        "GROUP BY id").fetchall()
    assert all(n == d and 1 <= n <= 9 for _, n, d in cells)


def _clustered(rng: np.random.Generator, n: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """Uniform points plus tight groups at the poles, along RA 0/360 and at random places."""
    centres = [(0.0, 90.0), (123.0, -90.0), (0.0, 0.0), (359.99, -30.0), (0.01, 60.0), (200.0, 89.5)]
    centres += [(float(a), float(b)) for a, b in zip(rng.uniform(0, 360, 6), rng.uniform(-80, 80, 6))]
    ra, dec = list(rng.uniform(0, 360, n)), list(np.degrees(np.arcsin(rng.uniform(-1, 1, n))))
    for c_ra, c_dec in centres:
        for _ in range(n // 20):
            p = _offset(c_ra, c_dec, abs(rng.normal(0, spread)), rng.uniform(0, 360))
            ra.append(p[0])
            dec.append(p[1])
    return np.array(ra), np.array(dec)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), r=st.sampled_from([1e-4, 0.003, 0.05, 0.5]))
def test_zone_join_equals_brute_force_on_clustered_skies(seed, r):
    rng = np.random.default_rng(seed)
    ra, dec = _clustered(rng, 400, r)
    # a few exact duplicates and positions written as 360 and as 0
    ra = np.r_[ra, ra[:5], 360.0, 0.0, 360.0 - 1e-13]
    dec = np.r_[dec, dec[:5], 12.5, 12.5, 12.5]
    t = pa.table({"id": np.arange(ra.size), "ra": ra, "decl": dec,
                  "chunkId": pa.array(rng.integers(0, 2, ra.size) * 0 + 3, pa.int32())})
    con = _con().cursor()
    con.register("sky", t)
    want = _brute_pairs(con, "sky", r)
    assert len(want) > ra.size  # pairs beyond the self-pairs exist
    assert _zone_join_pairs(con, "sky", r) == want


def test_rows_without_a_position_never_pair():
    t = pa.table({"id": [1, 2, 3, 4], "ra": [10.0, None, float("nan"), 10.0], "decl": [5.0, 5.0, 5.0, float("inf")],
                  "chunkId": pa.array([1, 1, 1, 1], pa.int32())})
    con = _con().cursor()
    con.register("bad", t)
    assert _zone_join_pairs(con, "bad", 0.1) == _brute_pairs(con, "bad", 0.1) == [(1, 1)]


def test_rows_of_different_chunks_never_pair():
    t = pa.table({"id": [1, 2], "ra": [10.0, 10.0], "decl": [5.0, 5.0], "chunkId": pa.array([1, 2], pa.int32())})
    con = _con().cursor()
    con.register("two", t)
    assert _zone_join_pairs(con, "two", 0.1) == [(1, 1), (2, 2)]
