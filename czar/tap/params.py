"""TAP request parameters under DALI's rules: case-insensitive names, unknown names ignored,
a repeated single-valued parameter is an error; LANG, REQUEST, RESPONSEFORMAT/FORMAT, MAXREC,
RUNID and UPLOAD checked here so that sync and async jobs share one reading."""
from __future__ import annotations

from dataclasses import dataclass, field

from czar.tap.errors import TapParamError

__all__ = ["FORMATS", "Limits", "TapParams", "collect", "parse_params"]

# Parameters that may be given more than once (PHASE filters the job list; UPLOAD lists add up).
MULTI_VALUED = frozenset({"UPLOAD", "PHASE"})

#: response format key -> (media type, accepted spellings, lower case without blanks)
FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    "votable": ("application/x-votable+xml", (
        "votable", "votable/td", "vot", "application/x-votable+xml", "text/xml",
        "application/x-votable+xml;serialization=tabledata", "text/xml;content=x-votable",
        "application/x-votable+xml;content=datatype")),
    "votable-b2": ("application/x-votable+xml;serialization=BINARY2", (
        "votable/b2", "binary2", "votableb2", "application/x-votable+xml;serialization=binary2")),
    "csv": ("text/csv;header=present", ("csv", "text/csv", "text/csv;header=present")),
    "tsv": ("text/tab-separated-values", ("tsv", "text/tab-separated-values", "tab")),
    "fits": ("application/fits", ("fits", "application/fits", "image/fits")),
    "parquet": ("application/vnd.apache.parquet", (
        "parquet", "application/vnd.apache.parquet", "application/x-parquet")),
}
_FORMAT_OF = {spelling: key for key, (_, spellings) in FORMATS.items() for spelling in spellings}

#: LANG value (upper case) -> the czar's ``lang``.
LANGS = {"ADQL": "adql", "ADQL-2.0": "adql", "ADQL-2.1": "adql", "QSERV": "qserv"}


@dataclass(frozen=True)
class Limits:
    """Service limits, advertised in the capabilities and enforced on every request."""

    default_maxrec: int = 100_000
    max_maxrec: int = 10_000_000
    upload_bytes: int = 64 * 2**20
    upload_rows: int = 1_000_000
    sync_duration: int = 600          # seconds a sync query may run
    default_duration: int = 3600      # default executionDuration of an async job
    max_duration: int = 4 * 3600
    retention: int = 7 * 86400        # default destruction: creation + retention
    max_retention: int = 30 * 86400
    max_wait: int = 60                # longest WAIT=n (and WAIT=-1) blocking, seconds
    async_slots: int = 4              # async jobs executing at once

    def __post_init__(self) -> None:
        for default, hard in (("default_maxrec", "max_maxrec"), ("default_duration", "max_duration"),
                              ("retention", "max_retention")):
            if getattr(self, default) > getattr(self, hard):
                raise ValueError(f"{default} ({getattr(self, default)}) is above {hard} ({getattr(self, hard)})")
        if min(getattr(self, f) for f in self.__dataclass_fields__) < 0 or self.async_slots < 1:
            raise ValueError("limits must be positive numbers (async_slots at least 1)")


@dataclass
class TapParams:
    """One TAP query request, checked."""

    query: str
    lang: str = "adql"
    format: str = "votable"
    maxrec: int = 100_000
    maxrec_given: bool = False
    runid: str | None = None
    uploads: list[tuple[str, str]] = field(default_factory=list)  # (table name, URI)

    @property
    def media_type(self) -> str:
        return FORMATS[self.format][0]


