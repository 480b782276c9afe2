"""sciSQL / Qserv and ADQL helper functions as DuckDB SQL macros.

:func:`register` creates them on a DuckDB connection; :func:`macro_sql` returns the
``CREATE OR REPLACE TEMP MACRO`` statements (the czar can run the same ones); and
:data:`SQL_FUNCTIONS` documents the public names. Everything is a plain SQL macro: no
extension, no Python UDF, so DuckDB vectorises them, folds a query's literal region
parameters into constants once per query, and they keep working after ``SET
enable_external_access = false``. Macros are TEMP: per connection, never written
into a database file, fine when the default catalogue is read-only. Names are
case-insensitive, as everywhere in DuckDB. Angles are in degrees unless a name or
argument says otherwise (sciSQL's ellipse axes are in arcsec).

Registering everything takes ~0.1 s, mostly the 28 polygon overloads of each
polygon function; ``register(con, sql=query)`` creates only what ``query`` names
(a few ms), which is what a per-query connection wants.

sciSQL names (``scisql_*``) follow sciSQL's UDFs (lsst/scisql ``src/udfs/*.c``):

* Point-in-region predicates return INTEGER 1/0. As in sciSQL, a NULL argument gives
  **0**, not NULL (sciSQL: "If any parameter is NULL, 0 is returned"), while an
  invalid one gives NULL: NaN or +/-Inf, a latitude outside [-90, 90], a circle
  radius outside [0, 180], ellipse axes not satisfying 0 <= minor <= major <= 36000
  arcsec, a box with lonMax < lonMin while either lies outside [0, 360].
* ``scisql_angSep`` and the photometry functions return DOUBLE and give NULL when
  any argument is NULL, NaN or +/-Inf (or a latitude is outside [-90, 90]).
* Photometry applies the rules of sciSQL's nanojansky UDFs to all eight: flux <= 0
  gives NULL for the flux-to-magnitude conversions, a negative sigma gives NULL, and
  a result that overflows to +/-Inf gives NULL. (sciSQL's older erg/cm^2/s/Hz UDFs
  check only NULL/NaN/Inf, so e.g. sciSQL's fluxToAbMagSigma of a negative flux
  would be a negative error; here it is NULL.)

Region semantics are those of :mod:`qengine.geometry` (``Box``/``Circle``/
``Ellipse``/``Polygon``.contains), which follow sciSQL: boxes wrap through RA 0
when lonMax < lonMin, circles use the haversine chord test, ellipses use sciSQL's
orthographic test plus the same-hemisphere condition, convex polygons accept
either vertex order (orientation decided as in sciSQL, from vertices against the
first edge plane) and edges are inclusive up to rounding. Angular separations keep
full relative precision down to the smallest angles and up to 180 degrees (the
haversine and its complement, each a sum of non-negative terms); polygon edge
tests are triple products expanded in longitude differences, exact to ~1e-16 rad
near an edge (to ~1e-15 rad / edge length across RA 0/360).

ADQL helpers (``qe_*``, used by the czar's ADQL translation) return BOOLEAN and give
NULL when any argument is NULL or invalid. ``qe_in_adql_box`` implements ADQL
2.0/2.1 BOX(center, width, height) as the standard defines it (after STC): a cross
centred on the centre with arms of half the width/height along the coordinate
axes there, and sides that are great circles meeting the arms' ends at right
angles. Its sides therefore lie on the four great circles x = +/-tan(width/2),
y = +/-tan(height/2) of the gnomonic (tangent-plane) projection at the centre, with
x east and y north; the box is the convex spherical quadrilateral they bound. This
is not an RA/Dec range (``qe_in_range_box`` is), and widths are angles measured
along great circles, not RA differences.
"""
from __future__ import annotations

import math
import re
import threading

import duckdb

__all__ = ["MAX_POLYGON_VERTICES", "SQL_FUNCTIONS", "macro_sql", "needed_statements", "register"]

#: Largest vertex count of the fixed-arity polygon overloads (sciSQL allows 20).
MAX_POLYGON_VERTICES = 30
MIN_POLYGON_VERTICES = 3


def _lit(x: float) -> str:
    """A DOUBLE literal that DuckDB parses to exactly ``x`` (exponent form = DOUBLE)."""
    text = repr(float(x))
    return text if "e" in text else text + "e0"


# What the scisql_s2PtIn* predicates return for a NULL argument: 0, as sciSQL's
# UDFs do ("If any parameter is NULL, 0 is returned"); "NULL" would propagate it.
_SCISQL_NULL_RESULT = "0"

