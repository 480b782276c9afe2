"""Seeded synthetic catalogues with realistic sky density, photometry and children.

Any table of any catalogue definition can be filled: every column is assigned a generator
from its metadata (name pattern, band, UCD, unit, datatype, sentinel, nullable), with real
physics for the columns that matter (positions, ids, magnitudes and fluxes, errors, classes,
flags, times) and plausible random values for the rest.

Library entry points::

    for table_name, batch in generate_tables("lsst_dr", 100_000, seed=1):
        ...                                   # pyarrow.RecordBatch, <= batch_size rows

    paths = generate("lsst_dr", 1_000_000, "out/", seed=1)   # out/<table>/part-00000.parquet

and the CLI (``qengine generate`` or ``python -m catalogs.generate``), see :func:`add_arguments`.

What the data look like
-----------------------
* Directors: positions from :mod:`catalogs.sky` (stars denser towards the Galactic plane,
  clustered galaxies, uniform QSOs), optionally in a survey footprint and with edge-case
  positions (poles, RA 0 / 360 - 1e-12, stripe edges). Ids increase from a seeded base (SDSS
  ``objID`` packs skyVersion/rerun/run/camcol/field/obj as the archive does).
* Magnitudes follow power-law number counts dN/dm ∝ 10^(α m) up to the survey depth; colours
  by class (stellar locus, red/blue galaxies with redshift, QSOs with UV excess), reddened by a
  cosecant-law E(B-V). Fluxes are nJy with flux = 10^((31.4 - m) / 2.5) (AB); errors grow
  towards the depth; measured values scatter by their errors.
* Missing values: undetected bands and a few % of failed measurements get the column's
  sentinel when it has one, NULL when the column is nullable, and stay measured otherwise.
* Children (multi-epoch detections, forced photometry): a heavy-tailed number of rows per
  director (lognormal, clipped to [1, 300]; means in :data:`CHILD_MEAN`: 12 detections and
  18 forced measurements per object), near the director (detections jittered by their
  astrometric error, < 0.6 arcsec; forced photometry exactly at the director's position),
  bands cycling through the survey's filters, each row taken in a real visit of the survey's
  schedule (MJD, visit, detector and ccdVisitId agree with the Visit / CcdVisit tables),
  fluxes scattered around the director's flux by single-visit errors, with variable stars
  (3 %) and QSOs. Children without band/time columns (Photoz, dxsVariability) get one row
  per director.
* Match tables (e.g. SDSS Neighbors): all ordered pairs within 30 arcsec inside each batch
  (2 % of objects are placed as close pairs, so there are some), with the true distance.
* Replicated tables, written once: a row per filter (Filter), per visit (Visit), per visit and
  detector (CcdVisit), 2000 frames (Multiframe), else 64 rows.

Output is deterministic for a given (catalogue, n_objects, seed, batch_size, footprint,
edge_cases): every batch draws from its own ``numpy`` generator seeded by
``[seed, table index, batch index, ...]``.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import queue
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalogs import sky
from qengine.catalog import Catalog, Column, Table, load_catalog
from qengine.errors import ConfigError

__all__ = [
    "generate_tables",
    "generate",
    "add_arguments",
    "run",
    "main",
    "CHILD_MEAN",
    "AB_ZERO_POINT_NJY",
]

log = logging.getLogger(__name__)

#: flux_nJy = 10 ** ((AB_ZERO_POINT_NJY - mag) / 2.5)
AB_ZERO_POINT_NJY = 31.4

#: Mean number of rows per director for multi-epoch child tables (forced photometry has a row
#: per visit, detections only where the object was detected).
CHILD_MEAN = {"detections": 12.0, "forced": 18.0}
CHILD_MAX = 300

# ------------------------------------------------------------------------------------------
# Photometric model: canonical bands, colours, extinction

CANON = ("u", "g", "r", "i", "z", "y", "Y", "J", "H", "K", "G", "BP", "RP")
_CI = {b: k for k, b in enumerate(CANON)}
#: effective wavelength (nm) and width (nm) per canonical band
WAVELENGTH_NM = {"u": 367.0, "g": 482.0, "r": 622.0, "i": 755.0, "z": 869.0, "y": 971.0,
                 "Y": 1031.0, "J": 1248.0, "H": 1631.0, "K": 2201.0, "G": 640.0,
                 "BP": 511.0, "RP": 777.0}
BANDWIDTH_NM = {"u": 60.0, "g": 140.0, "r": 140.0, "i": 130.0, "z": 100.0, "y": 80.0,
                "Y": 100.0, "J": 160.0, "H": 290.0, "K": 340.0, "G": 450.0, "BP": 240.0,
                "RP": 300.0}
#: A_band / E(B-V)
R_EXT = np.array([4.80, 3.64, 2.70, 2.06, 1.58, 1.31, 1.12, 0.82, 0.53, 0.36, 2.74, 3.37, 2.04])

# Stellar locus nodes (t = 0 A stars ... t = 1 late M dwarfs): optical AB colours, then
# r(AB) - J(Vega) and near-IR Vega colours, then Gaia G - r and BP - RP.
_LOCUS_T = np.array([0.0, 0.2, 0.4, 0.6, 0.75, 0.9, 1.0])
_LOCUS = {
    "u-g": [1.05, 0.90, 1.20, 1.95, 2.50, 2.60, 2.70],
    "g-r": [-0.20, 0.25, 0.45, 0.90, 1.35, 1.50, 1.60],
    "r-i": [-0.10, 0.08, 0.15, 0.35, 0.90, 1.60, 2.20],
    "i-z": [-0.08, 0.02, 0.06, 0.18, 0.45, 0.80, 1.10],
    "z-y": [-0.05, 0.00, 0.02, 0.08, 0.20, 0.40, 0.55],
    "r-J": [0.15, 0.70, 0.95, 1.55, 2.40, 3.40, 4.20],
    "J-H": [-0.02, 0.18, 0.30, 0.55, 0.62, 0.58, 0.60],
    "H-K": [0.00, 0.04, 0.06, 0.12, 0.20, 0.28, 0.35],
    "Y-J": [0.00, 0.18, 0.25, 0.38, 0.50, 0.62, 0.75],
    "G-r": [-0.05, -0.15, -0.20, -0.35, -0.70, -1.10, -1.50],
    "BP-RP": [0.00, 0.55, 0.80, 1.30, 2.00, 2.90, 3.60],
}
# Galaxies (red sequence, blue cloud) and QSOs: mean and scatter of each colour.
_GAL_RED = {"u-g": (1.75, 0.20), "g-r": (0.78, 0.08), "r-i": (0.42, 0.06), "i-z": (0.30, 0.06),
            "z-y": (0.18, 0.06), "r-J": (1.90, 0.20), "J-H": (0.68, 0.08), "H-K": (0.45, 0.08),
            "Y-J": (0.45, 0.08), "G-r": (0.25, 0.15), "BP-RP": (1.45, 0.25)}
_GAL_BLUE = {"u-g": (1.05, 0.25), "g-r": (0.42, 0.14), "r-i": (0.28, 0.10), "i-z": (0.16, 0.10),
             "z-y": (0.10, 0.08), "r-J": (1.30, 0.30), "J-H": (0.55, 0.12), "H-K": (0.38, 0.12),
             "Y-J": (0.35, 0.10), "G-r": (0.30, 0.15), "BP-RP": (1.10, 0.30)}
_QSO = {"u-g": (0.15, 0.15), "g-r": (0.15, 0.12), "r-i": (0.12, 0.10), "i-z": (0.05, 0.10),
        "z-y": (0.05, 0.10), "r-J": (1.10, 0.30), "J-H": (0.70, 0.15), "H-K": (0.80, 0.20),
        "Y-J": (0.45, 0.15), "G-r": (-0.05, 0.10), "BP-RP": (0.60, 0.20)}

STAR, GALAXY, QSO = 0, 1, 2


def _offsets_from_colours(c: dict[str, np.ndarray]) -> np.ndarray:
    """(n, len(CANON)) magnitude offsets relative to r from a dict of colours."""
    n = c["g-r"].shape[0]
    off = np.empty((n, len(CANON)))
    off[:, _CI["r"]] = 0.0
    off[:, _CI["g"]] = c["g-r"]
    off[:, _CI["u"]] = c["g-r"] + c["u-g"]
    off[:, _CI["i"]] = -c["r-i"]
    off[:, _CI["z"]] = -c["r-i"] - c["i-z"]
    off[:, _CI["y"]] = -c["r-i"] - c["i-z"] - c["z-y"]
    off[:, _CI["J"]] = -c["r-J"]
    off[:, _CI["H"]] = -c["r-J"] - c["J-H"]
    off[:, _CI["K"]] = -c["r-J"] - c["J-H"] - c["H-K"]
    off[:, _CI["Y"]] = -c["r-J"] + c["Y-J"]
    off[:, _CI["G"]] = c["G-r"]
    bp_rp = c["BP-RP"]
    off[:, _CI["BP"]] = c["G-r"] + 0.03 + 0.38 * bp_rp
    off[:, _CI["RP"]] = off[:, _CI["BP"]] - bp_rp
    return off


def _colour_offsets(rng: np.random.Generator, kind: np.ndarray, t: np.ndarray,
                    zred: np.ndarray, red: np.ndarray) -> np.ndarray:
    """Per-object magnitude offsets relative to r for every canonical band."""
    n = kind.size
    colours: dict[str, np.ndarray] = {}
    star = kind == STAR
    gal = kind == GALAXY
    qso = kind == QSO
    for name, nodes in _LOCUS.items():
        v = np.empty(n)
        v[star] = np.interp(t[star], _LOCUS_T, nodes)
        for mask, table in ((gal & red, _GAL_RED), (gal & ~red, _GAL_BLUE), (qso, _QSO)):
            mu, sd = table[name]
            v[mask] = mu
            v[mask] += sd * rng.standard_normal(int(mask.sum()))
        v += 0.03 * rng.standard_normal(n)             # photometric scatter about the locus
        colours[name] = v
    # Galaxies redden with redshift (k-correction), most in the blue bands.
    zc = np.minimum(zred, 1.5) * gal
    colours["u-g"] += 0.6 * zc
    colours["g-r"] += 0.8 * zc
    colours["r-i"] += 0.5 * zc
    colours["i-z"] += 0.3 * zc
    return _offsets_from_colours(colours)


def _ebv(ra: np.ndarray, dec: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """E(B-V) from a cosecant law in Galactic latitude with lognormal patchiness."""
    b = np.abs(sky.icrs_to_galactic(ra, dec)[1])
    csc = 1.0 / np.sin(np.radians(np.maximum(b, 2.0)))
    return (0.015 + 0.035 * (csc - 1.0)) * np.exp(0.3 * rng.standard_normal(ra.size))


# ------------------------------------------------------------------------------------------
# Survey profiles


@dataclass(frozen=True)
class Survey:
    """How one survey looks: bands, depths, classes, seeing, times, missing-value policy."""

    key: str
    bands: tuple[str, ...]                 # band names as they appear in column names
    canon: tuple[str, ...]                 # canonical band of each
    style: str                             # "prefix" g_x, "suffix" x_g / g, "camel" gX, "gaia"
    ref_band: str                          # canonical band the number counts are drawn in
    mag_range: tuple[float, float]         # bright and faint limits of the reference band
    depth: dict                            # canonical band -> 5-sigma depth (coadd)
    visit_depth: dict                      # canonical band -> 5-sigma depth (one epoch)
    fractions: tuple[float, float, float]  # star, galaxy, QSO
    slopes: tuple[float, float, float]     # number-count slopes (dex per mag) per class
    seeing: float                          # PSF FWHM, arcsec
    pixel_scale: float                     # arcsec / pixel
    mjd_range: tuple[float, float]
    saturation: float                      # brighter than this saturates (reference band)
    missing: str                           # "forced", "sdss", "merged", "gaia"
    id_base: int
    aperture_unit: float = 1.0             # arcsec per aperture-name unit ("ap03" -> 3 px)
    visit_seconds: float = 35.0
    filter_names: tuple[str, ...] = ()     # physical filter names per band (children)

    def depth_of(self, band: int, epoch: bool) -> float:
        return (self.visit_depth if epoch else self.depth)[self.canon[band]]


_LSST_DEPTH = {"u": 25.6, "g": 26.9, "r": 26.9, "i": 26.4, "z": 25.7, "y": 24.9}
_LSST_VISIT = {"u": 23.9, "g": 25.0, "r": 24.7, "i": 24.0, "z": 23.3, "y": 22.1}

SURVEYS: dict[str, Survey] = {
    "lsst": Survey(
        key="lsst", bands=("u", "g", "r", "i", "z", "y"), canon=("u", "g", "r", "i", "z", "y"),
        style="prefix", ref_band="r", mag_range=(15.5, 27.3), depth=_LSST_DEPTH,
        visit_depth=_LSST_VISIT, fractions=(0.20, 0.77, 0.03), slopes=(0.22, 0.36, 0.30),
        seeing=0.7, pixel_scale=0.2, mjd_range=(60000.0, 63650.0), saturation=16.0,
        missing="forced", id_base=1_250_000_000_000_000_000, aperture_unit=0.2,
        filter_names=("u_24", "g_6", "r_57", "i_39", "z_20", "y_10")),
    "sdss": Survey(
        key="sdss", bands=("u", "g", "r", "i", "z"), canon=("u", "g", "r", "i", "z"),
        style="suffix", ref_band="r", mag_range=(13.5, 22.8),
        depth={"u": 22.3, "g": 23.3, "r": 23.1, "i": 22.3, "z": 20.8},
        visit_depth={"u": 22.3, "g": 23.3, "r": 23.1, "i": 22.3, "z": 20.8},
        fractions=(0.40, 0.57, 0.03), slopes=(0.20, 0.40, 0.35), seeing=1.4,
        pixel_scale=0.396, mjd_range=(51075.0, 54650.0), saturation=14.0, missing="sdss",
        id_base=0, aperture_unit=0.396),
    "ukidss_las": Survey(
        key="ukidss_las", bands=("y", "j_1", "h", "k", "j_2"), canon=("Y", "J", "H", "K", "J"),
        style="camel", ref_band="J", mag_range=(11.0, 20.0),
        depth={"Y": 20.2, "J": 19.6, "H": 18.8, "K": 18.2},
        visit_depth={"Y": 20.2, "J": 19.6, "H": 18.8, "K": 18.2},
        fractions=(0.45, 0.52, 0.03), slopes=(0.20, 0.38, 0.35), seeing=0.9,
        pixel_scale=0.4, mjd_range=(53500.0, 56000.0), saturation=11.5, missing="merged",
        id_base=433_791_000_000),
    "ukidss_dxs": Survey(
        key="ukidss_dxs", bands=("j", "h", "k"), canon=("J", "H", "K"), style="camel",
        ref_band="K", mag_range=(12.0, 21.2), depth={"J": 22.3, "H": 21.7, "K": 20.8},
        visit_depth={"J": 20.0, "H": 19.2, "K": 18.5}, fractions=(0.15, 0.82, 0.03),
        slopes=(0.20, 0.36, 0.35), seeing=0.9, pixel_scale=0.4,
        mjd_range=(53500.0, 56000.0), saturation=12.0, missing="merged",
        id_base=446_676_000_000),
    "gaia": Survey(
        key="gaia", bands=("g", "bp", "rp"), canon=("G", "BP", "RP"), style="gaia",
        ref_band="G", mag_range=(3.0, 21.0), depth={"G": 22.3, "BP": 21.0, "RP": 20.5},
        visit_depth={"G": 20.0, "BP": 19.5, "RP": 19.0}, fractions=(0.985, 0.005, 0.01),
        slopes=(0.35, 0.35, 0.35), seeing=0.18, pixel_scale=0.059,
        mjd_range=(56863.0, 57888.0), saturation=6.0, missing="gaia", id_base=0),
}
SURVEYS["generic"] = SURVEYS["lsst"]

#: SDSS asinh-magnitude softening parameters b per band
_SDSS_SOFTENING = {"u": 1.4e-10, "g": 0.9e-10, "r": 1.2e-10, "i": 1.8e-10, "z": 7.4e-10}
_ZERO_POINT_ES = {"G": 25.6874, "BP": 25.3385, "RP": 24.7479}  # Gaia DR3, e-/s
# WFCAM filter ids (the archive's Filter table): Z Y J H K H2 Br blank.
_WFCAM_FILTERS = (("Z", 1), ("Y", 2), ("J", 3), ("H", 4), ("K", 5), ("H2", 6), ("Br", 7),
                  ("blank", 8))


def survey_for(catalog: Catalog, table: Table | None = None) -> Survey:
    """The survey profile of a catalogue (and director table)."""
    cat = f"{catalog.name} {catalog.database}".lower()
    tab = (table.name if table is not None else "").lower()
    if "ukidss" in cat or "wfcam" in cat or tab.startswith(("las", "dxs", "uds")):
        return SURVEYS["ukidss_dxs" if tab.startswith(("dxs", "uds")) else "ukidss_las"]
    if "sdss" in cat:
        return SURVEYS["sdss"]
    if "gaia" in cat:
        return SURVEYS["gaia"]
    if "lsst" in cat or "dp0" in cat or "dp1" in cat or "rubin" in cat:
        return SURVEYS["lsst"]
    return SURVEYS["generic"]


# ------------------------------------------------------------------------------------------
# Directors: the physical state of a batch of objects


@dataclass
class _Objects:
    """Physical state of one batch of director rows (one entry per row)."""

    survey: Survey
    ids: np.ndarray
    index: np.ndarray                 # global row index (0-based) within the director table
    ra: np.ndarray
    dec: np.ndarray
    kind: np.ndarray                  # STAR, GALAXY, QSO
    t: np.ndarray                     # stellar locus parameter (0 hot ... 1 cool)
    zred: np.ndarray                  # redshift (0 for stars)
    mags: np.ndarray                  # (n, len(survey.bands)) true (reddened) magnitudes
    ref_mag: np.ndarray
    ebv: np.ndarray
    r_half: np.ndarray                # arcsec, 0 for point sources
    e1: np.ndarray
    e2: np.ndarray
    variable: np.ndarray
    amp: np.ndarray                   # mag
    period: np.ndarray                # days
    phase: np.ndarray
    band_offset: np.ndarray
    values: dict = field(default_factory=dict)   # generated director columns by name

    @property
    def n(self) -> int:
        return int(self.ids.size)


def _power_law_mags(rng: np.random.Generator, n: int, lo: float, hi: float, alpha: float) -> np.ndarray:
    """Magnitudes in [lo, hi] with dN/dm ∝ 10^(alpha m)."""
    u = rng.random(n)
    return hi + np.log10(u + (1.0 - u) * 10.0 ** (-alpha * (hi - lo))) / alpha


class _PositionModel:
    """Positions of one director table: stars, clustered galaxies, uniform QSOs, in a footprint."""

    def __init__(self, seed_seq: list[int], footprint: sky.Footprint) -> None:
        self.footprint = footprint
        self.stars = sky.StarModel()
        n_clusters = max(50, int(4000 * footprint.area_fraction))
        self.galaxies = sky.GalaxyModel(seed_seq + [7], footprint, n_clusters=n_clusters)

    def sample(self, rng: np.random.Generator, kind: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = kind.size
        ra = np.empty(n)
        dec = np.empty(n)
        for k, draw in ((STAR, lambda m: self.stars.sample(rng, m, self.footprint)),
                        (GALAXY, lambda m: self.galaxies.sample(rng, m)),
                        (QSO, lambda m: self.footprint.sample_uniform(rng, m))):
            mask = kind == k
            m = int(mask.sum())
            if m:
                ra[mask], dec[mask] = draw(m)
        return ra, dec


def _make_objects(rng: np.random.Generator, survey: Survey, positions: _PositionModel,
                  ids: np.ndarray, index: np.ndarray,
                  edge: tuple[np.ndarray, np.ndarray] | None) -> _Objects:
    n = ids.size
    kind = rng.choice(3, size=n, p=np.array(survey.fractions) / sum(survey.fractions)).astype(np.int8)
    ra, dec = positions.sample(rng, kind)
    sky.add_close_pairs(rng, ra, dec, fraction=0.02, min_arcsec=1.0, max_arcsec=20.0)
    if edge is not None and edge[0].size:
        m = min(edge[0].size, n)
        ra[:m], dec[:m] = edge[0][:m], edge[1][:m]
    ra = sky.normalize_ra(ra)
    dec = np.clip(dec, -90.0, 90.0)

    lo, hi = survey.mag_range
    ref = np.empty(n)
    for k in (STAR, GALAXY, QSO):
        mask = kind == k
        ref[mask] = _power_law_mags(rng, int(mask.sum()), lo if k == STAR else lo + 2.0, hi,
                                    survey.slopes[k])
    t = np.where(kind == STAR, rng.beta(2.0, 1.6, n), 0.0)
    # Redshifts: galaxies fainter -> farther (median z 0.1 at r 17.7, ~1 at r 26).
    r_like = ref + {"r": 0.0, "J": 1.6, "K": 2.6, "G": 0.2}.get(survey.ref_band, 0.0)
    zgal = np.clip(0.1 * np.exp(0.277 * (r_like - 17.7)) * np.exp(0.35 * rng.standard_normal(n)),
                   0.005, 4.0)
    zqso = np.clip(rng.normal(1.6, 0.7, n), 0.1, 5.0)
    zred = np.where(kind == GALAXY, zgal, np.where(kind == QSO, zqso, 0.0))
    red = rng.random(n) < 0.4
    ebv = _ebv(ra, dec, rng)
    off = _colour_offsets(rng, kind, t, zred, red)
    ci = _CI[survey.ref_band]
    canon_idx = np.array([_CI[c] for c in survey.canon])
    mags = (ref[:, None] - off[:, [ci]] + off[:, canon_idx]
            + (R_EXT[canon_idx][None, :] - R_EXT[ci]) * ebv[:, None])
    # A repeated band (UKIDSS j_1 / j_2 epochs) differs by a little calibration scatter.
    seen: set[str] = set()
    for j, c in enumerate(survey.canon):
        if c in seen:
            mags[:, j] += 0.02 * rng.standard_normal(n)
        seen.add(c)
    r_half = np.where(kind == GALAXY,
                      np.clip(10.0 ** (-0.15 * (r_like - 20.0)) * np.exp(0.4 * rng.standard_normal(n)),
                              0.08, 30.0), 0.0)
    e_sd = np.where(kind == GALAXY, 0.25, 0.01)
    e1 = np.clip(e_sd * rng.standard_normal(n), -0.9, 0.9)
    e2 = np.clip(e_sd * rng.standard_normal(n), -0.9, 0.9)
    variable = ((kind == STAR) & (rng.random(n) < 0.03)) | ((kind == QSO) & (rng.random(n) < 0.7))
    amp = np.where(variable, np.clip(0.2 * np.exp(0.7 * rng.standard_normal(n)), 0.02, 1.5), 0.0)
    period = 10.0 ** rng.uniform(-1.0, 2.7, n)
    phase = rng.random(n)
    band_offset = rng.integers(0, len(survey.bands), n)
    return _Objects(survey=survey, ids=ids, index=index, ra=ra, dec=dec, kind=kind, t=t,
                    zred=zred, mags=mags, ref_mag=ref, ebv=ebv, r_half=r_half, e1=e1, e2=e2,
                    variable=variable, amp=amp, period=period, phase=phase,
                    band_offset=band_offset)


def _sdss_objid_parts(index: np.ndarray, run0: int) -> dict[str, np.ndarray]:
    """SkyServer objID fields for global row numbers (1000 objects per field)."""
    fs = index // 1000
    parts = {
        "skyversion": np.full(index.size, 2, dtype=np.int64),
        "rerun": np.full(index.size, 301, dtype=np.int64),
        "run": run0 + fs // 4800,
        "camcol": 1 + (fs // 800) % 6,
        "field": 11 + fs % 800,
        "obj": index % 1000 + 1,
    }
    parts["objid"] = ((parts["skyversion"] << 59) | (parts["rerun"] << 48) | (parts["run"] << 32)
                      | (parts["camcol"] << 29) | (parts["field"] << 16) | parts["obj"])
    return parts


# ------------------------------------------------------------------------------------------
# Per-batch context: what column generators read


class _Ctx:
    """Rows being generated for one table batch: their objects, bands, times and caches."""

    def __init__(self, table: Table, survey: Survey, objs: _Objects, parent: np.ndarray | None,
                 rng: np.random.Generator, *, ids: np.ndarray | None, ra: np.ndarray,
                 dec: np.ndarray, epoch: bool = False, band_row: np.ndarray | None = None,
                 mjd_row: np.ndarray | None = None, visit_row: np.ndarray | None = None,
                 registry: dict | None = None, extra: dict | None = None) -> None:
        self.table = table
        self.survey = survey
        self.objs = objs
        self.parent = parent
        self.rng = rng
        self.ids = ids
        self.ra = ra
        self.dec = dec
        self.n = ra.size
        self.epoch = epoch
        self.band_row = band_row
        self.mjd_row = mjd_row
        self.visit_row = visit_row
        self.registry = registry or {}
        self.extra = extra or {}
        self.cache: dict = {}
        self.ref = survey.canon.index(survey.ref_band) if survey.ref_band in survey.canon else 0

    # -- object properties, per row --------------------------------------------------------

    def obj(self, name: str) -> np.ndarray:
        key = ("obj", name)
        if key not in self.cache:
            v = getattr(self.objs, name)
            self.cache[key] = v if self.parent is None else v[self.parent]
        return self.cache[key]

    def dir_value(self, name: str, rows: np.ndarray | None = None) -> tuple:
        """A generated director column (values, missing mask) for these rows' directors."""
        values, mask = self.objs.values[name]
        rows = self.parent if rows is None else rows
        if rows is None:
            return values, mask
        if isinstance(values, pa.Array):
            values = values.take(pa.array(rows))
        else:
            values = values[rows]
        return values, (None if mask is None else mask[rows])

    def band(self, b: int | None) -> int | str:
        """A column's band: its own, the row's (multi-epoch tables), else the reference band."""
        if b is not None:
            return b
        if self.band_row is not None:
            return "row"
        return self.ref

    def band_index(self, b: int | str) -> np.ndarray | int:
        return self.band_row if b == "row" else b

    def mag(self, b: int | str) -> np.ndarray:
        key = ("mag", b)
        if key not in self.cache:
            mags = self.objs.mags
            if b == "row":
                p = self.parent if self.parent is not None else np.arange(self.n)
                m = mags[p, self.band_row]
                if self.mjd_row is not None:
                    m = m + self.variability()
            else:
                m = mags[:, b] if self.parent is None else mags[self.parent, b]
            self.cache[key] = m
        return self.cache[key]

    def variability(self) -> np.ndarray:
        key = ("var",)
        if key not in self.cache:
            amp = self.obj("amp")
            dm = np.zeros(self.n)
            v = amp > 0
            if v.any() and self.mjd_row is not None:
                dm[v] = amp[v] * np.sin(2 * np.pi * (self.mjd_row[v] / self.obj("period")[v]
                                                       + self.obj("phase")[v]))
            self.cache[key] = dm
        return self.cache[key]

    def depth(self, b: int | str) -> np.ndarray | float:
        s = self.survey
        if b == "row":
            key = ("depth", b)
            if key not in self.cache:
                d = np.array([s.depth_of(k, self.epoch) for k in range(len(s.bands))])
                self.cache[key] = d[self.band_row]
            return self.cache[key]
        return s.depth_of(b, self.epoch)

    def canon(self, b: int | str) -> np.ndarray | str:
        if b == "row":
            return np.array(self.survey.canon)[self.band_row]
        return self.survey.canon[b]

    def snr(self, b: int | str) -> np.ndarray:
        key = ("snr", b)
        if key not in self.cache:
            self.cache[key] = 5.0 * self.total_flux(b) / self.flux5(b)
        return self.cache[key]

    def total_flux(self, b: int | str) -> np.ndarray:
        """True total flux (nJy) in a band."""
        key = ("ftot", b)
        if key not in self.cache:
            self.cache[key] = 10.0 ** (0.4 * (AB_ZERO_POINT_NJY - self.mag(b)))
        return self.cache[key]

    def flux5(self, b: int | str) -> np.ndarray | float:
        """The 5-sigma flux limit (nJy) of a band."""
        key = ("f5", b)
        if key not in self.cache:
            self.cache[key] = 10.0 ** (0.4 * (AB_ZERO_POINT_NJY - self.depth(b)))
        return self.cache[key]

    def size_sigma(self) -> np.ndarray:
        """Gaussian sigma (arcsec) of the observed profile (PSF convolved with the galaxy)."""
        key = ("sigma",)
        if key not in self.cache:
            psf = self.survey.seeing / 2.3548
            self.cache[key] = np.sqrt(psf ** 2 + (self.obj("r_half") / 1.1774) ** 2)
        return self.cache[key]

    # -- photometry -------------------------------------------------------------------------

    def fraction(self, measure: str, aperture: float | None) -> np.ndarray | float:
        """Fraction of the total flux a measurement captures."""
        sig = self.size_sigma()
        psf = self.survey.seeing / 2.3548
        if aperture is not None:
            return 1.0 - np.exp(-aperture ** 2 / (2.0 * sig ** 2))
        if measure == "psf":
            return 2 * psf ** 2 / (psf ** 2 + sig ** 2)
        if measure == "petro":
            return np.where(self.obj("kind") == GALAXY, 0.93, 0.99)
        if measure == "kron":
            return np.where(self.obj("kind") == GALAXY, 0.95, 0.98)
        return 1.0

    def flux(self, b: int | str, measure: str = "model", aperture: float | None = None):
        """(true, measured, error) fluxes in nJy for a band and measurement kind."""
        key = ("flux", b, measure, aperture)
        if key not in self.cache:
            rng = self.rng
            true = self.total_flux(b) * self.fraction(measure, aperture)
            f5 = self.flux5(b)
            scale = 1.0
            if aperture is not None:
                scale = np.maximum(1.0, aperture / (0.85 * self.survey.seeing))
            elif measure in ("model", "petro", "kron"):
                scale = np.sqrt(1.0 + (self.obj("r_half") / self.survey.seeing) ** 2)
            bg = f5 / 5.0 * scale
            err = np.sqrt(bg * bg + (0.004 * f5) * np.abs(true) + (0.004 * true) ** 2)
            meas = true + err * rng.standard_normal(self.n)
            self.cache[key] = (true, meas, err)
        return self.cache[key]

    def measured_mag(self, b: int | str, measure: str = "model", aperture: float | None = None):
        """(mag, mag_err, missing) from the measured flux (missing where flux <= 0)."""
        key = ("mmag", b, measure, aperture)
        if key not in self.cache:
            _, meas, err = self.flux(b, measure, aperture)
            if self.survey.key == "sdss":
                # SDSS asinh magnitudes ("luptitudes", Lupton et al. 1999): defined for any flux.
                soft = _SDSS_SOFTENING[self.canon(b)] if b != "row" else np.array(
                    [_SDSS_SOFTENING[x] for x in self.survey.canon])[self.band_row]
                x = meas / 3.631e12
                k = 2.5 / math.log(10.0)
                mag = -k * (np.arcsinh(x / (2.0 * soft)) + np.log(soft))
                merr = k * (err / 3.631e12) / (2.0 * soft) / np.sqrt(1.0 + (x / (2.0 * soft)) ** 2)
                self.cache[key] = (mag, merr, np.zeros(self.n, dtype=bool))
                return self.cache[key]
            ok = meas > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                mag = np.where(ok, AB_ZERO_POINT_NJY - 2.5 * np.log10(np.where(ok, meas, 1.0)), np.nan)
                merr = np.where(ok, 1.0857 * err / np.where(ok, meas, 1.0), np.nan)
            self.cache[key] = (mag, merr, ~ok)
        return self.cache[key]

    def band_missing(self, b: int | str) -> np.ndarray | None:
        """Rows where the band is absent (undetected / not observed), per the survey's policy."""
        key = ("bmiss", b)
        if key not in self.cache:
            s = self.survey
            miss = None
            if self.epoch:
                miss = None
            elif s.missing == "sdss":
                # Asinh magnitudes exist for any flux: only failed measurements are missing.
                miss = self.rng.random(self.n) < 0.003 + 0.01 * (self.mag(b) > self.depth(b) + 2.0)
            elif s.missing == "merged":
                miss = (self.mag(b) > self.depth(b) + 0.3) | (self.rng.random(self.n) < 0.003)
                if b != "row" and s.bands[b] == "j_2":         # second epoch: part of the area
                    miss |= np.mod(self.ra, 10.0) > 7.0
            elif s.missing == "gaia" and b != "row" and s.canon[b] in ("BP", "RP"):
                g = self.mag(self.ref)
                miss = (self.rng.random(self.n) < 0.01 + 0.3 * (g > 20.3))
            self.cache[key] = miss
        return self.cache[key]

    def family_flag(self, b: int | str, family: str) -> np.ndarray:
        """A measurement family's failure flag (shared by its values, errors and sub-flags)."""
        key = ("fam", b, family)
        if key not in self.cache:
            m = self.mag(b)
            rate = 0.008 + 0.03 * np.clip((m - self.depth(b) + 1.0) / 2.0, 0.0, 1.0)
            flag = self.rng.random(self.n) < rate
            flag |= m < self.survey.saturation - 0.5
            self.cache[key] = flag
        return self.cache[key]

    def astrometric_sigma(self) -> np.ndarray:
        """Positional error per coordinate, arcsec."""
        key = ("astrom",)
        if key not in self.cache:
            if self.survey.key == "gaia":
                g = self.mag(self.ref)
                self.cache[key] = 0.8e-3 * (0.015 + 1.3 * 10.0 ** (0.3 * (g - 21.0)))
            else:
                snr = self.snr(self.band(None))
                self.cache[key] = np.clip(0.01 + 0.6 * self.survey.seeing / np.maximum(snr, 1.0), 0.005, 0.3)
        return self.cache[key]

    def uniform_pick(self, values: np.ndarray) -> np.ndarray:
        return values[self.rng.integers(0, values.size, self.n)]


