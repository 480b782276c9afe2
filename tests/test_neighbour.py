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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


def _zone_join_pairs(con, table: str, r: float, factor: int = 2) -> list[tuple[int, int]]:
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


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(ra=_lon, dec=_lat, r=st.sampled_from([1e-5, 5 / 3600, 0.01, 0.3, 1.0, 7.0]),
       frac=st.floats(0.0, 1.0), bearing=st.floats(0, 360), factor=st.sampled_from([1, 2, 3]))
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
@given(seed=st.integers(0, 10**6), r=st.sampled_from([1e-4, 0.003, 0.05, 0.5]), factor=st.sampled_from([1, 2, 3]))
def test_zone_join_equals_brute_force_on_clustered_skies(seed, r, factor):
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
    assert _zone_join_pairs(con, "sky", r, factor) == want


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


# ----------------------------------------------------------------------------- end to end
from tests.helpers import DB, OBJECT, PART, assert_same_rows, make_objects

T = f"{DB}.Object"
OVERLAP = PART.overlap


def _edge_objects(seed: int = 5) -> pa.Table:
    """make_objects (uniform, poles, RA 0/360, chunk edges and corners) plus tight groups of
    objects straddling chunk corners, RA 0/360 and the poles, so that pairs cross every kind of edge."""
    from qengine.chunker import Chunker

    base = make_objects(800, seed=seed)
    rng = np.random.default_rng(seed)
    ch = Chunker(PART.num_stripes, PART.num_sub_stripes, PART.overlap)
    b = ch.chunk_bounds(rng.choice(ch.all_chunks(), 40, replace=False))
    centres = [(0.0, 90.0), (77.0, -90.0), (0.0, 0.0), (0.0, -45.5), (359.95, 30.0), (180.0, 89.7), (10.0, -89.6)]
    centres += list(zip(b.ra_min.tolist(), b.dec_min.tolist())) + list(zip(b.ra_max.tolist(), b.dec_max.tolist()))[:10]
    ra, dec = [], []
    for c_ra, c_dec in centres:
        for _ in range(30):
            p = _offset(c_ra, c_dec, abs(rng.normal(0, 0.25)), rng.uniform(0, 360))
            ra.append(p[0])
            dec.append(p[1])
    m = len(ra)
    extra = pa.table({
        "objectId": pa.array(np.arange(10**6, 10**6 + m, dtype=np.int64)),
        "ra": np.array(ra), "decl": np.array(dec),
        "mag": pa.array(rng.uniform(15, 25, m).astype(np.float32)),
        "name": pa.array([f"grp{i}" for i in range(m)]),
    })
    return pa.concat_tables([base, extra])


@pytest.fixture(scope="module")
def nn_cluster(tmp_path_factory):
    import pyarrow.parquet as pq

    from czar.local import LocalCluster
    from partitioner.ingest import IngestOptions, ingest

    root = tmp_path_factory.mktemp("nn") / "root"
    root.mkdir()
    objs = _edge_objects()
    path = root.parent / "Object.parquet"
    pq.write_table(objs, path)
    ingest(root, DB, OBJECT, [path], partitioning=PART,
           options=IngestOptions(progress=False, rows_per_file=1500, row_group_rows=500))
    with LocalCluster(root, workers=2) as qe:
        yield qe, objs


@pytest.fixture(scope="module")
def nn_oracle(nn_cluster):
    _, objs = nn_cluster
    con = duckdb.connect()
    register(con, persistent=True)
    con.execute(f'CREATE SCHEMA "{DB}"')
    con.register("__objs", objs)
    con.execute(f'CREATE TABLE "{DB}"."Object" AS SELECT * FROM __objs')  # cursors see tables, not registrations
    con.unregister("__objs")
    return con


def _same(got: pa.Table, want: pa.Table, ordered: bool) -> None:
    assert_same_rows(got, want, ordered)


def nn_check(cluster, oracle, sql: str, lang: str, ordered: bool = False, oracle_sql: str | None = None) -> pa.Table:
    qe, _ = cluster
    got = qe.query(sql, lang=lang)
    from czar.dialects import to_duckdb
    want = oracle.cursor().sql(oracle_sql or to_duckdb(parse(sql, lang))).to_arrow_table()
    _same(got, want, ordered)
    return got


