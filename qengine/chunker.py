"""Qserv's spherical partitioning: stripes, chunks, sub-chunks and overlap, vectorised.

The sky is cut into ``num_stripes`` declination stripes, each split into chunks of roughly
equal width; each stripe is cut into ``num_sub_stripes`` sub-stripes, each split into
sub-chunks. Chunk ids are ``stripe * 2 * num_stripes + chunk`` and sub-chunk ids are
``sub_stripe_in_stripe * max_sub_chunks_per_sub_stripe_chunk + sub_chunk_in_chunk``; both are
identical to ``lsst.sphgeom.Chunker`` (segment counts are computed the way sphgeom does, in
radians) and point location and overlap follow Qserv's partitioner (``partition/Chunker.cc``),
which works in degrees.

Every function takes and returns numpy arrays so that millions of rows are placed per second.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from qengine.errors import ConfigError, CoordinateError

__all__ = ["Chunker", "ChunkBounds", "validate_positions"]

_HALF_PI = 0.5 * math.pi
# sphgeom: sub-stripes whose latitude magnitude comes within ~1 arcsec of a pole hold one segment.
_POLAR_LIMIT_RAD = 0.5 * math.pi - 4.85e-6


def _num_segments(lat_a: float, lat_b: float, width: float) -> int:
    """Number of equal-width longitude segments for a latitude band (radians), as sphgeom does.

    The width is chosen so that two points in adjacent segments at the band's edge nearest the
    pole are at least ``width`` apart.
    """
    if width > math.pi:
        return 1
    max_abs_lat = max(abs(lat_a), abs(lat_b))
    if max_abs_lat > _POLAR_LIMIT_RAD:
        return 1
    cos_width = math.cos(width)
    sin_lat = math.sin(max_abs_lat)
    cos_lat = math.cos(max_abs_lat)
    x = cos_width - sin_lat * sin_lat
    u = cos_lat * cos_lat
    y = math.sqrt(abs(u * u - x * x))
    return int(math.floor(2.0 * math.pi / abs(math.atan2(y, x))))


def _max_alpha(radius: float, center_lat: float) -> float:
    """Half-width in longitude (deg) of a circle of ``radius`` (deg) centred at ``center_lat``.

    Qserv's ``maxAlpha``: 180 once the circle comes within 1 arcsec of a pole.
    """
    if radius == 0.0:
        return 0.0
    lat = min(max(center_lat, -90.0), 90.0)
    if abs(lat) + radius > 90.0 - 1.0 / 3600.0:
        return 180.0
    r = math.radians(radius)
    lat = math.radians(lat)
    y = math.sin(r)
    x = math.sqrt(abs(math.cos(lat - r) * math.cos(lat + r)))
    return math.degrees(abs(math.atan(y / x)))


def validate_positions(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Return a boolean mask of rows whose position can be placed on the sky.

    A position is bad when either coordinate is NaN or infinite, or when dec lies outside
    [-90, 90]. RA of any finite value is accepted and reduced modulo 360.
    """
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    return np.isfinite(ra) & np.isfinite(dec) & (dec >= -90.0) & (dec <= 90.0)


def _reduce_ra(ra: np.ndarray) -> np.ndarray:
    """RA reduced to [0, 360]; 360 itself is kept (Qserv clamps it into the last sub-chunk)."""
    out = np.asarray(ra, dtype=np.float64)
    outside = (out < 0.0) | (out > 360.0)
    if outside.any():
        out = out.copy()
        out[outside] = np.mod(out[outside], 360.0)
    return out


@dataclass(frozen=True)
class ChunkBounds:
    """Longitude/latitude bounds (degrees) of chunks or sub-chunks, as parallel arrays."""

    ra_min: np.ndarray
    ra_max: np.ndarray
    dec_min: np.ndarray
    dec_max: np.ndarray