# ------------------------------------------------------------------------------------------
# Column generators: every column of a table gets one, chosen from its metadata


Filler = Callable[[_Ctx], tuple]        # ctx -> (values, missing mask or None)

_FLUX_UNITS = {"njy": 1.0, "ujy": 1e-3, "µjy": 1e-3, "mjy": 1e-6, "jy": 1e-9,
               "count": 2.0, "ct": 2.0, "adu": 2.0, "dn": 2.0}
_GAIA_FLUX_UNITS = ("e-/s", "electron/s", "electron.s**-1", "e-.s**-1", "electron / s")
_UKIDSS_APER_RADII = (0.5, 1.0 / math.sqrt(2), 1.0, math.sqrt(2), 2.0, 2 * math.sqrt(2), 4.0)
_POSITION_BASES = {"ra", "dec", "decl", "coord_ra", "coord_dec", "raj2000", "dej2000", "ra_j2000",
                   "dec_j2000", "radeg", "decdeg", "alpha", "delta"}
_PIXEL_FLAG_RATES = {"saturated": 0.0, "edge": 0.02, "interpolated": 0.04, "cr": 0.03,
                     "bad": 0.005, "suspect": 0.005, "clipped": 0.01, "offimage": 0.001,
                     "nodata": 0.001, "inexact_psf": 0.01, "sensor_edge": 0.01}