def collect(items: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Group (name, value) pairs by upper-cased name, keeping every value in order."""
    out: dict[str, list[str]] = {}
    for name, value in items:
        out.setdefault(name.strip().upper(), []).append(value)
    return out


def single(params: dict[str, list[str]], name: str) -> str | None:
    """The one value of a single-valued parameter; repeating it is an error (DALI)."""
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1 and name not in MULTI_VALUED:
        raise TapParamError(f"parameter {name} given {len(values)} times; it takes one value")
    return values[0]


def check_repeats(params: dict[str, list[str]], known: tuple[str, ...]) -> None:
    for name in known:
        single(params, name)


def parse_format(value: str | None) -> str:
    if value is None or not value.strip():
        return "votable"
    key = _FORMAT_OF.get("".join(value.split()).lower())
    if key is None:
        raise TapParamError(f"unsupported RESPONSEFORMAT {value!r}: use votable (default), "
                            "votable/b2, csv, tsv, fits or parquet")
    return key


def parse_maxrec(value: str | None, limits: Limits) -> tuple[int, bool]:
    if value is None or not value.strip():
        return limits.default_maxrec, False
    try:
        n = int(value.strip())
    except ValueError:
        raise TapParamError(f"MAXREC must be a non-negative integer, got {value!r}") from None
    if n < 0:
        raise TapParamError(f"MAXREC must be a non-negative integer, got {value!r}")
    return min(n, limits.max_maxrec), True


def parse_upload(values: list[str]) -> list[tuple[str, str]]:
    """``UPLOAD=name,uri;name2,uri2`` (the parameter may also be repeated)."""
    import re

    out: list[tuple[str, str]] = []
    for value in values:
        for item in value.split(";"):
            if not item.strip():
                continue
            name, sep, uri = item.partition(",")
            name, uri = name.strip(), uri.strip()
            if not sep or not name or not uri:
                raise TapParamError(f"UPLOAD item {item!r} must be 'table_name,URI'")
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
                raise TapParamError(f"UPLOAD table name {name!r} is not an ADQL identifier "
                                    "(a letter, then letters, digits or '_')")
            if name.lower() in (n.lower() for n, _ in out):
                raise TapParamError(f"UPLOAD table name {name!r} given twice")
            if not uri.startswith(("param:", "http://", "https://")):
                raise TapParamError(f"UPLOAD {name}: unsupported URI {uri!r}; use param:NAME for an "
                                    "inline part of a multipart request, or an http(s) URL")
            out.append((name, uri))
    return out


def parse_params(params: dict[str, list[str]], limits: Limits) -> TapParams:
    """Check a query request's parameters (already grouped by :func:`collect`)."""
    check_repeats(params, ("QUERY", "LANG", "REQUEST", "FORMAT", "RESPONSEFORMAT", "MAXREC", "RUNID",
                           "VERSION"))
    request = single(params, "REQUEST")
    if request is not None and request.strip().lower() != "doquery":
        raise TapParamError(f"unsupported REQUEST {request!r}: only doQuery is supported")
    version = single(params, "VERSION")
    if version is not None and version.strip() not in ("1.0", "1.1"):
        raise TapParamError(f"unsupported VERSION {version!r}: this service speaks TAP 1.1 (and 1.0)")
    lang = single(params, "LANG")
    if lang is None or not lang.strip():
        lang_key = "adql"  # lenient: most services default to ADQL
    else:
        lang_key = LANGS.get(lang.strip().upper())
        if lang_key is None:
            raise TapParamError(f"unsupported LANG {lang!r}: use ADQL, ADQL-2.0 or ADQL-2.1")
    query = single(params, "QUERY")
    if query is None or not query.strip():
        raise TapParamError("missing QUERY parameter")
    fmt = single(params, "RESPONSEFORMAT")
    other = single(params, "FORMAT")
    if fmt is not None and other is not None and parse_format(fmt) != parse_format(other):
        raise TapParamError(f"RESPONSEFORMAT {fmt!r} and FORMAT {other!r} disagree")
    maxrec, given = parse_maxrec(single(params, "MAXREC"), limits)
    return TapParams(query=query, lang=lang_key, format=parse_format(fmt if fmt is not None else other),
                     maxrec=maxrec, maxrec_given=given, runid=single(params, "RUNID"),
                     uploads=parse_upload(params.get("UPLOAD", [])))