_RAD = _lit(math.pi / 180.0)          # numpy.radians / math.radians factor
_HALF_RAD = _lit(0.5 * math.pi / 180.0)
_DEG = _lit(180.0 / math.pi)
_TWO_DEG = _lit(2.0 * 180.0 / math.pi)
_PAD = _lit(1e-9)                     # qengine.geometry._BBOX_PAD_DEG
_MAG_PER_LN = _lit(2.5 / math.log(10.0))   # sciSQL SCISQL_5_OVER_2LOG10
_LN_PER_MAG = _lit(math.log(10.0) / 2.5)   # sciSQL SCISQL_2LOG10_OVER_5


# --------------------------------------------------------------------------- helpers
# Internal macros (prefix ``qe__``). Arguments are DOUBLE and already validated
# unless noted. DuckDB inlines macros, so a parameter used twice is evaluated
# twice; the expressions are written so that each trigonometric term of the
# row's position appears once where possible (DuckDB eliminates common
# sub-expressions in projections but not in filters).

_HELPERS: list[tuple[str, str, str]] = [
    # RA reduced to [0, 360) exactly as sciSQL's scisql_angred (C fmod; DuckDB's
    # % on DOUBLE is C fmod, its fmod() is floored).
    ("qe__angred", "x",
     ("CASE WHEN x % 360.0e0 < 0.0e0 THEN "
     "(CASE WHEN x % 360.0e0 + 360.0e0 >= 360.0e0 THEN 0.0e0 ELSE x % 360.0e0 + 360.0e0 END) "
     "ELSE x % 360.0e0 END")),
    # a - b in degrees, reduced (exactly) to [-180, 180].
    ("qe__dra", "a, b", "(a - b) - 360.0e0 * round((a - b) / 360.0e0)"),
    # A finite position with latitude in [-90, 90]; NULL when an argument is NULL.
    ("qe__ok", "lon, lat", "isfinite(lon) AND isfinite(lat) AND lat >= -90.0e0 AND lat <= 90.0e0"),
    # A flat list of polygon vertices [lon1, lat1, ...] without NaN/Inf and with
    # latitudes in [-90, 90] (folded to a constant for literal vertices).
    ("qe__vok", "l",
     ("list_bool_and(list_transform(l, lambda qe_x: isfinite(qe_x))) AND "
     "list_max(list_transform(list_slice(l, 2, -1, 2), lambda qe_x: abs(qe_x))) <= 90.0e0")),
    # Haversine h = sin^2(d/2) for the angle d between two positions, and its
    # complement 1 - h = cos^2(d/2), each a sum of non-negative terms, so that
    # 2 atan2(sqrt(h), sqrt(1 - h)) keeps full precision at 0 and at 180 degrees.
    ("qe__hav", "lon1, lat1, lon2, lat2",
     (f"pow(sin((lat2 - lat1) * {_HALF_RAD}), 2) + cos(lat1 * {_RAD}) * cos(lat2 * {_RAD}) * "
     f"pow(sin(qe__dra(lon2, lon1) * {_HALF_RAD}), 2)")),
    ("qe__havc", "lon1, lat1, lon2, lat2",
     (f"pow(sin((lat1 + lat2) * {_HALF_RAD}), 2) + cos(lat1 * {_RAD}) * cos(lat2 * {_RAD}) * "
     f"pow(sin((180.0e0 - abs(qe__dra(lon2, lon1))) * {_HALF_RAD}), 2)")),
    # Within 90 degrees in both coordinates the angle is at most 120 degrees and
    # 2 asin(sqrt(h)) is accurate; the cheap test spares the second sum (DuckDB does
    # not share sub-expressions in filters, where angSep is mostly used).
    ("qe__angsep", "lon1, lat1, lon2, lat2",
     (f"CASE WHEN abs(lat2 - lat1) <= 90.0e0 AND abs(qe__dra(lon2, lon1)) <= 90.0e0 "
     f"THEN {_TWO_DEG} * asin(sqrt(qe__hav(lon1, lat1, lon2, lat2))) "
     f"ELSE least({_TWO_DEG} * atan2(sqrt(qe__hav(lon1, lat1, lon2, lat2)), "
     f"sqrt(qe__havc(lon1, lat1, lon2, lat2))), 180.0e0) END")),
    # Angle between two (not necessarily unit, finite) 3-vectors; 0 if both are zero.
    ("qe__angsep3", "x1, y1, z1, x2, y2, z2",
     (f"least({_DEG} * atan2(sqrt(pow(y1 * z2 - z1 * y2, 2) + pow(z1 * x2 - x1 * z2, 2) + "
     f"pow(x1 * y2 - y1 * x2, 2)), x1 * x2 + y1 * y2 + z1 * z2), 180.0e0)")),
    # Circle: sciSQL's fail-fast latitude test, then the haversine chord test.
    ("qe__circle", "lon, lat, lon0, lat0, r",
     ("CASE WHEN abs(lat - lat0) > r THEN false WHEN r >= 180.0e0 THEN true "
     f"ELSE qe__hav(lon0, lat0, lon, lat) <= pow(sin(r * {_HALF_RAD}), 2) END")),
    # sciSQL box rules (qengine.geometry.Box): latitude range, then full RA,
    # then range-reduced RA limits with wrap when lonMax < lonMin.
    ("qe__box_bad", "lon_min, lon_max",
     "lon_max < lon_min AND (lon_max < 0.0e0 OR lon_min > 360.0e0)"),
    ("qe__box", "lon, lat, lon_min, lat_min, lon_max, lat_max",
     ("CASE WHEN lat < lat_min OR lat > lat_max THEN false "
     "WHEN lon_max - lon_min >= 360.0e0 THEN true "
     "WHEN qe__angred(lon_min) <= qe__angred(lon_max) THEN "
     "qe__angred(lon) >= qe__angred(lon_min) AND qe__angred(lon) <= qe__angred(lon_max) "
     "ELSE qe__angred(lon) >= qe__angred(lon_min) OR qe__angred(lon) <= qe__angred(lon_max) END")),
    # Components of the unit vector of (lon, lat) in the frame at (lon0, lat0):
    # north, east and along the centre; written with differences so that they keep
    # their precision for positions close to the centre (qengine.geometry.Ellipse).
    ("qe__fn", "lon, lat, lon0, lat0",
     (f"sin((lat - lat0) * {_RAD}) + cos(lat * {_RAD}) * sin(lat0 * {_RAD}) * "
     f"2.0e0 * pow(sin(qe__dra(lon, lon0) * {_HALF_RAD}), 2)")),
    ("qe__fe", "lon, lat, lon0, lat0", f"cos(lat * {_RAD}) * sin(qe__dra(lon, lon0) * {_RAD})"),
    ("qe__fc", "lon, lat, lon0, lat0",
     (f"cos((lat - lat0) * {_RAD}) - cos(lat * {_RAD}) * cos(lat0 * {_RAD}) * "
     f"2.0e0 * pow(sin(qe__dra(lon, lon0) * {_HALF_RAD}), 2)")),
    # Ellipse, semi-axes in degrees (orthographic lengths M, m in radians after
    # conversion, as sciSQL), position angle in degrees east of north; requires the
    # centre's hemisphere. The first test is a cheap exact pre-filter: points inside
    # are within asin(M) of the centre.
    ("qe__ellipse", "lon, lat, lon0, lat0, major, minor, pa",
     (f"CASE WHEN abs(lat - lat0) > asin(least(major * {_RAD}, 1.0e0)) * {_DEG} + {_PAD} THEN false "
     "WHEN minor <= 0.0e0 THEN false "
     "WHEN qe__fc(lon, lat, lon0, lat0) <= 0.0e0 THEN false "
     f"ELSE pow(cos(pa * {_RAD}) * qe__fn(lon, lat, lon0, lat0) + "
     f"sin(pa * {_RAD}) * qe__fe(lon, lat, lon0, lat0), 2) * "
     f"(1.0e0 / ((major * {_RAD}) * (major * {_RAD}))) + "
     f"pow(cos(pa * {_RAD}) * qe__fe(lon, lat, lon0, lat0) - "
     f"sin(pa * {_RAD}) * qe__fn(lon, lat, lon0, lat0), 2) * "
     f"(1.0e0 / ((minor * {_RAD}) * (minor * {_RAD}))) <= 1.0e0 END")),
    # ADQL BOX: |east| <= tan(w/2) * centre and |north| <= tan(h/2) * centre,
    # written as |east| cos(w/2) <= centre sin(w/2) (also right for w = 180). The
    # box lies within its corners' distance atan(hypot(tan(w/2), tan(h/2))) <= 90
    # degrees of the centre: a cheap, exact latitude pre-filter.
    ("qe__adql_box", "lon, lat, lon0, lat0, width, height",
     (f"CASE WHEN abs(lat - lat0) > {_DEG} * atan(sqrt(pow(tan(width * {_HALF_RAD}), 2) + "
     f"pow(tan(height * {_HALF_RAD}), 2))) + {_PAD} THEN false "
     f"WHEN abs(qe__fe(lon, lat, lon0, lat0)) * cos(width * {_HALF_RAD}) > "
     f"qe__fc(lon, lat, lon0, lat0) * sin(width * {_HALF_RAD}) THEN false "
     f"ELSE abs(qe__fn(lon, lat, lon0, lat0)) * cos(height * {_HALF_RAD}) <= "
     f"qe__fc(lon, lat, lon0, lat0) * sin(height * {_HALF_RAD}) END")),
    # Side of (lon, lat) relative to the great circle v1 -> v2: the triple product
    # p . (v1 x v2), positive on the left (inside of a counter-clockwise polygon).
    # Expanded in longitude differences, which is cheaper than unit vectors (no
    # vertex appears twice) and keeps its precision for tiny polygons. Vertex-only
    # factors are grouped so that DuckDB folds them for literal vertices.
    ("qe__side", "lon, lat, lon1, lat1, lon2, lat2",
     (f"sin(lat * {_RAD}) * (cos(lat1 * {_RAD}) * cos(lat2 * {_RAD}) * sin((lon2 - lon1) * {_RAD})) + "
     f"cos(lat * {_RAD}) * (cos(lat1 * {_RAD}) * sin(lat2 * {_RAD}) * sin((lon1 - lon) * {_RAD}) + "
     f"sin(lat1 * {_RAD}) * cos(lat2 * {_RAD}) * sin((lon - lon2) * {_RAD}))")),
]