_DETECT_RATES = {"detect_isprimary": 0.92, "detect_ispatchinner": 0.97,
                 "detect_istractinner": 0.98, "detect_isisolated": 0.80,
                 "detect_fromblend": 0.18, "detect_isdeblendedsource": 0.95,
                 "detect_isdeblendedmodelsource": 0.12}
# SDSS photo flags: bit -> probability (BINNED1 nearly always, CHILD/BLENDED common, ...).
_SDSS_FLAG_BITS = {28: 0.97, 4: 0.35, 3: 0.18, 29: 0.15, 30: 0.04, 17: 0.05, 12: 0.02,
                   2: 0.02, 7: 0.04, 19: 0.03, 8: 0.02, 5: 0.01, 1: 0.01, 44: 0.02, 36: 0.05}
_SDSS_STATUS_BITS = {4: 0.99, 13: 0.85, 8: 0.9, 9: 0.3, 11: 0.05}
# WFCAM post-processing error bits: informational (< 256) and quality-affecting ones.
_WSA_PPERR_BITS = {4: 0.08, 6: 0.02, 7: 0.01, 12: 0.01, 16: 0.02, 19: 0.005, 22: 0.01,
                   23: 0.005, 24: 0.002}


def _conv_angle_from_arcsec(unit: str | None, pixel_scale: float) -> float:
    u = (unit or "arcsec").lower()
    return {"deg": 1 / 3600.0, "degree": 1 / 3600.0, "arcmin": 1 / 60.0, "arcsec": 1.0,
            "mas": 1000.0, "rad": math.pi / 180 / 3600, "pixel": 1.0 / pixel_scale,
            "pix": 1.0 / pixel_scale, "uas": 1e6}.get(u, 1.0)


def _bits(rng: np.random.Generator, n: int, probs: dict[int, float],
          boost: np.ndarray | None = None) -> np.ndarray:
    out = np.zeros(n, dtype=np.int64)
    for bit, p in probs.items():
        pr = p if boost is None else np.clip(p * boost, 0.0, 1.0)
        out |= (rng.random(n) < pr).astype(np.int64) << bit
    return out


def _bitmask_probs(name: str) -> dict[int, float]:
    """A fixed, plausible set of rarely-set bits for an unknown bit-mask column."""
    h = sum(ord(c) * (i + 1) for i, c in enumerate(name))
    return {(h + 7 * k) % 30: 0.04 * 0.6 ** k for k in range(6)}


def _family(lb: str) -> str:
    f = re.sub(r"(_?err(or)?)$", "", lb)
    f = re.sub(r"_?(instflux|flux|mag)$", "", f)
    return f.strip("_")


def _measure_of(lb: str, survey: Survey) -> tuple[str, float | None]:
    """Measurement kind and aperture radius (arcsec) from a photometry column's base name."""
    m = re.search(r"apflux_(\d+)_(\d+)", lb)
    if m:
        return "aperture", float(f"{m.group(1)}.{m.group(2)}") * survey.pixel_scale
    m = re.search(r"(?:^|_)ap(\d+)(?:flux|mag)", lb)
    if m:
        return "aperture", int(m.group(1)) * survey.aperture_unit
    m = re.search(r"apermag(\d)", lb)
    if m:
        k = min(max(int(m.group(1)), 1), 7)
        return "aperture", _UKIDSS_APER_RADII[k - 1]
    m = re.search(r"gaap(\d)p(\d)", lb)
    if m:
        return "aperture", 1.5 * float(f"{m.group(1)}.{m.group(2)}")
    if "fiber" in lb:
        return "aperture", 1.5
    if lb.startswith("calib") and survey.key == "lsst":
        return "aperture", 12 * survey.pixel_scale
    if "diff" in lb:
        return "diff", None
    if "psf" in lb or "gaussian" in lb:
        return "psf", None
    if "petro" in lb:
        return "petro", None
    if "kron" in lb:
        return "kron", None
    if "bdfluxb" in lb:
        return "bulge", None
    if "bdfluxd" in lb:
        return "disk", None
    if "sky" in lb or "background" in lb:
        return "background", None
    return "model", None


def _ids_like(lb: str, col: Column) -> bool:
    return (col.datatype in ("long", "int") and (lb.endswith("id") or "meta.id" in (col.ucd or "").lower()))


@dataclass
class _TableInfo:
    """What the column rules need to know about the table being filled."""

    table: Table
    survey: Survey
    role: str
    epoch: bool = False              # multi-epoch child (rows with their own band and time)
    forced: bool = False             # child measured at the director's position
    director: Table | None = None
    registry: dict = field(default_factory=dict)
    band_of: dict = field(default_factory=dict)      # column -> (band index | None, base)
    flag_families: set = field(default_factory=set)  # (band, family) with a *_flag column
    copy_from_director: set = field(default_factory=set)


def _band_map(table: Table, survey: Survey) -> dict[str, tuple[int | None, str]]:
    """Split band-specific column names into (band index, base name)."""
    bands = sorted(survey.bands, key=len, reverse=True)
    alt = "|".join(re.escape(b) for b in bands)
    colour = re.compile(rf"^({alt})m({alt})(pnt|ext)(err)?$", re.I)
    cands: dict[str, tuple[str, str]] = {}
    for name in table.column_names:
        if colour.match(name):
            continue
        hit = None
        if survey.style == "prefix":
            m = re.match(rf"^({alt})_(.+)$", name)
            hit = (m.group(1), m.group(2)) if m else None
        elif survey.style == "suffix":
            m = re.match(rf"^(.+)_({alt})$", name)
            hit = (m.group(2), m.group(1)) if m else ((name, "") if name in survey.bands else None)
        elif survey.style == "camel":
            for b in bands:
                if name.startswith(b) and len(name) > len(b) and name[len(b)] != "_":
                    hit = (b, name[len(b):])
                    break
        elif survey.style == "gaia":
            m = re.match(rf"^phot_({alt})_(.+)$", name)
            hit = (m.group(1), m.group(2)) if m else None
        if hit:
            cands[name] = hit
    per_base: dict[str, set[str]] = {}
    for b, base in cands.values():
        per_base.setdefault(base, set()).add(b)
    out: dict[str, tuple[int | None, str]] = {}
    bare = sum(1 for b, base in cands.values() if base == "")
    for name in table.column_names:
        if name in cands:
            b, base = cands[name]
            if (base == "" and bare >= 3) or (base != "" and len(per_base[base]) >= 2):
                out[name] = (survey.bands.index(b), base)
                continue
        out[name] = (None, name)
    return out


def _is_time(lb: str, col: Column) -> bool:
    ucd = (col.ucd or "").lower()
    unit = (col.unit or "").lower()
    if "time.duration" in ucd or lb.endswith(("exptime", "darktime", "duration")):
        return False
    return (col.datatype == "timestamp" or ucd.startswith("time.") or "mjd" in lb
            or lb.endswith("epoch") or "midpoint" in lb or lb in ("expmidpt", "obsstart", "date_obs", "dateobs")
            or (unit in ("d", "day", "yr", "a") and col.datatype in ("float", "double")
                and not lb.endswith(("period", "duration", "exptime", "darktime"))))


def _rule(col: Column, info: _TableInfo) -> Filler:
    """The generator for one column (see the module docstring for what is generated)."""
    t, s = info.table, info.survey
    name = col.name
    ln = name.lower()
    b, base = info.band_of.get(name, (None, name))
    lb = base.lower()
    unit = (col.unit or "").strip()
    lunit = unit.lower()
    ucd = (col.ucd or "").lower()
    dt = col.datatype
    is_float = dt in ("float", "double")
    is_int = dt in ("byte", "short", "int", "long")

    # -- structure: ids, foreign keys, the table's own position --------------------------
    if info.role != "replicated":
        if t.foreign_key and ln == t.foreign_key.lower():
            return lambda c: (c.obj("ids"), None)
        if t.id_column and ln == t.id_column.lower():
            return lambda c: (c.ids if c.ids is not None else c.obj("ids"), None)
        if t.ra_column and ln == t.ra_column.lower():
            return lambda c: (c.ra, None)
        if t.dec_column and ln == t.dec_column.lower():
            return lambda c: (c.dec, None)
        if ln in info.copy_from_director:
            return lambda c: c.dir_value(ln)

    # -- redshifts -------------------------------------------------------------------------
    if "redshift" in ucd and "stat.error" not in ucd or (
            b is None and ln in ("z", "zphot", "photoz", "photo_z", "redshift")):
        def z_value(c: _Ctx):
            z = c.obj("zred")
            kind = c.obj("kind")
            r = c.mag(c.ref)
            sig = 0.03 * (1 + z) * (1 + 10 ** (0.4 * (r - c.survey.depth_of(c.ref, False))))
            zp = z + sig * c.rng.standard_normal(c.n)
            bad = c.rng.random(c.n) < 0.03
            zp = np.where(bad, c.rng.uniform(0.0, 1.5, c.n), zp)
            zp = np.where(kind == STAR, np.abs(0.02 * c.rng.standard_normal(c.n)), zp)
            c.cache["zphot_sig"] = sig
            return np.clip(zp, 0.0, 7.0), None
        return z_value

    # -- booleans --------------------------------------------------------------------------
    if dt == "boolean":
        return _flag_rule(lb, b, info)

    # -- Gaia astrometry, signal-to-noise ratios (named like errors, but are not) -------------
    gaia = _gaia_rule(ln, col, info)
    if gaia is not None:
        return gaia
    if is_float and ("over_error" in lb or lb.endswith("snr") or lb in ("s2n", "sn")):
        def snr(c: _Ctx):
            _, meas, err = c.flux(c.band(b), "psf")
            return np.abs(meas) / err, c.band_missing(c.band(b))
        return snr

    # -- errors ----------------------------------------------------------------------------
    err_base = None
    if lb.startswith("err_") or lb == "err":
        err_base = lb[4:]
    elif re.search(r"(err|error)$", lb) and not lb.endswith(("errbits", "pperrbits")):
        err_base = re.sub(r"_?(err|error)$", "", lb)
    elif ucd.startswith("stat.error"):
        err_base = lb
    elif lb in ("sigra", "sigdec", "sig_ra", "sig_dec"):
        err_base = lb[3:].strip("_")
    if err_base is not None:
        return _error_rule(err_base, b, col, info)

    # -- colours ---------------------------------------------------------------------------
    alt = "|".join(re.escape(x) for x in sorted(s.bands, key=len, reverse=True))
    m = re.match(rf"^({alt})m({alt})(pnt|ext)$", ln)
    if m and b is None:
        b1, b2 = s.bands.index(m.group(1)), s.bands.index(m.group(2))
        measure = "psf" if m.group(3) == "pnt" else "petro"

        def colour(c: _Ctx):
            m1, _, x1 = c.measured_mag(b1, measure)
            m2, _, x2 = c.measured_mag(b2, measure)
            miss = x1 | x2
            for bb in (b1, b2):
                bm = c.band_missing(bb)
                if bm is not None:
                    miss = miss | bm
            return m1 - m2, miss
        return colour
    if s.key == "gaia" and ln in ("bp_rp", "bp_g", "g_rp"):
        p1, p2 = ln.split("_")
        i1, i2 = s.bands.index(p1), s.bands.index(p2)

        def gaia_colour(c: _Ctx):
            m1, _, x1 = c.measured_mag(i1)
            m2, _, x2 = c.measured_mag(i2)
            miss = x1 | x2
            for bb in (i1, i2):
                bm = c.band_missing(bb)
                if bm is not None:
                    miss = miss | bm
            return m1 - m2, miss
        return gaia_colour

    # -- extinction ------------------------------------------------------------------------
    if lb in ("ebv", "e_bv", "ebv_sfd", "e_b_v") or ln == "ebv":
        return lambda c: (c.obj("ebv"), None)
    if lb == "extinction" or re.fullmatch(r"a_?([ugrizyjhk]|bp|rp|g)", ln) or ln.startswith(("ag_", "abp_", "arp_")):
        canon = None
        if b is not None:
            canon = s.canon[b]
        else:
            key = re.sub(r"^a_?|_.*$", "", name)
            canon = {"y": "Y", "j": "J", "h": "H", "k": "K", "bp": "BP", "rp": "RP",
                     "g": "G" if s.key == "gaia" else "g"}.get(key.lower(), key if key in _CI else "r")
        r_b = float(R_EXT[_CI.get(canon, _CI["r"])])
        return lambda c: (r_b * c.obj("ebv"), None)

    # -- positions derived from the row position --------------------------------------------
    if "pos.galactic" in ucd or ln in ("l", "b", "glon", "glat", "gal_l", "gal_b"):
        lat = "lat" in ucd or ln in ("b", "glat", "gal_b")
        return lambda c: (sky.icrs_to_galactic(c.ra, c.dec)[1 if lat else 0], None)
    if "pos.ecliptic" in ucd or ln in ("ecl_lon", "ecl_lat", "elon", "elat"):
        lat = "lat" in ucd or ln in ("ecl_lat", "elat")
        return lambda c: (sky.icrs_to_ecliptic(c.ra, c.dec)[1 if lat else 0], None)
    if b is not None and lb in ("xi", "eta"):
        conv = _conv_angle_from_arcsec(col.unit or "arcsec", s.pixel_scale)
        return lambda c: (conv * c.astrometric_sigma() * c.rng.standard_normal(c.n), c.band_missing(b))
    if ln in ("lambda", "eta") and b is None:
        k = 0 if ln == "lambda" else 1
        return lambda c: (sky.sdss_survey_coords(c.ra, c.dec)[k], None)
    if ln in ("cx", "cy", "cz"):
        k = "xyz".index(ln[1])
        return lambda c: (np.cos(np.radians(c.dec)) * np.cos(np.radians(c.ra)) if k == 0 else
                          np.cos(np.radians(c.dec)) * np.sin(np.radians(c.ra)) if k == 1 else
                          np.sin(np.radians(c.dec)), None)
    if ln.startswith("htmid") and is_int:
        return lambda c: (sky.htm_index(c.ra, c.dec, 20), None)
    if is_float and "pos.outline" in ucd and ("pos.eq.ra" in ucd or "pos.eq.dec" in ucd):
        # Corners of a detector (CcdVisit llcra, ulcdec, ...): about 0.1 deg from the centre.
        corner = ln[:2]
        is_dec = "dec" in ucd
        east = 1.0 if corner[1:2] == "r" else -1.0
        north = 1.0 if corner[:1] == "u" else -1.0

        def ccd_corner(c: _Ctx):
            ra, dec = sky.offset_positions(c.ra, c.dec, np.full(c.n, east * 360.0),
                                           np.full(c.n, north * 360.0))
            return (dec if is_dec else ra), None
        return ccd_corner
    if is_float and (ucd.startswith("pos.eq.ra") or ucd.startswith("pos.eq.dec")
                     or lb in _POSITION_BASES or lb.endswith(("_ra", "_dec", "_decl"))):
        is_dec = "dec" in ucd or lb.endswith(("dec", "decl", "delta", "dej2000"))
        jitter = b is not None or lb not in _POSITION_BASES

        def position(c: _Ctx):
            if not jitter:
                return (c.dec if is_dec else c.ra), None
            sig = c.astrometric_sigma() * 0.5
            ra, dec = sky.offset_positions(c.ra, c.dec, sig * c.rng.standard_normal(c.n),
                                           sig * c.rng.standard_normal(c.n))
            return (dec if is_dec else ra), None
        return position

    # -- observing conditions (Visit / CcdVisit / frame metadata) -----------------------------
    obs = _observing_rule(ln, col, info)
    if obs is not None:
        return obs

    # -- photometry: fluxes and magnitudes ---------------------------------------------------
    flux_unit = lunit in _FLUX_UNITS or lunit in _GAIA_FLUX_UNITS
    other_unit = bool(lunit) and not flux_unit
    if is_float and (flux_unit or ("flux" in lb and not other_unit and not any(x in lb for x in
                                                            ("frac", "overlap", "ratio", "apcorr", "calib_")))):
        return _flux_rule(lb, b, col, info)
    if is_float and (lunit == "mag" or ("mag" in lb and lunit in ("", "mag"))) and not any(
            x in lb for x in ("rms", "skew", "limit")):
        return _mag_rule(lb, b, col, info)
    if is_float and "magrms" in lb:
        def mag_rms(c: _Ctx):
            bb = c.band(b)
            _, err, _ = c.measured_mag(bb, "model")
            rms = np.sqrt(np.nan_to_num(err, nan=0.5) ** 2 + (c.obj("amp") / math.sqrt(2)) ** 2)
            return rms, c.band_missing(bb)
        return mag_rms

    # -- classes ---------------------------------------------------------------------------
    if is_int and (lb == "class" or ln == "mergedclass"):
        return _ukidss_class_rule(b)
    if is_int and (lb == "type" or ln == "type") and s.key == "sdss":
        def sdss_type(c: _Ctx):
            bb = c.band(b)
            ext = _extended(c, bb)
            return np.where(ext, 3, 6), c.band_missing(bb) if b is not None else None
        return sdss_type
    if is_float and "extendedness" in lb:
        size = "size" in lb

        def extendedness(c: _Ctx):
            bb = c.band(b)
            ext = _extended(c, bb)
            if size:
                v = np.clip(ext * 0.8 + 0.1 + 0.1 * c.rng.standard_normal(c.n), 0.0, 1.0)
            else:
                v = ext.astype(np.float64)
            return v, None
        return extendedness
    if is_float and ln in ("pstar", "pgalaxy", "pnoise", "psaturated"):
        return _ukidss_prob_rule(ln)
    if is_float and lb.endswith("classstat"):
        def class_stat(c: _Ctx):
            bb = c.band(b)
            ext = _extended(c, bb)
            v = np.where(ext, 3.0 + 5.0 * c.rng.random(c.n), 0.0) + c.rng.standard_normal(c.n)
            return v, c.band_missing(bb) if b is not None else None
        return class_stat
    if is_float and ln.startswith("classprob"):
        which = GALAXY if "galaxy" in ln else QSO if "quasar" in ln or "qso" in ln else STAR

        def class_prob(c: _Ctx):
            kind = c.obj("kind")
            conf = np.clip(0.97 - 0.02 * np.maximum(c.mag(c.ref) - 17.0, 0) + 0.03 * c.rng.standard_normal(c.n), 0.3, 1.0)
            v = np.where(kind == which, conf, (1.0 - conf) / 2.0)
            return v, (c.mag(c.ref) > 20.5) & (c.rng.random(c.n) < 0.5)
        return class_prob
    if ln in ("variableclass", "varclass") and is_int:
        return lambda c: (c.obj("variable").astype(np.int64), None)
    if is_float and "probvar" in lb:
        return lambda c: (np.where(c.obj("variable"), 1.0 - 0.05 * c.rng.random(c.n),
                                   c.rng.beta(0.5, 6.0, c.n)), None)
    if is_float and "skew" in lb:
        return lambda c: (0.5 * c.rng.standard_normal(c.n), None)

    # -- bit masks ---------------------------------------------------------------------------
    if is_int and (lb in ("flags", "flags2") or lb.startswith("flags_")):
        def sdss_flags(c: _Ctx):
            boost = np.where(c.mag(c.ref) < c.survey.saturation, 20.0, 1.0)
            v = _bits(c.rng, c.n, _SDSS_FLAG_BITS if s.key == "sdss" else _bitmask_probs(ln), boost)
            return v, None
        return sdss_flags
    if is_int and (lb.endswith("errbits") or lb.endswith("ppbits")):
        def err_bits(c: _Ctx):
            bb = c.band(b)
            boost = np.where(c.mag(bb) < c.survey.saturation + 1.0, 8.0, 1.0)
            v = _bits(c.rng, c.n, _WSA_PPERR_BITS, boost)
            return v, c.band_missing(bb) if b is not None else None
        return err_bits
    if is_int and lb == "status" and s.key == "sdss":
        return lambda c: (_bits(c.rng, c.n, _SDSS_STATUS_BITS), None)
    if is_int and any(x in lb for x in ("bitmask", "bits", "qualflag", "quality")):
        return lambda c: (_bits(c.rng, c.n, _bitmask_probs(ln)), None)

    # -- shapes and sizes ----------------------------------------------------------------------
    shape = _shape_rule(lb, b, col, info)
    if shape is not None:
        return shape

    # -- times ---------------------------------------------------------------------------------
    if _is_time(lb, col):
        return _time_rule(lb, b, col, info)

    # -- integers: counts, survey bookkeeping, ids -----------------------------------------------
    if is_int:
        return _int_rule(ln, lb, b, col, info)

    # -- strings ----------------------------------------------------------------------------------
    if dt in ("char", "string"):
        return _string_rule(ln, lb, b, col, info)

    return _float_rule(ln, lb, b, col, info)


