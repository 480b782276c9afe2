"""Match tables (Qserv's ref-match tables): ingest with flags, and queries through them.

Differential: every query equals one DuckDB over the unpartitioned tables. The catalogue is
dense at chunk edges and corners, at RA 0/360 and at the poles, and most matches join rows lying
in different chunks (partners up to 0.45 deg apart with a 0.5 deg overlap).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partitioner import place
from partitioner.ingest import IngestOptions, ingest
from partitioner.verify import verify
from qengine.catalog import Column, Partitioning, Table
from qengine.chunker import Chunker
from qengine.errors import IngestError, QueryError
from qengine.store import load_manifest, table_dir
from tests.helpers import DB, OBJECT, PART, assert_same_rows, make_objects, oracle_connection

REF = Table(
    name="RefObj", role="director", id_column="refId", ra_column="ra", dec_column="decl",
    columns=(Column("refId", "long", nullable=False), Column("ra", "double", nullable=False),
             Column("decl", "double", nullable=False), Column("rmag", "float")),
)
REFMATCH = Table(
    name="RefMatch", role="match", match_directors=(("Object", "objectId"), ("RefObj", "refId")),
    director="Object", foreign_key="objectId",
    columns=(Column("objectId", "long"), Column("refId", "long"), Column("sep", "double")),
)
NEIGHBOURS = Table(
    name="Neighbours", role="match", match_directors=(("Object", "objectId"), ("Object", "neighbourId")),
    director="Object", foreign_key="objectId", flag_column="qflags",
    columns=(Column("objectId", "long", nullable=False), Column("neighbourId", "long", nullable=False),
             Column("dist", "double")),
)
MAX_SEP = 0.45          # partners lie within this (deg); the overlap is 0.5
OPTS = IngestOptions(progress=False, rows_per_file=700, row_group_rows=300)


def offset(ra, dec, dist, bearing):
    """Positions ``dist`` degrees from (ra, dec) along ``bearing`` (degrees east of north)."""
    d, b, p = np.radians(dist), np.radians(bearing), np.radians(dec)
    lat = np.arcsin(np.clip(np.sin(p) * np.cos(d) + np.cos(p) * np.sin(d) * np.cos(b), -1, 1))
    lon = np.radians(ra) + np.arctan2(np.sin(b) * np.sin(d) * np.cos(p), np.cos(d) - np.sin(p) * np.sin(lat))
    return np.degrees(lon) % 360.0, np.degrees(lat)


def separation(ra1, dec1, ra2, dec2):
    return place._separation(np.asarray(ra1), np.asarray(dec1), np.asarray(ra2), np.asarray(dec2))


def make_catalogue(seed: int = 7, n: int = 500) -> dict[str, pa.Table]:
    """Object (edges, corners, poles, RA 0/360, plus tight groups there), RefObj (a partner
    for most objects, up to MAX_SEP away, some with two; some alone), RefMatch (with rows of
    unmatched objects and references: one id NULL) and Neighbours (all ordered pairs of
    objects closer than MAX_SEP)."""
    rng = np.random.default_rng(seed)
    base = make_objects(n, seed=seed)
    ch = Chunker(PART.num_stripes, PART.num_sub_stripes, PART.overlap)
    b = ch.chunk_bounds(rng.choice(ch.all_chunks(), 25, replace=False))
    centres = [(0.0, 90.0), (77.0, -90.0), (0.0, 0.0), (359.9, 30.0), (180.0, 89.8), (10.0, -89.7)]
    centres += list(zip(b.ra_min.tolist(), b.dec_min.tolist()))
    gra, gdec = offset(np.repeat([c[0] for c in centres], 6), np.repeat([c[1] for c in centres], 6),
                       rng.uniform(0, 0.3, 6 * len(centres)), rng.uniform(0, 360, 6 * len(centres)))
    m = gra.size
    groups = pa.table({
        "objectId": pa.array(np.arange(10**6, 10**6 + m, dtype=np.int64)), "ra": gra, "decl": gdec,
        "mag": pa.array(rng.uniform(15, 25, m).astype(np.float32)), "name": [f"grp{i}" for i in range(m)]})
    objs = pa.concat_tables([base, groups])
    oid = objs.column("objectId").to_numpy()
    ora, odec = objs.column("ra").to_numpy(), objs.column("decl").to_numpy()
    # references: most objects have one partner, some two; then unmatched references
    partnered = rng.random(oid.size) < 0.8
    who = np.r_[np.flatnonzero(partnered), np.flatnonzero(partnered & (rng.random(oid.size) < 0.2))]
    rra, rdec = offset(ora[who], odec[who], rng.uniform(0, MAX_SEP, who.size), rng.uniform(0, 360, who.size))
    lone = 60
    rra = np.r_[rra, rng.uniform(0, 360, lone)]
    rdec = np.r_[rdec, np.degrees(np.arcsin(rng.uniform(-1, 1, lone)))]
    rid = np.arange(5 * 10**7, 5 * 10**7 + rra.size, dtype=np.int64)
    refs = pa.table({"refId": rid, "ra": rra, "decl": rdec,
                     "rmag": pa.array(rng.uniform(14, 24, rid.size).astype(np.float32))})
    unmatched_objs = np.flatnonzero(~partnered)[:40]
    unmatched_refs = rid[who.size:who.size + 30]
    m_obj = np.r_[oid[who], oid[unmatched_objs], np.zeros(unmatched_refs.size, np.int64)]
    m_ref = np.r_[rid[:who.size], np.zeros(unmatched_objs.size, np.int64), unmatched_refs]
    sep = np.r_[separation(ora[who], odec[who], rra[:who.size], rdec[:who.size]),
                np.full(unmatched_objs.size + unmatched_refs.size, np.nan)]
    null_obj = np.r_[np.zeros(who.size + unmatched_objs.size, bool), np.ones(unmatched_refs.size, bool)]
    null_ref = np.r_[np.zeros(who.size, bool), np.ones(unmatched_objs.size, bool), np.zeros(unmatched_refs.size, bool)]
    refmatch = pa.table({"objectId": pa.array(m_obj, mask=null_obj), "refId": pa.array(m_ref, mask=null_ref),
                         "sep": pa.array(sep, mask=np.isnan(sep))})
    # neighbours: every ordered pair of distinct objects closer than MAX_SEP
    i, j = np.triu_indices(oid.size, 1)
    d = separation(ora[i], odec[i], ora[j], odec[j])
    close = d < MAX_SEP
    a, b2, dd = np.r_[i[close], j[close]], np.r_[j[close], i[close]], np.r_[d[close], d[close]]
    neighbours = pa.table({"objectId": oid[a], "neighbourId": oid[b2], "dist": dd})
    return {"Object": objs, "RefObj": refs, "RefMatch": refmatch, "Neighbours": neighbours}


def write(tmp, name: str, t: pa.Table):
    path = tmp / f"{name}.parquet"
    pq.write_table(t, path)
    return path


def build(root, tables: dict[str, pa.Table], parts: dict[str, list[pa.Table]] | None = None) -> None:
    """Ingest the catalogue (a table given in ``parts`` is ingested one transaction per part)."""
    root.mkdir(parents=True, exist_ok=True)
    for spec in (OBJECT, REF, REFMATCH, NEIGHBOURS):
        pieces = (parts or {}).get(spec.name, [tables[spec.name]])
        for k, piece in enumerate(pieces):
            ingest(root, DB, spec, [write(root.parent, f"{root.name}-{spec.name}-{k}", piece)],
                   partitioning=PART, options=OPTS)


def stored(root, name: str) -> pa.Table:
    d = table_dir(root, DB, name)
    return pq.read_table([str(d / f.path) for f in load_manifest(d).files_of("data")])


# ----------------------------------------------------------------------------- ingest
@pytest.fixture(scope="module")
def catalogue():
    return make_catalogue()


@pytest.fixture(scope="module")
def store(tmp_path_factory, catalogue):
    root = tmp_path_factory.mktemp("match") / "root"
    build(root, catalogue)
    return root


def test_the_catalogue_has_matches_across_chunks_at_edges_and_poles(catalogue):
    ch = Chunker(PART.num_stripes, PART.num_sub_stripes, PART.overlap)
    o, r, m = catalogue["Object"], catalogue["RefObj"], catalogue["RefMatch"]
    pos = {k: (a, b) for k, a, b in zip(o.column("objectId").to_pylist(), o.column("ra").to_pylist(),
                                           o.column("decl").to_pylist())}
    rpos = {k: (a, b) for k, a, b in zip(r.column("refId").to_pylist(), r.column("ra").to_pylist(),
                                            r.column("decl").to_pylist())}
    pairs = [(pos[a], rpos[b]) for a, b in zip(m.column("objectId").to_pylist(), m.column("refId").to_pylist())
             if a is not None and b is not None]
    c1, _ = ch.locate(np.array([p[0][0] for p in pairs]), np.array([p[0][1] for p in pairs]))
    c2, _ = ch.locate(np.array([p[1][0] for p in pairs]), np.array([p[1][1] for p in pairs]))
    assert (c1 != c2).sum() >= 50
    assert any(abs(p[0][1]) > 89.5 for p in pairs)
    assert any(min(p[0][0], p[1][0]) < 0.5 and max(p[0][0], p[1][0]) > 359.5 for p in pairs)  # across RA 0
    n = catalogue["Neighbours"]
    nid = n.column("objectId").to_numpy()
    assert n.num_rows >= 200 and len(set(nid.tolist())) >= 60


def test_ingest_places_each_match_with_both_director_rows_and_flags_them(store, catalogue):
    """Every match is stored in its first director row's chunk (flag 1, or 3 when both rows share
    it) and, when the second row is elsewhere, in that row's chunk too (flag 2), as Qserv's
    sph-partition-matches does; rows with one NULL id are stored once, with the other side."""
    ch = Chunker(PART.num_stripes, PART.num_sub_stripes, PART.overlap)
    loc = {}
    for name, key in (("Object", "objectId"), ("RefObj", "refId")):
        t = catalogue[name]
        c, s = ch.locate(t.column("ra").to_numpy(), t.column("decl").to_numpy())
        loc.update({(name, k): (int(a), int(b)) for k, a, b in zip(t.column(key).to_pylist(), c, s)})
    want = []
    m = catalogue["RefMatch"]
    for a, b, sep in zip(*(m.column(c).to_pylist() for c in ("objectId", "refId", "sep"))):
        l1, l2 = loc.get(("Object", a)), loc.get(("RefObj", b))
        if l1 and l2 and l1[0] == l2[0]:
            want.append((a, b, 3, *l1))
            continue
        if l1:
            want.append((a, b, 1, *l1))
        if l2:
            want.append((a, b, 2, *l2))
    got = stored(store, "RefMatch")
    rows = list(zip(*(got.column(c).to_pylist() for c in ("objectId", "refId", "partitioningFlags", "chunkId",
                                                          "subChunkId"))))
    assert sorted(rows, key=repr) == sorted(want, key=repr)
    assert {f for _, _, f, _, _ in rows} == {1, 2, 3}
    man = load_manifest(table_dir(store, DB, "RefMatch"))
    assert man.role == "match" and man.director == "Object" and man.foreign_key == "objectId"
    cols = {c["name"]: c for c in man.columns}
    assert cols["refId"]["match_director"] == 2 and cols["refId"]["match_table"] == "RefObj"
    assert cols["partitioningFlags"]["match_flag"] and stored(store, "Neighbours").column("qflags").null_count == 0
    rep = verify(store)  # `qengine catalog verify` recomputes the flags from the directors' indexes
    assert not rep.problems and any("RefMatch" in c and "partitioningFlags exact" in c for c in rep.checked)


def test_ingest_refuses_unknown_ids_far_pairs_and_missing_directors(tmp_path, catalogue):
    root = tmp_path / "root"
    objs = catalogue["Object"].slice(0, 200)
    ingest(root, DB, OBJECT, [write(tmp_path, "o", objs)], partitioning=PART, options=OPTS)
    m = pa.table({"objectId": pa.array([1, 2], pa.int64()), "refId": pa.array([5, 6], pa.int64()),
                  "sep": [0.1, 0.2]})
    with pytest.raises(IngestError, match="RefObj has not been ingested yet.*ingest them before it"):
        ingest(root, DB, REFMATCH, [write(tmp_path, "m0", m)], partitioning=PART, options=OPTS)
    ra, dec = objs.column("ra").to_numpy(), objs.column("decl").to_numpy()
    fra, fdec = offset(ra[:3], dec[:3], np.array([0.1, 0.7, 0.2]), np.array([10.0, 20.0, 30.0]))
    refs = pa.table({"refId": pa.array([11, 12, 13], pa.int64()), "ra": fra, "decl": fdec,
                     "rmag": pa.array([1, 2, 3], pa.float32())})
    ingest(root, DB, REF, [write(tmp_path, "r", refs)], partitioning=PART, options=OPTS)
    ids = objs.column("objectId").to_pylist()
    cases = [
        ({"objectId": [ids[0], 999_999_999], "refId": [11, 11]}, r":2: column 'objectId': objectId=999999999 has no row in director table Object"),
        ({"objectId": [ids[0], ids[2]], "refId": [11, 77]}, r":2: column 'refId': refId=77 has no row in director table RefObj"),
        ({"objectId": [ids[0], ids[1]], "refId": [11, 12]}, r":2: column 'objectId': .*more than the overlap \(0.5 deg\)"),
        ({"objectId": [None, ids[0]], "refId": [None, 11]}, r":1: column 'objectId': NULL objectId and refId"),
    ]
    for k, (cols, pattern) in enumerate(cases):
        t = pa.table({**{c: pa.array(v, pa.int64()) for c, v in cols.items()}, "sep": [0.0, 0.0]})
        with pytest.raises(IngestError, match=pattern):
            ingest(root, DB, REFMATCH, [write(tmp_path, f"bad{k}", t)], partitioning=PART, options=OPTS)
    assert not (table_dir(root, DB, "RefMatch") / "_table.json").exists()  # nothing committed
    # --skip-bad-rows: the good rows are stored, the bad ones listed with their line and column
    t = pa.table({"objectId": pa.array([ids[0], ids[1], ids[2]], pa.int64()), "refId": pa.array([11, 12, 77], pa.int64()),
                  "sep": [0.0, 0.0, 0.0]})
    res = ingest(root, DB, REFMATCH, [write(tmp_path, "skip", t)], partitioning=PART,
                 options=IngestOptions(progress=False, skip_bad_rows=5))
    assert res.rejected == 2 and set(stored(root, "RefMatch").column("refId").to_pylist()) == {11}
    text = Path(res.reject_file).read_text()
    assert "\trefId\trefId=77 has no row" in text and "\tobjectId\tobjectId=" in text
    # directors partitioned differently from the match table
    with pytest.raises(IngestError, match="must share one partitioning"):
        ingest(root, DB, dataclasses.replace(REFMATCH, name="RefMatch2"), [write(tmp_path, "m1", t)], options=OPTS,
               partitioning=Partitioning(num_stripes=18, num_sub_stripes=10, overlap=0.3))


def test_increments_neither_duplicate_nor_lose_matches(tmp_path, catalogue):
    """Nightly increments: directors and matches arrive in parts, each ingest one transaction;
    the store then equals a one-shot ingest, and a re-run ingest of a part is a no-op."""
    def halves(t: pa.Table) -> list[pa.Table]:
        return [t.slice(0, t.num_rows // 2), t.slice(t.num_rows // 2)]

    whole = tmp_path / "whole"
    build(whole, catalogue)
    inc = tmp_path / "inc"
    objs, refs = catalogue["Object"], catalogue["RefObj"]
    # night 1: half the objects and references with the matches among them; night 2: the rest
    o1 = set(halves(objs)[0].column("objectId").to_pylist())
    r1 = set(halves(refs)[0].column("refId").to_pylist())
    m = catalogue["RefMatch"]
    ok1 = np.array([(a is None or a in o1) and (b is None or b in r1)
                    for a, b in zip(m.column("objectId").to_pylist(), m.column("refId").to_pylist())])
    n = catalogue["Neighbours"]
    nk1 = np.array([a in o1 and b in o1 for a, b in zip(n.column("objectId").to_pylist(),
                                                         n.column("neighbourId").to_pylist())])
    parts = {"Object": halves(objs), "RefObj": halves(refs), "RefMatch": [m.filter(ok1), m.filter(~ok1)],
             "Neighbours": [n.filter(nk1), n.filter(~nk1)]}
    inc.mkdir()
    for night in (0, 1):
        for spec in (OBJECT, REF, REFMATCH, NEIGHBOURS):
            ingest(inc, DB, spec, [write(tmp_path, f"{spec.name}-{night}", parts[spec.name][night])],
                   partitioning=PART, options=OPTS)
    again = ingest(inc, DB, REFMATCH, [write(tmp_path, "RefMatch-1", parts["RefMatch"][1])],
                   partitioning=PART, options=OPTS)
    assert again.already_ingested
    for name in ("RefMatch", "Neighbours"):
        a, b = stored(whole, name), stored(inc, name)
        key = lambda t: sorted(zip(*(c.to_pylist() for c in t.columns)), key=repr)
        assert key(a) == key(b)
        assert len(load_manifest(table_dir(inc, DB, name)).transactions) == 2


# ----------------------------------------------------------------------------- queries
@pytest.fixture(scope="module")
def cluster(store):
    from czar.local import LocalCluster

    # Both workers read the one store; the czar still splits the chunks between them, so a
    # worker's query covers many chunks and rows must meet by chunkId (the match rows' copies).
    with LocalCluster(store, workers=2) as qe:
        yield qe


@pytest.fixture(scope="module")
def placed(store):
    """Each chunk's files on one worker, placed as `qengine place` does."""
    from czar.local import LocalCluster

    with LocalCluster(store, workers=2, replicas=1) as qe:
        yield qe