def _dist(lang: str, form: str, r: float, a: str = "o1", b: str = "o2") -> str:
    if lang == "qserv":
        if form == "circle":
            return f"scisql_s2PtInCircle({a}.ra, {a}.decl, {b}.ra, {b}.decl, {r}) = 1"
        return f"scisql_angSep({a}.ra, {a}.decl, {b}.ra, {b}.decl) < {r}"
    if form == "circle":
        return f"1 = CONTAINS(POINT('ICRS', {a}.ra, {a}.decl), CIRCLE('ICRS', {b}.ra, {b}.decl, {r}))"
    return f"DISTANCE(POINT('ICRS', {a}.ra, {a}.decl), POINT('ICRS', {b}.ra, {b}.decl)) < {r}"


_SEP = {"qserv": "scisql_angSep(o1.ra, o1.decl, o2.ra, o2.decl)",
        "adql": "DISTANCE(POINT('ICRS', o1.ra, o1.decl), POINT('ICRS', o2.ra, o2.decl))"}


@st.composite
def nn_queries(draw):
    lang = draw(st.sampled_from(["qserv", "adql"]))
    form = draw(st.sampled_from(["distance", "circle"]))
    r = draw(st.sampled_from([0.02, 0.1, 0.3, OVERLAP]))
    conds = [_dist(lang, form, r)]
    extra = draw(st.sampled_from(["", "o1.objectId <> o2.objectId", "ABS(o1.mag - o2.mag) < 2", "o2.mag < 20"]))
    if extra:
        conds.append(extra)
    oracle_conds = list(conds)
    region = draw(st.sampled_from(["", "o1-circle", "o2-circle", "areaspec"]))
    ra0, dec0, rad = draw(st.sampled_from([(0.0, 90.0, 4.0), (0.0, 0.0, 3.0), (359.9, 30.0, 2.0), (77.0, -89.0, 6.0)]))
    if region in ("o1-circle", "o2-circle"):
        side = region[:2]
        if lang == "qserv":
            c = f"scisql_s2PtInCircle({side}.ra, {side}.decl, {ra0}, {dec0}, {rad}) = 1"
        else:
            c = f"CONTAINS(POINT('ICRS', {side}.ra, {side}.decl), CIRCLE('ICRS', {ra0}, {dec0}, {rad})) = 1"
        conds.append(c)
        oracle_conds.append(c)
    elif region == "areaspec" and lang == "qserv":  # Qserv applies it to the first table, o1
        conds.append(f"qserv_areaspec_circle({ra0}, {dec0}, {rad})")
        oracle_conds.append(f"scisql_s2PtInCircle(o1.ra, o1.decl, {ra0}, {dec0}, {rad}) = 1")
    join = draw(st.sampled_from(["comma", "on"]))
    if join == "comma":
        frm, where, owhere = f"{T} AS o1, {T} AS o2", conds, oracle_conds
    else:
        frm = f"{T} AS o1 JOIN {T} AS o2 ON {conds[0]}"
        where, owhere = conds[1:], oracle_conds[1:]
        frm_o = f'"{DB}"."Object" AS o1 JOIN "{DB}"."Object" AS o2 ON {oracle_conds[0]}'
    shape = draw(st.sampled_from(["pairs", "count", "group", "topk", "stats"]))
    sep = _SEP[lang]
    sel, tail, ordered = {
        "pairs": (f"o1.objectId AS id1, o2.objectId AS id2, {sep} AS d", "", False),
        "count": ("COUNT(*) AS n", "", False),
        "group": ("o1.objectId AS id, COUNT(*) AS n, MIN(o2.mag) AS m", " GROUP BY o1.objectId", False),
        "topk": (f"o1.objectId AS id1, o2.objectId AS id2, {sep} AS d",
                 f" ORDER BY d DESC, id1, id2 LIMIT {draw(st.integers(1, 25))}", True),
        "stats": (f"COUNT(*) AS n, SUM({sep}) AS s, MAX(o1.decl) AS hi", "", False),
    }[shape]

    def text(frm_, w):
        return f"SELECT {sel} FROM {frm_}" + (" WHERE " + " AND ".join(w) if w else "") + tail

    sql = text(frm, where)
    oracle = None
    if region == "areaspec" and lang == "qserv":
        frm_o = f'"{DB}"."Object" AS o1, "{DB}"."Object" AS o2' if join == "comma" else frm_o
        oracle = text(frm_o, owhere)
    return sql, lang, ordered, oracle


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(q=nn_queries())
def test_near_neighbour_queries_equal_single_duckdb(nn_cluster, nn_oracle, q):
    sql, lang, ordered, oracle_sql = q
    if oracle_sql is not None:
        from czar.dialects import to_duckdb
        oracle_sql = to_duckdb(parse(oracle_sql, lang))
    nn_check(nn_cluster, nn_oracle, sql, lang, ordered, oracle_sql)