def _extended(c: _Ctx, bb: int | str) -> np.ndarray:
    """Star/galaxy separation as a survey would measure it: reliable when bright, noisy when faint."""
    key = ("ext", bb)
    if key not in c.cache:
        m = c.mag(bb)
        faint = 1.0 / (1.0 + np.exp(-(m - (c.depth(bb) - 1.0)) / 0.4))
        small = c.obj("r_half") < 0.3 * c.survey.seeing
        p_gal = np.where(c.obj("kind") == GALAXY,
                         1.0 - 0.3 * faint - np.where(small, 0.15, 0.0), 0.005 + 0.35 * faint)
        c.cache[key] = c.rng.random(c.n) < np.clip(p_gal, 0.0, 1.0)
    return c.cache[key]


def _flux_factor(lunit: str, canon: str) -> float:
    if lunit in _GAIA_FLUX_UNITS:
        return 10.0 ** (0.4 * (_ZERO_POINT_ES.get(canon, 25.6874) - AB_ZERO_POINT_NJY))
    return _FLUX_UNITS.get(lunit, 1.0)


def _flux_scale(c: _Ctx, bb: int | str, lunit: str) -> np.ndarray | float:
    if lunit in _GAIA_FLUX_UNITS:
        canon = c.canon(bb)
        if isinstance(canon, np.ndarray):
            return np.array([_flux_factor(lunit, x) for x in c.survey.canon])[c.band_row]
        return _flux_factor(lunit, canon)
    return _FLUX_UNITS.get(lunit, 1.0)


def _missing(c: _Ctx, bb: int | str, b: int | None, family: str | None,
             info: _TableInfo, extra: np.ndarray | None = None) -> np.ndarray | None:
    out = extra
    bm = c.band_missing(bb)
    if bm is not None:
        out = bm if out is None else (out | bm)
    if family is not None and (b, family) in info.flag_families:
        ff = c.family_flag(bb, family)
        out = ff if out is None else (out | ff)
    return out


def _flux_rule(lb: str, b: int | None, col: Column, info: _TableInfo) -> Filler:
    measure, ap = _measure_of(lb, info.survey)
    fam = _family(lb)
    lunit = (col.unit or "nJy").lower()

    def flux(c: _Ctx):
        bb = c.band(b)
        scale = _flux_scale(c, bb, lunit)
        if measure == "background":
            f5 = 10.0 ** (0.4 * (AB_ZERO_POINT_NJY - c.depth(bb)))
            return scale * f5 / 25.0 * c.rng.standard_normal(c.n), _missing(c, bb, b, fam, info)
        if measure == "diff":
            _, _, err = c.flux(bb, "psf")
            diff = err * c.rng.standard_normal(c.n)
            if bb == "row" and c.mjd_row is not None:
                dm = c.variability()
                v = dm != 0
                f_now = c.total_flux(bb)[v]
                diff[v] += f_now * (1.0 - 10.0 ** (0.4 * dm[v]))     # now - template
            return scale * diff, _missing(c, bb, b, fam, info)
        if measure in ("bulge", "disk"):
            _, meas, _ = c.flux(bb, "model")
            bt = np.where(c.obj("kind") == GALAXY, 0.4, 1.0)
            return scale * meas * (bt if measure == "bulge" else 1.0 - bt), _missing(c, bb, b, fam, info)
        _, meas, _ = c.flux(bb, measure, ap)
        return scale * meas, _missing(c, bb, b, fam, info)
    return flux


def _mag_rule(lb: str, b: int | None, col: Column, info: _TableInfo) -> Filler:
    measure, ap = _measure_of(lb, info.survey)
    fam = _family(lb)
    flat = lb.replace("_", "")
    stat = next((k for k in ("meanmag", "medianmag", "maxmag", "minmag") if k in flat), None)
    if info.survey.key == "gaia":
        stat = None                      # Gaia's mean magnitudes are those of the mean fluxes

    def mag(c: _Ctx):
        bb = c.band(b)
        mm, merr, nonpos = c.measured_mag(bb, measure, ap)
        if stat is not None:
            err = np.minimum(np.nan_to_num(merr, nan=0.5), 0.5)
            true = c.mag(bb)
            if stat in ("meanmag", "medianmag"):
                mm = true + 0.3 * err * c.rng.standard_normal(c.n)
                nonpos = np.zeros(c.n, dtype=bool)
            else:
                sign = 1.0 if stat == "maxmag" else -1.0
                mm = true + sign * (c.obj("amp") + 2.0 * err * np.abs(c.rng.standard_normal(c.n)))
                nonpos = np.zeros(c.n, dtype=bool)
        return mm, _missing(c, bb, b, fam, info, nonpos)
    return mag


def _error_rule(base: str, b: int | None, col: Column, info: _TableInfo) -> Filler:
    s = info.survey
    lunit = (col.unit or "").lower()
    small = {"localphotocalib": 0.002, "psfflux_apcorr": 0.005, "apcorr": 0.005}
    if base in small or base.endswith("apcorr"):
        scale = small.get(base, 0.005)
        return lambda c: (scale * np.exp(0.5 * c.rng.standard_normal(c.n)), None)
    # Positions (sky or pixel).
    if base in _POSITION_BASES or base.endswith(("_ra", "_dec", "_decl")) or base in (
            "ra_dec", "coord") or "pos.eq" in (col.ucd or "").lower():
        conv = _conv_angle_from_arcsec(col.unit or ("mas" if s.key == "gaia" else "arcsec"), s.pixel_scale)
        return lambda c: (c.astrometric_sigma() * conv * (1 + 0.1 * c.rng.standard_normal(c.n)) ** 2, None)
    if base in ("x", "y") or base.endswith(("_x", "_y", "centroid_x", "centroid_y")):
        conv = 1.0 / s.pixel_scale if lunit in ("", "pixel", "pix") else _conv_angle_from_arcsec(col.unit, s.pixel_scale)
        return lambda c: (c.astrometric_sigma() * conv * np.exp(0.1 * c.rng.standard_normal(c.n)), None)
    # Gaia astrometry.
    if base in ("parallax", "pmra", "pmdec", "pm", "radial_velocity"):
        return lambda c: _gaia_error(c, base)
    # Photometry.
    if "flux" in base or lunit in _FLUX_UNITS or lunit in _GAIA_FLUX_UNITS:
        measure, ap = _measure_of(base, s)
        fam = _family(base)
        lu = lunit or "njy"

        def flux_err(c: _Ctx):
            bb = c.band(b)
            m = "psf" if measure in ("diff", "background", "bulge", "disk") else measure
            _, _, err = c.flux(bb, m, ap)
            if measure == "background":
                err = 10.0 ** (0.4 * (AB_ZERO_POINT_NJY - c.depth(bb))) / 25.0 * np.exp(
                    0.1 * c.rng.standard_normal(c.n))
            return _flux_scale(c, bb, lu) * err, _missing(c, bb, b, fam, info)
        return flux_err
    if "mag" in base or base in ("", "err") or lunit == "mag" and not re.search(r"m.*pnt|m.*ext", base):
        if "pnt" not in base and "ext" not in base:
            measure, ap = _measure_of(base, s)
            fam = _family(base)

            def mag_err(c: _Ctx):
                bb = c.band(b)
                _, merr, nonpos = c.measured_mag(bb, measure, ap)
                return merr, _missing(c, bb, b, fam, info, nonpos)
            return mag_err
    alt = "|".join(re.escape(x) for x in sorted(s.bands, key=len, reverse=True))
    m = re.match(rf"^({alt})m({alt})(pnt|ext)$", base)
    if m:
        b1, b2 = s.bands.index(m.group(1)), s.bands.index(m.group(2))
        measure = "psf" if m.group(3) == "pnt" else "petro"

        def colour_err(c: _Ctx):
            _, e1, x1 = c.measured_mag(b1, measure)
            _, e2, x2 = c.measured_mag(b2, measure)
            miss = x1 | x2
            for bb in (b1, b2):
                bm = c.band_missing(bb)
                if bm is not None:
                    miss = miss | bm
            return np.hypot(e1, e2), miss
        return colour_err
    if base in ("z", "zphot", "photoz", "redshift", "photo_z") or "redshift" in (col.ucd or "").lower():
        def z_err(c: _Ctx):
            sig = c.cache.get("zphot_sig")
            if sig is None:
                z = c.obj("zred")
                sig = 0.03 * (1 + z) * (1 + 10 ** (0.4 * (c.mag(c.ref) - c.survey.depth_of(c.ref, False))))
            return sig * np.exp(0.2 * c.rng.standard_normal(c.n)), None
        return z_err
    if base in ("rowv", "colv"):
        return lambda c: (0.0005 * 10 ** (0.2 * (c.mag(c.ref) - 18.0)), None)
    # Anything else: a small positive error.
    return lambda c: (0.05 * np.exp(0.5 * c.rng.standard_normal(c.n)), None)


def _flag_rule(lb: str, b: int | None, info: _TableInfo) -> Filler:
    s = info.survey
    m = re.match(r"^(?:diff_)?pixelflags_(\w+?)(center)?$", lb)
    if m:
        what, center = m.group(1), bool(m.group(2))
        rate = _PIXEL_FLAG_RATES.get(what, 0.01)

        def pixel_flag(c: _Ctx):
            bb = c.band(b)
            key = ("pix", bb, what)
            if key not in c.cache:
                if what == "saturated":
                    c.cache[key] = (c.mag(bb) < c.survey.saturation) | (c.rng.random(c.n) < 0.0005)
                else:
                    c.cache[key] = c.rng.random(c.n) < rate
            v = c.cache[key]
            return (v & (c.rng.random(c.n) < 0.6)) if center else v, None
        return pixel_flag
    if lb in _DETECT_RATES:
        p = _DETECT_RATES[lb]
        return lambda c: (c.rng.random(c.n) < p, None)
    if lb in ("sky_object", "sky_source", "merge_peak_sky"):
        return lambda c: (c.rng.random(c.n) < 0.005, None)
    if lb.startswith("calib_"):
        p = 0.05 if "detected" in lb else 0.1 if "reserved" in lb else 0.8 if "candidate" in lb else 0.5

        def calib(c: _Ctx):
            bb = c.band(b)
            mag = c.mag(bb)
            ok = (c.obj("kind") == STAR) & (mag > c.survey.saturation + 0.5) & (mag < c.survey.saturation + 5.0)
            return ok & (c.rng.random(c.n) < p), None
        return calib
    if lb == "duplicated_source":
        return lambda c: (c.rng.random(c.n) < 0.01, None)
    if lb in ("in_qso_candidates", "in_galaxy_candidates"):
        k = QSO if "qso" in lb else GALAXY
        return lambda c: ((c.obj("kind") == k) & (c.rng.random(c.n) < 0.9)
                          | (c.rng.random(c.n) < 0.003), None)
    if "flag" in lb:
        m = re.match(r"^(.*?)_?flag(?:_(.+))?$", lb)
        fam = _family(m.group(1)) if m else lb
        sub = m.group(2) if m else None
        if lb == "invalidpsfflag":
            return lambda c: (c.rng.random(c.n) < 0.001, None)

        def flag(c: _Ctx):
            bb = c.band(b)
            f = c.family_flag(bb, fam)
            if sub:
                f = f & (c.rng.random(c.n) < 0.3)
            return f, None
        return flag
    if lb.startswith(("deblend_",)):
        return lambda c: (c.rng.random(c.n) < 0.01, None)
    if lb.startswith(("is", "has", "in_")):
        return lambda c: (c.rng.random(c.n) < 0.5, None)
    return lambda c: (c.rng.random(c.n) < 0.02, None)


def _ukidss_class_rule(b: int | None) -> Filler:
    def klass(c: _Ctx):
        bb = c.band(b)
        mag = c.mag(bb)
        ext = _extended(c, bb)
        faint = mag > c.depth(bb) - 1.0
        v = np.where(ext, np.where(faint, -3, 1), np.where(faint, -2, -1))
        v = np.where((mag > c.depth(bb)) & (c.rng.random(c.n) < 0.1), 0, v)
        v = np.where(mag < c.survey.saturation, -9, v)
        return v, c.band_missing(bb) if b is not None else None
    return klass


def _ukidss_prob_rule(ln: str) -> Filler:
    def prob(c: _Ctx):
        key = ("pclass",)
        if key not in c.cache:
            bb = c.band(None)
            ext = _extended(c, bb)
            mag = c.mag(bb)
            faint = np.clip((mag - (c.depth(bb) - 2.0)) / 2.0, 0.0, 1.0)
            conf = np.clip(0.97 - 0.45 * faint + 0.02 * c.rng.standard_normal(c.n), 0.34, 0.999)
            p_sat = np.where(mag < c.survey.saturation, 0.9, 0.0)
            p_noise = 0.001 + 0.05 * faint
            rest = np.clip(1.0 - p_sat - p_noise, 0.0, 1.0)
            p_star = np.where(ext, 1.0 - conf, conf) * rest
            c.cache[key] = {"pstar": p_star, "pgalaxy": rest - p_star, "pnoise": p_noise,
                            "psaturated": p_sat}
        return c.cache[key][ln], None
    return prob