def _helper_sql(name: str, params: str, body: str) -> str:
    return f"CREATE OR REPLACE TEMP MACRO {name}({params}) AS {body}"


# Arguments are not CAST to DOUBLE: integer and decimal arguments are promoted by
# the DOUBLE literals they meet, and a CAST expression handed down into nested
# macros makes DuckDB's binding (at CREATE and at every query) many times slower.


def _call(name: str, params: list[str]) -> str:
    return f"{name}({', '.join(params)})"


def _any_null(params: list[str]) -> str:
    return " OR ".join(f"{p} IS NULL" for p in params)


def _all_finite(params: list[str]) -> str:
    return " AND ".join(f"isfinite({p})" for p in params)


def _lat_ok(params: list[str]) -> str:
    return " AND ".join(f"{p} BETWEEN -90.0e0 AND 90.0e0" for p in params)


def _predicate(params: list[str], valid: str, test: str, *, scisql: bool) -> str:
    """sciSQL INTEGER predicate (NULL -> 0, invalid -> NULL) or ADQL BOOLEAN (-> NULL)."""
    if scisql:
        return (f"CASE WHEN {_any_null(params)} THEN {_SCISQL_NULL_RESULT} "
                f"WHEN {valid} THEN CAST({test} AS INTEGER) ELSE NULL END")
    return f"CASE WHEN {valid} THEN {test} ELSE NULL END"