@pytest.fixture(scope="module")
def oracle(catalogue):
    return oracle_connection(catalogue)


def check(qe, oracle, sql: str, lang: str = "adql", ordered: bool = False, oracle_sql: str | None = None) -> pa.Table:
    from czar.dialects import parse, to_duckdb

    got = qe.query(sql, lang=lang)
    want = oracle.sql(oracle_sql or to_duckdb(parse(sql, lang))).to_arrow_table()
    assert_same_rows(got, want, ordered, sql)
    return got


O, R, M, N = (f"{DB}.{t}" for t in ("Object", "RefObj", "RefMatch", "Neighbours"))


def _circle(lang: str, alias: str, ra: float, dec: float, r: float) -> str:
    if lang == "qserv":
        return f"scisql_s2PtInCircle({alias}.ra, {alias}.decl, {ra}, {dec}, {r}) = 1"
    return f"CONTAINS(POINT('ICRS', {alias}.ra, {alias}.decl), CIRCLE('ICRS', {ra}, {dec}, {r})) = 1"


@st.composite
def match_queries(draw):
    lang = draw(st.sampled_from(["adql", "qserv"]))
    kind = draw(st.sampled_from(["alone", "d1", "d2", "both", "neighbours"]))
    comma = draw(st.booleans())
    if kind == "alone":
        table, cols = draw(st.sampled_from([(M, ("objectId", "refId", "sep")), (N, ("objectId", "neighbourId", "dist"))]))
        frm, conds = f"{table} AS m", []
        pick = [f"m.{c}" for c in cols]
        num = f"m.{cols[2]}"
        if draw(st.booleans()):
            conds.append(f"m.{cols[2]} < 0.3")
    else:
        if kind == "neighbours":
            d1, d2, mt, k1, k2, d2id, num = ("o1", O), ("o2", O), N, "objectId", "neighbourId", "objectId", "m.dist"
        else:
            d1, d2, mt, k1, k2, d2id, num = ("o", O), ("r", R), M, "objectId", "refId", "refId", "m.sep"
        links = {"d1": [(d1, k1, "objectId")], "d2": [(d2, k2, d2id)]}.get(kind, [(d1, k1, "objectId"), (d2, k2, d2id)])
        first_match = draw(st.booleans())
        items = [("m", mt)] + [(a, t) for (a, t), _, _ in links]
        if not first_match:
            items = items[1:2] + items[:1] + items[2:]
        on = {a: f"{a}.{idc} = m.{k}" for (a, _), k, idc in links}
        if comma:
            frm = ", ".join(f"{t} AS {a}" for a, t in items)
            conds = list(on.values())
        else:
            frm = f"{items[0][1]} AS {items[0][0]}"
            for a, t in items[1:]:
                cond = on.get(a) or on.get(items[0][0])
                if a == "m":
                    cond = on[items[0][0]]
                frm += f" JOIN {t} AS {a} ON {cond}"
            conds = []
        dirs = [a for (a, _), _, _ in links]
        pick = [f"{dirs[0]}.ra", f"m.{k1}", f"m.{k2}"] + ([f"{dirs[-1]}.decl"] if len(dirs) > 1 else [])
        region = draw(st.sampled_from(["", "first", "last", "areaspec"]))
        ra0, dec0, rad = draw(st.sampled_from([(0.0, 90.0, 6.0), (0.0, 0.5, 4.0), (359.9, 30.0, 3.0),
                                               (77.0, -89.0, 5.0), (10.0, -10.0, 12.0)]))
        oracle_conds = list(conds)
        if region in ("first", "last"):
            side = dirs[0] if region == "first" else dirs[-1]
            conds.append(_circle(lang, side, ra0, dec0, rad))
            oracle_conds.append(_circle(lang, side, ra0, dec0, rad))
        elif region == "areaspec" and lang == "qserv":  # Qserv: the first director in FROM
            first_dir = next(a for a, _ in items if a != "m")
            conds.append(f"qserv_areaspec_circle({ra0}, {dec0}, {rad})")
            oracle_conds.append(_circle("qserv", first_dir, ra0, dec0, rad))
        if draw(st.booleans()):
            c = f"{dirs[0]}.mag < 22" if dirs[0] != "r" else "r.rmag < 20"
            conds.append(c)
            oracle_conds.append(c)
    shape = draw(st.sampled_from(["rows", "count", "group", "topk", "stats"]))
    sel, tail, ordered = {
        "rows": (", ".join(pick), "", False),
        "count": ("COUNT(*) AS n", "", False),
        "group": (f"{pick[1]} AS k, COUNT(*) AS n, MAX({num}) AS hi", f" GROUP BY {pick[1]}", False),
        "topk": (", ".join(pick), f" ORDER BY {pick[1]}, {pick[2]} LIMIT {draw(st.integers(1, 30))}", True),
        "stats": (f"COUNT(*) AS n, SUM({num}) AS s, MIN({pick[2]}) AS lo", "", False),
    }[shape]
    if shape == "topk":  # NULL ids sort differently per dialect: a total order on non-NULL keys
        conds = conds + [f"{pick[1]} IS NOT NULL", f"{pick[2]} IS NOT NULL"]
        if kind != "alone":
            oracle_conds = oracle_conds + [f"{pick[1]} IS NOT NULL", f"{pick[2]} IS NOT NULL"]

    def text(w):
        return f"SELECT {sel} FROM {frm}" + (" WHERE " + " AND ".join(w) if w else "") + tail

    oracle = text(oracle_conds) if kind != "alone" else None
    return text(conds), lang, ordered, oracle


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(q=match_queries())
def test_match_queries_equal_single_duckdb(cluster, oracle, q):
    from czar.dialects import parse, to_duckdb

    sql, lang, ordered, oracle_sql = q
    check(cluster, oracle, sql, lang, ordered, to_duckdb(parse(oracle_sql, lang)) if oracle_sql else None)


