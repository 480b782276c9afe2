"""The chunker against its oracles: lsst.sphgeom.Chunker for ids and bounds, a literal scalar
port of Qserv's partitioner (partition/Chunker.cc) for overlap, and brute-force distances for
overlap completeness."""
from __future__ import annotations

import math

import lsst.sphgeom as sg
import numpy as np
import pytest
from hypothesis import given, strategies as st

from qengine.chunker import Chunker
from qengine.errors import ConfigError, CoordinateError

CONFIGS = [(85, 12), (340, 3), (18, 100), (1, 1), (2, 5), (57, 7)]


def _sphgeom(ns: int, nss: int) -> sg.Chunker:
    return sg.Chunker(ns, nss)


def _lon_diff(a: float, b: float) -> float:
    """Absolute difference of two longitudes, modulo 360."""
    return abs((a - b + 180.0) % 360.0 - 180.0)


def _oracle_sub_chunks(sph: sg.Chunker, ra: float, dec: float) -> set[tuple[int, int]]:
    """(chunk, sub-chunk) pairs whose (epsilon-dilated) boxes contain the point, per sphgeom."""
    box = sg.Box(sg.LonLat.fromDegrees(ra, dec))
    return {(c, s) for c, subs in sph.getSubChunksIntersecting(box) for s in subs}