def _finite_or_null(expr: str) -> str:
    return f"CASE WHEN isfinite({expr}) THEN {expr} ELSE NULL END"


# --------------------------------------------------------------------------- public macros


def _angsep_body() -> str:
    p = ["lon1", "lat1", "lon2", "lat2"]
    four = (f"CASE WHEN {_all_finite(p)} AND {_lat_ok(['lat1', 'lat2'])} "
            f"THEN {_call('qe__angsep', p)} ELSE NULL END")
    v = ["x1", "y1", "z1", "x2", "y2", "z2"]
    six = f"CASE WHEN {_all_finite(v)} THEN {_call('qe__angsep3', v)} ELSE NULL END"
    return f"({', '.join(p)}) AS {four}, ({', '.join(v)}) AS {six}"


def _circle_body(scisql: bool) -> str:
    if scisql:
        p = ["lon", "lat", "centerLon", "centerLat", "radius"]
    else:
        p = ["ra", "dec", "ra0", "dec0", "radius"]
    valid = (f"{_all_finite(p)} AND {_lat_ok([p[1], p[3]])} AND "
             f"{p[4]} BETWEEN 0.0e0 AND 180.0e0")
    return f"({', '.join(p)}) AS " + _predicate(p, valid, _call("qe__circle", p), scisql=scisql)


def _box_body(scisql: bool) -> str:
    if scisql:
        p = ["lon", "lat", "lonMin", "latMin", "lonMax", "latMax"]
        order = p
    else:
        p = ["ra", "dec", "raMin", "raMax", "decMin", "decMax"]
        order = ["ra", "dec", "raMin", "decMin", "raMax", "decMax"]
    valid = (f"{_all_finite(p)} AND {_lat_ok([order[1], order[3], order[5]])} AND NOT "
             f"{_call('qe__box_bad', [order[2], order[4]])}")
    return f"({', '.join(p)}) AS " + _predicate(p, valid, _call("qe__box", order), scisql=scisql)