def test_each_match_once_alone_and_through_both_directors(cluster, oracle, catalogue):
    n = catalogue["RefMatch"].num_rows
    assert cluster.query(f"SELECT COUNT(*) AS n FROM {M}").column("n").to_pylist() == [n]
    got = check(cluster, oracle, f"SELECT o.objectId, r.refId, m.sep FROM {O} AS o JOIN {M} AS m ON o.objectId = m.objectId "
                                 f"JOIN {R} AS r ON r.refId = m.refId")
    both = [(a, b) for a, b in zip(catalogue["RefMatch"].column("objectId").to_pylist(),
                                   catalogue["RefMatch"].column("refId").to_pylist()) if a is not None and b is not None]
    assert got.num_rows == len(both)
    check(cluster, oracle, f"SELECT * FROM {M}")
    check(cluster, oracle, f"SELECT o1.*, n.dist, o2.name FROM {O} o1 JOIN {N} n USING (objectId) "
                           f"JOIN {O} o2 ON o2.objectId = n.neighbourId", ordered=False)
    check(cluster, oracle, f"SELECT TOP 5 m.*, o.name FROM {M} m, {O} o WHERE o.objectId = m.objectId "
                           "ORDER BY m.sep DESC, m.objectId, m.refId", ordered=True)


def test_flags_can_be_selected_and_ids_narrow_chunks(cluster, catalogue):
    t = cluster.query(f"SELECT objectId, refId, partitioningFlags AS f FROM {M}")
    assert set(t.column("f").to_pylist()) <= {1, 2, 3}
    m = catalogue["RefMatch"]
    oid = next(a for a, b in zip(m.column("objectId").to_pylist(), m.column("refId").to_pylist()) if a and b)
    ex = cluster.explain(f"SELECT o.objectId, r.refId FROM {O} o JOIN {M} m ON o.objectId = m.objectId "
                         f"JOIN {R} r ON r.refId = m.refId WHERE o.objectId = {oid}")
    assert ex.num_chunks == 1 and "__overlap" in next(iter(ex.per_worker.values()))["sql"]
    got = cluster.query(f"SELECT m.refId FROM {M} m WHERE m.objectId = {oid}")
    want = sorted(b for a, b in zip(m.column("objectId").to_pylist(), m.column("refId").to_pylist()) if a == oid)
    assert sorted(got.column("refId").to_pylist()) == want
    assert cluster.explain(f"SELECT m.refId FROM {M} m WHERE m.objectId = {oid}").num_chunks == 1


