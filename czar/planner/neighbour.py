"""Near-neighbour self-joins of a director table, bucketed into zones and RA bins.

A near-neighbour query joins two occurrences of one director table with a distance predicate
(Qserv: ``scisql_angSep(o1.ra, o1.decl, o2.ra, o2.decl) < r`` or ``scisql_s2PtInCircle(...) = 1``;
ADQL: ``CONTAINS(POINT(o1..), CIRCLE(o2.., r)) = 1`` or ``DISTANCE(POINT(o1..), POINT(o2..)) < r``),
a top-level AND condition of WHERE or of an inner join's ON. Qserv's semantics: per chunk, the
first occurrence (o1, "near") ranges over the chunk's own rows and the second (o2, "far") over
the chunk's rows plus its overlap rows, so every ordered pair closer than r <= overlap is found
exactly once, in o1's chunk.

Inside a worker's single DuckDB query the pairs are found with the zones technique (DESIGN.md):
declination zones of height >= r cut into RA bins wide enough that a partner lies at most one
bin away, both measured with a margin. Each near row gets its own cell; each far row is copied
into its own cell and into those of its 3 x 3 neighbours it lies within reach of (at most 9
copies; ~4 on average with the default cells of two reaches). The sides meet in a hash equi-join on
(chunkId, cell) and the original predicates, the exact distance among them, then decide.

Everything here is pure: sqlglot trees and SQL text in, trees and text out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sqlglot import exp

from czar.planner.distance import conjuncts as _conjuncts
from czar.planner.distance import distance_form as _distance_form
from czar.planner.spatial import constant
from qengine.errors import QueryError

__all__ = ["CELL", "Grid", "NeighbourJoin", "Side", "check_radius", "far_regions", "far_sql", "find",
           "grid_for", "join_condition", "near_sql", "sources"]

#: The cell column the two sides carry; hidden from ``*`` by the planner.
CELL = "__qe_cell"
#: Zone number times this plus the RA bin is a cell's key (bins per zone stay below it).
_ZONE_STRIDE = 1_000_000_000
#: Cells are never made smaller than this (degrees): keeps zone and bin counts in range.
MIN_REACH = 1e-6
#: Relative and absolute margins on the radius: bucketing must never lose a pair that the
#: exact predicate, evaluated in floating point, accepts.
_REL_MARGIN = 1e-6
_ABS_MARGIN = 1e-12
#: Largest cell edge, in radii: bigger cells mean fewer far-row copies but more candidates.
MAX_CELL_FACTOR = 8


@dataclass(frozen=True)
class Side:
    """One table occurrence: its alias and every name that qualifies its columns."""

    alias: str
    qualifiers: frozenset[str]


@dataclass
class NeighbourJoin:
    """A near-neighbour join found in a query."""

    near: int                      # index (in the sides given to find) of o1: the chunk's rows
    far: int                       # index of o2: chunk rows plus overlap rows
    radius: float                  # degrees: the smallest radius among the distance predicates
    predicates: list[exp.Expression]   # the distance conjuncts (kept in the query)


# ----------------------------------------------------------------------------- detection

def _side_of(col: exp.Expression, name: str, sides: list[Side]) -> int | None:
    if not isinstance(col, exp.Column) or col.name.lower() != name.lower() or not col.table:
        return None
    return next((i for i, s in enumerate(sides) if col.table.lower() in s.qualifiers), None)


def _pair(args: list[exp.Expression], sides: list[Side], ra: str, dec: str) -> tuple[int, int] | None:
    """The two sides whose position columns the four arguments are, in argument order."""
    a, b = _side_of(args[0], ra, sides), _side_of(args[2], ra, sides)
    if a is None or b is None or a == b:
        return None
    if _side_of(args[1], dec, sides) != a or _side_of(args[3], dec, sides) != b:
        return None
    return a, b


def find(select: exp.Select, sides: list[Side], ra: str, dec: str) -> NeighbourJoin | None:
    """The near-neighbour join between two of ``sides`` (occurrences of one director table with
    position columns ``ra``/``dec``), or None when no distance predicate joins them.

    Distance predicates are looked for among the top-level AND conditions of WHERE and of inner
    joins' ON. The near side (o1) is the occurrence that comes first in FROM, as in Qserv.
    """
    conds = _conjuncts(select.args["where"].this) if select.args.get("where") else []
    for j in select.args.get("joins") or []:
        on = j.args.get("on")
        if on is not None:
            outer = (j.side or "").upper() in ("LEFT", "RIGHT", "FULL")
            found = [c for c in _conjuncts(on) if _distance_form(c) and _pair(_distance_form(c)[0], sides, ra, dec)]
            if found and outer:
                raise QueryError(f"{j.side.upper()} OUTER near-neighbour joins are not supported: use an inner join")
            conds += found if not outer else []
    preds, radius, pair = [], math.inf, None
    for c in conds:
        form = _distance_form(c)
        if form is None:
            continue
        p = _pair(form[0], sides, ra, dec)
        if p is None:
            continue
        r = constant(form[1])
        if r is None:
            raise QueryError(f"a near-neighbour radius must be a constant number of degrees, not {form[1].sql()!r}",
                             token=form[1].sql())
        p = (min(p), max(p))
        if pair is not None and p != pair:
            raise QueryError("near-neighbour joins of more than two occurrences of a table are not supported")
        pair = p
        preds.append(c)
        radius = min(radius, r)
    if pair is None:
        return None
    return NeighbourJoin(near=pair[0], far=pair[1], radius=radius, predicates=preds)


def check_radius(join: NeighbourJoin, overlap: float, table: str) -> None:
    """Refuse a radius larger than the table's overlap: such pairs may lie in chunks that never meet."""
    if join.radius > overlap:
        raise QueryError(
            f"near-neighbour radius {join.radius:g} deg is larger than the overlap of {table} ({overlap:g} deg = "
            f"{overlap * 3600:g} arcsec): pairs farther apart than the overlap cannot be found chunk by chunk; "
            f"use a radius <= {overlap:g} deg")