def _gaia_astrometry(c: _Ctx) -> dict:
    """True parallax / proper motions / RV and their errors, shared by the Gaia columns."""
    key = ("gaia_astrometry",)
    if key in c.cache:
        return c.cache[key]
    rng = c.rng
    n = c.n
    kind = c.obj("kind")
    g = c.mag(c.ref)
    star = kind == STAR
    giant = star & (rng.random(n) < 0.12)
    m_abs = np.where(giant, rng.uniform(-1.0, 1.5, n), 0.5 + 11.0 * c.obj("t"))
    a_g = 2.74 * c.obj("ebv")
    dist = np.maximum(10.0 ** ((g - a_g - m_abs + 5.0) / 5.0), 3.0)          # pc
    plx_true = np.where(star, 1000.0 / dist, 0.0)
    halo = rng.random(n) < 0.1
    vt = np.where(halo, 150.0, 30.0)
    pmra_true = np.where(star, (vt * rng.standard_normal(n) - 20.0) * plx_true / 4.74, 0.0)
    pmdec_true = np.where(star, (vt * rng.standard_normal(n) - 10.0) * plx_true / 4.74, 0.0)
    sig_plx = 0.015 + 1.3 * 10.0 ** (0.3 * (g - 21.0))
    sig_pm = 1.1 * sig_plx
    two_param = ((g > 20.3) & (rng.random(n) < 0.5)) | (rng.random(n) < 0.01)
    rv_ok = star & (g < 15.5) & (rng.random(n) < 0.85)
    out = {
        "parallax": plx_true + sig_plx * rng.standard_normal(n),
        "pmra": pmra_true + sig_pm * rng.standard_normal(n),
        "pmdec": pmdec_true + sig_pm * rng.standard_normal(n),
        "radial_velocity": rng.normal(-5.0, 35.0, n) + np.where(halo, rng.normal(0, 100.0, n), 0.0),
        "sig_parallax": sig_plx, "sig_pm": sig_pm,
        "sig_rv": 0.3 + 3.0 * rng.random(n) * 10 ** (0.2 * (g - 15.5)),
        "two_param": two_param, "rv_missing": ~rv_ok, "dist": dist, "giant": giant,
        "six_param": ~two_param & (g > 19.0) & (rng.random(n) < 0.5),
    }
    out["pm"] = np.hypot(out["pmra"], out["pmdec"])
    c.cache[key] = out
    return out


def _gaia_error(c: _Ctx, base: str):
    a = _gaia_astrometry(c)
    if base == "radial_velocity":
        return a["sig_rv"], a["rv_missing"]
    sig = a["sig_parallax"] if base == "parallax" else a["sig_pm"]
    return sig * np.exp(0.05 * c.rng.standard_normal(c.n)), a["two_param"]


def _gaia_rule(ln: str, col: Column, info: _TableInfo) -> Filler | None:
    if ln in ("parallax", "pmra", "pmdec", "pm"):
        return lambda c: (_gaia_astrometry(c)[ln], _gaia_astrometry(c)["two_param"])
    if ln == "radial_velocity":
        return lambda c: (_gaia_astrometry(c)[ln], _gaia_astrometry(c)["rv_missing"])
    if ln == "parallax_over_error":
        def poe(c: _Ctx):
            a = _gaia_astrometry(c)
            return a["parallax"] / a["sig_parallax"], a["two_param"]
        return poe
    if ln == "ruwe":
        return lambda c: (0.95 + 0.08 * np.abs(c.rng.standard_normal(c.n))
                          + (c.rng.random(c.n) < 0.05) * c.rng.exponential(1.0, c.n), None)
    if ln.startswith("astrometric_excess_noise"):
        sig = ln.endswith("_sig")
        return lambda c: (c.rng.exponential(1.0 if sig else 0.15, c.n), None)
    if ln == "astrometric_params_solved":
        def solved(c: _Ctx):
            a = _gaia_astrometry(c)
            return np.where(a["two_param"], 3, np.where(a["six_param"], 95, 31)), None
        return solved
    if ln == "ref_epoch":
        return lambda c: (np.full(c.n, 2016.0), None)
    if ln.startswith("teff"):
        return lambda c: (9500.0 - 6300.0 * c.obj("t") + 150.0 * c.rng.standard_normal(c.n),
                          (c.obj("kind") != STAR) | (c.mag(c.ref) > 19.0))
    if ln.startswith("logg"):
        return lambda c: (np.where(_gaia_astrometry(c)["giant"], 2.5, 4.4) + 0.2 * c.rng.standard_normal(c.n),
                          (c.obj("kind") != STAR) | (c.mag(c.ref) > 19.0))
    if ln.startswith(("mh_", "feh")):
        return lambda c: (c.rng.normal(-0.3, 0.4, c.n), (c.obj("kind") != STAR) | (c.mag(c.ref) > 19.0))
    if ln.startswith("distance"):
        return lambda c: (_gaia_astrometry(c)["dist"] * np.exp(0.1 * c.rng.standard_normal(c.n)),
                          (c.obj("kind") != STAR) | (c.mag(c.ref) > 19.0))
    if "excess_factor" in ln:
        return lambda c: (1.15 + 0.05 * np.abs(c.rng.standard_normal(c.n))
                          + 0.4 * (c.obj("kind") == GALAXY), None)
    return None


def _observing_rule(ln: str, col: Column, info: _TableInfo) -> Filler | None:
    """Exposure metadata: zero points, airmass, seeing, sky level, detector sizes."""
    s = info.survey
    ucd = (col.ucd or "").lower()
    if "zeropoint" in ln or "arith.zp" in ucd:
        return lambda c: (AB_ZERO_POINT_NJY + 0.05 * c.rng.standard_normal(c.n), None)
    if ln == "airmass":
        return lambda c: (1.0 + c.rng.exponential(0.2, c.n), None)
    if "zenith" in ln:
        return lambda c: (np.degrees(np.arccos(1.0 / (1.0 + c.rng.exponential(0.2, c.n)))), None)
    if ln == "altitude":
        return lambda c: (90.0 - np.degrees(np.arccos(1.0 / (1.0 + c.rng.exponential(0.2, c.n)))), None)
    if ln == "seeing" or ln.endswith("fwhm") and col.unit == "arcsec":
        return lambda c: (s.seeing * np.exp(0.15 * c.rng.standard_normal(c.n)), None)
    if ln == "psfsigma":
        return lambda c: (s.seeing / 2.3548 / s.pixel_scale * np.exp(0.15 * c.rng.standard_normal(c.n)), None)
    if ln.startswith("sky") and (col.unit or "").lower() in ("adu", "count", "ct"):
        level = 30.0 if "noise" in ln else 900.0
        return lambda c: (level * np.exp(0.2 * c.rng.standard_normal(c.n)), None)
    if ln in ("xsize", "ysize", "naxis1", "naxis2"):
        size = 4072 if ln in ("xsize", "naxis1") else 4000
        return lambda c: (np.full(c.n, size), None)
    return None


def _pixel_xy(c: _Ctx, k: int) -> np.ndarray:
    key = ("pixel_xy",)
    if key not in c.cache:
        size = 30000.0 if c.table.role == "director" else 4072.0
        c.cache[key] = (c.rng.random(c.n) * size, c.rng.random(c.n) * size)
    return c.cache[key][k]


def _shape_rule(lb: str, b: int | None, col: Column, info: _TableInfo) -> Filler | None:
    s = info.survey
    unit = (col.unit or "").lower()
    arcsec_unit = "arcsec" in unit
    pix = 1.0 if arcsec_unit else s.pixel_scale
    flat = lb.replace("_", "")
    m = re.search(r"(?:^|_|shape)(?:i)?(xx|yy|xy)", lb) if re.search(r"(^|_)i(xx|yy|xy)|shape_?(xx|yy|xy)", lb) else None
    if m and col.datatype in ("float", "double"):
        comp = m.group(1)
        psf_only = "psf" in lb

        def moments(c: _Ctx):
            psf = c.survey.seeing / 2.3548
            sig = (np.full(c.n, psf) if psf_only else c.size_sigma()) / pix
            if psf_only:
                e1 = 0.02 * c.rng.standard_normal(c.n)
                e2 = 0.02 * c.rng.standard_normal(c.n)
            else:
                e1 = c.obj("e1") * np.where(c.obj("kind") == GALAXY, c.obj("r_half") ** 2 / (c.size_sigma() ** 2 * 1.386), 1.0)
                e2 = c.obj("e2") * np.where(c.obj("kind") == GALAXY, c.obj("r_half") ** 2 / (c.size_sigma() ** 2 * 1.386), 1.0)
            s2 = sig ** 2 * (1.0 + 0.3 * c.rng.standard_normal(c.n) / np.maximum(c.snr(c.band(b)), 3.0))
            v = s2 * (1 + e1) if comp == "xx" else s2 * (1 - e1) if comp == "yy" else s2 * e2
            return v, None
        return moments
    if re.search(r"(^|_|bd)e[12]$", lb):
        k = lb[-1]

        def ellipticity(c: _Ctx):
            e = c.obj("e1" if k == "1" else "e2")
            return e + 0.3 * c.rng.standard_normal(c.n) / np.maximum(c.snr(c.band(b)), 3.0), None
        return ellipticity
    if lb == "ell":
        return lambda c: (np.clip(np.hypot(c.obj("e1"), c.obj("e2")) + 0.02 * np.abs(c.rng.standard_normal(c.n)), 0.0, 0.99),
                          c.band_missing(c.band(b)) if b is not None else None)
    if lb in ("pa", "posang", "theta"):
        return lambda c: (np.degrees(0.5 * np.arctan2(c.obj("e2"), c.obj("e1"))),
                          c.band_missing(c.band(b)) if b is not None else None)
    if lb == "gausig":
        return lambda c: (c.size_sigma() / pix * np.exp(0.05 * c.rng.standard_normal(c.n)),
                          c.band_missing(c.band(b)) if b is not None else None)
    if lb == "fwhm" or lb.endswith("_fwhm"):
        sq = "**2" in unit
        return lambda c: ((2.3548 * c.size_sigma() / pix) ** (2 if sq else 1), None)
    if "kronrad" in flat:
        return lambda c: (2.5 * 1.2 * c.size_sigma() / pix * np.exp(0.1 * c.rng.standard_normal(c.n)), None)
    if flat.startswith("petror") or flat.startswith("petrorad"):
        mult = 2.0 if "90" in flat else 1.0 if "50" in flat else 1.6
        if "err" in flat:
            return None

        def petro(c: _Ctx):
            r50 = np.sqrt((c.survey.seeing * 0.55) ** 2 + c.obj("r_half") ** 2) * np.exp(
                0.05 * c.rng.standard_normal(c.n))
            conc = np.where(c.obj("kind") == GALAXY, np.clip(1.0 + 0.2 * c.rng.standard_normal(c.n), 0.7, 1.5), 1.0)
            return mult * r50 * np.where(mult == 2.0, 1.2 * conc, 1.0), c.band_missing(c.band(b)) if b is not None else None
        return petro
    if "reff" in flat or re.search(r"bdre[bd]$", flat):
        sq = "**2" in unit
        return lambda c: ((np.maximum(c.obj("r_half"), 0.05) / pix) ** (2 if sq else 1)
                          * np.exp(0.1 * c.rng.standard_normal(c.n)), None)
    if "sersicindex" in flat or flat == "sersic_n":
        return lambda c: (np.where(c.obj("kind") == GALAXY,
                                   np.where(c.rng.random(c.n) < 0.4, c.rng.normal(4.0, 0.8, c.n), c.rng.normal(1.0, 0.3, c.n)),
                                   0.5).clip(0.3, 8.0), None)
    if flat.endswith("rho"):
        return lambda c: (np.clip(0.2 * c.rng.standard_normal(c.n), -0.9, 0.9), None)
    if "psfmodel" in flat and "sigma" in flat:
        mult = 2.0 if "gauss2" in flat else 1.0
        return lambda c: (np.full(c.n, mult * c.survey.seeing / 2.3548 / pix)
                          * np.exp(0.05 * c.rng.standard_normal(c.n)), None)
    if flat.endswith("fluxfrac"):
        return lambda c: (np.clip(0.85 + 0.05 * c.rng.standard_normal(c.n), 0.5, 1.0), None)
    if "moments" in flat:
        return lambda c: (0.02 * c.rng.standard_normal(c.n), None)
    if flat.endswith("area") and col.datatype in ("float", "double"):
        return lambda c: (np.full(c.n, 4 * math.pi * (c.survey.seeing / 2.3548 / s.pixel_scale) ** 2)
                          * np.exp(0.05 * c.rng.standard_normal(c.n)), None)
    return None


def _mjd_to_unit(mjd: np.ndarray, col: Column) -> np.ndarray:
    unit = (col.unit or "").lower()
    name = col.name.lower()
    if col.datatype == "timestamp":
        us = np.rint((mjd - 40587.0) * 86400e6).astype(np.int64)
        return us.view("datetime64[us]")
    if unit in ("yr", "a") or name == "epoch":
        return 2000.0 + (mjd - 51544.5) / 365.25
    if name.startswith("jd") or name.endswith("_jd"):
        return mjd + 2400000.5
    return mjd


def _time_rule(lb: str, b: int | None, col: Column, info: _TableInfo) -> Filler:
    s = info.survey
    lo, hi = s.mjd_range

    def time_(c: _Ctx):
        if c.mjd_row is not None:
            mjd = c.mjd_row
        elif c.table.role == "replicated":
            mjd = np.sort(lo + (hi - lo) * c.rng.random(c.n))
        elif b is not None or lb.endswith("epoch"):
            mjd = (lo + hi) / 2.0 + (hi - lo) / 10.0 * c.rng.standard_normal(c.n)
        else:
            mjd = lo + (hi - lo) * c.rng.random(c.n)
        v = _mjd_to_unit(mjd, col)
        if col.datatype in ("int", "long", "short"):
            v = np.floor(v)
        return v, None
    return time_


