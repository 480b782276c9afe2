"""Joins through match tables (Qserv's "ref-match" tables), as Qserv's czar plans them.

A match table relates rows of two director tables (``match_directors``: [[D1, key1], [D2,
key2]]). The partitioner stores a match row in the chunk of its D1 row and, when the D2 row lies
in another chunk, again in that chunk, with a flag column (bit 0: stored with the D1 row, bit 1:
with the D2 row), and refuses matches farther apart than the overlap (partitioner/place.py).
Queries are then answered chunk by chunk (Qserv's RelationGraph and MatchTablePlugin):

- the match table alone (with replicated tables at most): rows stored only for the second side
  are copies, so ``(key1 IS NULL OR flag <> 2)`` keeps each match once;
- a director joined with the match table on one of its keys: the chunk of the director row holds
  a copy of each of its matches, so the rows meet in that chunk (chunkId equal);
- D1 ⋈ match ⋈ D2: one director (the *primary*: its chunk's rows) meets the match rows of its
  chunk, and the other director is read from the chunk's rows *and its overlap*, where the
  partitioner guaranteed the partner row to be. Each match is then found once, in the primary
  row's chunk.

Outer joins, joins of two match tables and joins with child tables are refused, as in Qserv.
Pure: sqlglot trees in, trees and findings out.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlglot import exp

from czar.planner.distance import conjuncts
from qengine.errors import QueryError

__all__ = ["MatchColumns", "MatchJoin", "Occurrence", "columns_of", "conditions", "find", "needs_overlap",
           "sides_sql"]


@dataclass(frozen=True)
class MatchColumns:
    """A match table's two director keys and its flag column, from the table's manifest."""

    dir1: str
    key1: str
    dir2: str
    key2: str
    flag: str

    def key(self, side: int) -> str:
        return self.key1 if side == 1 else self.key2

    def director(self, side: int) -> str:
        return self.dir1 if side == 1 else self.dir2


def columns_of(name: str, columns: Sequence[dict]) -> MatchColumns:
    """Read the match annotations the partitioner writes into a match table's manifest columns
    (``match_director`` 1/2 with ``match_table`` on the keys, ``match_flag`` on the flag)."""
    keys = {c.get("match_director"): c for c in columns if c.get("match_director") in (1, 2)}
    flag = next((c["name"] for c in columns if c.get("match_flag")), None)
    if set(keys) != {1, 2} or flag is None:
        raise QueryError(f"match table {name} was stored without its director keys and flag column: "
                         "ingest it again with this version of qengine")
    return MatchColumns(keys[1]["match_table"], keys[1]["name"], keys[2]["match_table"], keys[2]["name"], flag)


@dataclass(frozen=True)
class Occurrence:
    """One table occurrence in FROM/JOIN, as this rule needs it."""

    alias: str
    qualifiers: frozenset[str]
    table: str          # the table's name
    role: str           # director | child | replicated | match
    id_column: str | None = None


@dataclass
class MatchJoin:
    """A query through a match table: the occurrence of the match table and, for each director
    occurrence joined to it, the side (1 or 2) whose key it is joined on (in FROM order)."""

    match: int
    columns: MatchColumns
    sides: dict[int, int] = field(default_factory=dict)

    @property
    def directors(self) -> list[int]:
        return sorted(self.sides)


def _refuse_outer(select: exp.Select, refs: list[Occurrence], match: int) -> None:
    for j in select.args.get("joins") or []:
        side = (j.side or "").upper()
        if side in ("LEFT", "RIGHT", "FULL") or (j.kind or "").upper() == "OUTER":
            raise QueryError(f"{side or 'OUTER'} OUTER joins with match table {refs[match].table} are not "
                             "supported (nor in Qserv: the join is split between a chunk's rows and its "
                             "overlap): use an inner join", token=side or None)


def _equalities(select: exp.Select) -> list[tuple[exp.Column, exp.Column]]:
    """Column = column conditions among the top-level ANDs of WHERE and of inner joins' ON."""
    conds = conjuncts(select.args["where"].this) if select.args.get("where") else []
    for j in select.args.get("joins") or []:
        if j.args.get("on") is not None:
            conds += conjuncts(j.args["on"])
    return [(c.left, c.right) for c in conds
            if isinstance(c, exp.EQ) and isinstance(c.left, exp.Column) and isinstance(c.right, exp.Column)]