def _ellipse_body(scisql: bool) -> str:
    if scisql:
        p = ["lon", "lat", "centerLon", "centerLat",
             "semiMajorAxisAngle", "semiMinorAxisAngle", "positionAngle"]
        limit = "36000.0e0"
        args = p[:4] + [f"{p[4]} / 3600.0e0", f"{p[5]} / 3600.0e0", p[6]]
    else:
        p = ["ra", "dec", "ra0", "dec0", "semiMajorDeg", "semiMinorDeg", "positionAngleDeg"]
        limit = "10.0e0"
        args = p
    valid = (f"{_all_finite(p)} AND {_lat_ok([p[1], p[3]])} AND {p[5]} >= 0.0e0 AND "
             f"{p[5]} <= {p[4]} AND {p[4]} <= {limit}")
    test = f"qe__ellipse({', '.join(args)})"
    return f"({', '.join(p)}) AS " + _predicate(p, valid, test, scisql=scisql)


def _adql_box_body() -> str:
    p = ["ra", "dec", "raCen", "decCen", "width", "height"]
    valid = (f"{_all_finite(p)} AND {_lat_ok(['dec', 'decCen'])} AND "
             "width BETWEEN 0.0e0 AND 180.0e0 AND height BETWEEN 0.0e0 AND 180.0e0")
    return f"({', '.join(p)}) AS " + _predicate(p, valid, _call("qe__adql_box", p), scisql=False)


def _poly_params(n: int) -> list[str]:
    return ["lon", "lat"] + [f"{c}{i}" for i in range(1, n + 1) for c in ("lon", "lat")]


# Polygons: one overload per vertex count, in layers: public wrappers ->
# qe__cpoly<n> (sciSQL's NULL and validity rules, a latitude pre-filter, the
# orientation) -> qe__pchain<n> (the edge tests, given the orientation sign) ->
# qe__side. DuckDB binds (expands and optimises) every layer at each query; for
# literal vertices all vertex terms fold to constants, leaving per row a chain of
# "s * side < 0" tests that stops at the first edge the point is outside of.
# Binding costs ~1-2 ms per edge (~10-20 ms for 4 vertices, ~0.1 s for 30).