def _grid(ra: np.ndarray, dec: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-area-ish sky cells of ``size`` degrees: (cell id, fractional x, fractional y)."""
    nring = int(math.ceil(180.0 / size))
    centre = -90.0 + (np.arange(nring) + 0.5) * 180.0 / nring
    per_ring = np.maximum(1, np.floor(360.0 * np.cos(np.radians(centre)) / size)).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(per_ring)[:-1]])
    fy = (dec + 90.0) / 180.0 * nring
    ring = np.clip(fy.astype(np.int64), 0, nring - 1)
    fx = ra / 360.0 * per_ring[ring]
    cell = np.minimum(fx.astype(np.int64), per_ring[ring] - 1)
    return offsets[ring] + cell, fx - cell, fy - ring


def _int_rule(ln: str, lb: str, b: int | None, col: Column, info: _TableInfo) -> Filler:
    s = info.survey
    dt = col.datatype
    hi = {"byte": 127, "short": 32767, "int": 2**31 - 1, "long": 2**62}[dt]
    registry = info.registry

    if s.key == "sdss" and ln in ("skyversion", "rerun", "run", "camcol", "field", "obj") \
            and info.role == "director":
        return lambda c: (c.extra["sdss_parts"][ln], None)
    if s.key == "sdss" and ln == "mode":
        return lambda c: (c.rng.choice(np.array([1, 2, 3]), c.n, p=[0.88, 0.11, 0.01]), None)
    if ln in ("tract", "patch"):
        def tract_patch(c: _Ctx):
            cell, fx, fy = _grid(c.ra, c.dec, 1.7)
            if ln == "tract":
                return cell, None
            return np.clip((fy * 10).astype(np.int64), 0, 9) * 10 + np.clip((fx * 10).astype(np.int64), 0, 9), None
        return tract_patch
    if ln == "framesetid":
        return lambda c: (s.id_base // 1000 * 10 + _grid(c.ra, c.dec, 0.23)[0], None)
    if ln == "priorsec":
        return lambda c: (np.where(c.rng.random(c.n) < 0.92, 0,
                                   s.id_base // 1000 * 10 + _grid(c.ra, c.dec, 0.23)[0] + 1), None)
    if ln in ("visit", "visitid", "exposure", "exposureid", "visit_id"):
        def visit(c: _Ctx):
            if c.visit_row is not None:
                return c.visit_row, None
            span = int((s.mjd_range[1] - s.mjd_range[0]) * 86400 / s.visit_seconds)
            return 1_000_000 + c.rng.integers(0, span, c.n), None
        return visit
    if ln in ("detector", "ccd", "ccdnum", "detectorid"):
        return lambda c: (_detector(c), None)
    if ln in ("ccdvisitid", "ccdvisit"):
        def ccdvisit(c: _Ctx):
            v = c.visit_row if c.visit_row is not None else 1_000_000 + c.rng.integers(0, 9_000_000, c.n)
            return v * 200 + _detector(c), None
        return ccdvisit
    if ln in ("filterid", "filter_id"):
        def filter_id(c: _Ctx):
            ids = _filter_ids(c.survey)
            return np.broadcast_to(ids[c.band_index(c.band(b))], (c.n,)), None
        return filter_id
    if lb == "mfid" or ln == "multiframeid":
        def multiframe(c: _Ctx):
            mf = registry.get("multiframeid")
            if mf is None:
                return 1_000_000 + (b or 0) * 100_000 + c.rng.integers(0, 5000, c.n), None
            if b is not None and "multiframe_filterid" in registry:
                want = _filter_ids(c.survey)[b]
                pool = mf[registry["multiframe_filterid"] == want]
                if pool.size:
                    return c.uniform_pick(pool), c.band_missing(b)
            return c.uniform_pick(mf), c.band_missing(b) if b is not None else None
        return multiframe
    if lb in ("enum", "extnum"):
        return lambda c: (c.rng.integers(1, 5, c.n), c.band_missing(c.band(b)) if b is not None else None)
    if lb == "seqnum":
        return lambda c: (c.rng.integers(1, 30000, c.n), c.band_missing(c.band(b)) if b is not None else None)
    if lb == "deblend":
        return lambda c: ((c.rng.random(c.n) < 0.05).astype(np.int64), c.band_missing(c.band(b)) if b is not None else None)
    if ln == "cueventid":
        return lambda c: (5000 + c.rng.integers(0, 20, c.n), None)
    if "inputcount" in lb:
        visits = {"u": 14, "g": 20, "r": 45, "i": 45, "z": 40, "y": 40}

        def input_count(c: _Ctx):
            bb = c.band(b)
            mean = visits.get(c.survey.canon[bb], 30) if isinstance(bb, int) else 30
            return c.rng.poisson(mean, c.n), None
        return input_count
    if lb in ("deblend_nchild", "deblend_npeaks", "nchild", "npeaks"):
        base = 1 if "peak" in lb else 0
        return lambda c: (np.where(c.rng.random(c.n) < 0.85, base, c.rng.integers(2, 7, c.n)), None)
    if "iter" in lb or "n_eval" in lb or lb.endswith("nfev"):
        return lambda c: (c.rng.integers(5, 60, c.n), None)
    if "footprintarea" in lb or lb == "npix":
        def area(c: _Ctx):
            sig = c.size_sigma() / c.survey.pixel_scale
            snr = c.snr(c.band(b))
            return np.clip(2 * math.pi * sig ** 2 * 2 * np.log(np.maximum(snr, 1.5)) + 5, 5, 1e5).astype(np.int64), None
        return area
    if ln == "nncount":
        return lambda c: (np.where(c.rng.random(c.n) < 0.98, 100, c.rng.integers(10, 100, c.n)), None)
    if lb in ("ngoodobs", "nobs", "n_obs", "ndet", "nflaggedobs", "ndetections", "n_detections",
              "nepochs", "n_epochs") or lb.endswith(("n_obs", "nobs", "_count", "count")):
        mean = 25
        if s.key == "gaia":
            mean = 350 if b is None or s.canon[b] == "G" else 40

        def counts(c: _Ctx):
            bb = c.band(b)
            v = c.rng.poisson(mean, c.n) if "flag" not in lb else c.rng.poisson(1, c.n)
            return v, c.band_missing(bb) if b is not None else None
        return counts
    if ln == "photoerrorclass":
        return lambda c: (c.rng.choice(np.array([1, 2, 3, 4, 5, 6, 7, -1]), c.n,
                                       p=[0.7, 0.1, 0.06, 0.04, 0.03, 0.02, 0.02, 0.03]), None)
    if ln.startswith("astrometric_n_"):
        return lambda c: (c.rng.integers(150, 600, c.n), None)
    if ln == "solution_id":
        return lambda c: (np.full(c.n, 369295551293819386, dtype=np.int64), None)
    if ln == "random_index":
        return lambda c: (c.rng.integers(0, 2**31 - 1, c.n), None)
    if _ids_like(lb, col) or lb.endswith("id") or lb.startswith("parent"):
        if lb.startswith("parent"):
            def parent_id(c: _Ctx):
                own = c.ids if c.ids is not None else c.obj("ids")
                prev = np.concatenate([own[:1], own[:-1]])
                return np.where(c.rng.random(c.n) < 0.85, 0, prev), None
            return parent_id
        if lb.startswith("nn") or lb.startswith("neighbor"):
            return lambda c: (c.uniform_pick(c.objs.ids), None)
        if ln in registry:
            return lambda c: (c.uniform_pick(registry[ln]), None)
        top = min(hi, 2**40)
        return lambda c: (c.rng.integers(1, top, c.n), None)
    # Generic integers: small counts and codes.
    if lb.startswith(("n", "num")) and len(lb) > 1:
        return lambda c: (c.rng.poisson(10, c.n), None)
    top = {"byte": 4, "short": 100, "int": 1000, "long": 100000}[dt]
    return lambda c: (c.rng.integers(0, top, c.n), None)


def _detector(c: _Ctx) -> np.ndarray:
    key = ("detector",)
    if key not in c.cache:
        c.cache[key] = c.rng.integers(0, 189, c.n)
    return c.cache[key]


def _filter_ids(s: Survey) -> np.ndarray:
    """Filter ids per survey band (LSST 0..5 in ugrizy order; WFCAM's archive ids)."""
    if s.key.startswith("ukidss"):
        wfcam = dict(_WFCAM_FILTERS)
        return np.array([wfcam[c] for c in s.canon])
    return np.arange(len(s.bands))


def _vocab(col: Column, words: Iterable[str]) -> pa.Array:
    size = col.arraysize
    words = list(words)
    if size and size.rstrip("*").isdigit() and not size.endswith("*"):
        words = [w[: int(size)] for w in words]
    return pa.array(words, type=pa.string())


def _string_rule(ln: str, lb: str, b: int | None, col: Column, info: _TableInfo) -> Filler:
    s = info.survey
    ucd = (col.ucd or "").lower()
    if ln in ("band", "filtername", "shortname", "bandname", "filter", "filter_name") or (
            info.role == "replicated" and "filter" in info.table.name.lower() and ln == "name") or (
            ("instr.bandpass" in ucd or "instr.filter" in ucd) and ln != "physical_filter"
            and ln != "refband"):
        names = _vocab(col, [("Z", "Y", "J", "H", "K", "H2", "Br", "blank")[i] for i in range(8)]
                       if s.key.startswith("ukidss") and info.role == "replicated" else s.bands)

        def band_name(c: _Ctx):
            if c.band_row is not None:
                return names.take(pa.array(c.band_row)), None
            return names.take(pa.array(np.full(c.n, c.ref))), None
        return band_name
    if ln == "refband":
        names = _vocab(col, s.bands)
        p = np.array([{"i": 0.6, "r": 0.25, "g": 0.08, "z": 0.05}.get(x, 0.01) for x in s.bands])
        return lambda c: (names.take(pa.array(c.rng.choice(len(s.bands), c.n, p=p / p.sum()))), None)
    if ln == "physical_filter":
        names = _vocab(col, s.filter_names or s.bands)
        return lambda c: (names.take(pa.array(c.band_row if c.band_row is not None
                                              else np.full(c.n, c.ref))), None)
    if ln == "skymap":
        return lambda c: (_vocab(col, ["DC2"]).take(pa.array(np.zeros(c.n, dtype=np.int64))), None)
    if ln == "instrument":
        return lambda c: (_vocab(col, ["LSSTCam"]).take(pa.array(np.zeros(c.n, dtype=np.int64))), None)
    if ln == "designation":
        def designation(c: _Ctx):
            ids = c.ids if c.ids is not None else c.obj("ids")
            return pa.array(np.char.add("Gaia DR3 ", ids.astype(str)).astype(object), type=pa.string()), None
        return designation
    if ln == "phot_variable_flag":
        names = _vocab(col, ["NOT_AVAILABLE", "VARIABLE"])
        return lambda c: (names.take(pa.array(c.obj("variable").astype(np.int64))), None)
    if ln == "filename":
        def file_name(c: _Ctx):
            k = np.arange(c.n)
            night = 20050501 + (k // 200) % 28 + 100 * ((k // 5600) % 12)
            return pa.array([f"/disk{n % 8 + 1:02d}/wsa/ingest/w{n}/w{n}_{j % 200 + 1:05d}_st.fit"
                             for n, j in zip(night.tolist(), k.tolist())], type=pa.string()), None
        return file_name
    if ln == "obstype":
        return lambda c: (_vocab(col, ["OBJECT"]).take(pa.array(np.zeros(c.n, dtype=np.int64))), None)
    if ln == "frametype":
        names = _vocab(col, ["stack", "leavstack", "normal", "deepleavstack", "tilestack"])
        return lambda c: (names.take(pa.array(c.rng.choice(5, c.n, p=[0.5, 0.2, 0.2, 0.05, 0.05]))), None)
    stem = re.sub(r"[^A-Za-z0-9]", "", col.name)[:8] or "v"
    names = _vocab(col, [f"{stem}{k}" for k in range(12)])
    return lambda c: (names.take(pa.array(c.rng.integers(0, 12, c.n))), None)


def _float_rule(ln: str, lb: str, b: int | None, col: Column, info: _TableInfo) -> Filler:
    s = info.survey
    unit = (col.unit or "").lower()
    ucd = (col.ucd or "").lower()
    flat = lb.replace("_", "")
    if info.role == "replicated" and ("em.wl" in ucd or unit in ("nm", "angstrom", "um", "micron", "a")
                                      or any(x in flat for x in ("clam", "wave", "lambda", "cuton", "cutoff", "bw", "width"))):
        scale = {"nm": 1.0, "angstrom": 10.0, "a": 10.0, "um": 1e-3, "micron": 1e-3}.get(unit, 1.0)
        cut = -0.5 if "cuton" in flat or "min" in flat else 0.5 if ("cutoff" in flat or "max" in flat) else 0.0
        width = "bw" in flat or "width" in flat
        canon = _filter_canon(s, info)

        def wavelength(c: _Ctx):
            idx = c.band_row if c.band_row is not None else np.zeros(c.n, dtype=np.int64)
            wl = np.array([WAVELENGTH_NM.get(x, 600.0) for x in canon])[idx]
            bw = np.array([BANDWIDTH_NM.get(x, 100.0) for x in canon])[idx]
            return scale * (bw if width else wl + cut * bw), None
        return wavelength
    if "blendedness" in flat or flat.endswith("fluxoverlapfraction"):
        return lambda c: (c.rng.beta(0.3, 6.0, c.n), None)
    if flat.endswith("fluxoverlap"):
        return lambda c: (c.flux(c.band(b))[1] * c.rng.beta(0.3, 6.0, c.n), None)
    if "datacoverage" in flat:
        return lambda c: (1.0 - c.rng.beta(0.3, 30.0, c.n), None)
    if flat.endswith("logl"):
        return lambda c: (-(100.0 + 50.0 * np.abs(c.rng.standard_normal(c.n))), None)
    if lb in ("x", "y") or re.search(r"(centroid|peak_center|sersic)_?[xy]$", lb) or (
            unit in ("pixel", "pix") and lb.endswith(("_x", "_y"))):
        k = 0 if lb.endswith("x") else 1
        jitter = lb not in ("x", "y")

        def pixel(c: _Ctx):
            v = _pixel_xy(c, k)
            if jitter:
                v = v + c.astrometric_sigma() / c.survey.pixel_scale * c.rng.standard_normal(c.n)
            return v, None
        return pixel
    if "apcorr" in flat:
        return lambda c: (1.0 + 0.02 * c.rng.standard_normal(c.n), None)
    if "localphotocalib" in flat:
        return lambda c: (0.5 + 0.02 * c.rng.standard_normal(c.n), None)
    if "cdmatrix" in flat:
        diag = flat.endswith(("11", "22"))
        sign = -1.0 if flat.endswith("11") else 1.0
        return lambda c: ((sign * s.pixel_scale / 3600.0 if diag else 0.0)
                          + 1e-7 * c.rng.standard_normal(c.n), None)
    if "jacobian" in flat:
        return lambda c: (1.0 + 0.01 * c.rng.standard_normal(c.n), None)
    if "variance" in flat:
        return lambda c: (100.0 * np.exp(0.2 * c.rng.standard_normal(c.n)), None)
    if "chi2" in flat or "chisq" in flat:
        return lambda c: (c.rng.chisquare(10, c.n) / 10.0, None)
    if flat.endswith(("prob", "frac", "fraction")) or flat.startswith("prob"):
        return lambda c: (c.rng.random(c.n), None)
    if flat.endswith("corr") or "correlation" in flat:
        return lambda c: (np.clip(0.15 * c.rng.standard_normal(c.n), -0.99, 0.99), None)
    if flat.endswith("cov"):
        conv = _conv_angle_from_arcsec("deg" if "deg" in unit else "arcsec", s.pixel_scale) ** 2
        return lambda c: (conv * c.astrometric_sigma() ** 2 * 0.15 * c.rng.standard_normal(c.n), None)
    if lb in ("rowv", "colv"):
        return lambda c: (0.002 * c.rng.standard_normal(c.n), c.rng.random(c.n) < 0.05)
    # By unit.
    if unit in ("deg", "degree", "deg**2") and "**2" not in unit:
        lat = "lat" in ucd or "dec" in ucd or lb.endswith(("lat", "dec", "b"))
        return lambda c: ((c.rng.random(c.n) * 180.0 - 90.0) if lat else c.rng.random(c.n) * 360.0, None)
    if unit in ("arcsec", "arcmin", "mas"):
        med = {"arcsec": 0.5, "arcmin": 0.2, "mas": 1.0}[unit]
        return lambda c: (med * np.exp(0.5 * c.rng.standard_normal(c.n)), None)
    if unit in ("pixel", "pix"):
        return lambda c: (3.0 * np.exp(0.3 * c.rng.standard_normal(c.n)), None)
    if "**2" in unit:
        return lambda c: (10.0 * np.exp(0.5 * c.rng.standard_normal(c.n)), None)
    if unit == "k":
        return lambda c: (5000.0 + 1000.0 * c.rng.standard_normal(c.n), None)
    if unit in ("km/s", "km.s**-1", "km s-1"):
        return lambda c: (50.0 * c.rng.standard_normal(c.n), None)
    if unit in ("s", "sec"):
        return lambda c: (30.0 + c.rng.standard_normal(c.n), None)
    if unit in ("nm", "angstrom", "um"):
        v = {"nm": 600.0, "angstrom": 6000.0, "um": 1.2}[unit]
        return lambda c: (v * np.exp(0.3 * c.rng.standard_normal(c.n)), None)
    if any(x in flat for x in ("rms", "sigma", "std", "scatter", "err")):
        return lambda c: (0.05 * np.exp(0.5 * c.rng.standard_normal(c.n)), None)
    if flat.startswith("sky") or "background" in flat:
        return lambda c: (c.rng.standard_normal(c.n), None)
    return lambda c: (c.rng.standard_normal(c.n), None)


def _filter_canon(s: Survey, info: _TableInfo) -> tuple[str, ...]:
    if s.key.startswith("ukidss") and info.role == "replicated":
        return tuple(x if x in _CI else "z" if x == "Z" else "K" for x, _ in _WFCAM_FILTERS)
    return s.canon


# ------------------------------------------------------------------------------------------
# Table plans: columns -> Arrow


_NP_TYPES = {"boolean": np.bool_, "byte": np.int8, "short": np.int16, "int": np.int32,
             "long": np.int64, "float": np.float32, "double": np.float64}


def _to_arrow(col: Column, values, missing, n: int) -> tuple[pa.Array, object, np.ndarray | None]:
    """One column's values as an Arrow array of its type, sentinels/NULLs applied.

    Returns the array, the values (numpy or Arrow) and the NULL mask, for copying into
    children.
    """
    typ = col.arrow_type()
    if missing is not None:
        missing = np.asarray(missing, dtype=bool)
        if missing.ndim == 0:
            missing = np.full(n, bool(missing))
        if not missing.any():
            missing = None
    if isinstance(values, pa.Array):
        if missing is not None and (col.sentinel is not None or col.nullable):
            fill = pa.scalar(str(col.sentinel) if col.sentinel is not None else None, pa.string())
            values = pc.if_else(pa.array(missing), fill, values)
        if values.type != typ:
            values = values.cast(typ)
        return values, values, None
    dt = col.datatype
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = np.full(n, arr)
    if dt == "timestamp":
        if arr.dtype.kind != "M":
            arr = _mjd_to_unit(arr.astype(np.float64), col)
        arr = arr.astype("datetime64[us]")
    elif dt in ("byte", "short", "int", "long"):
        npt = _NP_TYPES[dt]
        info = np.iinfo(npt)
        if arr.dtype.kind == "f":
            arr = np.nan_to_num(np.rint(arr), nan=0.0, posinf=info.max, neginf=info.min)
            arr = np.clip(arr, info.min, info.max)
        elif arr.dtype.kind in "iu" and arr.dtype.itemsize > np.dtype(npt).itemsize:
            arr = np.clip(arr, info.min, info.max)
        arr = arr.astype(npt, copy=False)
    elif dt == "boolean":
        arr = arr.astype(np.bool_, copy=False)
    else:
        arr = arr.astype(_NP_TYPES.get(dt, np.float64), copy=False)
    mask = None
    if missing is not None:
        if col.sentinel is not None and dt != "timestamp":
            arr = np.where(missing, np.asarray(col.sentinel).astype(arr.dtype), arr)
        elif col.nullable:
            mask = missing
    return pa.array(arr, type=typ, mask=mask), arr, mask


class _Plan:
    """The column generators of one table, built once from its metadata."""

    def __init__(self, info: _TableInfo, keep: Iterable[str] = (),
                 overrides: dict[str, Filler] | None = None) -> None:
        self.info = info
        self.table = info.table
        self.schema = info.table.arrow_schema()
        overrides = {k.lower(): v for k, v in (overrides or {}).items()}
        self.fillers = [(c, overrides.get(c.name.lower()) or _rule(c, info)) for c in self.table.columns]
        self.keep = {k.lower() for k in keep}

    def batch(self, ctx: _Ctx) -> tuple[pa.RecordBatch, dict]:
        arrays = []
        kept: dict[str, tuple] = {}
        for col, fill in self.fillers:
            values, missing = fill(ctx)
            arr, raw, mask = _to_arrow(col, values, missing, ctx.n)
            arrays.append(arr)
            if col.name.lower() in self.keep:
                kept[col.name.lower()] = (raw, mask)
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema), kept


def _is_epoch_table(table: Table) -> bool:
    names = {c.name.lower() for c in table.columns}
    if table.id_column and table.foreign_key and table.id_column.lower() == table.foreign_key.lower():
        return False
    return bool(names & {"band", "visit", "ccdvisitid", "filterid", "filter", "midpointmjdtai",
                         "mjd", "expmidptmjd", "obsstartmjd", "exposure", "mjdobs"}) or any(
        (c.ucd or "").lower().startswith("time.epoch") for c in table.columns)


def _table_info(catalog: Catalog, table: Table, survey: Survey, registry: dict,
                director: Table | None = None) -> _TableInfo:
    info = _TableInfo(table=table, survey=survey, role=table.role, director=director,
                      registry=registry)
    info.band_of = _band_map(table, survey)
    if table.role == "child":
        info.epoch = _is_epoch_table(table)
        info.forced = (not info.epoch) or "forced" in table.name.lower()
    for c in table.columns:
        if c.datatype == "boolean" and "flag" in c.name.lower():
            b, base = info.band_of.get(c.name, (None, c.name))
            m = re.match(r"^(.*?)_?flag(?:_(.+))?$", base.lower())
            if m:
                info.flag_families.add((b, _family(m.group(1))))
    if director is not None:
        # Object-level columns the child shares with its director are copied, not redrawn.
        dir_cols = {c.name.lower(): c for c in director.columns}
        skip = {x.lower() for x in (table.id_column, table.foreign_key, table.ra_column,
                                    table.dec_column) if x}
        for c in table.columns:
            ln = c.name.lower()
            dc = dir_cols.get(ln)
            if dc is None or ln in skip or (dc.datatype, (dc.unit or "").lower(), (dc.ucd or "").lower()) \
                    != (c.datatype, (c.unit or "").lower(), (c.ucd or "").lower()):
                continue
            b, _ = info.band_of.get(c.name, (None, c.name))
            per_row = info.epoch and (b is None and _row_dependent(c))
            if not per_row and not (info.epoch and c.datatype in ("float", "double")):
                info.copy_from_director.add(ln)
    return info


def _row_dependent(col: Column) -> bool:
    """Columns of a multi-epoch row that describe the measurement, not the object."""
    ln = col.name.lower()
    if col.datatype == "boolean":
        return not ln.startswith("detect_")
    return bool(re.search(r"flux|mag|err|flag|band|filter|visit|ccd|detector|mjd|time|sky|x$|y$", ln))


# ------------------------------------------------------------------------------------------
# Driving the generation: replicated tables, directors, children, match tables


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def _resolve_catalog(catalog: str | os.PathLike | Catalog) -> Catalog:
    return catalog if isinstance(catalog, Catalog) else load_catalog(catalog)


def _slices(total: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, size):
        yield start, min(start + size, total)


@dataclass(frozen=True)
class _Schedule:
    """The survey's visits: every multi-epoch row is observed in one of them.

    Visit ids look like Rubin's (YYYYMMDD * 100000 + sequence number in the night); the
    Visit / CcdVisit replicated tables list exactly these visits, so joins from Source or
    ForcedSource to them find their rows.
    """

    visit: np.ndarray          # visit ids, in time order
    mjd: np.ndarray            # exposure mid-points
    band: np.ndarray           # band index of each visit
    n_bands: int
    key: np.ndarray            # band * 1e6 + mjd, sorted (for pick)
    order: np.ndarray          # visit index of each key
    ra: np.ndarray             # pointing
    dec: np.ndarray
    n_detectors: int = 189     # a 14 x 14 grid less the corners, 0.23 deg apart

    @classmethod
    def make(cls, survey: Survey, n_visits: int, seed: int) -> "_Schedule":
        rng = _rng(seed, 424242)
        nb = len(survey.bands)
        n_visits = max(n_visits, nb)
        lo, hi = survey.mjd_range
        mjd = np.sort(lo + (hi - lo) * rng.random(n_visits))
        band = rng.permutation(np.arange(n_visits) % nb)       # every band has visits
        day = np.floor(mjd - 40587.0).astype(np.int64).astype("datetime64[D]")
        ymd = (day.astype("datetime64[Y]").astype(np.int64) + 1970) * 10000 \
            + (day.astype("datetime64[M]").astype(np.int64) % 12 + 1) * 100 \
            + (day - day.astype("datetime64[M]")).astype(np.int64) + 1
        first = np.concatenate([[True], ymd[1:] != ymd[:-1]])
        start = np.maximum.accumulate(np.where(first, np.arange(n_visits), 0))
        visit = ymd * 100000 + (np.arange(n_visits) - start) + 1
        order = np.lexsort((mjd, band))          # by band, then time
        ra, dec = sky.uniform_sphere(rng, n_visits)
        return cls(visit=visit, mjd=mjd, band=band, n_bands=nb,
                   key=band[order] * 1e6 + mjd[order], order=order, ra=ra, dec=dec)

    def detector_positions(self) -> tuple[np.ndarray, np.ndarray]:
        """Centres of every (visit, detector), visit-major."""
        nd = self.n_detectors
        det = np.arange(nd) + 2 + 2 * (np.arange(nd) >= 10) + 2 * (np.arange(nd) >= 178)
        east = np.tile((det % 14 - 6.5) * 0.23 * 3600.0, self.visit.size)
        north = np.tile((det // 14 - 6.5) * 0.23 * 3600.0, self.visit.size)
        return sky.offset_positions(np.repeat(self.ra, nd), np.repeat(self.dec, nd), east, north)

    def pick(self, band_row: np.ndarray, want_mjd: np.ndarray) -> np.ndarray:
        """Index of the visit in each row's band closest in time to ``want_mjd``."""
        w = band_row * 1e6 + want_mjd
        n = self.key.size
        j = np.clip(np.searchsorted(self.key, w), 0, n - 1)
        i = np.clip(j - 1, 0, n - 1)
        band_s = self.band[self.order]
        ok_j = band_s[j] == band_row
        ok_i = band_s[i] == band_row
        use_i = ok_i & (~ok_j | (np.abs(self.key[i] - w) < np.abs(self.key[j] - w)))
        return self.order[np.where(use_i, i, j)]


def _replicated_kind(table: Table) -> str:
    ln = table.name.lower()
    idc = (table.id_column or "").lower()
    if "ccdvisit" in ln or idc == "ccdvisitid":
        return "ccdvisit"
    if ln in ("visit", "visits", "exposure") or idc in ("visit", "visitid", "exposure"):
        return "visit"
    if "filter" in ln or "band" in ln:
        return "filter"
    if "multiframe" in ln and not table.id_column:
        return "multiframe_detector"
    if "multiframe" in ln:
        return "multiframe"
    if "mergelog" in ln or "frameset" in ln:
        return "frameset"
    return "generic"


def _replicated(catalog: Catalog, table: Table, tindex: int, seed: int, survey: Survey,
                registry: dict, batch_size: int) -> Iterator[pa.RecordBatch]:
    """Replicated tables: a row per filter, per visit (and detector), 2000 frames, else 64."""
    kind = _replicated_kind(table)
    schedule: _Schedule = registry["schedule"]
    rng = _rng(seed, tindex, 0)
    info = _table_info(catalog, table, survey, registry)
    nb = len(_filter_canon(survey, info))
    band_row = mjd = visit = det = None
    if kind == "filter":
        n = nb
        band_row = np.arange(n)
    elif kind == "visit":
        n = schedule.visit.size
        band_row, mjd, visit = schedule.band, schedule.mjd, schedule.visit
    elif kind == "ccdvisit":
        nd = schedule.n_detectors
        n = schedule.visit.size * nd
        band_row = np.repeat(schedule.band, nd)
        mjd = np.repeat(schedule.mjd, nd)
        visit = np.repeat(schedule.visit, nd)
        det = np.tile(np.arange(nd), schedule.visit.size)
    elif kind == "multiframe_detector":
        n = 4 * registry.get("multiframeid", np.zeros(500)).size
    elif kind in ("multiframe", "frameset"):
        n = 2000
    else:
        n = 64
    if band_row is None:
        band_row = np.arange(n) % nb
    overrides: dict[str, Filler] = {}
    idcol = table.column(table.id_column) if table.id_column else None
    if idcol is not None and idcol.is_integer and kind in ("filter", "multiframe", "generic"):
        if kind == "filter":
            ids = np.array([i for _, i in _WFCAM_FILTERS]) if survey.key.startswith("ukidss") \
                else _filter_ids(survey)
        else:
            ids = np.int64(1_000_000) * (tindex + 1) + np.arange(n, dtype=np.int64)
        overrides[idcol.name] = lambda c: (ids, None)
    if kind == "multiframe" and table.has_column("filterID"):
        fids = np.resize(np.unique(_filter_ids(survey)), n)
        overrides["filterID"] = lambda c: (fids, None)
    if kind == "multiframe_detector":
        mf = registry.get("multiframeid")
        for col in table.columns:
            if col.name.lower() == "multiframeid" and mf is not None:
                overrides[col.name] = lambda c: (np.repeat(mf, 4)[: c.n], None)
            elif col.name.lower() in ("extnum", "enum"):
                overrides[col.name] = lambda c: (np.tile(np.arange(1, 5), c.n // 4 + 1)[: c.n], None)
    plan = _Plan(info, overrides=overrides)
    dummy = _dummy_objects(survey, n, rng)
    if kind == "visit":
        dummy.ra, dummy.dec = schedule.ra, schedule.dec
    elif kind == "ccdvisit":
        dummy.ra, dummy.dec = schedule.detector_positions()
    ctx = _Ctx(table, survey, dummy, None, rng, ids=None, ra=dummy.ra, dec=dummy.dec,
               band_row=band_row, mjd_row=mjd, visit_row=visit, registry=registry)
    if det is not None:
        ctx.cache[("detector",)] = det
    batch, _ = plan.batch(ctx)
    if kind == "frameset" and idcol is not None and idcol.is_integer:
        # Frame-set ids come from sky cells: make them unique.
        ids = batch.column(idcol.name).to_numpy(zero_copy_only=False).copy()
        _, first = np.unique(ids, return_index=True)
        dup = np.setdiff1d(np.arange(n), first)
        ids[dup] = ids.max() + 1 + np.arange(dup.size)
        batch = batch.set_column(batch.schema.get_field_index(idcol.name), batch.schema.field(idcol.name),
                                 pa.array(ids, type=idcol.arrow_type()))
    # Publish id columns for joins from partitioned tables (e.g. {b}mfID -> Multiframe).
    if idcol is not None and idcol.is_integer:
        registry.setdefault(idcol.name.lower(), batch.column(idcol.name).to_numpy(zero_copy_only=False))
        if kind == "multiframe":
            registry["multiframeid"] = registry[idcol.name.lower()]
    if kind == "multiframe" and table.has_column("filterID"):
        registry["multiframe_filterid"] = batch.column(table.resolve("filterID")).to_numpy(zero_copy_only=False)
    for start, stop in _slices(n, batch_size):
        yield batch.slice(start, stop - start)


def _dummy_objects(survey: Survey, n: int, rng: np.random.Generator) -> _Objects:
    """Objects for tables that have none (replicated tables): bright stars at random places."""
    ra, dec = sky.uniform_sphere(rng, n)
    nb = len(survey.bands)
    z = np.zeros(n)
    return _Objects(survey=survey, ids=np.arange(n, dtype=np.int64), index=np.arange(n), ra=ra,
                    dec=dec, kind=np.zeros(n, dtype=np.int8), t=np.full(n, 0.5), zred=z,
                    mags=np.full((n, max(nb, len(_WFCAM_FILTERS))), 18.0), ref_mag=np.full(n, 18.0), ebv=z, r_half=z,
                    e1=z, e2=z, variable=np.zeros(n, dtype=bool), amp=z, period=np.ones(n),
                    phase=z, band_offset=np.zeros(n, dtype=np.int64))


def _child_counts(rng: np.random.Generator, n: int, info: _TableInfo) -> np.ndarray:
    if not info.epoch:
        return np.ones(n, dtype=np.int64)
    mean = CHILD_MEAN["forced" if info.forced else "detections"]
    sigma = 0.8 if info.forced else 1.0
    mu = math.log(mean) - sigma ** 2 / 2.0
    return np.clip(np.rint(rng.lognormal(mu, sigma, n)), 1, CHILD_MAX).astype(np.int64)


def _children(objs: _Objects, plan: _Plan, survey: Survey, seed: int, tindex: int,
              batch_index: int, id_state: list, batch_size: int) -> Iterator[pa.RecordBatch]:
    info = plan.info
    rng = _rng(seed, tindex, batch_index, 0)
    counts = _child_counts(rng, objs.n, info)
    ends = np.cumsum(counts)
    starts = ends - counts
    total = int(ends[-1]) if counts.size else 0
    nb = len(survey.bands)
    lo, hi = survey.mjd_range
    for k, (s0, s1) in enumerate(_slices(total, batch_size)):
        crng = _rng(seed, tindex, batch_index, k + 1)
        rows = np.arange(s0, s1, dtype=np.int64)
        p0 = int(np.searchsorted(ends, s0, side="right"))
        p1 = int(np.searchsorted(ends, s1 - 1, side="right"))
        reps = counts[p0:p1 + 1].copy()
        reps[0] = min(ends[p0], s1) - s0
        if p1 > p0:
            reps[-1] = s1 - starts[p1]
        parent = np.repeat(np.arange(p0, p1 + 1), reps)
        m = rows.size
        ids = id_state[0] + np.arange(m, dtype=np.int64)
        id_state[0] += m
        band_row = mjd = visit = None
        if info.epoch:
            kk = rows - starts[parent]
            band_row = (objs.band_offset[parent] + kk) % nb
            want = lo + (kk + crng.random(m)) * (hi - lo) / counts[parent]
            schedule = info.registry.get("schedule")
            if schedule is not None and schedule.n_bands == nb:
                v = schedule.pick(band_row, want)
                mjd, visit = schedule.mjd[v], schedule.visit[v]
            else:
                mjd, visit = want, 1_000_000 + np.floor((want - lo) * 86400.0 / survey.visit_seconds).astype(np.int64)
        ctx = _Ctx(info.table, survey, objs, parent, crng, ids=ids, ra=objs.ra[parent],
                   dec=objs.dec[parent], epoch=info.epoch, band_row=band_row, mjd_row=mjd,
                   visit_row=visit, registry=info.registry)
        if info.epoch and not info.forced:
            sig = np.minimum(ctx.astrometric_sigma() * 0.7 + 0.03, 0.25)
            east = sig * crng.standard_normal(m)
            north = sig * crng.standard_normal(m)
            r = np.hypot(east, north)
            shrink = np.where(r > 0.6, 0.6 / np.maximum(r, 1e-12), 1.0)   # stay within 0.6"
            ctx.ra, ctx.dec = sky.offset_positions(ctx.ra, ctx.dec, east * shrink, north * shrink)
        batch, _ = plan.batch(ctx)
        yield batch


def _pairs_within(ra: np.ndarray, dec: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs (i, j), i != j, closer than ``radius`` degrees (zones of height radius)."""
    n = ra.size
    if n < 2:
        e = np.zeros(0, dtype=np.int64)
        return e, e, np.zeros(0)
    zone = np.floor((dec + 90.0) / radius).astype(np.int64)
    key = zone * 1000.0 + ra
    order = np.argsort(key, kind="stable")
    skey = key[order]
    width = np.where(np.abs(dec) + radius >= 89.9, 180.0,
                     radius / np.maximum(np.cos(np.radians(np.abs(dec) + radius)), 1e-9) * 1.01)
    width = np.minimum(width, 180.0)
    ii, jj = [], []
    for dz in (-1, 0, 1):
        z = zone + dz
        windows = [(ra - width, ra + width)]
        windows.append((ra - width + 360.0, np.full(n, 360.0)))        # wrap below 0
        windows.append((np.full(n, 0.0), ra + width - 360.0))         # wrap above 360
        for w0, w1 in windows:
            valid = w1 >= w0
            lo_ = np.searchsorted(skey, z * 1000.0 + np.maximum(w0, 0.0), side="left")
            hi_ = np.searchsorted(skey, z * 1000.0 + np.minimum(w1, 360.0), side="right")
            cnt = np.where(valid, np.maximum(hi_ - lo_, 0), 0)
            tot = int(cnt.sum())
            if tot == 0:
                continue
            i = np.repeat(np.arange(n), cnt)
            offs = np.arange(tot) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            j = order[np.repeat(lo_, cnt) + offs]
            ii.append(i)
            jj.append(j)
    if not ii:
        e = np.zeros(0, dtype=np.int64)
        return e, e, np.zeros(0)
    i = np.concatenate(ii)
    j = np.concatenate(jj)
    keep = i != j
    i, j = i[keep], j[keep]
    # Windows can overlap near the poles: drop duplicate pairs.
    uniq = np.unique(i * np.int64(n) + j)
    i, j = uniq // n, uniq % n
    from qengine.geometry import angular_separation
    sep = angular_separation(ra[i], dec[i], ra[j], dec[j])
    keep = sep < radius
    return i[keep], j[keep], sep[keep]


MATCH_RADIUS_ARCSEC = 30.0


def _match_plan(info: _TableInfo, director: Table) -> _Plan:
    t = info.table
    (_, col1), (_, col2) = t.match_directors
    dir_cols = {c.name.lower() for c in director.columns}
    overrides: dict[str, Filler] = {
        col1: lambda c: (c.objs.ids[c.extra["i"]], None),
        col2: lambda c: (c.objs.ids[c.extra["j"]], None),
    }
    for col in t.columns:
        ln = col.name.lower()
        if ln in (col1.lower(), col2.lower()):
            continue
        if col.is_numeric and not col.is_integer and ("dist" in ln or "sep" in ln):
            conv = _conv_angle_from_arcsec(col.unit or "arcmin", info.survey.pixel_scale)
            overrides[col.name] = lambda c, conv=conv: (c.extra["sep"] * 3600.0 * conv, None)
        elif ln.startswith("neighbor") and ln[len("neighbor"):] in dir_cols:
            name = ln[len("neighbor"):]
            overrides[col.name] = lambda c, name=name: c.dir_value(name, c.extra["j"])
        elif ln in dir_cols:
            overrides[col.name] = lambda c, name=ln: c.dir_value(name, c.extra["i"])
    return _Plan(info, overrides=overrides)


def _match_rows(objs: _Objects, plan: _Plan, survey: Survey, seed: int, tindex: int,
                batch_index: int, batch_size: int) -> Iterator[pa.RecordBatch]:
    i, j, sep = _pairs_within(objs.ra, objs.dec, MATCH_RADIUS_ARCSEC / 3600.0)
    for k, (s0, s1) in enumerate(_slices(i.size, batch_size)):
        rng = _rng(seed, tindex, batch_index, k)
        ii, jj = i[s0:s1], j[s0:s1]
        ctx = _Ctx(plan.table, survey, objs, ii, rng, ids=None, ra=objs.ra[ii], dec=objs.dec[ii],
                   registry=plan.info.registry, extra={"i": ii, "j": jj, "sep": sep[s0:s1]})
        yield plan.batch(ctx)[0]


def _director_ids(survey: Survey, index: np.ndarray, seed: int, tindex: int) -> tuple[np.ndarray, dict]:
    if survey.key == "sdss":
        parts = _sdss_objid_parts(index, run0=94 + seed % 1000)
        return parts["objid"], parts
    offset = int(np.random.SeedSequence([seed, tindex, 99]).generate_state(1)[0]) % 10**9
    base = survey.id_base + tindex * 10**13 + offset * 1000
    return base + index, {}


def generate_tables(catalog: str | os.PathLike | Catalog, n_objects: int, seed: int = 0,
                    batch_size: int = 200_000, footprint: str | sky.Footprint = "allsky",
                    edge_cases: bool = False,
                    tables: Iterable[str] | None = None) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Yield ``(table_name, RecordBatch)`` for every table of ``catalog``.

    ``n_objects`` rows are generated for each director table, in batches of at most
    ``batch_size`` rows; each director batch is followed by its children's rows (also in
    batches of at most ``batch_size``) and its match-table rows, so memory does not grow with
    ``n_objects``. Replicated tables come first, once. Batches carry exactly the table's
    ``arrow_schema()``. ``tables`` restricts the output to the named tables (directors are
    still generated when a child needs them).
    """
    if n_objects < 0:
        raise ConfigError(f"n_objects must be >= 0, got {n_objects}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    cat = _resolve_catalog(catalog)
    wanted = None if tables is None else {t.lower() for t in tables}
    order = {name: k for k, name in enumerate(cat.tables)}
    main_survey = survey_for(cat, cat.directors()[0] if cat.directors() else None)
    registry: dict = {"schedule": _Schedule.make(main_survey, int(np.clip(n_objects // 300, 300, 3000)), seed)}

    def want(t: Table) -> bool:
        return wanted is None or t.name.lower() in wanted

    for t in cat.tables.values():
        if t.role == "replicated" and want(t):
            for batch in _replicated(cat, t, order[t.name], seed, main_survey, registry, batch_size):
                yield t.name, batch

    for d in cat.directors():
        survey = survey_for(cat, d)
        children = [t for t in cat.children_of(d.name) if want(t)]
        matches = [t for t in cat.tables.values() if t.role == "match" and want(t)
                   and t.match_directors and t.match_directors[0][0].lower() == d.name.lower()]
        if not (want(d) or children or matches):
            continue
        try:
            fp = sky.footprint_for(footprint, cat.name, d.name)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        tindex = order[d.name]
        positions = _PositionModel([seed, tindex], fp)
        keep: set[str] = set()
        child_plans = []
        for ch in children:
            info = _table_info(cat, ch, survey, registry, director=d)
            keep |= info.copy_from_director
            child_plans.append((ch, _Plan(info), [10**17 * (1 + order[ch.name] % 80)
                                                  + int(np.random.SeedSequence([seed, order[ch.name], 98])
                                                        .generate_state(1)[0]) % 10**15]))
        match_plans = []
        for mt in matches:
            if mt.match_directors[1][0].lower() != d.name.lower():
                log.warning("match table %s relates two different directors; generated empty",
                            mt.name)
                continue
            info = _table_info(cat, mt, survey, registry)
            plan = _match_plan(info, d)
            keep |= {c.name.lower() for c in d.columns if c.name.lower() in
                     {x.lower() for x in mt.column_names}
                     | {x.lower()[len("neighbor"):] for x in mt.column_names}}
            match_plans.append((mt, plan))
        dplan = _Plan(_table_info(cat, d, survey, registry), keep=keep)
        # A director measured in one band per row (e.g. single-band detections).
        row_band = (not any(b is not None for b, _ in dplan.info.band_of.values())
                    and any(c.name.lower() in ("band", "filterid", "filter", "filtername")
                            for c in d.columns))
        edge = sky.edge_case_positions((85, cat.partitioning.num_stripes)) if edge_cases else None
        for bi, (s0, s1) in enumerate(_slices(n_objects, batch_size)):
            rng = _rng(seed, tindex, bi)
            index = np.arange(s0, s1, dtype=np.int64)
            ids, parts = _director_ids(survey, index, seed, tindex)
            e = None
            if edge is not None and s0 < edge[0].size:
                e = (edge[0][s0:s1], edge[1][s0:s1])
            objs = _make_objects(rng, survey, positions, ids, index, e)
            band_row = rng.integers(0, len(survey.bands), objs.n) if row_band else None
            ctx = _Ctx(d, survey, objs, None, rng, ids=ids, ra=objs.ra, dec=objs.dec,
                       band_row=band_row, registry=registry, extra={"sdss_parts": parts})
            batch, kept = dplan.batch(ctx)
            objs.values = kept
            if want(d):
                yield d.name, batch
            for ch, plan, id_state in child_plans:
                for cb in _children(objs, plan, survey, seed, order[ch.name], bi, id_state, batch_size):
                    yield ch.name, cb
            for mt, plan in match_plans:
                for mb in _match_rows(objs, plan, survey, seed, order[mt.name], bi, batch_size):
                    yield mt.name, mb


# ------------------------------------------------------------------------------------------
# Writing Parquet


class _PartWriter:
    """Rolling Parquet files ``<dir>/part-00000.parquet``, ... of about ``rows_per_file`` rows."""

    def __init__(self, directory: Path, schema: pa.Schema, rows_per_file: int,
                 compression: str, compression_level: int | None) -> None:
        self.directory = directory
        self.schema = schema
        self.rows_per_file = rows_per_file
        self.compression = compression
        self.compression_level = compression_level
        # Dictionary encoding only pays for low-cardinality columns (strings, small ints):
        # on floats it costs a hash table per value and falls back to plain anyway.
        self.dictionary = [f.name for f in schema if pa.types.is_string(f.type)
                           or pa.types.is_int8(f.type) or pa.types.is_int16(f.type)]
        # Byte-stream split lets zstd compress float exponents: ~10% smaller, same speed.
        self.split = [f.name for f in schema if pa.types.is_floating(f.type)]
        self.paths: list[Path] = []
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._in_file = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None or self._in_file >= self.rows_per_file:
            self.close()
            path = self.directory / f"part-{len(self.paths):05d}.parquet"
            self._writer = pq.ParquetWriter(
                path, self.schema, compression=self.compression,
                compression_level=self.compression_level, use_dictionary=self.dictionary,
                use_byte_stream_split=self.split or False, write_statistics=True)
            self.paths.append(path)
            self._in_file = 0
        self._writer.write_batch(batch)
        self._in_file += batch.num_rows
        self.rows += batch.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class _BackgroundWriter:
    """Writes batches on worker threads so encoding/compression overlaps with generation.

    Each table is always written by the same thread (its batches stay in order); tables are
    spread over ``threads`` threads (Parquet encoding releases the GIL).
    """

    def __init__(self, writers: dict[str, _PartWriter], threads: int = 2, depth: int = 2) -> None:
        self.writers = writers
        self.error: BaseException | None = None
        self.queues = [queue.Queue(maxsize=depth) for _ in range(max(1, threads))]
        self.assign = {name: k % len(self.queues) for k, name in enumerate(writers)}
        self.threads = [threading.Thread(target=self._run, args=(q,), daemon=True,
                                         name=f"qengine-generate-writer-{k}")
                        for k, q in enumerate(self.queues)]
        for t in self.threads:
            t.start()

    def _run(self, q: queue.Queue) -> None:
        while True:
            item = q.get()
            if item is None:
                return
            if self.error is not None:
                continue
            try:
                name, batch = item
                self.writers[name].write(batch)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                self.error = exc

    def put(self, name: str, batch: pa.RecordBatch) -> None:
        k = self.assign[name]
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queues[k].put((name, batch), timeout=0.5)
                return
            except queue.Full:
                if not self.threads[k].is_alive():
                    raise RuntimeError("a Parquet writer thread stopped") from self.error

    def finish(self) -> None:
        for q in self.queues:
            q.put(None)
        for t in self.threads:
            t.join()
        for w in self.writers.values():
            w.close()
        if self.error is not None:
            raise self.error


def generate(catalog: str | os.PathLike | Catalog, n_objects: int, out_dir: str | os.PathLike,
             seed: int = 0, batch_size: int = 200_000, footprint: str | sky.Footprint = "allsky",
             edge_cases: bool = False, rows_per_file: int = 1_000_000,
             compression: str = "zstd", compression_level: int | None = 1,
             tables: Iterable[str] | None = None, progress: bool = True) -> dict[str, list[Path]]:
    """Generate ``catalog`` and write ``out_dir/<table>/part-NNNNN.parquet`` files.

    Each table's files carry its ``arrow_schema()`` (field metadata included), zstd-compressed,
    about ``rows_per_file`` rows each (one row group per generated batch). Stale
    ``part-*.parquet`` files of the tables written are removed first. Returns the files
    written per table. ``progress`` shows a tqdm bar on stderr (objects/s).
    """
    cat = _resolve_catalog(catalog)
    if rows_per_file < 1:
        raise ConfigError(f"rows_per_file must be >= 1, got {rows_per_file}")
    out = Path(out_dir)
    wanted = None if tables is None else {t.lower() for t in tables}
    unknown = [] if wanted is None else sorted(wanted - {t.lower() for t in cat.tables})
    if unknown:
        raise ConfigError(f"catalogue {cat.name!r} has no table(s) {', '.join(unknown)}; "
                          f"tables: {', '.join(cat.tables)}")
    writers: dict[str, _PartWriter] = {}
    for t in cat.tables.values():
        if wanted is not None and t.name.lower() not in wanted:
            continue
        d = out / t.name
        d.mkdir(parents=True, exist_ok=True)
        for stale in d.glob("part-*.parquet"):
            stale.unlink()
        writers[t.name] = _PartWriter(d, t.arrow_schema(), rows_per_file, compression,
                                      compression_level)
    n_dirs = max(1, sum(1 for d in cat.directors() if wanted is None or d.name.lower() in wanted
                        or any(c.name.lower() in wanted for c in cat.children_of(d.name))))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n_objects * n_dirs, unit="obj", unit_scale=True, file=sys.stderr,
                   desc=f"generate {cat.name}", dynamic_ncols=True)
    t0 = time.perf_counter()
    bg = _BackgroundWriter(writers)
    directors = {d.name for d in cat.directors()}
    try:
        for name, batch in generate_tables(cat, n_objects, seed=seed, batch_size=batch_size,
                                           footprint=footprint, edge_cases=edge_cases,
                                           tables=tables):
            if name in writers:
                bg.put(name, batch)
            if bar is not None and name in directors:
                bar.update(batch.num_rows)
                bar.set_postfix(rows=f"{sum(w.rows for w in writers.values()):,}", refresh=False)
    finally:
        try:
            bg.finish()
        finally:
            if bar is not None:
                bar.close()
    dt = time.perf_counter() - t0
    for name, w in writers.items():
        if not w.paths:        # no rows (e.g. n_objects = 0): still leave an empty, typed file
            w.write(pa.RecordBatch.from_pylist([], schema=w.schema))
            w.close()
        log.info("%s: %d rows in %d file(s)", name, w.rows, len(w.paths))
    log.info("generated %s (%d objects per director) in %.1f s", cat.name, n_objects, dt)
    return {name: list(w.paths) for name, w in writers.items()}


# ------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``qengine generate`` (and ``python -m catalogs.generate``)."""
    parser.add_argument("--catalog", required=True,
                        help="catalogue name (lsst_dr, sdss, ukidss, gaia) or a YAML definition")
    parser.add_argument("--objects", type=int, required=True, metavar="N",
                        help="rows per director table (e.g. LSST Objects)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output directory: DIR/<table>/part-NNNNN.parquet")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--batch-size", type=int, default=200_000, metavar="N",
                        help="rows per generated batch / row group (default 200000)")
    parser.add_argument("--rows-per-file", type=int, default=1_000_000, metavar="N",
                        help="start a new Parquet file after this many rows (default 1000000)")
    parser.add_argument("--footprint", default="allsky",
                        choices=["allsky", "survey", *[k for k in sky.FOOTPRINTS if k != "allsky"]],
                        help="sky coverage: allsky (default), survey (the catalogue's own) "
                             "or a named footprint")
    parser.add_argument("--edge-cases", action="store_true",
                        help="put rows at the poles, RA 0/360 and every stripe edge")
    parser.add_argument("--tables", default=None, metavar="T1,T2",
                        help="only these tables (comma-separated)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``qengine generate``: write the files, then one summary line on stderr."""
    if args.objects < 0:
        raise ConfigError(f"--objects must be >= 0, got {args.objects}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    cat = load_catalog(args.catalog)
    tables = [t.strip() for t in args.tables.split(",") if t.strip()] if args.tables else None
    progress = not args.no_progress and sys.stderr.isatty()
    t0 = time.perf_counter()
    paths = generate(cat, args.objects, args.out, seed=args.seed, batch_size=args.batch_size,
                     footprint=args.footprint, edge_cases=args.edge_cases,
                     rows_per_file=args.rows_per_file, tables=tables, progress=progress)
    dt = time.perf_counter() - t0
    counts = {name: sum(pq.read_metadata(p).num_rows for p in files) for name, files in paths.items()}
    size = sum(p.stat().st_size for files in paths.values() for p in files)
    total = sum(counts.values())
    per_table = ", ".join(f"{name} {n:,}" for name, n in counts.items())
    print(f"generated {cat.name} into {args.out}: {per_table} rows "
          f"({total:,} rows, {size / 1e6:,.1f} MB) in {dt:.1f} s "
          f"({args.objects * max(1, len(cat.directors())) / max(dt, 1e-9):,.0f} objects/s, "
          f"{total / max(dt, 1e-9):,.0f} rows/s)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m catalogs.generate``: the same as ``qengine generate``."""
    from qengine.errors import QEngineError

    parser = argparse.ArgumentParser(
        prog="python -m catalogs.generate",
        description="Generate a synthetic catalogue (directors and their children) as Parquet.")
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except QEngineError as exc:
        print(f"generate: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("generate: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
