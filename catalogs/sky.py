"""Seeded, vectorised sky position models for the synthetic catalogue generators.

Angles are in degrees (ICRS) at every interface; RA is returned in [0, 360) and Dec in
[-90, 90]. Nothing here loops over rows in Python, and nothing calls astropy per row: the
Galactic <-> ICRS conversion is one fixed rotation matrix.

Models
------
* :class:`StarModel` -- stars whose density rises towards the Galactic plane: a thin disc
  (density per steradian ``∝ (1 + a cos l) exp(-|b| / h)``), a Gaussian bulge around the
  Galactic centre and a uniform halo.
* :class:`GalaxyModel` -- clustered galaxies: cluster centres fixed by a seed, members in
  projected Plummer profiles, plus a uniform field component, thinned in the zone of avoidance.
* :func:`uniform_sphere` -- uniform on the sphere (QSOs, test data).
* :func:`edge_case_positions` -- points the partitioner tests need: the poles, RA 0 and
  360 - 1e-12, and every stripe edge of an ``num_stripes`` chunking (no chunker needed).

Footprints (:class:`Footprint`, :func:`footprint_for`) are unions of RA/Dec boxes and
spherical caps, optionally cut by a predicate (e.g. Galactic latitude); ``allsky`` is the
default and ``survey`` picks a realistic one per catalogue table.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from qengine.geometry import radec_from_unit_vectors, unit_vectors

__all__ = [
    "ICRS_TO_GALACTIC",
    "icrs_to_galactic",
    "galactic_to_icrs",
    "icrs_to_ecliptic",
    "sdss_survey_coords",
    "normalize_ra",
    "uniform_sphere",
    "offset_positions",
    "add_close_pairs",
    "htm_index",
    "Box",
    "Cap",
    "Footprint",
    "ALLSKY",
    "FOOTPRINTS",
    "footprint_for",
    "StarModel",
    "GalaxyModel",
    "edge_case_positions",
]

# Rotation matrix ICRS -> Galactic (Hipparcos, ESA 1997, vol. 1 sec. 1.5.3; the matrix astropy
# uses for its Galactic frame to within 1e-10). Rows are the Galactic x, y, z axes in ICRS.
ICRS_TO_GALACTIC = np.array([
    [-0.0548755604162154, -0.8734370902348850, -0.4838350155487132],
    [+0.4941094278755837, -0.4448296299600112, +0.7469822444972189],
    [-0.8676661490190047, -0.1980763734312015, +0.4559837761750669],
])
_OBLIQUITY_J2000 = math.radians(23.4392911)
_ICRS_TO_ECLIPTIC = np.array([
    [1.0, 0.0, 0.0],
    [0.0, math.cos(_OBLIQUITY_J2000), math.sin(_OBLIQUITY_J2000)],
    [0.0, -math.sin(_OBLIQUITY_J2000), math.cos(_OBLIQUITY_J2000)],
])


def normalize_ra(ra: np.ndarray) -> np.ndarray:
    """RA reduced to [0, 360) (``np.mod`` alone can return 360.0 for tiny negatives)."""
    ra = np.mod(np.asarray(ra, dtype=np.float64), 360.0)
    return np.where(ra >= 360.0, 0.0, ra)


def _rotate(matrix: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = unit_vectors(lon, lat) @ matrix.T
    return radec_from_unit_vectors(v)


def icrs_to_galactic(ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(l, b) in degrees, l in [0, 360)."""
    return _rotate(ICRS_TO_GALACTIC, ra, dec)


