"""Spherical regions and angular helpers (ICRS, degrees at every interface).

Regions follow Qserv's area restrictors and sciSQL's point-in-region UDFs:

* :class:`Circle`  -- ``qserv_areaspec_circle`` / ``scisql_s2PtInCircle``
* :class:`Box`     -- ``qserv_areaspec_box`` / ``scisql_s2PtInBox``
* :class:`Polygon` -- ``qserv_areaspec_poly`` / ``scisql_s2PtInCPoly``
* :class:`Ellipse` -- ``qserv_areaspec_ellipse`` / ``scisql_s2PtInEllipse``

``contains`` is vectorised numpy; ``to_sphgeom`` gives the equivalent
:mod:`lsst.sphgeom` region, which ``chunk_ids``/``sub_chunk_ids`` hand to
``lsst.sphgeom.Chunker`` so that chunk selection is exactly Qserv's.
"""
from __future__ import annotations

import abc
import functools
import math
from collections.abc import Sequence
from typing import Any

import lsst.sphgeom as sphgeom
import numpy as np

from qengine.errors import RegionError

__all__ = [
    "angular_separation",
    "unit_vectors",
    "radec_from_unit_vectors",
    "Region",
    "Circle",
    "Box",
    "Polygon",
    "Ellipse",
    "region_from_qserv",
]

_SR_TO_DEG2 = (180.0 / math.pi) ** 2
_ARCSEC_PER_DEG = 3600.0
# sciSQL's s2PtInEllipse refuses semi-major axes above 10 degrees.
_MAX_ELLIPSE_AXIS_ARCSEC = 10.0 * _ARCSEC_PER_DEG
# Bounding boxes are widened by this much (degrees) so that every point that
# ``contains`` accepts lies inside them despite rounding (3.6 micro-arcsec).
_BBOX_PAD_DEG = 1e-9
# Sine of the smallest angle (~20 nano-arcsec) treated as non-zero when
# validating polygons: below it, vertices coincide or lie on one great circle.
_POLY_TOL = 1e-13


# --------------------------------------------------------------------------- helpers


def _normalize_ra(ra: np.ndarray | float) -> np.ndarray:
    """RA reduced to [0, 360); ``np.mod`` can round tiny negatives up to 360."""
    out = np.mod(ra, 360.0)
    return np.where(out >= 360.0, 0.0, out)


