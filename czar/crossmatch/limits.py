"""Limits of a crossmatch: the largest radius a table's chunking allows, the largest upload, and
the checks of an external table's positions that give clear errors before any work is done."""
from __future__ import annotations

import functools
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from qengine.chunker import Chunker
from qengine.errors import ConfigError, CoordinateError, QueryError

__all__ = [
    "ABS_MARGIN",
    "DEFAULT_MAX_ROWS",
    "REL_MARGIN",
    "check_radius",
    "max_radius",
    "max_rows",
    "positions",
    "reach",
]

#: Uploads larger than this (rows) are refused unless ``QENGINE_XMATCH_MAX_ROWS`` says otherwise.
DEFAULT_MAX_ROWS = 20_000_000
#: Margins on the radius when placing rows in chunks and cells: bucketing must never lose a pair
#: that the exact predicate, evaluated in floating point, accepts.
REL_MARGIN = 1e-6
ABS_MARGIN = 1e-12


def reach(radius: float) -> float:
    """The radius with the bucketing margin (degrees)."""
    return radius * (1 + REL_MARGIN) + ABS_MARGIN


def max_rows() -> int:
    """The configured largest upload (rows)."""
    try:
        return int(os.environ.get("QENGINE_XMATCH_MAX_ROWS", DEFAULT_MAX_ROWS))
    except ValueError:
        return DEFAULT_MAX_ROWS


@functools.lru_cache(maxsize=16)
def max_radius(num_stripes: int, num_sub_stripes: int) -> float:
    """The largest match radius (degrees) for a chunking: the widest overlap the chunker accepts
    (about one sub-stripe: 0.176 deg = 10.6' for 340 x 3 and 85 x 12 stripes), less the margin.

    External rows are copied into chunks with their own overlap of this radius, so the stored
    overlap of the table does not limit the radius."""
    lo, hi = 0.0, 180.0 / (num_stripes * num_sub_stripes)
    try:
        Chunker(num_stripes, num_sub_stripes, hi)
        lo = hi
    except ConfigError:
        for _ in range(30):  # bisection: the chunker refuses overlaps wider than a sub-chunk
            mid = 0.5 * (lo + hi)
            try:
                Chunker(num_stripes, num_sub_stripes, mid)
                lo = mid
            except ConfigError:
                hi = mid
    return (lo - ABS_MARGIN) / (1 + REL_MARGIN) * (1 - 1e-9)


def check_radius(radius: float, num_stripes: int, num_sub_stripes: int, table: str) -> None:
    """Refuse a radius that is not a positive number up to the maximum, naming the value."""
    if not isinstance(radius, (int, float)) or isinstance(radius, bool) or not np.isfinite(radius):
        raise QueryError(f"crossmatch radius must be a finite number of degrees, got {radius!r}")
    if radius <= 0:
        raise QueryError(f"crossmatch radius must be positive, got {radius!r} deg")
    top = max_radius(num_stripes, num_sub_stripes)
    if radius > top:
        raise QueryError(f"crossmatch radius {radius:g} deg ({radius * 3600:g} arcsec) is larger than the maximum "
                         f"for {table}, {top:.6g} deg ({top * 3600:.4g} arcsec: one sub-stripe of its "
                         f"{num_stripes} x {num_sub_stripes} chunking)")


def _numeric(table: pa.Table, name: str, what: str, label: str) -> np.ndarray:
    idx = table.schema.get_field_index(name)
    if idx < 0:
        low = [n for n in table.column_names if n.lower() == name.lower()]
        if len(low) != 1:
            raise QueryError(f"{label}: no {what} column {name!r} (columns: {', '.join(table.column_names) or 'none'})",
                             token=name)
        name = low[0]
        idx = table.schema.get_field_index(name)
    col = table.column(idx)
    t = col.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
        raise QueryError(f"{label}: {what} column {name!r} is not numeric (type {t})", token=name)
    if col.null_count:
        row = int(pc.index(pc.is_null(col), True).as_py())
        raise CoordinateError(f"{label}: {what} column {name!r} is empty (NULL) at row {row}", rows=[row])
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)


def positions(table: pa.Table, ra: str, dec: str, label: str) -> tuple[np.ndarray, np.ndarray]:
    """The (ra, dec) arrays of an external table in degrees, or a clear error naming the column
    and the first bad row: missing or non-numeric columns, NULL, NaN/Inf, |dec| > 90, too many rows."""
    limit = max_rows()
    if table.num_rows > limit:
        raise QueryError(f"{label}: {table.num_rows} rows exceed the crossmatch upload limit of {limit} rows "
                         "(QENGINE_XMATCH_MAX_ROWS)")
    a = _numeric(table, ra, "RA", label)
    d = _numeric(table, dec, "Dec", label)
    for name, arr in ((ra, a), (dec, d)):
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CoordinateError(f"{label}: column {name!r} has {int(bad.sum())} non-finite value(s); first at "
                                  f"row {i}: {float(arr[i])!r}", rows=np.flatnonzero(bad)[:1000].tolist())
    bad = np.abs(d) > 90
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CoordinateError(f"{label}: column {dec!r} has {int(bad.sum())} value(s) outside [-90, 90]; first at "
                              f"row {i}: {float(d[i])!r}", rows=np.flatnonzero(bad)[:1000].tolist())
    return a, d