def test_every_pair_at_chunk_edges_poles_and_ra_wrap_equals_astropy(nn_cluster):
    """All ordered pairs within the overlap radius: the same set as astropy's search_around_sky."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    qe, objs = nn_cluster
    r = OVERLAP
    got = qe.query(f"SELECT o1.objectId AS a, o2.objectId AS b, {_SEP['adql']} AS d FROM {T} o1, {T} o2 "
                   f"WHERE {_dist('adql', 'distance', r)}")
    ids = objs.column("objectId").to_numpy()
    c = SkyCoord(objs.column("ra").to_numpy() * u.deg, objs.column("decl").to_numpy() * u.deg)
    i1, i2, sep, _ = c.search_around_sky(c, r * u.deg)
    near_edge = np.abs(sep.deg - r) < 1e-9           # the two separation formulas may round apart there
    want = set(zip(ids[i1[~near_edge]].tolist(), ids[i2[~near_edge]].tolist()))
    pairs = list(zip(got.column("a").to_pylist(), got.column("b").to_pylist()))
    assert len(pairs) == len(set(pairs))             # every ordered pair once
    ours = {p for p, d in zip(pairs, got.column("d").to_pylist()) if abs(d - r) >= 1e-9}
    assert ours == want
    # pairs that really cross chunk boundaries, RA 0/360 and poles are among them
    ra = dict(zip(ids.tolist(), objs.column("ra").to_pylist()))
    dec = dict(zip(ids.tolist(), objs.column("decl").to_pylist()))
    assert any(abs(ra[a] - ra[b]) > 180 for a, b in ours)
    assert any(dec[a] > 89.5 and abs(ra[a] - ra[b]) > 90 for a, b in ours)
    from qengine.chunker import Chunker
    ch = Chunker(PART.num_stripes, PART.num_sub_stripes, PART.overlap)
    ca, _ = ch.locate(np.array([ra[a] for a, _ in ours]), np.array([dec[a] for a, _ in ours]))
    cb, _ = ch.locate(np.array([ra[b] for _, b in ours]), np.array([dec[b] for _, b in ours]))
    assert np.sum(ca != cb) > 50


def test_star_select_and_explain(nn_cluster, nn_oracle):
    qe, _ = nn_cluster
    sql = (f"SELECT * FROM {T} AS o1, {T} AS o2 WHERE {_dist('adql', 'distance', 0.05)} AND o1.objectId < o2.objectId")
    got = nn_check(nn_cluster, nn_oracle, sql, "adql")
    assert got.num_rows > 0 and "chunkId" not in got.column_names and nb.CELL not in got.column_names
    sql = f"SELECT o1.*, o2.objectId AS other FROM {T} AS o1, {T} AS o2 WHERE {_dist('adql', 'circle', 0.05)}"
    nn_check(nn_cluster, nn_oracle, sql, "adql")
    ex = qe.explain(sql)
    sqls = [d["sql"] for d in ex.per_worker.values()]
    # one query per worker: the overlap is read, cells are an equi-join, no per-chunk queries
    assert len(sqls) == 2 and all("__overlap" in s and f"o1.{nb.CELL} = o2.{nb.CELL}" in s for s in sqls)


def test_spatial_restrictions_narrow_the_chunks(nn_cluster, nn_oracle):
    qe, _ = nn_cluster
    on_o1 = (f"SELECT o1.objectId AS a, o2.objectId AS b FROM {T} o1, {T} o2 WHERE {_dist('qserv', 'distance', 0.3)} "
             "AND qserv_areaspec_box(359, -1, 1, 1)")
    ex = qe.explain(on_o1, lang="qserv")
    assert 0 < ex.num_chunks <= 4
    got = nn_check(nn_cluster, nn_oracle, on_o1, "qserv", oracle_sql=(
        f'SELECT o1.objectId AS a, o2.objectId AS b FROM "{DB}"."Object" o1, "{DB}"."Object" o2 WHERE '
        f"{_dist('qserv', 'distance', 0.3)} AND scisql_s2PtInBox(o1.ra, o1.decl, 359, -1, 1, 1) = 1"))
    assert got.num_rows > 0
    # a circle on o2 only: o1's chunks are those within the radius of it
    on_o2 = (f"SELECT o1.objectId AS a, o2.objectId AS b FROM {T} o1, {T} o2 WHERE {_dist('adql', 'distance', 0.5)} "
             "AND CONTAINS(POINT('ICRS', o2.ra, o2.decl), CIRCLE('ICRS', 0.0, 0.0, 0.2)) = 1")
    assert 0 < qe.explain(on_o2).num_chunks <= 9
    assert nn_check(nn_cluster, nn_oracle, on_o2, "adql").num_rows > 0
    # a region without rows: nothing visited, the columns still there
    empty = (f"SELECT o1.objectId AS a, o2.objectId AS b FROM {T} o1, {T} o2 WHERE {_dist('adql', 'distance', 0.1)} "
             "AND CONTAINS(POINT('ICRS', o1.ra, o1.decl), CIRCLE('ICRS', 123.456, 7.89, 0.0001)) = 1")
    got = nn_check(nn_cluster, nn_oracle, empty, "adql")
    assert got.num_rows == 0 and got.column_names == ["a", "b"]


def test_an_id_on_o1_visits_its_chunk_and_finds_its_neighbours(nn_cluster, nn_oracle):
    qe, _ = nn_cluster
    oid = 10**6 + 3                            # one of the group around the north pole
    sql = (f"SELECT o2.objectId AS b FROM {T} o1 JOIN {T} o2 ON {_dist('adql', 'distance', 0.5)} "
           f"WHERE o1.objectId = {oid}")
    assert qe.explain(sql).num_chunks == 1
    assert nn_check(nn_cluster, nn_oracle, sql, "adql").num_rows > 5
    # an id on o2 must not narrow the chunks: its neighbours' chunks are others
    sql = f"SELECT o1.objectId AS a FROM {T} o1, {T} o2 WHERE {_dist('adql', 'distance', 0.5)} AND o2.objectId = {oid}"
    assert nn_check(nn_cluster, nn_oracle, sql, "adql").num_rows > 5


@pytest.mark.parametrize("sql,lang,pattern", [
    (f"SELECT o1.objectId FROM {T} o1, {T} o2 WHERE scisql_angSep(o1.ra, o1.decl, o2.ra, o2.decl) < 0.6", "qserv",
     r"radius 0.6 deg is larger than the overlap of testdb.Object \(0.5 deg = 1800 arcsec\)"),
    (f"SELECT o1.objectId FROM {T} o1 JOIN {T} o2 ON 1 = CONTAINS(POINT('ICRS', o1.ra, o1.decl), "
     f"CIRCLE('ICRS', o2.ra, o2.decl, 1)) ", "adql", r"larger than the overlap of testdb.Object"),
    (f"SELECT o1.objectId FROM {T} o1, {T} o2 WHERE o1.mag = o2.mag", "adql",
     r"joined on the director key.*near-neighbour join"),
    (f"SELECT o1.objectId FROM {T} o1, {T} o2 WHERE DISTANCE(POINT('ICRS', o1.ra, o1.decl), "
     "POINT('ICRS', o2.ra, o2.decl)) < o1.mag", "adql", r"radius must be a constant"),
    (f"SELECT o1.objectId FROM {T} o1 LEFT JOIN {T} o2 ON DISTANCE(POINT('ICRS', o1.ra, o1.decl), "
     "POINT('ICRS', o2.ra, o2.decl)) < 0.1", "adql", r"LEFT OUTER near-neighbour joins are not supported"),
    (f"SELECT ra FROM {T}, {T}", "adql", r"appears twice: give each occurrence its own alias"),
])
def test_refusals_name_the_reason(nn_cluster, sql, lang, pattern):
    qe, _ = nn_cluster
    with pytest.raises(QueryError, match=pattern):
        qe.query(sql, lang=lang)