@pytest.mark.parametrize("sql,pattern", [
    (f"SELECT * FROM {O} o LEFT JOIN {M} m ON o.objectId = m.objectId", "LEFT OUTER joins with match table"),
    (f"SELECT * FROM {O} o, {M} m WHERE o.mag < 20", r"join o to match table RefMatch on its key: add o.objectId = m.objectId"),
    (f"SELECT * FROM {R} r JOIN {M} m ON r.refId = m.objectId", r"add r.refId = m.refId"),
    (f"SELECT * FROM {M} m JOIN {N} n ON m.objectId = n.objectId", "two match tables"),
    (f"SELECT COUNT(*) FROM {M} m WHERE qserv_areaspec_box(0, 0, 1, 1)", "RefMatch is a match table"),
])
def test_refusals_name_the_reason(cluster, sql, pattern):
    lang = "qserv" if "areaspec" in sql else "adql"
    with pytest.raises(QueryError, match=pattern):
        cluster.query(sql, lang=lang)


# ----------------------------------------------------------------------------- the rule, pure
def _find(sql: str, tables: dict[str, str]):
    """match.find over ``sql`` with occurrences named by their alias -> table in ``tables``."""
    from czar.dialects import parse
    from czar.planner import match

    roles = {"Object": ("director", "objectId"), "RefObj": ("director", "refId"), "RefMatch": ("match", None),
             "Neighbours": ("match", None), "Source": ("child", None), "Filter": ("replicated", None)}
    tree = parse(sql, "adql")
    occ = [match.Occurrence(a, frozenset({a.lower()}), t, *roles[t]) for a, t in tables.items()]
    cols = {"RefMatch": match.MatchColumns("Object", "objectId", "RefObj", "refId", "partitioningFlags"),
            "Neighbours": match.MatchColumns("Object", "objectId", "Object", "neighbourId", "qflags")}

    def owner(col):
        return next((i for i, o in enumerate(occ) if col.table.lower() in o.qualifiers), None)

    return match.find(tree, occ, owner, lambda i: cols[occ[i].table])