# ----------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class Grid:
    """Zones and RA bins for one query. ``reach`` bounds a pair's separation (the radius with a
    margin); zones are ``height`` >= factor * reach high, and each zone's bins are at least
    factor times the widest RA difference of a pair within reach there."""

    reach: float     # degrees
    zones: int       # number of zones; zone z covers declinations [z h - 90, (z + 1) h - 90)
    factor: int      # cell edge in reaches (1 = the classic 3 x 3 of radius-sized cells)

    @property
    def height(self) -> float:
        return 180.0 / self.zones

    # The same formulas as the SQL below, in Python, for tests and explain output.
    def zone(self, dec: float) -> int:
        return min(max(math.floor((dec + 90.0) / self.height), 0), self.zones - 1)

    def ra_reach(self, zone: int) -> float:
        """The largest RA difference of two positions within reach when one lies in ``zone``."""
        h = self.height
        far = max(abs(zone * h - 90.0), abs((zone + 1) * h - 90.0)) + self.reach
        if far >= 90.0:
            return 360.0
        s = math.sin(math.radians(self.reach) / 2) / math.cos(math.radians(far))
        return 360.0 if s >= 1.0 else math.degrees(2 * math.asin(s))

    def bins(self, zone: int) -> int:
        n = math.floor(360.0 / (self.factor * self.ra_reach(zone)))
        return n if n >= 3 else 1