@dataclass(frozen=True)
class Chunker:
    """Qserv's chunking of the sphere for one catalogue.

    ``overlap`` (degrees) is the margin copied into neighbouring chunks for near-neighbour
    work; it may not exceed the sub-stripe height nor any sub-chunk width (Qserv's limits).
    """

    num_stripes: int = 85
    num_sub_stripes: int = 12
    overlap: float = 0.01667
    # Derived tables, filled in __post_init__.
    _num_chunks: np.ndarray = field(init=False, repr=False, compare=False)
    _num_sub_chunks_per_chunk: np.ndarray = field(init=False, repr=False, compare=False)
    _sub_chunk_width: np.ndarray = field(init=False, repr=False, compare=False)
    _alpha: np.ndarray = field(init=False, repr=False, compare=False)
    _max_sub_chunks: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ns, nss = int(self.num_stripes), int(self.num_sub_stripes)
        if ns < 1 or nss < 1:
            raise ConfigError(
                f"num_stripes ({self.num_stripes}) and num_sub_stripes ({self.num_sub_stripes}) "
                "must be positive integers"
            )
        if ns * nss > 180 * 3600:
            raise ConfigError(
                f"num_stripes * num_sub_stripes = {ns * nss} makes sub-stripes smaller than "
                "1 arcsec; sphgeom allows at most 648000"
            )
        overlap = float(self.overlap)
        if not (0.0 <= overlap <= 10.0):
            raise ConfigError(f"overlap must lie in [0, 10] degrees, got {self.overlap}")
        sub_stripe_height_deg = 180.0 / (ns * nss)
        if sub_stripe_height_deg < overlap:
            raise ConfigError(
                f"overlap {overlap} deg is larger than the sub-stripe height "
                f"{sub_stripe_height_deg:.6g} deg (num_stripes={ns}, num_sub_stripes={nss})"
            )
        stripe_h = math.pi / ns
        sub_h = math.pi / (ns * nss)
        num_chunks = np.empty(ns, dtype=np.int64)
        nscpc = np.empty(ns * nss, dtype=np.int64)
        width = np.empty(ns * nss, dtype=np.float64)
        alpha = np.empty(ns * nss, dtype=np.float64)
        for s in range(ns):
            nc = _num_segments(s * stripe_h - _HALF_PI, (s + 1) * stripe_h - _HALF_PI, stripe_h)
            num_chunks[s] = nc
            for ss in range(s * nss, (s + 1) * nss):
                lat_a, lat_b = ss * sub_h - _HALF_PI, (ss + 1) * sub_h - _HALF_PI
                nsc = _num_segments(lat_a, lat_b, sub_h) // nc
                nscpc[ss] = nsc
                width[ss] = 360.0 / (nsc * nc)
                lat_a_deg = ss * sub_stripe_height_deg - 90.0
                lat_b_deg = (ss + 1) * sub_stripe_height_deg - 90.0
                a = _max_alpha(overlap, max(abs(lat_a_deg), abs(lat_b_deg)))
                if a > width[ss]:
                    raise ConfigError(
                        f"overlap {overlap} deg is wider than the sub-chunks of sub-stripe {ss} "
                        f"({width[ss]:.6g} deg of RA at dec {lat_a_deg:.4f}..{lat_b_deg:.4f})"
                    )
                alpha[ss] = a
        object.__setattr__(self, "num_stripes", ns)
        object.__setattr__(self, "num_sub_stripes", nss)
        object.__setattr__(self, "overlap", overlap)
        object.__setattr__(self, "_num_chunks", num_chunks)
        object.__setattr__(self, "_num_sub_chunks_per_chunk", nscpc)
        object.__setattr__(self, "_sub_chunk_width", width)
        object.__setattr__(self, "_alpha", alpha)
        object.__setattr__(self, "_max_sub_chunks", int(nscpc.max()))

    # ----------------------------------------------------------------- geometry of the scheme
    @property
    def stripe_height(self) -> float:
        """Stripe height in degrees."""
        return 180.0 / self.num_stripes

    @property
    def sub_stripe_height(self) -> float:
        """Sub-stripe height in degrees."""
        return 180.0 / (self.num_stripes * self.num_sub_stripes)

    @property
    def max_sub_chunks_per_sub_stripe_chunk(self) -> int:
        """Sub-chunk id stride between sub-stripes of a chunk (sphgeom's name)."""
        return self._max_sub_chunks

    def num_chunks_in_stripe(self, stripe: int) -> int:
        return int(self._num_chunks[stripe])

    def stripe_of(self, chunk_id: np.ndarray | int) -> np.ndarray:
        """Stripe index of chunk ids."""
        return np.asarray(chunk_id, dtype=np.int64) // (2 * self.num_stripes)

    def all_chunks(self) -> np.ndarray:
        """Every chunk id of the scheme, ascending (sphgeom's ``getAllChunks``)."""
        stripes = np.repeat(np.arange(self.num_stripes, dtype=np.int64), self._num_chunks)
        starts = np.cumsum(self._num_chunks) - self._num_chunks
        chunks = np.arange(stripes.size, dtype=np.int64) - np.repeat(starts, self._num_chunks)
        return (stripes * 2 * self.num_stripes + chunks).astype(np.int32)

    def all_sub_chunks(self, chunk_id: int) -> np.ndarray:
        """Every sub-chunk id of one chunk, ascending (sphgeom's ``getAllSubChunks``)."""
        self._check_chunk_ids(np.asarray([chunk_id]))
        s = int(chunk_id) // (2 * self.num_stripes)
        out = []
        for i in range(self.num_sub_stripes):
            n = int(self._num_sub_chunks_per_chunk[s * self.num_sub_stripes + i])
            out.append(i * self._max_sub_chunks + np.arange(n, dtype=np.int64))
        return np.concatenate(out).astype(np.int32)

    def is_valid_chunk(self, chunk_id: np.ndarray | int) -> np.ndarray:
        """Whether each id names a chunk of this scheme."""
        cid = np.asarray(chunk_id, dtype=np.int64)
        stripe = cid // (2 * self.num_stripes)
        chunk = cid - stripe * 2 * self.num_stripes
        ok = (cid >= 0) & (stripe < self.num_stripes)
        nc = np.where(ok, self._num_chunks[np.clip(stripe, 0, self.num_stripes - 1)], 0)
        return ok & (chunk < nc)

    def _check_chunk_ids(self, cid: np.ndarray) -> None:
        bad = ~self.is_valid_chunk(cid)
        if bad.any():
            raise ConfigError(
                f"chunk id {int(cid[bad][0])} does not exist for num_stripes={self.num_stripes}"
            )

    def chunk_bounds(self, chunk_id: np.ndarray | int) -> ChunkBounds:
        """Bounding boxes of chunks, degrees (Qserv's ``getChunkBounds``)."""
        cid = np.atleast_1d(np.asarray(chunk_id, dtype=np.int64))
        self._check_chunk_ids(cid)
        stripe = cid // (2 * self.num_stripes)
        chunk = cid - stripe * 2 * self.num_stripes
        width = 360.0 / self._num_chunks[stripe]
        h = self.sub_stripe_height * self.num_sub_stripes
        return ChunkBounds(
            ra_min=chunk * width,
            ra_max=np.minimum((chunk + 1) * width, 360.0),
            dec_min=np.clip(stripe * h - 90.0, -90.0, 90.0),
            dec_max=np.clip((stripe + 1) * h - 90.0, -90.0, 90.0),
        )

    def sub_chunk_bounds(self, chunk_id: np.ndarray | int, sub_chunk_id: np.ndarray | int) -> ChunkBounds:
        """Bounding boxes of sub-chunks, degrees (Qserv's ``getSubChunkBounds``)."""
        cid = np.atleast_1d(np.asarray(chunk_id, dtype=np.int64))
        scid = np.atleast_1d(np.asarray(sub_chunk_id, dtype=np.int64))
        self._check_chunk_ids(cid)
        stripe = cid // (2 * self.num_stripes)
        chunk = cid - stripe * 2 * self.num_stripes
        y = scid // self._max_sub_chunks
        x = scid - y * self._max_sub_chunks
        ss = stripe * self.num_sub_stripes + y
        if ((y < 0) | (y >= self.num_sub_stripes)).any() or (
            (x < 0) | (x >= self._num_sub_chunks_per_chunk[np.clip(ss, 0, ss.max())])
        ).any():
            raise ConfigError("sub-chunk id out of range for its chunk")
        sub_chunk = chunk * self._num_sub_chunks_per_chunk[ss] + x
        w = self._sub_chunk_width[ss]
        return ChunkBounds(
            ra_min=sub_chunk * w,
            ra_max=np.minimum((sub_chunk + 1) * w, 360.0),
            dec_min=np.clip(ss * self.sub_stripe_height - 90.0, -90.0, 90.0),
            dec_max=np.clip((ss + 1) * self.sub_stripe_height - 90.0, -90.0, 90.0),
        )

    # ----------------------------------------------------------------- location of points
    def _locate_parts(self, ra: np.ndarray, dec: np.ndarray):
        """Sub-stripe, stripe, global sub-chunk index and chunk index of valid points."""
        nss_total = self.num_stripes * self.num_sub_stripes
        ss = np.floor((dec + 90.0) / self.sub_stripe_height).astype(np.int64)
        np.minimum(ss, nss_total - 1, out=ss)
        stripe = ss // self.num_sub_stripes
        nscpc = self._num_sub_chunks_per_chunk[ss]
        n_sub = self._num_chunks[stripe] * nscpc
        sc = np.floor(ra / self._sub_chunk_width[ss]).astype(np.int64)
        np.minimum(sc, n_sub - 1, out=sc)
        chunk = sc // nscpc
        return ss, stripe, sc, chunk, nscpc, n_sub

    def _ids(self, stripe, ss, chunk, sc, nscpc):
        chunk_id = stripe * 2 * self.num_stripes + chunk
        sub_id = (ss - stripe * self.num_sub_stripes) * self._max_sub_chunks + (sc - chunk * nscpc)
        return chunk_id.astype(np.int32), sub_id.astype(np.int32)

    def locate(
        self, ra: np.ndarray, dec: np.ndarray, *, errors: str = "raise"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Chunk and sub-chunk ids (int32 arrays) of positions in degrees.

        ``errors="raise"`` raises :class:`CoordinateError` naming the bad rows (NaN, infinite,
        |dec| > 90); ``errors="mask"`` returns -1 for them instead, so that a caller can report
        or reject rows one by one.
        """
        if errors not in ("raise", "mask"):
            raise ValueError("errors must be 'raise' or 'mask'")
        ra = np.atleast_1d(np.asarray(ra, dtype=np.float64))
        dec = np.atleast_1d(np.asarray(dec, dtype=np.float64))
        if ra.shape != dec.shape:
            raise ValueError(f"ra and dec differ in shape: {ra.shape} vs {dec.shape}")
        good = validate_positions(ra, dec)
        all_good = bool(good.all())
        if not all_good and errors == "raise":
            bad = np.flatnonzero(~good)
            i = int(bad[0])
            raise CoordinateError(
                f"{bad.size} invalid position(s); first at row {i}: ra={ra[i]!r}, dec={dec[i]!r} "
                "(need finite ra and dec in [-90, 90])",
                rows=bad[:1000].tolist(),
            )
        if not all_good:
            ra_v, dec_v = _reduce_ra(ra[good]), dec[good]
        else:
            ra_v, dec_v = _reduce_ra(ra), dec
        ss, stripe, sc, chunk, nscpc, _ = self._locate_parts(ra_v, dec_v)
        cid, scid = self._ids(stripe, ss, chunk, sc, nscpc)
        if all_good:
            return cid, scid
        out_c = np.full(ra.shape, -1, dtype=np.int32)
        out_s = np.full(ra.shape, -1, dtype=np.int32)
        out_c[good], out_s[good] = cid, scid
        return out_c, out_s

    def overlap_locations(
        self, ra: np.ndarray, dec: np.ndarray, *, per_chunk: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where positions must be copied as overlap, by Qserv's rule (poles included).

        Returns ``(rows, chunk_ids, sub_chunk_ids)``: ``rows`` index into the inputs. With
        ``per_chunk=True`` (the storage layout's overlap: rows outside a chunk within the
        overlap distance of it) each (row, chunk) pair appears once, only for chunks other than
        the row's own, with the lowest matching sub-chunk id. With ``per_chunk=False`` every
        sub-chunk location Qserv's partitioner emits is returned, including neighbouring
        sub-chunks of the row's own chunk. Invalid positions raise :class:`CoordinateError`.
        """
        ra = np.atleast_1d(np.asarray(ra, dtype=np.float64))
        dec = np.atleast_1d(np.asarray(dec, dtype=np.float64))
        empty = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int32), np.empty(0, dtype=np.int32)
        if self.overlap == 0.0 or ra.size == 0:
            return empty
        bad = ~validate_positions(ra, dec)
        if bad.any():
            self.locate(ra, dec)  # raises CoordinateError naming the rows
        ra = _reduce_ra(ra)
        ss, stripe, sc, chunk, nscpc, n_sub = self._locate_parts(ra, dec)
        w = self._sub_chunk_width[ss]
        lon_min = sc * w
        lon_max = np.minimum((sc + 1) * w, 360.0)
        lat_min = np.clip(ss * self.sub_stripe_height - 90.0, -90.0, 90.0)
        lat_max = np.clip((ss + 1) * self.sub_stripe_height - 90.0, -90.0, 90.0)
        alpha = self._alpha[ss]
        # Only rows near a sub-chunk edge have overlap copies: work on those alone.
        near = (
            (ra < lon_min + alpha) | (ra > lon_max - alpha)
            | (dec < lat_min + self.overlap) | (dec >= lat_max - self.overlap)
        )
        idx = np.flatnonzero(near)
        ra, dec, ss, stripe, sc, chunk, nscpc, n_sub = (
            a[idx] for a in (ra, dec, ss, stripe, sc, chunk, nscpc, n_sub)
        )
        lon_min, lon_max, lat_min, lat_max, alpha = (a[idx] for a in (lon_min, lon_max, lat_min, lat_max, alpha))
        home_c, _ = self._ids(stripe, ss, chunk, sc, nscpc)
        nss_total = self.num_stripes * self.num_sub_stripes
        parts_rows, parts_ss, parts_sc = [], [], []

        # Left and right neighbours in the same sub-stripe.
        multi = n_sub > 1
        left = multi & (ra < lon_min + alpha)
        pos = np.arange(idx.size, dtype=np.int64)
        parts_rows.append(pos[left])
        parts_ss.append(ss[left])
        parts_sc.append(np.where(sc[left] == 0, n_sub[left] - 1, sc[left] - 1))
        right = multi & (ra > lon_max - alpha)
        parts_rows.append(pos[right])
        parts_ss.append(ss[right])
        parts_sc.append(np.where(sc[right] == n_sub[right] - 1, 0, sc[right] + 1))

        # A range of sub-chunks in the sub-stripe below and above (Qserv's _upDownOverlap).
        for mask, nb in (
            ((ss > 0) & (dec < lat_min + self.overlap), ss - 1),
            ((ss < nss_total - 1) & (dec >= lat_max - self.overlap), ss + 1),
        ):
            rows = pos[mask]
            if rows.size == 0:
                continue
            t_ss = nb[mask]
            t_stripe = t_ss // self.num_sub_stripes
            t_n = self._num_chunks[t_stripe] * self._num_sub_chunks_per_chunk[t_ss]
            t_w = self._sub_chunk_width[t_ss]
            t_a = self._alpha[t_ss]
            lon = ra[mask]
            lo = np.floor((lon - t_a) / t_w).astype(np.int64)
            hi = np.floor((lon + t_a) / t_w).astype(np.int64)
            lo = np.where(lo < 0, lo + t_n, lo)
            hi = np.where(hi >= t_n, hi - t_n, hi)
            count = np.where(lo > hi, (t_n - lo) + hi + 1, hi - lo + 1)
            rep = np.repeat(np.arange(rows.size), count)
            offsets = np.arange(rep.size) - np.repeat(np.cumsum(count) - count, count)
            parts_rows.append(rows[rep])
            parts_ss.append(t_ss[rep])
            parts_sc.append((lo[rep] + offsets) % t_n[rep])

        rows = np.concatenate(parts_rows)
        o_ss = np.concatenate(parts_ss)
        o_sc = np.concatenate(parts_sc)
        o_stripe = o_ss // self.num_sub_stripes
        o_nscpc = self._num_sub_chunks_per_chunk[o_ss]
        o_chunk = o_sc // o_nscpc
        cid, scid = self._ids(o_stripe, o_ss, o_chunk, o_sc, o_nscpc)
        if not per_chunk:
            order = np.lexsort((scid, cid, rows))
            return idx[rows[order]], cid[order], scid[order]
        keep = cid != home_c[rows]
        rows, cid, scid = rows[keep], cid[keep], scid[keep]
        order = np.lexsort((scid, cid, rows))
        rows, cid, scid = rows[order], cid[order], scid[order]
        first = np.ones(rows.size, dtype=bool)
        first[1:] = (rows[1:] != rows[:-1]) | (cid[1:] != cid[:-1])
        return idx[rows[first]], cid[first], scid[first]
