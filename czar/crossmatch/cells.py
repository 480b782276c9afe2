"""Zones and RA bins for a crossmatch (the zones technique of Gray, Nieto-Santisteban and
Szalay, as in ../shared/DESIGN.md).

Declination zones of height ``h`` >= the cell size ``s`` >= the match reach ``r`` (the radius plus
a margin); zone ``z`` is cut into ``n(z)`` RA bins at least as wide as the largest RA difference
of two positions within ``s`` when one lies in the zone (so at most one bin apart when within
``r``); ``n(z)`` < 3 becomes one bin. Catalogue rows get their own cell; each external row is
copied into its own cell and into those neighbouring cells (zone +-1, bin +-1) it lies within
``r`` of: at most 9 copies, ~1 when cells are much larger than ``r``.

The czar computes the external side here, in numpy (:func:`expand`), and ships each worker the
rows it needs once (whatever the number of its chunks they reach) with a table of the zones its
copies occupy and those zones' binning (:func:`zone_table`). A worker computes only its catalogue
rows' zone (:func:`own_cells_sql`), keeps the rows whose zone is in that table and bins them with
the shipped bin counts and widths, so both sides use the same numbers. Zone and bin of a position
are IEEE-exact expressions (one division, one floor) evaluated alike by numpy and DuckDB; a row
lying on a cell edge within an ulp is covered anyway, since an external row within ``r`` of an
edge is copied across it and the reach carries a margin. The two sides meet in a hash equi-join
on the cell alone (one BIGINT key: each catalogue row is in the data of one chunk, and each
external row is on a worker once, so each pair is found once) and the exact distance decides.

Cells larger than the radius are cheaper when the catalogue is sparse (fewer external copies,
still few candidates per cell): :func:`grid_for` sizes them from the catalogue's density in its
densest chunks, up to 16 reaches. Measured on 1M external rows drawn from the 10M-row LSST-like
catalogue at 1": cells sized by the mean density (0.09 deg) gave 180M candidate pairs and a 7 s
join per worker, because external rows sit where the catalogue is dense; 16" cells (16 reaches)
need 1.27 copies per external row against 2.25 with 4", for a few candidates per cell.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

__all__ = ["CELL", "ZONE", "Grid", "expand", "grid_for", "own_cells_sql", "zone_table"]

CELL = "__xm_cell"
ZONE = "__xm_zone"
BINS = "__xm_n"
WIDTH = "__xm_w"
_ZONE_STRIDE = 1_000_000_000   # zone * stride + bin: bins per zone stay below it
_TABLE_ZONES = 4_000_000      # up to this many zones, their binning is tabulated once per grid
MIN_CELL = 1e-6                # degrees: keeps zone and bin counts in range
MAX_FACTOR = 16               # cells at most this many reaches wide (catalogues are clustered): fewer external copies
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

    def zone_of(self, dec: np.ndarray) -> np.ndarray:
        """Zone numbers (the same expression as the worker's SQL)."""
        z = np.floor((np.asarray(dec, dtype=np.float64) + 90.0) / self.height)
        return np.clip(z, 0, self.zones - 1).astype(np.int64)

    def ra_reach_of(self, zone: np.ndarray, within: float) -> np.ndarray:
        """The largest RA difference (deg) of two positions ``within`` deg apart, one in ``zone``."""
        h = self.height
        z = np.asarray(zone, dtype=np.float64)
        far = np.maximum(np.abs(z * h - 90.0), np.abs((z + 1) * h - 90.0)) + within
        with np.errstate(divide="ignore", invalid="ignore"):
            s = math.sin(math.radians(within) / 2) / np.cos(np.radians(far))
            out = np.degrees(2 * np.arcsin(np.minimum(s, 1.0)))
        return np.where((far >= 90.0) | (s >= 1.0) | ~np.isfinite(s), 360.0, out)

    def bins_of(self, zone: np.ndarray) -> np.ndarray:
        """RA bins per zone: ``n`` with 360/n >= the RA reach of a cell, 1 when fewer than 3."""
        n = np.floor(360.0 / self.ra_reach_of(zone, self.cell)).astype(np.int64)
        return np.where(n >= 3, n, 1)

    def per_zone(self, zone: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(bins, RA reach of self.reach)`` of each zone in ``zone``, computed once per distinct
        zone (trigonometry per row of a million-row upload costs seconds)."""
        zone = np.asarray(zone, dtype=np.int64)
        if self.zones <= _TABLE_ZONES:
            n, m = _zone_arrays(self)
            return n[zone], m[zone]
        uniq, inv = np.unique(zone, return_inverse=True)
        return self.bins_of(uniq)[inv], self.ra_reach_of(uniq, self.reach)[inv]

    # scalar forms, for tests and explain output
    def zone(self, dec: float) -> int:
        return int(self.zone_of(np.array([dec]))[0])

    def ra_reach(self, zone: int, within: float) -> float:
        return float(self.ra_reach_of(np.array([zone]), within)[0])

    def bins(self, zone: int) -> int:
        return int(self.bins_of(np.array([zone]))[0])


@functools.lru_cache(maxsize=8)
def _zone_arrays(g: Grid) -> tuple[np.ndarray, np.ndarray]:
    z = np.arange(g.zones, dtype=np.int64)
    return g.bins_of(z), g.ra_reach_of(z, g.reach)


def grid_for(reach: float, density: float | None = None) -> Grid:
    """The grid for pairs within ``reach`` degrees over a catalogue of ``density`` rows/deg^2."""
    cell = max(reach, MIN_CELL)
    if density and density > 0:
        cell = max(cell, min(MAX_FACTOR * cell, math.sqrt(ROWS_PER_CELL / density)))
    zones = max(1, math.floor(180.0 / cell))
    return Grid(reach=reach, cell=cell, zones=zones)


def _norm_ra(ra: np.ndarray) -> np.ndarray:
    return ra - 360.0 * np.floor(ra / 360.0)


def expand(g: Grid, ra: np.ndarray, dec: np.ndarray, *, by_row: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cells)``: each position's own cell and each neighbouring cell it lies within
    ``g.reach`` of (rows are indices into ra/dec, ascending with ``by_row``, else in no order:
    a sort of the copies costs a fifth of the whole)."""
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    n0 = ra.size
    idx = np.arange(n0, dtype=np.int64)
    z0 = g.zone_of(dec)
    h, r = g.height, g.reach
    # zone copies: its own, and the lower/upper one when within reach of that edge
    lo = (z0 > 0) & (dec - (z0 * h - 90.0) <= r)
    hi = (z0 < g.zones - 1) & (((z0 + 1) * h - 90.0) - dec <= r)
    rows = np.concatenate([idx, idx[lo], idx[hi]])
    zones = np.concatenate([z0, z0[lo] - 1, z0[hi] + 1])
    a = _norm_ra(ra)[rows]
    n, m = g.per_zone(zones)
    w = 360.0 / n
    b = np.floor(a / w).astype(np.int64)
    f = a - b * w
    prev = (n >= 3) & (f <= m)
    nxt = (n >= 3) & (w - f <= m)
    rows2 = np.concatenate([rows, rows[prev], rows[nxt]])
    zones2 = np.concatenate([zones, zones[prev], zones[nxt]])
    n2 = np.concatenate([n, n[prev], n[nxt]])
    b2 = np.concatenate([b, b[prev] - 1, b[nxt] + 1])
    cells = zones2 * _ZONE_STRIDE + np.mod(b2, n2)
    if not by_row:
        return rows2, cells
    order = np.argsort(rows2, kind="stable")
    return rows2[order], cells[order]


def zone_table(g: Grid, cells: np.ndarray) -> pa.Table:
    """The distinct zones of ``cells``, sorted, with their bins and bin width: the worker keeps
    catalogue rows of these zones only, binned with these numbers."""
    zones = np.asarray(cells, dtype=np.int64) // _ZONE_STRIDE
    if g.zones <= _TABLE_ZONES:
        seen = np.zeros(g.zones, bool)
        seen[zones] = True
        zz = np.flatnonzero(seen).astype(np.int64)
    else:
        zz = np.unique(zones)
    n, _ = g.per_zone(zz)
    return pa.table({ZONE: pa.array(zz), BINS: pa.array(n), WIDTH: pa.array(360.0 / n)})


def _lit(x: float) -> str:
    """A DOUBLE literal DuckDB reads back to exactly ``x``."""
    text = repr(float(x))
    return text if "e" in text else text + "e0"


def own_cells_sql(source: str, ra: str, dec: str, g: Grid, zones: str, chunks: str | None = None) -> str:
    """The rows of ``source`` whose zone is in ``zones`` (a :func:`zone_table` relation), with their
    own cell in ``CELL``; rows without a finite position are left out (they match nothing).
    ``chunks`` (a relation of chunkIds): only rows of those chunks. ``ra``/``dec`` are quoted
    column names."""
    zone = f"least(CAST(floor((__xm_r.{dec} + 90.0e0) / {_lit(g.height)}) AS BIGINT), {g.zones - 1})"
    if chunks is None:
        mine = source
    else:
        # the chunks first, on the bare column: DuckDB pushes that join's keys into the scan as a
        # filter (rows of other chunks are never decoded), not those of the computed zone below
        mine = (f"(SELECT __xm_r.* FROM {source} AS __xm_r JOIN {chunks} AS __xm_k "
                f"ON __xm_k.chunkId = __xm_r.chunkId)")
    inner = (f"SELECT __xm_r.*, {zone} AS __xm_z FROM {mine} AS __xm_r "
             f"WHERE isfinite(__xm_r.{ra}) AND isfinite(__xm_r.{dec})")
    a = f"(__xm_r.{ra} - 360.0e0 * floor(__xm_r.{ra} / 360.0e0))"
    return (f"SELECT __xm_r.* EXCLUDE (__xm_z), __xm_r.__xm_z * {_ZONE_STRIDE} + "
            f"(CAST(floor({a} / __xm_t.{WIDTH}) AS BIGINT) % __xm_t.{BINS}) AS {CELL} "
            f"FROM ({inner}) AS __xm_r JOIN {zones} AS __xm_t ON __xm_t.{ZONE} = __xm_r.__xm_z")
