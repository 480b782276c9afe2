"""Where external rows go: their own chunk and every other chunk within the match radius.

The rows get their own overlap, of the match radius (Qserv's overlap rule, poles included, via
:meth:`qengine.chunker.Chunker.overlap_locations`), so a catalogue row within the radius of an
external row always lies in one of the chunks the external row is copied to, whatever overlap
the catalogue was stored with. Each catalogue row lives in the data of exactly one chunk, so each
pair is found exactly once.
"""
from __future__ import annotations

import functools

import numpy as np

from czar.crossmatch.limits import reach
from qengine.chunker import Chunker

__all__ = ["place"]


@functools.lru_cache(maxsize=16)
def _chunker(num_stripes: int, num_sub_stripes: int, overlap: float) -> Chunker:
    return Chunker(num_stripes, num_sub_stripes, overlap)


def place(ra: np.ndarray, dec: np.ndarray, num_stripes: int, num_sub_stripes: int,
          radius: float, *, by_chunk: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, chunk_ids)``: the external rows (indices into ``ra``/``dec``) repeated once per chunk
    within ``radius`` degrees of them, sorted by chunk (``by_chunk``; else in no order). Positions
    must be valid (checked before)."""
    ch = _chunker(int(num_stripes), int(num_sub_stripes), reach(radius))
    home, _ = ch.locate(ra, dec)
    rows, chunks, _ = ch.overlap_locations(ra, dec, per_chunk=True)
    all_rows = np.concatenate([np.arange(ra.size, dtype=np.int64), rows.astype(np.int64)])
    all_chunks = np.concatenate([home.astype(np.int64), chunks.astype(np.int64)])
    if not by_chunk:
        return all_rows, all_chunks
    order = np.argsort(all_chunks, kind="stable")
    return all_rows[order], all_chunks[order]