def test_the_rule_finds_each_directors_key_in_on_where_and_using():
    mj = _find("SELECT * FROM RefObj r JOIN RefMatch m ON m.refId = r.refId, Object o WHERE o.objectId = m.objectId",
               {"r": "RefObj", "m": "RefMatch", "o": "Object"})
    assert mj.match == 1 and mj.sides == {0: 2, 2: 1}
    mj = _find("SELECT * FROM Object o1 JOIN Neighbours n USING (objectId) JOIN Object o2 ON o2.objectId = n.neighbourId",
               {"o1": "Object", "n": "Neighbours", "o2": "Object"})
    assert mj.sides == {0: 1, 2: 2}
    assert _find("SELECT * FROM Object o JOIN Filter f ON o.objectId = f.filterId", {"o": "Object", "f": "Filter"}) is None
    mj = _find("SELECT * FROM RefMatch m JOIN Filter f ON 1 = 1", {"m": "RefMatch", "f": "Filter"})
    assert mj.sides == {}


@pytest.mark.parametrize("sql,tables,pattern", [
    ("SELECT * FROM Object o JOIN RefMatch m ON o.objectId = m.objectId JOIN Source s ON s.objectId = o.objectId",
     {"o": "Object", "m": "RefMatch", "s": "Source"}, "Source is a child table"),
    ("SELECT * FROM RefMatch m RIGHT JOIN RefObj r ON r.refId = m.refId", {"m": "RefMatch", "r": "RefObj"},
     "RIGHT OUTER joins with match table RefMatch"),
    ("SELECT * FROM Neighbours n JOIN RefObj r ON r.refId = n.neighbourId", {"n": "Neighbours", "r": "RefObj"},
     "RefObj is not a director of match table Neighbours"),
    ("SELECT * FROM Object o JOIN RefMatch m ON o.objectId = m.refId", {"o": "Object", "m": "RefMatch"},
     r"add o.objectId = m.objectId"),
    ("SELECT * FROM Object a, Object b, Object c, Neighbours n WHERE a.objectId = n.objectId",
     {"a": "Object", "b": "Object", "c": "Object", "n": "Neighbours"}, "at most two director occurrences"),
])
def test_the_rule_refuses_what_is_not_chunk_local(sql, tables, pattern):
    with pytest.raises(QueryError, match=pattern):
        _find(sql, tables)


