"""UPLOAD tables: inline multipart parts (``param:name``) and http(s) URLs, as VOTable
(TABLEDATA, BINARY, BINARY2) or CSV, read into Arrow for ``Czar.query(uploads=...)``."""
from __future__ import annotations

import io
import logging
import urllib.error
import urllib.request

import pyarrow as pa

from czar.tap.errors import UploadError
from czar.tap.params import Limits

__all__ = ["fetch", "load_uploads", "read_table"]

log = logging.getLogger(__name__)


def fetch(uri: str, limit: int, timeout: float = 60.0) -> bytes:
    """The body at an http(s) URL, refusing more than ``limit`` bytes."""
    if not uri.startswith(("http://", "https://")):
        raise UploadError(f"cannot fetch {uri!r}: only http and https URLs are supported")
    req = urllib.request.Request(uri, headers={"User-Agent": "qengine-tap"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = resp.read(limit + 1)
    except urllib.error.HTTPError as exc:
        raise UploadError(f"fetching {uri} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UploadError(f"fetching {uri} failed: {getattr(exc, 'reason', exc)}") from None
    if len(data) > limit:
        raise UploadError(f"the table at {uri} is larger than the upload limit of {limit} bytes")
    return data


def _looks_like_xml(data: bytes) -> bool:
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<?xml", b"<votable", b"<!--"))


def read_table(data: bytes, name: str) -> pa.Table:
    """An uploaded table from VOTable or CSV bytes; errors name the table and the problem."""
    from czar.tap.votable import votable_to_arrow

    if not data.strip():
        raise UploadError(f"UPLOAD {name}: the table is empty")
    if _looks_like_xml(data):
        try:
            return votable_to_arrow(data)
        except UploadError as exc:
            raise UploadError(f"UPLOAD {name}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - astropy raises many kinds for malformed XML
            raise UploadError(f"UPLOAD {name}: not a readable VOTable: {exc}") from None
    import pyarrow.csv as pcsv

    try:
        return pcsv.read_csv(io.BytesIO(data))
    except (pa.ArrowInvalid, pa.ArrowException) as exc:
        raise UploadError(f"UPLOAD {name}: neither a VOTable nor readable CSV: {exc}") from None


def _check_columns(table: pa.Table, name: str) -> None:
    import re

    seen = set()
    for col in table.column_names:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", col or ""):
            raise UploadError(f"UPLOAD {name}: column name {col!r} is not an ADQL identifier")
        if col.lower() in seen:
            raise UploadError(f"UPLOAD {name}: column {col!r} appears twice")
        seen.add(col.lower())


def load_uploads(specs: list[tuple[str, str]], inline: dict[str, bytes], limits: Limits) -> dict[str, pa.Table]:
    """Read every UPLOAD item: ``param:x`` from the request's parts ``inline``, URLs fetched."""
    out: dict[str, pa.Table] = {}
    total = 0
    for name, uri in specs:
        if uri.startswith("param:"):
            part = uri[len("param:"):]
            if part not in inline:
                raise UploadError(f"UPLOAD {name}: the request has no part named {part!r} "
                                  "(send it as a file in a multipart/form-data request)")
            data = inline[part]
        else:
            data = fetch(uri, limits.upload_bytes)
        total += len(data)
        if total > limits.upload_bytes:
            raise UploadError(f"UPLOAD {name}: uploads exceed the limit of {limits.upload_bytes} bytes")
        table = read_table(data, name)
        if table.num_rows > limits.upload_rows:
            raise UploadError(f"UPLOAD {name}: {table.num_rows} rows exceed the limit of {limits.upload_rows}")
        _check_columns(table, name)
        out[name] = table
        log.info("upload %s: %d rows, %d columns", name, table.num_rows, table.num_columns)
    return out