def find(select: exp.Select, refs: list[Occurrence], owner: Callable[[exp.Column], int | None],
         columns: Callable[[int], MatchColumns]) -> MatchJoin | None:
    """The match-table join in ``select`` (None when no occurrence is of a match table).

    ``owner`` tells which occurrence a column belongs to (None: unknown or ambiguous);
    ``columns`` gives a match occurrence's keys. Every director occurrence must be joined to
    the match table on a key naming its table; anything that cannot be answered chunk by chunk
    is refused with the reason.
    """
    matches = [i for i, r in enumerate(refs) if r.role == "match"]
    if not matches:
        return None
    if len(matches) > 1:
        raise QueryError("joins of two match tables are not supported (nor in Qserv): "
                         f"{', '.join(refs[i].table for i in matches)}")
    m = matches[0]
    _refuse_outer(select, refs, m)
    mc = columns(m)
    mj = MatchJoin(m, mc)
    for i, r in enumerate(refs):
        if r.role == "child":
            raise QueryError(f"{r.table} is a child table: a match table ({refs[m].table}) can be joined only "
                             f"with its directors ({mc.dir1}, {mc.dir2}) and replicated tables", token=r.table)
        if r.role == "director" and r.table.lower() not in (mc.dir1.lower(), mc.dir2.lower()):
            raise QueryError(f"{r.table} is not a director of match table {refs[m].table} (it relates "
                             f"{mc.dir1} through {mc.key1} and {mc.dir2} through {mc.key2})", token=r.table)
    directors = [i for i, r in enumerate(refs) if r.role == "director"]
    if len(directors) > 2:
        raise QueryError(f"a query through match table {refs[m].table} may join at most two director "
                         f"occurrences (one per key), got {len(directors)}")
    links = _links(select, refs, m, directors, owner)
    for d in directors:
        r = refs[d]
        for side in (1, 2):
            if mc.director(side).lower() == r.table.lower() and mc.key(side).lower() in links.get(d, ()):
                mj.sides[d] = side
                break
        if d not in mj.sides:
            keys = " or ".join(f"{refs[m].alias}.{mc.key(s)}" for s in (1, 2)
                               if mc.director(s).lower() == r.table.lower())
            raise QueryError(f"join {r.alias} to match table {refs[m].table} on its key: add "
                             f"{r.alias}.{r.id_column} = {keys} (rows of a match table and its directors "
                             "meet in one chunk only through those keys)", token=r.table)
    return mj


def _links(select: exp.Select, refs: list[Occurrence], m: int, directors: list[int],
           owner: Callable[[exp.Column], int | None]) -> dict[int, set[str]]:
    """For each director occurrence, the match-table columns (lower case) its id equals, from
    ``d.id = m.col`` conditions and ``JOIN ... USING (col)``."""
    out: dict[int, set[str]] = {}
    for a, b in _equalities(select):
        for x, y in ((a, b), (b, a)):
            d = owner(x)
            if d in directors and x.name.lower() == (refs[d].id_column or "").lower() and owner(y) == m:
                out.setdefault(d, set()).add(y.name.lower())
    for k, j in enumerate(select.args.get("joins") or []):
        right = k + 1  # the occurrence this join brings in; USING compares it with those before
        for u in j.args.get("using") or []:
            name = u.name.lower()
            pairs = [(d, right) for d in directors if d < right] if right == m else \
                [(right, m)] if right in directors and m < right else []
            for d, _ in pairs:
                if (refs[d].id_column or "").lower() == name:
                    out.setdefault(d, set()).add(name)
    return out


def conditions(mj: MatchJoin, refs: list[Occurrence]) -> exp.Expression:
    """What the per-chunk query adds to WHERE.

    The match table alone: Qserv's duplicate filter ``(key1 IS NULL OR flag <> 2)``. Joined
    with directors: every occurrence in the same chunk (a worker's query covers many chunks,
    and a match row's copy in another chunk must not meet this chunk's director row)."""
    m = refs[mj.match].alias
    if not mj.sides:
        mc = mj.columns
        return exp.Paren(this=exp.or_(
            exp.Is(this=exp.column(mc.key1, table=m), expression=exp.Null()),
            exp.NEQ(this=exp.column(mc.flag, table=m), expression=exp.Literal.number(2))))
    return exp.and_(*[exp.EQ(this=exp.column("chunkId", table=refs[d].alias), expression=exp.column("chunkId", table=m))
                      for d in mj.directors])


def needs_overlap(mj: MatchJoin, primary: int) -> list[int]:
    """The director occurrences read with their overlap: those joined on the other key than the
    primary occurrence (their rows may lie in a neighbouring chunk, within the overlap)."""
    return [d for d in mj.directors if mj.sides[d] != mj.sides[primary]]


def sides_sql(data: str, overlap: str) -> str:
    """A director read from a chunk's rows and its overlap rows (placeholders ``data``, ``overlap``)."""
    return f"(SELECT * FROM {data} UNION ALL BY NAME SELECT * FROM {overlap})"