# ----------------------------------------------------------------------------- placed files
PLACED_QUERIES = [
    f"SELECT COUNT(*) AS n, SUM(m.sep) AS s FROM {M} m",
    f"SELECT m.objectId, m.neighbourId, m.dist FROM {N} m WHERE m.dist < 0.2",
    f"SELECT o.objectId, m.refId, o.mag FROM {O} o JOIN {M} m ON o.objectId = m.objectId",
    f"SELECT r.refId, m.objectId, r.rmag FROM {M} m JOIN {R} r ON r.refId = m.refId "
    "WHERE CONTAINS(POINT('ICRS', r.ra, r.decl), CIRCLE('ICRS', 10.0, -10.0, 12.0)) = 1",
]


@pytest.mark.parametrize("sql", PLACED_QUERIES)
def test_placed_match_and_one_director_queries(placed, oracle, sql):
    """With each chunk's files on one worker (R = 1) the match table and one director meet in
    the worker holding their chunk."""
    check(placed, oracle, sql)


def test_placed_three_way_join(placed, oracle):
    """With placed files a worker may hold the primary director's and the match table's files for a
    chunk (files straddling a placement segment) without the other director's overlap files for it:
    the worker reports those chunks (lacking_overlap) and the czar gives them to another holder."""
    check(placed, oracle, f"SELECT m.objectId AS k, COUNT(*) AS n FROM {M} AS m JOIN {O} AS o ON o.objectId = "
                          f"m.objectId JOIN {R} AS r ON r.refId = m.refId WHERE CONTAINS(POINT('ICRS', r.ra, "
                          "r.decl), CIRCLE('ICRS', 10.0, -10.0, 12.0)) = 1 GROUP BY m.objectId")


@pytest.mark.parametrize("table, key", [(O, "objectId"), (R, "refId")])
def test_placed_near_neighbour_self_join_reads_whole_overlaps(placed, oracle, table, key):
    """Near-neighbour joins read the far side's overlap: on placed files each chunk must go to a
    worker holding every overlap file covering it (the same rule as the three-way match join)."""
    check(placed, oracle, f"SELECT a.{key} AS k, COUNT(*) AS n FROM {table} AS a, {table} AS b WHERE "
                          f"DISTANCE(POINT('ICRS', a.ra, a.decl), POINT('ICRS', b.ra, b.decl)) < 0.3 "
                          f"AND a.{key} <> b.{key} GROUP BY a.{key}")