def _edge_points(ch: Chunker, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Points on and within 1e-12 deg of stripe, sub-stripe, chunk and sub-chunk edges, poles, RA wrap."""
    ras, decs = [], []
    nss_total = ch.num_stripes * ch.num_sub_stripes
    for _ in range(n):
        ss = int(rng.integers(0, nss_total + 1))
        dec_edge = min(-90.0 + ss * 180.0 / nss_total, 90.0)
        eps = rng.choice([0.0, 1e-12, -1e-12, 1e-9, -1e-9])
        dec = float(np.clip(dec_edge + eps, -90.0, 90.0))
        row = min(int(ss), nss_total - 1)
        w = ch._sub_chunk_width[row]
        k = int(rng.integers(0, round(360.0 / w) + 1))
        ra = float(np.clip(k * w + rng.choice([0.0, 1e-12, -1e-12, 1e-9]), 0.0, 360.0 - 1e-13))
        ras.append(ra)
        decs.append(dec)
    ras += [0.0, 360.0 - 1e-12, 359.9999999, 0.0, 180.0, 0.0, 123.0, 360.0 - 1e-12]
    decs += [0.0, 0.0, 45.0, 90.0, 90.0, -90.0, -90.0, -90.0]
    return np.array(ras), np.array(decs)


# --------------------------------------------------------------------------- ids and bounds
@pytest.mark.parametrize("ns,nss", CONFIGS)
def test_all_chunks_and_sub_chunks_equal_sphgeom(ns, nss):
    ch, sph = Chunker(ns, nss, overlap=0.0), _sphgeom(ns, nss)
    ours = ch.all_chunks()
    assert ours.tolist() == list(sph.getAllChunks())
    for cid in ours[:: max(1, ours.size // 40)].tolist() + [int(ours[-1])]:
        assert ch.all_sub_chunks(cid).tolist() == list(sph.getAllSubChunks(cid))


@pytest.mark.parametrize("ns,nss", CONFIGS)
def test_chunk_and_sub_chunk_bounds_equal_sphgeom(ns, nss):
    ch, sph = Chunker(ns, nss, overlap=0.0), _sphgeom(ns, nss)
    chunks = ch.all_chunks()
    sample = chunks[:: max(1, chunks.size // 60)]
    b = ch.chunk_bounds(sample)
    for i, cid in enumerate(sample.tolist()):
        stripe = sph.getStripe(cid)
        box = sph.getChunkBoundingBox(stripe, sph.getChunk(cid, stripe))
        # sphgeom dilates boxes by 5e-12 rad; compare to 1e-9 deg.
        lon, lat = box.getLon(), box.getLat()
        assert lat.getA().asDegrees() == pytest.approx(b.dec_min[i], abs=1e-9)
        assert lat.getB().asDegrees() == pytest.approx(b.dec_max[i], abs=1e-9)
        if b.ra_max[i] - b.ra_min[i] < 360.0:
            tol = 1e-9 / max(math.cos(math.radians(max(abs(b.dec_min[i]), abs(b.dec_max[i])))), 1e-9)
            assert _lon_diff(lon.getA().asDegrees(), b.ra_min[i]) <= tol
            assert _lon_diff(lon.getB().asDegrees(), b.ra_max[i]) <= tol
        subs = ch.all_sub_chunks(cid)
        sb = ch.sub_chunk_bounds(np.full(subs.size, cid), subs)
        for j, scid in enumerate(subs[:: max(1, subs.size // 5)].tolist()):
            k = list(subs).index(scid)
            y, x = divmod(scid, ch.max_sub_chunks_per_sub_stripe_chunk)
            ss = stripe * nss + y
            sbox = sph.getSubChunkBoundingBox(ss, sph.getChunk(cid, stripe) * ch._num_sub_chunks_per_chunk[ss] + x)
            assert sbox.getLat().getA().asDegrees() == pytest.approx(sb.dec_min[k], abs=1e-9)
            assert sbox.getLat().getB().asDegrees() == pytest.approx(sb.dec_max[k], abs=1e-9)
            if sb.ra_max[k] - sb.ra_min[k] < 360.0:
                # the epsilon dilation widens longitudes by ~eps/cos(dec)
                tol = 1e-9 / max(math.cos(math.radians(max(abs(sb.dec_min[k]), abs(sb.dec_max[k])))), 1e-9)
                assert _lon_diff(sbox.getLon().getA().asDegrees(), sb.ra_min[k]) <= tol


def test_million_random_points_equal_sphgeom():
    """>= 1e6 uniform random points: chunk and sub-chunk ids equal sphgeom's (85/12)."""
    rng = np.random.default_rng(20261127)
    n = 1_000_000
    ra = rng.uniform(0.0, 360.0, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    ch, sph = Chunker(), _sphgeom(85, 12)
    cid, scid = ch.locate(ra, dec)
    mismatches = 0
    for i in range(n):
        box = sg.Box(sg.LonLat.fromDegrees(ra[i], dec[i]))
        got = sph.getSubChunksIntersecting(box)
        if len(got) == 1 and len(got[0][1]) == 1:
            mismatches += (got[0][0], got[0][1][0]) != (cid[i], scid[i])
        else:  # within 1 micro-arcsec of an edge: ours must be one of sphgeom's
            mismatches += (int(cid[i]), int(scid[i])) not in {(c, s) for c, ss in got for s in ss}
    assert mismatches == 0


@pytest.mark.parametrize("ns,nss", CONFIGS)
def test_random_points_per_config_equal_sphgeom(ns, nss):
    rng = np.random.default_rng(ns * 1000 + nss)
    n = 30_000
    ra = rng.uniform(0.0, 360.0, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    ch, sph = Chunker(ns, nss, overlap=0.0), _sphgeom(ns, nss)
    cid, scid = ch.locate(ra, dec)
    for i in range(n):
        assert (int(cid[i]), int(scid[i])) in _oracle_sub_chunks(sph, ra[i], dec[i])


@pytest.mark.parametrize("ns,nss", CONFIGS)
def test_edge_points_equal_sphgeom(ns, nss):
    ch, sph = Chunker(ns, nss, overlap=0.0), _sphgeom(ns, nss)
    ra, dec = _edge_points(ch, np.random.default_rng(7), 3000)
    cid, scid = ch.locate(ra, dec)
    for i in range(ra.size):
        oracle = _oracle_sub_chunks(sph, ra[i], dec[i])
        assert (int(cid[i]), int(scid[i])) in oracle, (ra[i], dec[i], cid[i], scid[i], oracle)


@given(
    cfg=st.sampled_from(CONFIGS),
    ra=st.one_of(st.floats(0.0, 360.0, exclude_max=True), st.sampled_from([0.0, 360.0 - 1e-12, 180.0])),
    dec=st.one_of(st.floats(-90.0, 90.0), st.sampled_from([-90.0, 90.0, 0.0])),
)
def test_hypothesis_points_equal_sphgeom(cfg, ra, dec):
    ch, sph = Chunker(*cfg, overlap=0.0), _sphgeom(*cfg)
    cid, scid = ch.locate([ra], [dec])
    assert (int(cid[0]), int(scid[0])) in _oracle_sub_chunks(sph, ra, dec)


def test_ra_outside_range_is_reduced():
    ch = Chunker()
    a = ch.locate([-10.0, 370.0, 720.5], [5.0, 5.0, -30.0])
    b = ch.locate([350.0, 10.0, 0.5], [5.0, 5.0, -30.0])
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# --------------------------------------------------------------------------- bad input
def test_invalid_positions_raise_with_rows():
    ch = Chunker()
    with pytest.raises(CoordinateError) as err:
        ch.locate([1.0, np.nan, 3.0, 4.0], [0.0, 1.0, 91.0, -90.5])
    assert err.value.rows == [1, 2, 3]
    assert "row 1" in str(err.value)
    cid, scid = ch.locate([1.0, np.nan, 3.0, np.inf], [0.0, 1.0, 91.0, 0.0], errors="mask")
    assert cid.tolist()[1:] == [-1, -1, -1] and scid.tolist()[1:] == [-1, -1, -1]
    assert cid[0] == ch.locate([1.0], [0.0])[0][0]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_stripes=0), "positive"),
        (dict(num_sub_stripes=-1), "positive"),
        (dict(overlap=-0.1), "overlap"),
        (dict(overlap=11.0), "overlap"),
        (dict(num_stripes=340, num_sub_stripes=12, overlap=0.1), "sub-stripe height"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Chunker(**kwargs)


def test_unknown_chunk_id_is_refused():
    ch = Chunker()
    with pytest.raises(ConfigError):
        ch.chunk_bounds(99999)
    assert not ch.is_valid_chunk(-1) and ch.is_valid_chunk(ch.all_chunks()[0])


# --------------------------------------------------------------------------- overlap
class _QservPartitionChunker:
    """A literal scalar transcription of Qserv's partition::Chunker (degrees), the overlap oracle."""

    def __init__(self, overlap: float, ns: int, nss: int) -> None:
        self.overlap, self.ns, self.nsps = overlap, ns, nss
        n_ss = ns * nss
        stripe_h, self.ss_h = 180.0 / ns, 180.0 / n_ss
        self.nc, self.nscpc, self.scw, self.alpha = [], [], [], []
        for i in range(ns):
            nc = self._segments(i * stripe_h - 90.0, (i + 1) * stripe_h - 90.0, stripe_h)
            self.nc.append(nc)
            for j in range(nss):
                ss = i * nss + j
                lat_min, lat_max = ss * self.ss_h - 90.0, (ss + 1) * self.ss_h - 90.0
                nsc = self._segments(lat_min, lat_max, self.ss_h) // nc
                self.nscpc.append(nsc)
                self.scw.append(360.0 / (nsc * nc))
                self.alpha.append(self._max_alpha(overlap, max(abs(lat_min), abs(lat_max))))
        self.max_sc = max(self.nscpc)

    @staticmethod
    def _segments(lat_min, lat_max, width):
        lat = max(abs(lat_min), abs(lat_max))
        if lat > 90.0 - 1 / 3600.0 or width >= 180.0:
            return 1
        lat = math.radians(lat)
        cw, sl, cl = math.cos(math.radians(width)), math.sin(lat), math.cos(lat)
        x = cw - sl * sl
        u = cl * cl
        y = math.sqrt(abs(u * u - x * x))
        return int(math.floor(360.0 / abs(math.degrees(math.atan2(y, x)))))

    @staticmethod
    def _max_alpha(r, lat):
        if r == 0.0:
            return 0.0
        if abs(lat) + r > 90.0 - 1 / 3600.0:
            return 180.0
        r, lat = math.radians(r), math.radians(lat)
        return math.degrees(abs(math.atan(math.sin(r) / math.sqrt(abs(math.cos(lat - r) * math.cos(lat + r))))))

    def _cid(self, stripe, chunk):
        return stripe * 2 * self.ns + chunk

    def _scid(self, stripe, ss, chunk, sc):
        return (ss - stripe * self.nsps) * self.max_sc + (sc - chunk * self.nscpc[ss])

    def locations(self, lon, lat):
        out = []
        n_ss = self.ns * self.nsps
        ss = min(int(math.floor((lat + 90.0) / self.ss_h)), n_ss - 1)
        stripe = ss // self.nsps
        num_chunks = self.nc[stripe]
        nscpc = self.nscpc[ss]
        n_sc = num_chunks * nscpc
        sc = min(int(math.floor(lon / self.scw[ss])), n_sc - 1)
        chunk = sc // nscpc
        out.append((self._cid(stripe, chunk), self._scid(stripe, ss, chunk, sc), False))
        lon_min = sc * self.scw[ss]
        lon_max = min((sc + 1) * self.scw[ss], 360.0)
        lat_min = max(ss * self.ss_h - 90.0, -90.0)
        lat_max = min((ss + 1) * self.ss_h - 90.0, 90.0)
        if ss > 0 and lat < lat_min + self.overlap:
            self._up_down(lon, (ss - 1) // self.nsps, ss - 1, out)
        if ss < n_ss - 1 and lat >= lat_max - self.overlap:
            self._up_down(lon, (ss + 1) // self.nsps, ss + 1, out)
        if n_sc == 1:
            return out
        a = self.alpha[ss]
        if lon < lon_min + a:
            oc, osc = (num_chunks - 1, n_sc - 1) if sc == 0 else ((sc - 1) // nscpc, sc - 1)
            out.append((self._cid(stripe, oc), self._scid(stripe, ss, oc, osc), True))
        if lon > lon_max - a:
            oc, osc = (0, 0) if sc == n_sc - 1 else ((sc + 1) // nscpc, sc + 1)
            out.append((self._cid(stripe, oc), self._scid(stripe, ss, oc, osc), True))
        return out

    def _up_down(self, lon, stripe, ss, out):
        nscpc = self.nscpc[ss]
        n_sc = self.nc[stripe] * nscpc
        w, a = self.scw[ss], self.alpha[ss]
        lo, hi = int(math.floor((lon - a) / w)), int(math.floor((lon + a) / w))
        if lo < 0:
            lo += n_sc
        if hi >= n_sc:
            hi -= n_sc
        if lo > hi:
            for sc in range(lo, n_sc):
                out.append((self._cid(stripe, sc // nscpc), self._scid(stripe, ss, sc // nscpc, sc), True))
            lo = 0
        for sc in range(lo, hi + 1):
            out.append((self._cid(stripe, sc // nscpc), self._scid(stripe, ss, sc // nscpc, sc), True))


def _near_edge_points(ch: Chunker, rng, n):
    """Points within a few overlap radii of sub-chunk edges and corners, plus poles and RA wrap."""
    ra, dec = _edge_points(ch, rng, n)
    jitter = ch.overlap * 2.0
    ra = np.mod(ra + rng.uniform(-jitter, jitter, ra.size), 360.0)
    dec = np.clip(dec + rng.uniform(-jitter, jitter, dec.size), -90.0, 90.0)
    return np.concatenate([ra, [0.0, 0.0, 359.999, 10.0]]), np.concatenate([dec, [90.0, -90.0, 89.999, -89.99]])


@pytest.mark.parametrize("ns,nss,overlap", [(85, 12, 0.01667), (340, 3, 0.01667), (18, 100, 0.05), (57, 7, 0.3)])
def test_overlap_equals_qserv_partitioner(ns, nss, overlap):
    ch = Chunker(ns, nss, overlap)
    oracle = _QservPartitionChunker(overlap, ns, nss)
    ra, dec = _near_edge_points(ch, np.random.default_rng(ns + nss), 2000)
    rows, cid, scid = ch.overlap_locations(ra, dec, per_chunk=False)
    home_c, home_s = ch.locate(ra, dec)
    got: dict[int, list] = {}
    for r, c, s in zip(rows.tolist(), cid.tolist(), scid.tolist()):
        got.setdefault(r, []).append((c, s))
    for i in range(ra.size):
        locs = oracle.locations(float(ra[i]), float(dec[i]))
        assert (locs[0][0], locs[0][1]) == (home_c[i], home_s[i])
        assert sorted(got.get(i, [])) == sorted((c, s) for c, s, _ in locs[1:]), (ra[i], dec[i])


def _sampled_distance_to_box(ra, dec, b):
    """Distance (deg) from a point to a lon/lat box, from dense samples of the box edges.

    Never smaller than the true distance, so `sampled < r` proves the point is within r.
    """
    lon = np.linspace(b[0], b[1], 4001)
    lat = np.linspace(b[2], b[3], 4001)
    e_lon = np.concatenate([lon, lon, np.full(lat.size, b[0]), np.full(lat.size, b[1])])
    e_lat = np.concatenate([np.full(lon.size, b[2]), np.full(lon.size, b[3]), lat, lat])
    p1, p2 = np.radians(dec), np.radians(e_lat)
    dl = np.radians(e_lon - ra)
    num = np.hypot(np.cos(p2) * np.sin(dl), np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl))
    den = np.sin(p1) * np.sin(p2) + np.cos(p1) * np.cos(p2) * np.cos(dl)
    return float(np.degrees(np.arctan2(num, den)).min())


@pytest.mark.parametrize("ns,nss,overlap", [(85, 12, 0.01667), (18, 100, 0.05), (57, 7, 0.3)])
def test_overlap_is_complete(ns, nss, overlap):
    """Every chunk within the overlap distance of a point (other than its own) gets a copy."""
    ch, sph = Chunker(ns, nss, overlap), _sphgeom(ns, nss)
    rng = np.random.default_rng(3)
    # points near chunk corners and edges (plus the generic sub-chunk edge points)
    chunks = rng.choice(ch.all_chunks(), 300)
    b = ch.chunk_bounds(chunks)
    t = rng.uniform(0, 1, chunks.size)
    side = rng.integers(0, 4, chunks.size)
    c_ra = np.where(side < 2, np.where(side == 0, b.ra_min, b.ra_max), b.ra_min + t * (b.ra_max - b.ra_min))
    c_dec = np.where(side >= 2, np.where(side == 2, b.dec_min, b.dec_max), b.dec_min + t * (b.dec_max - b.dec_min))
    j = 1.5 * overlap
    c_ra = np.mod(c_ra + rng.uniform(-j, j, chunks.size) / np.maximum(np.cos(np.radians(c_dec)), 0.05), 360.0)
    c_dec = np.clip(c_dec + rng.uniform(-j, j, chunks.size), -90.0, 90.0)
    e_ra, e_dec = _near_edge_points(ch, rng, 150)
    ra, dec = np.concatenate([c_ra, e_ra]), np.concatenate([c_dec, e_dec])
    rows, cid, _ = ch.overlap_locations(ra, dec)
    have = set(zip(rows.tolist(), cid.tolist()))
    assert len(have) == rows.size  # one copy per (row, chunk)
    home, _ = ch.locate(ra, dec)
    checked = 0
    for i in range(ra.size):
        circle = sg.Circle(sg.UnitVector3d(sg.LonLat.fromDegrees(ra[i], dec[i])), sg.Angle.fromDegrees(overlap * 1.01))
        for c in sph.getChunksIntersecting(circle):
            if c == home[i]:
                continue
            b = ch.chunk_bounds(c)
            d = _sampled_distance_to_box(ra[i], dec[i], (b.ra_min[0], b.ra_max[0], b.dec_min[0], b.dec_max[0]))
            if d < overlap * (1 - 1e-3):
                checked += 1
                assert (i, c) in have, (ra[i], dec[i], c, d)
        # and never a copy into the row's own chunk
        assert (i, int(home[i])) not in have
    assert checked > 100


def test_overlap_zero_and_empty():
    ch = Chunker(overlap=0.0)
    rows, cid, scid = ch.overlap_locations([1.0, 2.0], [0.0, 0.0])
    assert rows.size == cid.size == scid.size == 0
    rows, _, _ = Chunker().overlap_locations(np.array([]), np.array([]))
    assert rows.size == 0


def test_pole_rows_serve_every_chunk_of_the_polar_neighbourhood():
    """A row at the pole lies within the overlap of every chunk whose box touches that pole cap."""
    ch = Chunker(85, 12, 0.01667)
    rows, cid, _ = ch.overlap_locations([0.0, 200.0], [90.0, -90.0])
    home, _ = ch.locate([0.0, 200.0], [90.0, -90.0])
    for k, pole in enumerate((90.0, -90.0)):
        mine = set(cid[rows == k].tolist())
        b = ch.chunk_bounds(ch.all_chunks())
        near = (np.abs(b.dec_max - pole) < ch.overlap) | (np.abs(b.dec_min - pole) < ch.overlap)
        expected = set(ch.all_chunks()[near].tolist()) - {int(home[k])}
        assert expected <= mine