def galactic_to_icrs(l: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees, ra in [0, 360)."""
    return _rotate(ICRS_TO_GALACTIC.T, l, b)


def icrs_to_ecliptic(ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ecliptic (J2000 obliquity) longitude and latitude in degrees."""
    return _rotate(_ICRS_TO_ECLIPTIC, ra, dec)


def sdss_survey_coords(ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SDSS survey coordinates (lambda, eta) in degrees (node 95 deg, eta pole 32.5 deg)."""
    r = np.radians(np.asarray(ra, dtype=np.float64) - 95.0)
    d = np.radians(np.asarray(dec, dtype=np.float64))
    x = np.cos(r) * np.cos(d)
    y = np.sin(r) * np.cos(d)
    z = np.sin(d)
    lam = -np.degrees(np.arcsin(np.clip(x, -1.0, 1.0)))
    eta = np.degrees(np.arctan2(z, y)) - 32.5
    eta = np.where(eta < -180.0, eta + 360.0, eta)
    eta = np.where(eta >= 180.0, eta - 360.0, eta)
    flip = np.abs(eta) > 90.0
    eta = np.where(flip, eta + 180.0, eta)
    eta = np.where(eta >= 180.0, eta - 360.0, eta)
    lam = np.where(flip, 180.0 - lam, lam)
    lam = np.where(lam >= 180.0, lam - 360.0, lam)
    return lam, eta


def uniform_sphere(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n positions uniform on the sphere."""
    ra = normalize_ra(rng.random(n) * 360.0)
    dec = np.degrees(np.arcsin(np.clip(rng.random(n) * 2.0 - 1.0, -1.0, 1.0)))
    return ra, dec


def offset_positions(ra: np.ndarray, dec: np.ndarray, east_arcsec: np.ndarray,
                     north_arcsec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move positions by (east, north) offsets in arcsec along the local tangent plane.

    Works at the poles (the local east direction is taken from the RA given) and across
    RA 0/360; the result is a valid (ra, dec) however large the offset.
    """
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    east = np.asarray(east_arcsec, dtype=np.float64)
    north = np.asarray(north_arcsec, dtype=np.float64)
    if ra.ndim == 1 and ra.size and east.shape == ra.shape and north.shape == ra.shape \
            and max(np.abs(east).max(initial=0.0), np.abs(north).max(initial=0.0)) < 10.0:
        # Small offsets away from the poles: first order is exact to ~1e-4 arcsec.
        out_dec = dec + north / 3600.0
        out_ra = ra + east / 3600.0 / np.cos(np.radians(dec))
        polar = np.abs(dec) > 89.0
        if polar.any():
            out_ra[polar], out_dec[polar] = _offset_exact(ra[polar], dec[polar], east[polar], north[polar])
        return normalize_ra(out_ra), np.clip(out_dec, -90.0, 90.0)
    return _offset_exact(ra, dec, east, north)


def _offset_exact(ra: np.ndarray, dec: np.ndarray, east: np.ndarray,
                  north: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.radians(ra)
    d = np.radians(dec)
    ca, sa, cd, sd = np.cos(a), np.sin(a), np.cos(d), np.sin(d)
    e = np.radians(east / 3600.0)
    n = np.radians(north / 3600.0)
    x = cd * ca - e * sa - n * sd * ca
    y = cd * sa + e * ca - n * sd * sa
    z = sd + n * cd
    out_ra, out_dec = radec_from_unit_vectors(np.stack([x, y, z], axis=-1))
    return normalize_ra(out_ra), np.clip(out_dec, -90.0, 90.0)


def _destination(ra: np.ndarray, dec: np.ndarray, dist_deg: np.ndarray,
                 bearing_rad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Point at great-circle distance ``dist_deg`` and bearing (from north through east)."""
    d = np.radians(dec)
    t = np.radians(dist_deg)
    sin_dec2 = np.clip(np.sin(d) * np.cos(t) + np.cos(d) * np.sin(t) * np.cos(bearing_rad), -1, 1)
    dec2 = np.arcsin(sin_dec2)
    dra = np.arctan2(np.sin(bearing_rad) * np.sin(t) * np.cos(d), np.cos(t) - np.sin(d) * sin_dec2)
    return normalize_ra(ra + np.degrees(dra)), np.degrees(dec2)


def add_close_pairs(rng: np.random.Generator, ra: np.ndarray, dec: np.ndarray,
                    fraction: float = 0.02, min_arcsec: float = 1.0,
                    max_arcsec: float = 20.0) -> np.ndarray:
    """Move ``fraction`` of the rows next to the row before them (blends, binaries).

    Modifies ``ra``/``dec`` in place and returns the indices of the moved rows. Separations
    are uniform in [min_arcsec, max_arcsec].
    """
    n = ra.size
    if n < 2 or fraction <= 0:
        return np.zeros(0, dtype=np.int64)
    idx = np.flatnonzero(rng.random(n - 1) < fraction) + 1
    sep = rng.uniform(min_arcsec, max_arcsec, idx.size) / 3600.0
    pa = rng.random(idx.size) * 2.0 * math.pi
    ra[idx], dec[idx] = _destination(ra[idx - 1], dec[idx - 1], sep, pa)
    return idx


# ------------------------------------------------------------------------------ footprints


@dataclass(frozen=True)
class Box:
    """RA/Dec box; ``ra_min > ra_max`` wraps through RA 0."""

    ra_min: float
    ra_max: float
    dec_min: float
    dec_max: float

    @property
    def ra_width(self) -> float:
        w = self.ra_max - self.ra_min
        return w if w > 0 else w + 360.0

    @property
    def area(self) -> float:
        """Solid angle in steradians."""
        return math.radians(self.ra_width) * (math.sin(math.radians(self.dec_max))
                                              - math.sin(math.radians(self.dec_min)))

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        in_dec = (dec >= self.dec_min) & (dec <= self.dec_max)
        if self.ra_width >= 360.0:
            return in_dec
        rel = np.mod(ra - self.ra_min, 360.0)
        return in_dec & (rel <= self.ra_width)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        ra = normalize_ra(self.ra_min + rng.random(n) * self.ra_width)
        s0, s1 = math.sin(math.radians(self.dec_min)), math.sin(math.radians(self.dec_max))
        dec = np.degrees(np.arcsin(np.clip(s0 + rng.random(n) * (s1 - s0), -1.0, 1.0)))
        return ra, dec


@dataclass(frozen=True)
class Cap:
    """Spherical cap of ``radius`` degrees around (ra, dec)."""

    ra: float
    dec: float
    radius: float

    @property
    def area(self) -> float:
        return 2.0 * math.pi * (1.0 - math.cos(math.radians(self.radius)))

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        c = unit_vectors(self.ra, self.dec)[0]
        return unit_vectors(ra, dec) @ c >= math.cos(math.radians(self.radius))

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        cos_t = 1.0 - rng.random(n) * (1.0 - math.cos(math.radians(self.radius)))
        dist = np.degrees(np.arccos(np.clip(cos_t, -1.0, 1.0)))
        bearing = rng.random(n) * 2.0 * math.pi
        return _destination(np.full(n, self.ra), np.full(n, self.dec), dist, bearing)


Predicate = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Footprint:
    """A union of non-overlapping boxes/caps, each optionally cut by a predicate."""

    name: str
    regions: tuple[Box | Cap, ...] = ()
    predicates: tuple[Predicate | None, ...] = ()
    description: str = ""

    @property
    def is_allsky(self) -> bool:
        return not self.regions

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        ra = np.asarray(ra, dtype=np.float64)
        dec = np.asarray(dec, dtype=np.float64)
        if self.is_allsky:
            return np.ones(ra.shape, dtype=bool)
        out = np.zeros(ra.shape, dtype=bool)
        for region, pred in zip(self.regions, self._preds()):
            m = region.contains(ra, dec)
            if pred is not None and m.any():
                m[m] = pred(ra[m], dec[m])
            out |= m
        return out

    def _preds(self) -> tuple:
        return tuple(self.predicates) + (None,) * (len(self.regions) - len(self.predicates))

    @functools.cached_property
    def area_fraction(self) -> float:
        """Fraction of the sky covered (predicates estimated once on a fixed sample)."""
        if self.is_allsky:
            return 1.0
        rng = np.random.default_rng(12345)
        total = 0.0
        for region, pred in zip(self.regions, self._preds()):
            frac = 1.0
            if pred is not None:
                ra, dec = region.sample(rng, 20000)
                frac = float(pred(ra, dec).mean())
            total += region.area * frac
        return total / (4.0 * math.pi)

    def sample_uniform(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n positions uniform inside the footprint."""
        if self.is_allsky:
            return uniform_sphere(rng, n)
        areas = np.array([r.area for r in self.regions])
        out_ra, out_dec, have = [], [], 0
        while have < n:
            want = n - have
            pick = rng.choice(len(self.regions), size=want, p=areas / areas.sum())
            for k, (region, pred) in enumerate(zip(self.regions, self._preds())):
                m = int((pick == k).sum())
                if m == 0:
                    continue
                # Over-draw when a predicate thins the region.
                draw = m if pred is None else int(m * 1.3) + 16
                ra, dec = region.sample(rng, draw)
                if pred is not None:
                    keep = pred(ra, dec)
                    ra, dec = ra[keep][:m], dec[keep][:m]
                out_ra.append(ra)
                out_dec.append(dec)
                have += ra.size
        ra = np.concatenate(out_ra)[:n]
        dec = np.concatenate(out_dec)[:n]
        perm = rng.permutation(n)
        return ra[perm], dec[perm]


def _galactic_b_above(limit: float) -> Predicate:
    def pred(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        return icrs_to_galactic(ra, dec)[1] > limit
    return pred


ALLSKY = Footprint("allsky", description="the whole sky")

#: Realistic survey footprints, keyed by name.
FOOTPRINTS: dict[str, Footprint] = {
    "allsky": ALLSKY,
    # Rubin LSST wide-fast-deep: the southern sky up to Dec +12.
    "lsst": Footprint("lsst", (Box(0.0, 360.0, -90.0, 12.0),),
                      description="LSST: Dec < +12"),
    # SDSS Legacy: the northern Galactic cap plus the equatorial Stripe 82.
    "sdss": Footprint("sdss", (Box(105.0, 265.0, -5.0, 70.0), Box(310.0, 60.0, -1.26, 1.26)),
                      (_galactic_b_above(25.0), None),
                      description="SDSS: northern Galactic cap (b > 25, Dec -5..70) and Stripe 82"),
    # UKIDSS LAS: equatorial stripes.
    "ukidss_las": Footprint("ukidss_las", (Box(142.5, 232.5, -2.0, 16.0),
                                           Box(330.0, 60.0, -1.25, 1.25),
                                           Box(112.5, 247.5, 20.0, 30.0)),
                            description="UKIDSS LAS: equatorial blocks and stripes"),
    # UKIDSS DXS: four deep fields.
    "ukidss_dxs": Footprint("ukidss_dxs", (Cap(36.4, -4.6, 1.6), Cap(161.3, 58.0, 1.6),
                                           Cap(242.8, 54.6, 1.6), Cap(334.4, 0.3, 1.6)),
                            description="UKIDSS DXS: XMM-LSS, Lockman Hole, ELAIS-N1, SA22"),
    "gaia": ALLSKY,
}


def footprint_for(kind: str | Footprint, catalog: str = "", table: str = "") -> Footprint:
    """The footprint called ``kind``: ``allsky``, ``survey`` (per catalogue/table) or a name."""
    if isinstance(kind, Footprint):
        return kind
    key = (kind or "allsky").lower()
    if key == "survey":
        cat, tab = catalog.lower(), table.lower()
        if "ukidss" in cat or tab.startswith(("las", "dxs", "uds", "gcs", "gps")):
            key = "ukidss_dxs" if tab.startswith(("dxs", "uds")) else "ukidss_las"
        elif "sdss" in cat:
            key = "sdss"
        elif "lsst" in cat or "dp0" in cat or "dp1" in cat:
            key = "lsst"
        elif "gaia" in cat:
            key = "gaia"
        else:
            key = "allsky"
    try:
        return FOOTPRINTS[key]
    except KeyError:
        raise ValueError(f"unknown footprint {kind!r}; expected allsky, survey or one of "
                         f"{', '.join(FOOTPRINTS)}") from None


# ------------------------------------------------------------------------------ models


def _draw_until(rng: np.random.Generator, n: int, draw: Callable[[int], tuple],
                max_rounds: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Call ``draw(m)`` (returning accepted ra, dec) until n positions are collected."""
    ras, decs, have, want = [], [], 0, n
    for _ in range(max_rounds):
        if have >= n:
            break
        ra, dec = draw(max(want, 64))
        ras.append(ra)
        decs.append(dec)
        have += ra.size
        acc = max(ra.size / max(want, 64), 1e-3)
        want = int((n - have) / acc * 1.1) + 64
    if have < n:
        raise RuntimeError("position sampling did not converge (footprint too small?)")
    return np.concatenate(ras)[:n], np.concatenate(decs)[:n]


@dataclass(frozen=True)
class StarModel:
    """Stars: disc ∝ (1 + a cos l) exp(-|b|/h) per steradian, a Gaussian bulge, a uniform halo.

    ``w_disc``, ``w_bulge`` and ``w_halo`` are the fractions of all-sky stars in each part.
    With the defaults the density at the plane is ~15-50x that at the Galactic poles.
    """

    scale_height: float = 9.0        # h, degrees of latitude
    l_asymmetry: float = 0.6         # a: more stars towards the Galactic centre
    bulge_sigma_l: float = 9.0
    bulge_sigma_b: float = 6.0
    w_disc: float = 0.62
    w_bulge: float = 0.10
    w_halo: float = 0.28

    def _disc(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        def draw(m: int):
            l = rng.random(m) * 360.0
            keep_l = rng.random(m) * (1.0 + self.l_asymmetry) < 1.0 + self.l_asymmetry * np.cos(np.radians(l))
            absb = rng.exponential(self.scale_height, m)
            keep_b = (absb < 90.0) & (rng.random(m) < np.cos(np.radians(np.minimum(absb, 90.0))))
            keep = keep_l & keep_b
            sign = np.where(rng.random(m) < 0.5, -1.0, 1.0)
            return l[keep], (sign * absb)[keep]
        return _draw_until(rng, n, draw)

    def _bulge(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        def draw(m: int):
            l = rng.normal(0.0, self.bulge_sigma_l, m)
            b = rng.normal(0.0, self.bulge_sigma_b, m)
            keep = np.abs(b) < 90.0
            return np.mod(l[keep], 360.0), b[keep]
        return _draw_until(rng, n, draw)

    def sample_allsky(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        w = np.array([self.w_disc, self.w_bulge, self.w_halo])
        counts = rng.multinomial(n, w / w.sum())
        l_d, b_d = self._disc(rng, int(counts[0]))
        l_b, b_b = self._bulge(rng, int(counts[1]))
        ra_h, dec_h = uniform_sphere(rng, int(counts[2]))
        ra_g, dec_g = galactic_to_icrs(np.concatenate([l_d, l_b]), np.concatenate([b_d, b_b]))
        ra = np.concatenate([ra_g, ra_h])
        dec = np.concatenate([dec_g, dec_h])
        perm = rng.permutation(n)
        return normalize_ra(ra[perm]), np.clip(dec[perm], -90.0, 90.0)

    def density(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Relative stars per steradian at (ra, dec) (all-sky normalised to 1 star)."""
        l, b = icrs_to_galactic(ra, dec)
        h = math.radians(self.scale_height)
        # ∫ exp(-|b|/h) cos b db over [-pi/2, pi/2] = 2h (1 + h exp(-pi/2h)) / (1 + h^2)
        z_b = 2.0 * h * (1.0 + h * math.exp(-math.pi / (2 * h))) / (1.0 + h * h)
        lr = np.radians(l)
        disc = (1.0 + self.l_asymmetry * np.cos(lr)) / (2 * math.pi) * np.exp(-np.abs(np.radians(b)) / h) / z_b
        lw = np.radians(np.where(l > 180.0, l - 360.0, l))
        sl, sb = math.radians(self.bulge_sigma_l), math.radians(self.bulge_sigma_b)
        bulge = np.exp(-0.5 * (lw / sl) ** 2 - 0.5 * (np.radians(b) / sb) ** 2) / (2 * math.pi * sl * sb)
        bulge /= np.maximum(np.cos(np.radians(b)), 1e-3)
        halo = 1.0 / (4.0 * math.pi)
        return self.w_disc * disc + self.w_bulge * bulge + self.w_halo * halo

    def sample(self, rng: np.random.Generator, n: int,
               footprint: Footprint = ALLSKY) -> tuple[np.ndarray, np.ndarray]:
        """n star positions inside ``footprint``."""
        if n == 0:
            return np.zeros(0), np.zeros(0)
        if footprint.is_allsky:
            return self.sample_allsky(rng, n)
        # Large footprints: draw from the model, keep what falls inside. Small ones: draw
        # uniformly inside and thin by the density (the model draw would waste too much).
        if footprint.area_fraction > 0.15:
            def draw(m: int):
                ra, dec = self.sample_allsky(rng, m)
                keep = footprint.contains(ra, dec)
                return ra[keep], dec[keep]
            return _draw_until(rng, n, draw)
        probe_ra, probe_dec = footprint.sample_uniform(np.random.default_rng(7), 4096)
        peak = float(self.density(probe_ra, probe_dec).max()) * 1.5

        def thin(m: int):
            ra, dec = footprint.sample_uniform(rng, m)
            keep = rng.random(m) * peak < self.density(ra, dec)
            return ra[keep], dec[keep]
        return _draw_until(rng, n, thin)


class GalaxyModel:
    """Clustered galaxies: Plummer clumps around seeded centres plus a uniform field.

    The cluster centres, weights (heavy-tailed richness) and core radii are drawn once from
    ``seed`` so every batch sampled from one model shares the same large-scale structure.
    ``cluster_fraction`` of the galaxies are cluster members; the rest are field galaxies.
    A zone of avoidance thins galaxies near the Galactic plane (dust).
    """

    def __init__(self, seed: int | Sequence[int], footprint: Footprint = ALLSKY,
                 n_clusters: int = 4000, cluster_fraction: float = 0.3,
                 core_radius_deg: float = 0.04, avoidance_deg: float = 10.0) -> None:
        rng = np.random.default_rng(seed)
        self.footprint = footprint
        self.cluster_fraction = cluster_fraction
        self.avoidance_deg = avoidance_deg
        self.centre_ra, self.centre_dec = footprint.sample_uniform(rng, n_clusters)
        w = (rng.pareto(1.3, n_clusters) + 1.0)
        self.weights = np.minimum(w, 200.0)
        self.weights /= self.weights.sum()
        self.core = core_radius_deg * np.exp(rng.normal(0.0, 0.5, n_clusters))

    def _avoid(self, rng: np.random.Generator, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        if self.avoidance_deg <= 0:
            return np.ones(ra.size, dtype=bool)
        b = icrs_to_galactic(ra, dec)[1]
        return rng.random(ra.size) > 0.9 * np.exp(-(b / self.avoidance_deg) ** 2)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n galaxy positions inside the model's footprint."""
        if n == 0:
            return np.zeros(0), np.zeros(0)
        fp = self.footprint

        def members(m: int):
            k = rng.choice(self.weights.size, size=m, p=self.weights)
            u = rng.random(m) * (100.0 / 101.0)          # Plummer, truncated at 10 core radii
            r = self.core[k] * np.sqrt(u / (1.0 - u))
            ra, dec = _destination(self.centre_ra[k], self.centre_dec[k], r,
                                   rng.random(m) * 2.0 * math.pi)
            keep = self._avoid(rng, ra, dec)
            if not fp.is_allsky:
                keep &= fp.contains(ra, dec)
            return ra[keep], dec[keep]

        def field_(m: int):
            ra, dec = fp.sample_uniform(rng, m)
            keep = self._avoid(rng, ra, dec)
            return ra[keep], dec[keep]

        n_cl = int(rng.binomial(n, self.cluster_fraction))
        ra_c, dec_c = _draw_until(rng, n_cl, members) if n_cl else (np.zeros(0), np.zeros(0))
        ra_f, dec_f = _draw_until(rng, n - n_cl, field_) if n - n_cl else (np.zeros(0), np.zeros(0))
        ra = np.concatenate([ra_c, ra_f])
        dec = np.concatenate([dec_c, dec_f])
        perm = rng.permutation(n)
        return normalize_ra(ra[perm]), np.clip(dec[perm], -90.0, 90.0)


# ------------------------------------------------------------------------------ edge cases


def edge_case_positions(num_stripes: int | Sequence[int] = 85) -> tuple[np.ndarray, np.ndarray]:
    """Positions partitioner tests need, independent of any chunker implementation.

    Both poles (several RAs), RA exactly 0 and 360 - 1e-12 at several declinations, and every
    stripe edge ``dec = -90 + k * 180 / num_stripes`` (k = 0..num_stripes, for each stripe
    count given) at RA 0, 360 - 1e-12 and a few fixed RAs, plus points a hair either side of
    the edges.
    """
    counts = [num_stripes] if isinstance(num_stripes, int) else list(dict.fromkeys(num_stripes))
    ra_hi = 360.0 - 1e-12
    ra: list[float] = []
    dec: list[float] = []
    for r in (0.0, 90.0, 180.0, 270.0, ra_hi):
        ra += [r, r]
        dec += [90.0, -90.0]
    for d in (0.0, 45.0, -45.0, 89.99, -89.99, 60.0, -30.0):
        ra += [0.0, ra_hi, 180.0]
        dec += [d, d, d]
    for stripes in counts:
        for k in range(stripes + 1):
            d = -90.0 + k * 180.0 / stripes
            for r in (0.0, ra_hi, 37.5 + 3.0 * k % 300.0, 180.0 + 1e-9):
                ra.append(r)
                dec.append(d)
            if 0 < k < stripes:
                for eps in (1e-10, -1e-10):
                    ra.append(120.0 + k % 200)
                    dec.append(d + eps)
    ra_a = normalize_ra(np.array(ra))
    dec_a = np.clip(np.array(dec), -90.0, 90.0)
    return ra_a, dec_a


# ------------------------------------------------------------------------------ HTM


_V = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0], [0, 0, -1]], dtype=np.float64)
# Root triangles in HTM id order S0..S3 (8..11), N0..N3 (12..15).
_ROOTS = np.array([[1, 5, 2], [2, 5, 3], [3, 5, 4], [4, 5, 1],
                   [1, 0, 4], [4, 0, 3], [3, 0, 2], [2, 0, 1]])


def _orient(px, py, pz, a, b) -> np.ndarray:
    """(a x b) . p for component tuples a, b and point components px, py, pz."""
    ax, ay, az = a
    bx, by, bz = b
    return (ay * bz - az * by) * px + (az * bx - ax * bz) * py + (ax * by - ay * bx) * pz


def _mid(a, b):
    x, y, z = a[0] + b[0], a[1] + b[1], a[2] + b[2]
    norm = np.sqrt(x * x + y * y + z * z)
    return x / norm, y / norm, z / norm


def htm_index(ra: np.ndarray, dec: np.ndarray, level: int = 20) -> np.ndarray:
    """Hierarchical Triangular Mesh ids (as ``lsst.sphgeom.HtmPixelization(level).index``).

    Vectorised over rows, one pass per level; agrees with sphgeom except for points within
    ~1e-16 rad of a trixel edge.
    """
    p = unit_vectors(ra, dec)
    px, py, pz = p[:, 0].copy(), p[:, 1].copy(), p[:, 2].copy()
    n = px.size
    # Root trixel by coordinate signs, with sphgeom's tie-breaking on the planes x/y/z = 0.
    south = np.where(py > 0, np.where(px > 0, 0, 1),
                     np.where(py == 0, np.where(px >= 0, 0, 2), np.where(px < 0, 2, 3)))
    north = np.where(py > 0, np.where(px > 0, 7, 6),
                     np.where(py == 0, np.where(px >= 0, 7, 5), np.where(px < 0, 5, 4)))
    root = np.where(pz < 0, south, north).astype(np.int64)
    ids = root + 8
    v0 = tuple(_V[_ROOTS[root, 0], i] for i in range(3))
    v1 = tuple(_V[_ROOTS[root, 1], i] for i in range(3))
    v2 = tuple(_V[_ROOTS[root, 2], i] for i in range(3))
    for _ in range(level):
        w0, w1, w2 = _mid(v1, v2), _mid(v0, v2), _mid(v0, v1)
        # Child 0 is (v0, w2, w1), 1 is (v1, w0, w2), 2 is (v2, w1, w0), 3 is (w0, w1, w2):
        # a point is in child 0 iff it lies on the inner side of edge (w2, w1), etc.
        c0 = _orient(px, py, pz, w2, w1) >= 0
        c1 = ~c0 & (_orient(px, py, pz, w0, w2) >= 0)
        c2 = ~c0 & ~c1 & (_orient(px, py, pz, w1, w0) >= 0)
        child = np.where(c0, 0, np.where(c1, 1, np.where(c2, 2, 3)))
        ids = ids * 4 + child
        v0, v1, v2 = (
            tuple(np.where(c0, v0[i], np.where(c1, v1[i], np.where(c2, v2[i], w0[i]))) for i in range(3)),
            tuple(np.where(c0, w2[i], np.where(c1, w0[i], np.where(c2, w1[i], w1[i]))) for i in range(3)),
            tuple(np.where(c0, w1[i], np.where(c1, w2[i], np.where(c2, w0[i], w2[i]))) for i in range(3)),
        )
    return ids