def _polygon_macros(n: int) -> tuple[str, str]:
    """(qe__cpoly<n>(lon, lat, lon1, lat1, ...), qe__pchain<n>(lon, lat, s, lon1, ...))."""
    p = _poly_params(n)
    verts = ",".join(p[2:])
    v = [f"lon{i},lat{i}" for i in range(1, n + 1)]
    whens = "".join(f" WHEN s*qe__side(lon,lat,{v[i]},{v[(i + 1) % n]})<0 THEN false" for i in range(n))
    chain = _helper_sql(f"qe__pchain{n}", f"lon,lat,s,{verts}", f"CASE{whens} ELSE true END")
    # Orientation as sciSQL: sign of (sum of vertices) . (v1 x v2), in which every
    # vertex other than v1, v2 has the same sign for a convex polygon; a few spread
    # vertices are enough (and keep it right when some are collinear with v1, v2).
    ks = sorted({3, (n + 3) // 2, n})
    orient = "+".join(f"qe__side({v[k - 1]},{v[0]},{v[1]})" for k in ks)
    # Cheap exact pre-filter on latitude: the polygon lies within its vertices'
    # latitude range widened by half its longest edge (an edge of length L rises at
    # most L/2 above its ends; L <= |dlat| + |dlon|), unless it encloses a pole,
    # which the longitude winding (+/-360 instead of 0) reveals.
    lats = ",".join(f"lat{i}" for i in range(1, n + 1))
    nxt = [(i, i % n + 1) for i in range(1, n + 1)]
    edges = ",".join(f"abs(lat{j}-lat{i})+abs(qe__dra(lon{j},lon{i}))" for i, j in nxt)
    winding = "+".join(f"qe__dra(lon{j},lon{i})" for i, j in nxt)
    centre = f"(greatest({lats})+least({lats}))*0.5e0"
    half = (f"(greatest({lats})-least({lats}))*0.5e0+greatest({edges})*0.5e0+{_PAD}"
            f"+CASE WHEN abs({winding})>180.0e0 THEN 180.0e0 ELSE 0.0e0 END")
    body = (f"CASE WHEN lon IS NULL OR lat IS NULL OR list_count([{verts}])<{2 * n} THEN {_SCISQL_NULL_RESULT} "
            f"WHEN qe__ok(lon,lat) AND qe__vok([{verts}]) THEN CAST("
            f"CASE WHEN abs(lat-{centre})>{half} THEN false "
            f"WHEN {orient}<0 THEN qe__pchain{n}(lon,lat,-1.0e0,{verts}) "
            f"ELSE qe__pchain{n}(lon,lat,1.0e0,{verts}) END AS INTEGER) ELSE NULL END")
    return _helper_sql(f"qe__cpoly{n}", ",".join(p), body), chain


def _polygon_body(scisql: bool) -> str:
    parts = []
    for n in range(MIN_POLYGON_VERTICES, MAX_POLYGON_VERTICES + 1):
        p = _poly_params(n)
        args = ",".join(p)
        if scisql:
            body = f"qe__cpoly{n}({args})"
        else:
            body = (f"CASE WHEN lon IS NULL OR lat IS NULL OR list_count([{','.join(p[2:])}])<{2 * n} "
                    f"THEN NULL ELSE qe__cpoly{n}({args})=1 END")
        parts.append(f"({args}) AS {body}")
    return ", ".join(parts)


def _phot(params: list[str], cond: str, expr: str) -> str:
    valid = _all_finite(params) + (f" AND {cond}" if cond else "")
    return f"({', '.join(params)}) AS CASE WHEN {valid} THEN {_finite_or_null(expr)} ELSE NULL END"


def _photometry() -> list[tuple[str, str]]:
    f, s, m, ms = "flux", "fluxSigma", "mag", "magSigma"
    return [
        ("scisql_fluxToAbMag", _phot(["flux"], f"{f} > 0.0e0", f"-2.5e0 * log10({f}) - 48.6e0")),
        ("scisql_fluxToAbMagSigma", _phot(["flux", "fluxSigma"], f"{f} > 0.0e0 AND {s} >= 0.0e0",
                                          f"{_MAG_PER_LN} * {s} / {f}")),
        ("scisql_abMagToFlux", _phot(["mag"], "", f"pow(10.0e0, -0.4e0 * ({m} + 48.6e0))")),
        ("scisql_abMagToFluxSigma", _phot(["mag", "magSigma"], f"{ms} >= 0.0e0",
                                          f"{ms} * pow(10.0e0, -0.4e0 * ({m} + 48.6e0)) * {_LN_PER_MAG}")),
        ("scisql_nanojanskyToAbMag", _phot(["flux"], f"{f} > 0.0e0", f"-2.5e0 * log10({f}) + 31.4e0")),
        ("scisql_nanojanskyToAbMagSigma", _phot(["flux", "fluxSigma"], f"{f} > 0.0e0 AND {s} >= 0.0e0",
                                                f"{_MAG_PER_LN} * {s} / {f}")),
        ("scisql_abMagToNanojansky", _phot(["mag"], "", f"pow(10.0e0, -0.4e0 * ({m} - 31.4e0))")),
        ("scisql_abMagToNanojanskySigma", _phot(["mag", "magSigma"], f"{ms} >= 0.0e0",
                                                f"{ms} * pow(10.0e0, -0.4e0 * ({m} - 31.4e0)) * {_LN_PER_MAG}")),
    ]


def _public() -> list[tuple[str, str]]:
    """(name, 'params AS body[, params AS body ...]') for every public macro."""
    dist = "(ra1, dec1, ra2, dec2) AS " + (
        f"CASE WHEN {_all_finite(['ra1', 'dec1', 'ra2', 'dec2'])} AND {_lat_ok(['dec1', 'dec2'])} "
        f"THEN {_call('qe__angsep', ['ra1', 'dec1', 'ra2', 'dec2'])} ELSE NULL END")
    return [
        ("scisql_angSep", _angsep_body()),
        ("scisql_s2PtInBox", _box_body(True)),
        ("scisql_s2PtInCircle", _circle_body(True)),
        ("scisql_s2PtInEllipse", _ellipse_body(True)),
        ("scisql_s2PtInCPoly", _polygon_body(True)),
        *_photometry(),
        ("qe_distance", dist),
        ("qe_in_circle", _circle_body(False)),
        ("qe_in_range_box", _box_body(False)),
        ("qe_in_adql_box", _adql_box_body()),
        ("qe_in_ellipse", _ellipse_body(False)),
        ("qe_in_polygon", _polygon_body(False)),
    ]


_POLY_ARGS = f"{MIN_POLYGON_VERTICES}..{MAX_POLYGON_VERTICES}"

#: Public SQL functions: name -> one-line description (signature, type, semantics).
SQL_FUNCTIONS: dict[str, str] = {
    "scisql_angSep":
        "scisql_angSep(lon1, lat1, lon2, lat2) | (x1, y1, z1, x2, y2, z2) -> DOUBLE: angular "
        "separation in degrees (positions in degrees, or 3-vectors of any norm); accurate for tiny "
        "and near-180-degree angles; NULL if any argument is NULL/NaN/Inf or a lat is outside [-90, 90]",
    "scisql_s2PtInBox":
        "scisql_s2PtInBox(lon, lat, lonMin, latMin, lonMax, latMax) -> INTEGER 1/0: point in the "
        "lon/lat box, edges inclusive, wraps through RA 0 when lonMax < lonMin (both in [0, 360]), "
        "full RA when lonMax - lonMin >= 360; empty when latMin > latMax; NULL argument -> 0",
    "scisql_s2PtInCircle":
        "scisql_s2PtInCircle(lon, lat, centerLon, centerLat, radius) -> INTEGER 1/0: point within "
        "radius degrees (0..180) of the centre, inclusive; NULL argument -> 0",
    "scisql_s2PtInEllipse":
        "scisql_s2PtInEllipse(lon, lat, centerLon, centerLat, semiMajorAxisAngle, "
        "semiMinorAxisAngle, positionAngle) -> INTEGER 1/0: semi-axes in arcsec "
        "(0 <= minor <= major <= 36000), position angle in degrees east of north; sciSQL's "
        "orthographic test on the centre's hemisphere; NULL argument -> 0",
    "scisql_s2PtInCPoly":
        f"scisql_s2PtInCPoly(lon, lat, lon1, lat1, ..., lonN, latN) -> INTEGER 1/0: point in the "
        f"convex spherical polygon with N = {_POLY_ARGS} vertices in either order (great-circle "
        f"edges, inclusive); NULL argument -> 0",
    "scisql_fluxToAbMag":
        "scisql_fluxToAbMag(flux) -> DOUBLE: AB magnitude -2.5 log10(flux) - 48.6 of a flux in "
        "erg/cm^2/s/Hz; NULL if flux <= 0 or NULL/NaN/Inf",
    "scisql_fluxToAbMagSigma":
        "scisql_fluxToAbMagSigma(flux, fluxSigma) -> DOUBLE: AB magnitude error "
        "2.5/ln(10) * fluxSigma / flux (erg/cm^2/s/Hz); NULL if flux <= 0 or fluxSigma < 0",
    "scisql_abMagToFlux":
        "scisql_abMagToFlux(mag) -> DOUBLE: flux 10^(-0.4 (mag + 48.6)) in erg/cm^2/s/Hz; NULL if mag "
        "is NULL/NaN/Inf or the flux overflows",
    "scisql_abMagToFluxSigma":
        "scisql_abMagToFluxSigma(mag, magSigma) -> DOUBLE: flux error "
        "magSigma * abMagToFlux(mag) * ln(10)/2.5 in erg/cm^2/s/Hz; NULL if magSigma < 0",
    "scisql_nanojanskyToAbMag":
        "scisql_nanojanskyToAbMag(flux) -> DOUBLE: AB magnitude -2.5 log10(flux) + 31.4 of a flux "
        "in nJy; NULL if flux <= 0 or NULL/NaN/Inf",
    "scisql_nanojanskyToAbMagSigma":
        "scisql_nanojanskyToAbMagSigma(flux, fluxSigma) -> DOUBLE: AB magnitude error "
        "2.5/ln(10) * fluxSigma / flux (nJy); NULL if flux <= 0 or fluxSigma < 0",
    "scisql_abMagToNanojansky":
        "scisql_abMagToNanojansky(mag) -> DOUBLE: flux 10^(-0.4 (mag - 31.4)) in nJy; NULL if mag is "
        "NULL/NaN/Inf or the flux overflows",
    "scisql_abMagToNanojanskySigma":
        "scisql_abMagToNanojanskySigma(mag, magSigma) -> DOUBLE: flux error "
        "magSigma * abMagToNanojansky(mag) * ln(10)/2.5 in nJy; NULL if magSigma < 0",
    "qe_distance":
        "qe_distance(ra1, dec1, ra2, dec2) -> DOUBLE: ADQL DISTANCE in degrees (= scisql_angSep)",
    "qe_in_circle":
        "qe_in_circle(ra, dec, ra0, dec0, radius) -> BOOLEAN: ADQL CONTAINS(POINT, CIRCLE), radius "
        "in degrees (0..180), inclusive; NULL if any argument is NULL or invalid",
    "qe_in_range_box":
        "qe_in_range_box(ra, dec, raMin, raMax, decMin, decMax) -> BOOLEAN: RA/Dec range with "
        "scisql_s2PtInBox rules (inclusive, RA wrap when raMax < raMin); NULL if any argument is NULL",
    "qe_in_adql_box":
        "qe_in_adql_box(ra, dec, raCen, decCen, width, height) -> BOOLEAN: ADQL BOX(center, width, "
        "height), a quadrilateral with great-circle sides (gnomonic |x| <= tan(width/2), "
        "|y| <= tan(height/2) at the centre, x east, y north), width/height in [0, 180] degrees",
    "qe_in_ellipse":
        "qe_in_ellipse(ra, dec, ra0, dec0, semiMajorDeg, semiMinorDeg, positionAngleDeg) -> BOOLEAN: "
        "scisql_s2PtInEllipse with the semi-axes in degrees (0 <= minor <= major <= 10)",
    "qe_in_polygon":
        f"qe_in_polygon(ra, dec, ra1, dec1, ..., raN, decN) (N = {_POLY_ARGS}) -> BOOLEAN: "
        "ADQL CONTAINS(POINT, POLYGON), convex, either vertex order, edges inclusive; NULL if any "
        "argument is NULL or invalid",
}


def _entries() -> list[tuple[str, str]]:
    """(macro name, CREATE statement), every callee before its callers."""
    out = [(name, _helper_sql(name, params, body)) for name, params, body in _HELPERS]
    for n in range(MIN_POLYGON_VERTICES, MAX_POLYGON_VERTICES + 1):
        cpoly, chain = _polygon_macros(n)
        out += [(f"qe__pchain{n}", chain), (f"qe__cpoly{n}", cpoly)]
    out += [(name, f"CREATE OR REPLACE TEMP MACRO {name}{body}") for name, body in _public()]
    return out


_ENTRIES = _entries()
_CALL = re.compile(r"\b(qe__\w+|qe_\w+|scisql_\w+)\s*\(", re.IGNORECASE)


def _closures() -> dict[str, frozenset[int]]:
    """Public name (lower case) -> indices of the statements it needs, itself included."""
    index = {name.lower(): i for i, (name, _) in enumerate(_ENTRIES)}
    calls = [{index[m.lower()] for m in _CALL.findall(sql.split(" AS ", 1)[1]) if m.lower() in index}
             for _, sql in _ENTRIES]
    out: dict[str, frozenset[int]] = {}
    for name in SQL_FUNCTIONS:
        todo, seen = [index[name.lower()]], set()
        while todo:
            i = todo.pop()
            if i not in seen:
                seen.add(i)
                todo.extend(calls[i])
        out[name.lower()] = frozenset(seen)
    return out


_CLOSURES = _closures()
_parsed = threading.local()


def macro_sql() -> list[str]:
    """The ``CREATE OR REPLACE TEMP MACRO`` statements, in executable order (callees first)."""
    return [sql for _, sql in _ENTRIES]


def _statements() -> list:
    """The statements, parsed once per thread: parsing is about half the cost of
    creating these macros, and a parsed statement can be run on any connection."""
    stmts = getattr(_parsed, "stmts", None)
    if stmts is None:
        scratch = duckdb.connect()
        try:
            stmts = scratch.extract_statements(";\n".join(macro_sql()))
        finally:
            scratch.close()
        if len(stmts) != len(_ENTRIES):  # pragma: no cover - parser disagreement
            stmts = macro_sql()
        _parsed.stmts = stmts
    return stmts


def needed_statements(sql: str | None = None) -> list[int]:
    """Indices into :func:`macro_sql` of the statements ``sql`` needs (all if None)."""
    if sql is None:
        return list(range(len(_ENTRIES)))
    text = sql.lower()
    keep: set[int] = set()
    for name, closure in _CLOSURES.items():
        if name in text:
            keep |= closure
    return sorted(keep)


def register(con: duckdb.DuckDBPyConnection, *, sql: str | None = None, persistent: bool = False) -> None:
    """Create the functions on ``con`` (idempotent; TEMP macros, so per connection).

    With ``sql``, only the functions whose names occur in that text (and the
    helpers they use) are created: a few milliseconds instead of ~0.1 s for all
    of them, most of it the 28 polygon overloads of each polygon function.
    With ``persistent``, the macros live in the database's catalogue, so every
    cursor of it sees them (workers and the czar run each query on a cursor).
    """
    if persistent:
        texts = macro_sql()
        for i in needed_statements(sql):
            con.execute(texts[i].replace(" TEMP MACRO ", " MACRO ", 1))
        return
    stmts = _statements()
    for i in needed_statements(sql):
        con.execute(stmts[i])
