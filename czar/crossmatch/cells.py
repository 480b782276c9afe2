"""Zones and RA bins for a crossmatch inside one worker query (the zones technique of Gray,
Nieto-Santisteban and Szalay, as in ../shared/DESIGN.md).

Declination zones of height ``h`` >= the cell size ``s`` >= the match reach ``r`` (the radius plus
a margin); zone ``z`` is cut into ``n(z)`` RA bins at least as wide as the largest RA difference
of two positions within ``s`` when one lies in the zone (so at most one bin apart when within
``r``); ``n(z)`` < 3 becomes one bin. Catalogue rows get their own cell; each external row is
copied into its own cell and into those neighbouring cells (zone +-1, bin +-1) it lies within
``r`` of: at most 9 copies, ~1 when cells are much larger than ``r``. Both sides compute cells
with the same SQL expressions in the same DuckDB query, so they agree bit for bit; the margins
cover the rest. The two sides meet in a hash equi-join on (chunkId, cell) and the exact distance
decides.

Cells larger than the radius are cheaper when the catalogue is sparse (fewer external copies,
still few candidates per cell): :func:`grid_for` sizes them from the catalogue's density in its
densest chunks, up to 4 reaches. Measured on 1M external rows drawn from the 10M-row LSST-like
catalogue at 1": cells sized by the mean density (0.09 deg) gave 180M candidate pairs and a 7 s
join per worker, because external rows sit where the catalogue is dense.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["CELL", "Grid", "expanded_cells_sql", "grid_for", "own_cells_sql", "zone_table_sql"]

CELL = "__xm_cell"
_ZONE_STRIDE = 1_000_000_000   # zone * stride + bin: bins per zone stay below it
MIN_CELL = 1e-6                # degrees: keeps zone and bin counts in range
MAX_FACTOR = 4                 # cells at most this many reaches wide: catalogues are clustered
ROWS_PER_CELL = 2.0            # target catalogue rows per cell when sizing cells by density


@dataclass(frozen=True)
class Grid:
    """Zones of height 180/zones >= cell, for pairs within ``reach`` degrees."""

    reach: float
    cell: float
    zones: int

    @property
    def height(self) -> float:
        return 180.0 / self.zones

    # the SQL below, in Python: for tests and explain output
    def zone(self, dec: float) -> int:
        return min(max(math.floor((dec + 90.0) / self.height), 0), self.zones - 1)

    def ra_reach(self, zone: int, within: float) -> float:
        h = self.height
        far = max(abs(zone * h - 90.0), abs((zone + 1) * h - 90.0)) + within
        if far >= 90.0:
            return 360.0
        s = math.sin(math.radians(within) / 2) / math.cos(math.radians(far))
        return 360.0 if s >= 1.0 else math.degrees(2 * math.asin(s))

    def bins(self, zone: int) -> int:
        n = math.floor(360.0 / self.ra_reach(zone, self.cell))
        return n if n >= 3 else 1


def grid_for(reach: float, density: float | None = None) -> Grid:
    """The grid for pairs within ``reach`` degrees over a catalogue of ``density`` rows/deg^2."""
    cell = max(reach, MIN_CELL)
    if density and density > 0:
        cell = max(cell, min(MAX_FACTOR * cell, math.sqrt(ROWS_PER_CELL / density)))
    zones = max(1, math.floor(180.0 / cell))
    return Grid(reach=reach, cell=cell, zones=zones)


def _lit(x: float) -> str:
    """A DOUBLE literal DuckDB reads back to exactly ``x``."""
    text = repr(float(x))
    return text if "e" in text else text + "e0"


def _zone(g: Grid, dec: str) -> str:
    return (f"least(greatest(CAST(floor(({dec} + 90.0e0) / {_lit(g.height)}) AS BIGINT), 0), {g.zones - 1})")


def _ra_reach(g: Grid, z: str, within: float) -> str:
    far = (f"(greatest(abs({z} * {_lit(g.height)} - 90.0e0), abs(({z} + 1) * {_lit(g.height)} - 90.0e0)) "
           f"+ {_lit(within)})")
    s = f"(sin({_lit(math.radians(within) / 2)}) / cos(radians({far})))"
    return f"(CASE WHEN {far} >= 90.0e0 OR {s} >= 1.0e0 THEN 360.0e0 ELSE degrees(2.0e0 * asin({s})) END)"


def _bins(g: Grid, z: str) -> str:
    n = f"CAST(floor(360.0e0 / {_ra_reach(g, z, g.cell)}) AS BIGINT)"
    return f"(CASE WHEN {n} >= 3 THEN {n} ELSE 1 END)"


def _norm_ra(ra: str) -> str:
    return f"({ra} - 360.0e0 * floor({ra} / 360.0e0))"


def _bin(ra: str, n: str) -> str:
    return f"(CAST(floor({ra} / (360.0e0 / {n})) AS BIGINT) % {n})"


def zone_table_sql(g: Grid) -> str:
    """One row per zone: its number, bins, bin width and the RA reach of ``g.reach`` there. Both
    sides read their zones' binning from this one relation (computed once per query, not per row)."""
    return (f"SELECT range AS __xm_zz, __xm_n, 360.0e0 / __xm_n AS __xm_w, __xm_m FROM "
            f"(SELECT range, {_bins(g, 'range')} AS __xm_n, {_ra_reach(g, 'range', g.reach)} AS __xm_m "
            f"FROM range({g.zones})) AS __xm_t")