def _finite(name: str, value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise RegionError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise RegionError(f"{name} must be finite, got {value!r}")
    return x


def _latitude(name: str, value: Any) -> float:
    x = _finite(name, value)
    if not -90.0 <= x <= 90.0:
        raise RegionError(f"{name} must lie in [-90, 90] degrees, got {value!r}")
    return x


def _positions(ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcast (ra, dec) to float arrays; invalid entries are zeroed and flagged.

    Zeroing keeps the geometry code free of NaN warnings; callers AND the result
    with ``valid`` so that NaN, infinite or |dec| > 90 positions are never contained.
    """
    ra_a, dec_a = np.broadcast_arrays(np.asarray(ra, dtype=float), np.asarray(dec, dtype=float))
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(ra_a) & np.isfinite(dec_a) & (np.abs(dec_a) <= 90.0)
    if valid.all():
        return ra_a, dec_a, valid
    return np.where(valid, ra_a, 0.0), np.where(valid, dec_a, 0.0), valid


def _delta_ra_rad(ra: Any, ra0: Any) -> np.ndarray:
    """ra - ra0 in radians, reduced to [-pi, pi] in degrees first (exactly) so that
    small differences across RA 0/360 keep their precision."""
    d = np.asarray(ra, dtype=float) - np.asarray(ra0, dtype=float)
    return np.radians(d - 360.0 * np.round(d / 360.0))


def _xyz(ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ra_r = np.radians(ra)
    dec_r = np.radians(dec)
    cos_dec = np.cos(dec_r)
    return cos_dec * np.cos(ra_r), cos_dec * np.sin(ra_r), np.sin(dec_r)


@functools.lru_cache(maxsize=32)
def _cached_chunker(num_stripes: int, num_sub_stripes: int) -> sphgeom.Chunker:
    return sphgeom.Chunker(num_stripes, num_sub_stripes)


def _sphgeom_chunker(chunker: Any) -> sphgeom.Chunker:
    """An ``lsst.sphgeom.Chunker`` for a duck-typed chunker (or a sphgeom one)."""
    if isinstance(chunker, sphgeom.Chunker):
        return chunker
    try:
        num_stripes = int(chunker.num_stripes)
        num_sub_stripes = int(chunker.num_sub_stripes)
    except AttributeError:
        raise TypeError(
            "chunker must have int attributes num_stripes and num_sub_stripes, "
            f"got {type(chunker).__name__}"
        ) from None
    if num_stripes < 1 or num_sub_stripes < 1:
        raise ValueError(
            f"chunker needs num_stripes >= 1 and num_sub_stripes >= 1, "
            f"got {num_stripes} and {num_sub_stripes}"
        )
    return _cached_chunker(num_stripes, num_sub_stripes)


def _sphgeom_point(ra: float, dec: float) -> sphgeom.UnitVector3d:
    return sphgeom.UnitVector3d(sphgeom.LonLat.fromDegrees(ra, dec))


# --------------------------------------------------------------------------- angles


def angular_separation(ra1: Any, dec1: Any, ra2: Any, dec2: Any) -> np.ndarray:
    """Great-circle distance in degrees between (ra1, dec1) and (ra2, dec2).

    Inputs broadcast. Uses the Vincenty (atan2) form, which keeps full relative
    precision for tiny separations and near antipodes, where arccos and
    haversine lose digits.
    """
    d_ra = _delta_ra_rad(ra2, ra1)
    d1 = np.radians(np.asarray(dec1, dtype=float))
    d2 = np.radians(np.asarray(dec2, dtype=float))
    sin_d1, cos_d1 = np.sin(d1), np.cos(d1)
    sin_d2, cos_d2 = np.sin(d2), np.cos(d2)
    sin_dra, cos_dra = np.sin(d_ra), np.cos(d_ra)
    num1 = cos_d2 * sin_dra
    num2 = cos_d1 * sin_d2 - sin_d1 * cos_d2 * cos_dra
    den = sin_d1 * sin_d2 + cos_d1 * cos_d2 * cos_dra
    return np.degrees(np.arctan2(np.hypot(num1, num2), den))


def unit_vectors(ra: Any, dec: Any) -> np.ndarray:
    """(n, 3) array of ICRS unit vectors for broadcast, flattened (ra, dec) in degrees."""
    ra_a, dec_a = np.broadcast_arrays(np.asarray(ra, dtype=float), np.asarray(dec, dtype=float))
    x, y, z = _xyz(ra_a.ravel(), dec_a.ravel())
    return np.stack([x, y, z], axis=-1)


def radec_from_unit_vectors(vectors: Any) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees, ra in [0, 360), from an (..., 3) array of vectors.

    The vectors need not be normalised. The zero vector maps to (0, 0).
    """
    v = np.asarray(vectors, dtype=float)
    if v.shape[-1:] != (3,):
        raise ValueError(f"vectors must have shape (..., 3), got {v.shape}")
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    ra = _normalize_ra(np.degrees(np.arctan2(y, x)))
    dec = np.degrees(np.arctan2(z, np.hypot(x, y)))
    return ra, dec


# --------------------------------------------------------------------------- regions


class Region(abc.ABC):
    """A region of the celestial sphere; angles in degrees."""

    __slots__ = ()

    def contains(self, ra: Any, dec: Any) -> np.ndarray:
        """Boolean array (broadcast shape): which (ra, dec) positions lie in the region.

        Boundaries are inclusive. NaN, infinite and |dec| > 90 positions are not contained.
        """
        ra_a, dec_a, valid = _positions(ra, dec)
        lo, hi = self._dec_limits()
        candidate = valid & (dec_a >= lo) & (dec_a <= hi)
        if candidate.size < 1024 or candidate.mean() > 0.5:
            return np.asarray(self._contains(ra_a, dec_a) & candidate, dtype=bool)
        # Small region over many points: run the trigonometry only on the
        # declination band that can hold contained points.
        out = np.zeros(candidate.shape, dtype=bool)
        out[candidate] = self._contains(ra_a[candidate], dec_a[candidate])
        return out

    def _dec_limits(self) -> tuple[float, float]:
        """Declinations outside [lo, hi] are never contained (a cheap pre-filter)."""
        return -90.0, 90.0

    @abc.abstractmethod
    def _contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Containment for valid, broadcast float arrays."""

    @abc.abstractmethod
    def bounding_box(self) -> Box:
        """A Box enclosing the region (conservative, possibly slightly larger)."""

    @abc.abstractmethod
    def to_sphgeom(self) -> sphgeom.Region:
        """The equivalent ``lsst.sphgeom`` region."""

    @abc.abstractmethod
    def area(self) -> float:
        """Solid angle in square degrees."""

    @abc.abstractmethod
    def _key(self) -> tuple:
        """Normalised parameters; defines equality and hashing."""

    def chunk_ids(self, chunker: Any) -> np.ndarray:
        """Sorted unique int32 ids of the chunks the region intersects.

        ``chunker`` needs int attributes ``num_stripes`` and ``num_sub_stripes``.
        """
        ids = _sphgeom_chunker(chunker).getChunksIntersecting(self.to_sphgeom())
        return np.unique(np.asarray(ids, dtype=np.int32))

    def sub_chunk_ids(self, chunker: Any) -> dict[int, np.ndarray]:
        """Chunk id -> sorted unique int32 ids of the sub-chunks the region intersects."""
        pairs = _sphgeom_chunker(chunker).getSubChunksIntersecting(self.to_sphgeom())
        out: dict[int, np.ndarray] = {}
        for chunk_id, sub_ids in pairs:
            arr = np.asarray(sub_ids, dtype=np.int32)
            if int(chunk_id) in out:  # never seen from sphgeom, but merge rather than drop
                arr = np.concatenate([out[int(chunk_id)], arr])
            out[int(chunk_id)] = np.unique(arr)
        return dict(sorted(out.items()))

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))


class Circle(Region):
    """Cone of ``radius`` degrees (0 < radius <= 180) around (ra, dec)."""

    __slots__ = ("ra", "dec", "radius")

    def __init__(self, ra: float, dec: float, radius: float) -> None:
        self.ra = float(_normalize_ra(_finite("Circle ra", ra)))
        self.dec = _latitude("Circle dec", dec)
        r = _finite("Circle radius", radius)
        if not 0.0 < r <= 180.0:
            raise RegionError(f"Circle radius must be in (0, 180] degrees, got {radius!r}")
        self.radius = r

    def __repr__(self) -> str:
        return f"Circle(ra={self.ra!r}, dec={self.dec!r}, radius={self.radius!r})"

    def _key(self) -> tuple:
        return (self.ra, self.dec, self.radius)

    def _contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        # Squared chord length by the haversine form (as scisql_s2PtInCircle):
        # accurate for tiny radii, and compared without asin/sqrt.
        d_ra = _delta_ra_rad(ra, self.ra)
        dec_r = np.radians(dec)
        dec0 = math.radians(self.dec)
        x = np.sin(0.5 * d_ra) ** 2
        y = np.sin(0.5 * (dec_r - dec0)) ** 2
        z = np.cos(0.5 * (dec_r + dec0)) ** 2
        dist2 = 4.0 * (x * (z - y) + y)
        limit = 4.0 * math.sin(0.5 * math.radians(self.radius)) ** 2
        return dist2 <= limit

    def bounding_box(self) -> Box:
        return _cone_bounding_box(self.ra, self.dec, self.radius)

    def _dec_limits(self) -> tuple[float, float]:
        return self.dec - self.radius - _BBOX_PAD_DEG, self.dec + self.radius + _BBOX_PAD_DEG

    def to_sphgeom(self) -> sphgeom.Circle:
        return sphgeom.Circle(_sphgeom_point(self.ra, self.dec), sphgeom.Angle.fromDegrees(self.radius))

    def area(self) -> float:
        # 2*pi*(1 - cos r), written with sin(r/2) to keep precision for small r.
        return 4.0 * math.pi * math.sin(0.5 * math.radians(self.radius)) ** 2 * _SR_TO_DEG2


def _cone_bounding_box(ra: float, dec: float, radius: float) -> Box:
    """Box around the cone of ``radius`` about (ra, dec), padded by _BBOX_PAD_DEG."""
    pad = _BBOX_PAD_DEG
    dec_min = max(-90.0, dec - radius - pad)
    dec_max = min(90.0, dec + radius + pad)
    if dec + radius >= 90.0 - pad or dec - radius <= -90.0 + pad:
        # A pole is inside (or on) the cone: every RA is reached.
        return Box(0.0, 360.0, dec_min, dec_max)
    r = math.radians(radius)
    d = math.radians(dec)
    # sin(half width) = sin r / cos dec, written via atan2 with
    # cos^2 dec - sin^2 r = cos(dec - r) cos(dec + r) to stay accurate near the poles.
    half = math.degrees(math.atan2(math.sin(r), math.sqrt(math.cos(d - r) * math.cos(d + r))))
    return _box_from_lon_range(ra - half, ra + half, dec_min, dec_max)


def _box_from_lon_range(lo: float, hi: float, dec_min: float, dec_max: float) -> Box:
    """Box over [lo, hi] (hi >= lo, unreduced), widened by _BBOX_PAD_DEG."""
    width = hi - lo + 2.0 * _BBOX_PAD_DEG
    if width >= 360.0:
        return Box(0.0, 360.0, dec_min, dec_max)
    start = lo - _BBOX_PAD_DEG
    return Box(start, start + width, dec_min, dec_max)


class Box(Region):
    """RA/Dec box with sciSQL ``s2PtInBox`` semantics (edges inclusive).

    ``ra_min > ra_max`` wraps through RA 0 (``Box(350, 10, ...)``); a width
    ``ra_max - ra_min >= 360`` means every RA. RA limits are reduced modulo 360
    (``ra_min``/``ra_max`` attributes are in [0, 360); a full-RA box stores 0, 360).
    As in sciSQL, limits outside [0, 360] must not be inverted.
    """

    __slots__ = ("ra_min", "ra_max", "dec_min", "dec_max", "full_ra")

    def __init__(self, ra_min: float, ra_max: float, dec_min: float, dec_max: float) -> None:
        lo = _finite("Box ra_min", ra_min)
        hi = _finite("Box ra_max", ra_max)
        self.dec_min = _latitude("Box dec_min", dec_min)
        self.dec_max = _latitude("Box dec_max", dec_max)
        if self.dec_min > self.dec_max:
            raise RegionError(
                f"Box dec_min ({dec_min!r}) must not exceed dec_max ({dec_max!r})"
            )
        if hi < lo and (hi < 0.0 or lo > 360.0):
            raise RegionError(
                f"Box ra_min ({ra_min!r}) > ra_max ({ra_max!r}) wraps only when both lie "
                "in [0, 360]; otherwise ra_min must not exceed ra_max"
            )
        self.full_ra = hi - lo >= 360.0
        if self.full_ra:
            self.ra_min, self.ra_max = 0.0, 360.0
        else:
            self.ra_min = float(_normalize_ra(lo))
            self.ra_max = float(_normalize_ra(hi))

    @classmethod
    def from_qserv(cls, lon_min: float, lat_min: float, lon_max: float, lat_max: float) -> Box:
        """Box from ``qserv_areaspec_box(lonMin, latMin, lonMax, latMax)`` argument order."""
        return cls(lon_min, lon_max, lat_min, lat_max)

    @property
    def wraps(self) -> bool:
        """True when the RA range runs through RA 0/360."""
        return not self.full_ra and self.ra_min > self.ra_max

    @property
    def ra_width(self) -> float:
        """RA extent in degrees, in [0, 360]."""
        if self.full_ra:
            return 360.0
        return (self.ra_max - self.ra_min) % 360.0

    def __repr__(self) -> str:
        return (
            f"Box(ra_min={self.ra_min!r}, ra_max={self.ra_max!r}, "
            f"dec_min={self.dec_min!r}, dec_max={self.dec_max!r})"
        )

    def _key(self) -> tuple:
        return (self.ra_min, self.ra_max, self.dec_min, self.dec_max)

    def _contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        in_dec = (dec >= self.dec_min) & (dec <= self.dec_max)
        if self.full_ra:
            return in_dec
        lon = _normalize_ra(ra)
        if self.ra_min <= self.ra_max:
            in_ra = (lon >= self.ra_min) & (lon <= self.ra_max)
        else:
            in_ra = (lon >= self.ra_min) | (lon <= self.ra_max)
        return in_dec & in_ra

    def bounding_box(self) -> Box:
        return self

    def _dec_limits(self) -> tuple[float, float]:
        return self.dec_min, self.dec_max

    def to_sphgeom(self) -> sphgeom.Box:
        return sphgeom.Box.fromDegrees(self.ra_min, self.dec_min, self.ra_max, self.dec_max)

    def area(self) -> float:
        height = math.sin(math.radians(self.dec_max)) - math.sin(math.radians(self.dec_min))
        return math.radians(self.ra_width) * height * _SR_TO_DEG2


class Polygon(Region):
    """Convex spherical polygon with great-circle edges (``scisql_s2PtInCPoly``).

    ``vertices`` is a sequence of at least 3 (ra, dec) pairs. Counter-clockwise
    order (as seen from inside the sphere, ADQL/sciSQL convention) is expected but
    clockwise input is reoriented; the ``vertices`` attribute is counter-clockwise.
    """

    __slots__ = ("vertices", "_vectors", "_normals")

    def __init__(self, vertices: Sequence[Sequence[float]] | np.ndarray) -> None:
        try:
            pts = [tuple(p) for p in vertices]
        except TypeError:
            raise RegionError(
                f"Polygon vertices must be a sequence of (ra, dec) pairs, got {vertices!r}"
            ) from None
        if len(pts) < 3:
            raise RegionError(f"Polygon needs at least 3 vertices, got {len(pts)}")
        clean: list[tuple[float, float]] = []
        for i, p in enumerate(pts):
            if len(p) != 2:
                raise RegionError(f"Polygon vertex {i} must be an (ra, dec) pair, got {p!r}")
            ra = float(_normalize_ra(_finite(f"Polygon vertex {i} ra", p[0])))
            clean.append((ra, _latitude(f"Polygon vertex {i} dec", p[1])))
        ra_a = np.array([p[0] for p in clean])
        dec_a = np.array([p[1] for p in clean])
        vec = unit_vectors(ra_a, dec_a)
        normals = _edge_normals(vec, clean)
        # side[i, j]: sine of the distance of vertex j from the great circle of edge i
        # (positive on the left, i.e. inside for counter-clockwise order).
        side = normals @ vec.T
        n = len(clean)
        off_edge = np.ones((n, n), dtype=bool)
        idx = np.arange(n)
        off_edge[idx, idx] = False
        off_edge[idx, (idx + 1) % n] = False
        values = side[off_edge]
        if not np.all(values > _POLY_TOL):
            if not np.all(values < -_POLY_TOL):
                _raise_not_convex(side, off_edge, clean)
            # Every vertex is right of every edge: clockwise. Reverse to counter-clockwise.
            clean.reverse()
            vec = vec[::-1].copy()
            normals = _edge_normals(vec, clean)
        self.vertices: tuple[tuple[float, float], ...] = tuple(clean)
        self._vectors = vec
        self._normals = normals

    def __repr__(self) -> str:
        return f"Polygon({list(self.vertices)!r})"

    def _key(self) -> tuple:
        return self.vertices

    def _contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        x, y, z = _xyz(ra, dec)
        inside = np.ones(np.shape(x), dtype=bool)
        # One edge at a time keeps memory at O(points), not O(points * edges).
        for nx, ny, nz in self._normals:
            inside &= nx * x + ny * y + nz * z >= 0.0
        return inside

    def bounding_box(self) -> Box:
        return _box_from_sphgeom(self.to_sphgeom().getBoundingBox())

    def _dec_limits(self) -> tuple[float, float]:
        bb = self.bounding_box()
        return bb.dec_min, bb.dec_max

    def to_sphgeom(self) -> sphgeom.ConvexPolygon:
        return sphgeom.ConvexPolygon([sphgeom.UnitVector3d(*v) for v in self._vectors])

    def area(self) -> float:
        # Fan of triangles from vertex 0, each by Oosterom & Strackee's
        # tan(E/2) = a.(b x c) / (1 + a.b + b.c + c.a); the triple product is taken
        # on differences b - a, c - a so that small polygons keep their precision.
        a = self._vectors[0]
        b = self._vectors[1:-1]
        c = self._vectors[2:]
        triple = np.cross(b - a, c - a) @ a
        den = 1.0 + b @ a + np.einsum("ij,ij->i", b, c) + c @ a
        return float(np.sum(2.0 * np.arctan2(triple, den))) * _SR_TO_DEG2


def _edge_normals(vec: np.ndarray, verts: list[tuple[float, float]]) -> np.ndarray:
    """Unit normals of the edge planes v[i] x v[i+1]; rejects coincident/antipodal pairs."""
    a = vec
    b = np.roll(vec, -1, axis=0)
    # (a + b) x (b - a) = 2 a x b, with less cancellation for nearby vertices.
    cross = np.cross(a + b, b - a)
    norm = np.linalg.norm(cross, axis=1)
    for i in range(len(verts)):
        if norm[i] <= 2.0 * _POLY_TOL:
            j = (i + 1) % len(verts)
            kind = "coincide" if float(a[i] @ b[i]) > 0.0 else "are antipodal"
            raise RegionError(
                f"Polygon is degenerate: consecutive vertices {i} {verts[i]} and "
                f"{j} {verts[j]} {kind}, so the edge between them is undefined"
            )
    return cross / norm[:, None]


def _raise_not_convex(
    side: np.ndarray, off_edge: np.ndarray, verts: list[tuple[float, float]]
) -> None:
    n = len(verts)
    flat = np.abs(side) <= _POLY_TOL
    hits = np.argwhere(flat & off_edge)
    if hits.size:
        i, j = (int(k) for k in hits[0])
        raise RegionError(
            f"Polygon is degenerate: vertex {j} {verts[j]} lies on the great circle "
            f"through vertices {i} {verts[i]} and {(i + 1) % n} {verts[(i + 1) % n]} "
            "(collinear vertices)"
        )
    raise RegionError(
        f"Polygon is not convex (or its edges cross): vertices {verts}; "
        "give the vertices of a convex polygon in order around it"
    )


def _box_from_sphgeom(box: sphgeom.Box) -> Box:
    """Our (padded) Box from a sphgeom Box."""
    lat = box.getLat()
    dec_min = max(-90.0, lat.getA().asDegrees() - _BBOX_PAD_DEG)
    dec_max = min(90.0, lat.getB().asDegrees() + _BBOX_PAD_DEG)
    lon = box.getLon()
    if lon.isFull():
        return Box(0.0, 360.0, dec_min, dec_max)
    lo = lon.getA().asDegrees()
    hi = lon.getB().asDegrees()
    if hi < lo:  # wraps through RA 0
        hi += 360.0
    return _box_from_lon_range(lo, hi, dec_min, dec_max)


class Ellipse(Region):
    """Spherical ellipse with ``scisql_s2PtInEllipse`` semantics.

    Centre (ra, dec) in degrees, semi-axes in arcsec (0 < minor <= major <=
    36000, sciSQL's 10 degree limit), ``position_angle`` in degrees east of north:
    the major axis points north at 0 and east at 90.

    As in sciSQL, a point is inside when its orthographic projection onto the
    tangent plane at the centre, (x, y) along the major and minor axes, has
    (x/M)^2 + (y/m)^2 <= 1 with the semi-axes M, m in radians. Unlike sciSQL we
    also require the point to be on the centre's hemisphere (sciSQL would accept
    the mirror image of the ellipse around the antipode too). That region is
    exactly the sphgeom Ellipse (gnomonic) with angular semi-axes asin(M), asin(m).
    """

    __slots__ = ("ra", "dec", "semi_major", "semi_minor", "position_angle", "_basis", "_inv2")

    def __init__(
        self,
        ra: float,
        dec: float,
        semi_major_arcsec: float,
        semi_minor_arcsec: float,
        position_angle: float,
    ) -> None:
        self.ra = float(_normalize_ra(_finite("Ellipse ra", ra)))
        self.dec = _latitude("Ellipse dec", dec)
        major = _finite("Ellipse semi_major_arcsec", semi_major_arcsec)
        minor = _finite("Ellipse semi_minor_arcsec", semi_minor_arcsec)
        self.position_angle = _finite("Ellipse position_angle", position_angle)
        if minor <= 0.0:
            raise RegionError(f"Ellipse semi_minor_arcsec must be > 0, got {semi_minor_arcsec!r}")
        if major <= 0.0:
            raise RegionError(f"Ellipse semi_major_arcsec must be > 0, got {semi_major_arcsec!r}")
        if minor > major:
            raise RegionError(
                f"Ellipse semi_minor_arcsec ({semi_minor_arcsec!r}) must not exceed "
                f"semi_major_arcsec ({semi_major_arcsec!r})"
            )
        if major > _MAX_ELLIPSE_AXIS_ARCSEC:
            raise RegionError(
                f"Ellipse semi_major_arcsec must be <= {_MAX_ELLIPSE_AXIS_ARCSEC:g} "
                f"(10 degrees, sciSQL's limit), got {semi_major_arcsec!r}"
            )
        self.semi_major = major
        self.semi_minor = minor
        pa = math.radians(self.position_angle)
        self._basis = (math.sin(math.radians(self.dec)), math.cos(math.radians(self.dec)),
                       math.sin(pa), math.cos(pa))
        m_maj = math.radians(major / _ARCSEC_PER_DEG)
        m_min = math.radians(minor / _ARCSEC_PER_DEG)
        self._inv2 = (1.0 / (m_maj * m_maj), 1.0 / (m_min * m_min))

    def __repr__(self) -> str:
        return (
            f"Ellipse(ra={self.ra!r}, dec={self.dec!r}, semi_major_arcsec={self.semi_major!r}, "
            f"semi_minor_arcsec={self.semi_minor!r}, position_angle={self.position_angle!r})"
        )

    def _key(self) -> tuple:
        return (self.ra, self.dec, self.semi_major, self.semi_minor, self.position_angle)

    @property
    def _axes_rad(self) -> tuple[float, float]:
        """Semi-axes as orthographic lengths (radians), i.e. sines of the angular semi-axes."""
        return (math.radians(self.semi_major / _ARCSEC_PER_DEG),
                math.radians(self.semi_minor / _ARCSEC_PER_DEG))

    def _contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        sin_d0, cos_d0, sin_pa, cos_pa = self._basis
        d_ra = _delta_ra_rad(ra, self.ra)
        dec_r = np.radians(dec)
        cos_d = np.cos(dec_r)
        hav = 2.0 * np.sin(0.5 * d_ra) ** 2  # 1 - cos(d_ra), without cancellation
        # Components of the unit vector along north (xne), east (yne) and the centre (z)
        # at the ellipse centre; written with differences so tiny ellipses stay exact.
        xne = np.sin(dec_r - math.radians(self.dec)) + cos_d * sin_d0 * hav
        yne = cos_d * np.sin(d_ra)
        z = np.cos(dec_r - math.radians(self.dec)) - cos_d * cos_d0 * hav
        x = cos_pa * xne + sin_pa * yne  # along the major axis
        y = cos_pa * yne - sin_pa * xne  # along the minor axis
        inv_major2, inv_minor2 = self._inv2
        return (z > 0.0) & (x * x * inv_major2 + y * y * inv_minor2 <= 1.0)

    def bounding_box(self) -> Box:
        return _cone_bounding_box(self.ra, self.dec, self._outer_radius())

    def _outer_radius(self) -> float:
        """Angular semi-major axis (degrees): radius of the smallest enclosing circle."""
        return math.degrees(math.asin(self._axes_rad[0]))

    def _dec_limits(self) -> tuple[float, float]:
        r = self._outer_radius() + _BBOX_PAD_DEG
        return self.dec - r, self.dec + r

    def to_sphgeom(self) -> sphgeom.Ellipse:
        a, b = self._axes_rad
        return sphgeom.Ellipse(
            _sphgeom_point(self.ra, self.dec),
            sphgeom.Angle(math.asin(a)),
            sphgeom.Angle(math.asin(b)),
            sphgeom.Angle.fromDegrees(self.position_angle),
        )

    def area(self) -> float:
        # Orthographic area element dx dy / z over the ellipse x = M r cos t,
        # y = m r sin t; the radial integral is closed-form, leaving
        # M m * integral over t of 1 / (1 + sqrt(1 - k(t))), k = M^2 cos^2 t + m^2 sin^2 t.
        # The integrand is smooth and periodic, so the trapezoid rule is exact to
        # rounding with a few dozen nodes.
        a, b = self._axes_rad
        t = np.linspace(0.0, 2.0 * math.pi, 64, endpoint=False)
        k = (a * np.cos(t)) ** 2 + (b * np.sin(t)) ** 2
        integral = float(np.mean(1.0 / (1.0 + np.sqrt(1.0 - k)))) * 2.0 * math.pi
        return a * b * integral * _SR_TO_DEG2


# --------------------------------------------------------------------------- Qserv


_QSERV_ARGS = {
    "qserv_areaspec_box": (4, "lonMin, latMin, lonMax, latMax"),
    "qserv_areaspec_circle": (3, "centerLon, centerLat, radiusDeg"),
    "qserv_areaspec_ellipse": (
        5,
        "centerLon, centerLat, semiMajorAxisAngleArcsec, semiMinorAxisAngleArcsec, positionAngleDeg",
    ),
}


def region_from_qserv(name: str, args: Sequence[float]) -> Region:
    """Region for a Qserv area restrictor, e.g. ``("qserv_areaspec_circle", [1, 2, 0.1])``.

    ``name`` is matched case-insensitively; ``qserv_areaspec_poly`` takes flattened
    lon, lat pairs (at least 3 vertices).
    """
    key = str(name).strip().lower()
    values = [_finite(f"{key} argument {i + 1}", a) for i, a in enumerate(args)]
    if key == "qserv_areaspec_poly":
        if len(values) < 6 or len(values) % 2:
            raise RegionError(
                "qserv_areaspec_poly expects an even number (>= 6) of arguments "
                f"(lon1, lat1, lon2, lat2, lon3, lat3, ...), got {len(values)}"
            )
        return Polygon(list(zip(values[0::2], values[1::2])))
    if key not in _QSERV_ARGS:
        known = ", ".join(sorted([*_QSERV_ARGS, "qserv_areaspec_poly"]))
        raise RegionError(f"unknown Qserv area restrictor {name!r}; expected one of {known}")
    count, signature = _QSERV_ARGS[key]
    if len(values) != count:
        raise RegionError(
            f"{key} expects {count} arguments ({signature}), got {len(values)}"
        )
    if key == "qserv_areaspec_box":
        return Box.from_qserv(*values)
    if key == "qserv_areaspec_circle":
        return Circle(*values)
    return Ellipse(*values)