def grid_for(radius: float, factor: int = 2) -> Grid:
    """The grid for ``radius`` degrees, cells ``factor`` reaches on a side.

    Cells of two reaches were cheapest on LSST-like (clustered) data: all pairs < 5" among 1M
    Objects in one DuckDB took 4.1-4.4 CPU s with factor 1 (every far row in 9 cells), 2.5-3.0 s
    with 2 (~4 cells) and 3.3-3.8 s with 3 (more candidate pairs per cell).
    """
    reach = max(radius, MIN_REACH) * (1 + _REL_MARGIN) + _ABS_MARGIN
    factor = int(max(1, min(MAX_CELL_FACTOR, factor)))
    zones = max(1, math.floor(180.0 / (factor * reach)))
    return Grid(reach=reach, zones=zones, factor=factor)


def _lit(x: float) -> str:
    """A DOUBLE literal DuckDB reads back to exactly ``x``."""
    text = repr(float(x))
    return text if "e" in text else text + "e0"


def _zone_sql(g: Grid, ra: str, dec: str) -> str:
    """SQL for the zone of a row: NULL when its position is not finite (it never pairs)."""
    return (f"CASE WHEN isfinite({ra}) AND isfinite({dec}) THEN least(greatest("
            f"CAST(floor(({dec} + 90.0e0) / {_lit(g.height)}) AS BIGINT), 0), {g.zones - 1}) END")


def _ra_reach_sql(g: Grid, z: str) -> str:
    far = (f"greatest(abs({z} * {_lit(g.height)} - 90.0e0), abs(({z} + 1) * {_lit(g.height)} - 90.0e0)) "
           f"+ {_lit(g.reach)}")
    s = f"sin({_lit(math.radians(g.reach) / 2)}) / cos(radians({far}))"
    return (f"CASE WHEN {far} >= 90.0e0 OR {s} >= 1.0e0 THEN 360.0e0 "
            f"ELSE degrees(2.0e0 * asin({s})) END")


def _bins_sql(g: Grid, m: str) -> str:
    n = f"CAST(floor(360.0e0 / ({g.factor}.0e0 * {m})) AS BIGINT)"
    return f"CASE WHEN {n} >= 3 THEN {n} ELSE 1 END"


def _cell_sql(z: str, b: str, n: str) -> str:
    return f"{z} * {_ZONE_STRIDE} + ((({b}) % {n}) + {n}) % {n}"


def near_sql(source: str, ra: str, dec: str, g: Grid) -> str:
    """o1: the rows of ``source`` (SQL of a relation) with their own cell in ``CELL``.

    Rows without a finite position are left out: the distance predicate never holds for them."""
    q = lambda c: f'__qe_r."{c}"'
    zoned = (f"SELECT * FROM (SELECT __qe_r.*, {_zone_sql(g, q(ra), q(dec))} AS __qe_z FROM {source} AS __qe_r) "
             f"AS __qe_r WHERE __qe_z IS NOT NULL")
    binned = (f"SELECT *, {_bins_sql(g, '__qe_m')} AS __qe_n "
              f"FROM (SELECT *, {_ra_reach_sql(g, '__qe_z')} AS __qe_m FROM ({zoned}) AS __qe_r) AS __qe_r")
    cell = _cell_sql("__qe_z", f"CAST(floor({q(ra)} / (360.0e0 / __qe_n)) AS BIGINT)", "__qe_n")
    return f"SELECT * EXCLUDE (__qe_z, __qe_m, __qe_n), {cell} AS {CELL} FROM ({binned}) AS __qe_r"