def own_cells_sql(source: str, ra: str, dec: str, g: Grid) -> str:
    """The rows of ``source`` (a relation) with their own cell in ``CELL``; rows without a finite
    position are left out (they match nothing). ``ra``/``dec`` are quoted column names."""
    inner = (f"SELECT __xm_r.*, {_zone(g, f'__xm_r.{dec}')} AS __xm_z, {_norm_ra(f'__xm_r.{ra}')} AS __xm_a "
             f"FROM {source} AS __xm_r WHERE isfinite(__xm_r.{ra}) AND isfinite(__xm_r.{dec})")
    return (f"SELECT __xm_r.* EXCLUDE (__xm_z, __xm_a), __xm_r.__xm_z * {_ZONE_STRIDE} + "
            f"(CAST(floor(__xm_r.__xm_a / __xm_t.__xm_w) AS BIGINT) % __xm_t.__xm_n) AS {CELL} "
            f"FROM ({inner}) AS __xm_r JOIN ({zone_table_sql(g)}) AS __xm_t ON __xm_t.__xm_zz = __xm_r.__xm_z")


def expanded_cells_sql(source: str, ra: str, dec: str, g: Grid) -> str:
    """The rows of ``source``, each copied into its own cell and each neighbouring cell it lies
    within ``g.reach`` of (``CELL``)."""
    r = _lit(g.reach)
    h = _lit(g.height)
    base = (f"SELECT __xm_r.*, {_zone(g, f'__xm_r.{dec}')} AS __xm_z0, {_norm_ra(f'__xm_r.{ra}')} AS __xm_a "
            f"FROM {source} AS __xm_r")
    # one copy per zone within reach: its own, and the lower/upper one near those edges
    zones = (f"SELECT __xm_r.*, __xm_r.__xm_z0 + __xm_d.dz AS __xm_z FROM ({base}) AS __xm_r "
             f"JOIN (VALUES (-1), (0), (1)) AS __xm_d(dz) ON __xm_d.dz = 0 "
             f"OR (__xm_d.dz = -1 AND __xm_r.__xm_z0 > 0 AND __xm_r.{dec} - (__xm_r.__xm_z0 * {h} - 90.0e0) <= {r}) "
             f"OR (__xm_d.dz = 1 AND __xm_r.__xm_z0 < {g.zones - 1} "
             f"AND ((__xm_r.__xm_z0 + 1) * {h} - 90.0e0) - __xm_r.{dec} <= {r})")
    # that zone's binning, the row's bin and its offset inside it
    binned = (f"SELECT __xm_r.*, __xm_t.__xm_n, __xm_t.__xm_w, __xm_t.__xm_m, "
              f"CAST(floor(__xm_r.__xm_a / __xm_t.__xm_w) AS BIGINT) AS __xm_b, "
              f"__xm_r.__xm_a - floor(__xm_r.__xm_a / __xm_t.__xm_w) * __xm_t.__xm_w AS __xm_f "
              f"FROM ({zones}) AS __xm_r JOIN ({zone_table_sql(g)}) AS __xm_t ON __xm_t.__xm_zz = __xm_r.__xm_z")
    # one copy per bin within reach: its own, and the previous/next one near those edges
    cells = (f"SELECT __xm_r.*, __xm_r.__xm_z * {_ZONE_STRIDE} + "
             f"(((__xm_r.__xm_b + __xm_e.db) % __xm_r.__xm_n) + __xm_r.__xm_n) % __xm_r.__xm_n AS {CELL} "
             f"FROM ({binned}) AS __xm_r JOIN (VALUES (-1), (0), (1)) AS __xm_e(db) ON __xm_e.db = 0 "
             f"OR (__xm_r.__xm_n >= 3 AND ((__xm_e.db = -1 AND __xm_r.__xm_f <= __xm_r.__xm_m) "
             f"OR (__xm_e.db = 1 AND __xm_r.__xm_w - __xm_r.__xm_f <= __xm_r.__xm_m)))")
    return (f"SELECT * EXCLUDE (__xm_z0, __xm_z, __xm_a, __xm_n, __xm_m, __xm_w, __xm_b, __xm_f) "
            f"FROM ({cells}) AS __xm_r")