def far_sql(sources: list[str], ra: str, dec: str, g: Grid) -> str:
    """o2: the rows of ``sources`` (relations with one schema, e.g. chunk rows and overlap rows),
    each copied into its own cell and every neighbouring cell it lies within reach of."""
    union = " UNION ALL BY NAME ".join(f"SELECT * FROM {s}" for s in sources)
    r = _lit(g.reach)
    h = _lit(g.height)
    q = lambda c: f'__qe_r."{c}"'
    # 1. the row's zone and its distances to the zone's lower and upper edges
    base = (f"SELECT __qe_r.*, {_zone_sql(g, q(ra), q(dec))} AS __qe_z0 "
            f"FROM ({union}) AS __qe_r")
    base = f"SELECT * FROM ({base}) AS __qe_r WHERE __qe_z0 IS NOT NULL"
    # 2. one copy per zone within reach (own zone, and the lower/upper one near those edges)
    zones = (f"SELECT __qe_r.*, __qe_r.__qe_z0 + __qe_d.dz AS __qe_z FROM ({base}) AS __qe_r "
             f"JOIN (VALUES (-1), (0), (1)) AS __qe_d(dz) ON __qe_d.dz = 0 "
             f"OR (__qe_d.dz = -1 AND __qe_r.__qe_z0 > 0 AND {q(dec)} - (__qe_r.__qe_z0 * {h} - 90.0e0) <= {r}) "
             f"OR (__qe_d.dz = 1 AND __qe_r.__qe_z0 < {g.zones - 1} "
             f"AND ((__qe_r.__qe_z0 + 1) * {h} - 90.0e0) - {q(dec)} <= {r})")
    # 3. that zone's binning: RA reach, bins, bin width, the row's bin and offset inside it
    binned = (f"SELECT *, 360.0e0 / __qe_n AS __qe_w, CAST(floor({q(ra)} / (360.0e0 / __qe_n)) AS BIGINT) AS __qe_b, "
              f"{q(ra)} - floor({q(ra)} / (360.0e0 / __qe_n)) * (360.0e0 / __qe_n) AS __qe_f "
              f"FROM (SELECT *, {_bins_sql(g, '__qe_m')} AS __qe_n "
              f"FROM (SELECT *, {_ra_reach_sql(g, '__qe_z')} AS __qe_m FROM ({zones}) AS __qe_r) AS __qe_r) AS __qe_r")
    # 4. one copy per bin within reach (own bin, and the previous/next one near those edges)
    cells = (f"SELECT __qe_r.*, {_cell_sql('__qe_r.__qe_z', '__qe_r.__qe_b + __qe_e.db', '__qe_r.__qe_n')} AS {CELL} "
             f"FROM ({binned}) AS __qe_r JOIN (VALUES (-1), (0), (1)) AS __qe_e(db) ON __qe_e.db = 0 "
             f"OR (__qe_r.__qe_n >= 3 AND ((__qe_e.db = -1 AND __qe_r.__qe_f <= __qe_r.__qe_m) "
             f"OR (__qe_e.db = 1 AND __qe_r.__qe_w - __qe_r.__qe_f <= __qe_r.__qe_m)))")
    return f"SELECT * EXCLUDE (__qe_z0, __qe_z, __qe_m, __qe_n, __qe_w, __qe_b, __qe_f) FROM ({cells}) AS __qe_r"


def join_condition(near: str, far: str) -> exp.Expression:
    """The equi-join of the two sides: same chunk, same cell."""
    return exp.and_(
        exp.EQ(this=exp.column("chunkId", table=near), expression=exp.column("chunkId", table=far)),
        exp.EQ(this=exp.column(CELL, table=near), expression=exp.column(CELL, table=far)))


def sources(near: str, far: str, overlap: str, ra: str, dec: str, radius: float) -> tuple[str, str]:
    """SQL (parenthesised) of the two sides, given the placeholders of the chunk rows read by each
    side (``near``, ``far``) and of the overlap rows (``overlap``)."""
    g = grid_for(radius)
    return f"({near_sql(near, ra, dec, g)})", f"({far_sql([far, overlap], ra, dec, g)})"


def far_regions(regions: list, radius: float) -> list:
    """Chunk-selecting regions implied by regions restricting the far side (o2): a pair's near
    row lies within ``radius`` of them. Circles grow by the radius; other shapes restrict nothing
    (the query then visits more chunks, never fewer than needed)."""
    from qengine.geometry import Circle

    return [Circle(c.ra, c.dec, min(180.0, c.radius + radius * (1 + _REL_MARGIN) + _ABS_MARGIN))
            for c in regions if isinstance(c, Circle)]
