"""What one crossmatch is: the catalogue, the external table's position columns, the radius, the
exact match predicate and the catalogue columns to bring back (shared by the SQL and API paths)."""
from __future__ import annotations

from dataclasses import dataclass, field

from czar.metadata import TableInfo

__all__ = ["CHUNKS", "SEP", "UPLOAD", "XID", "ZONES", "MatchJob", "quote"]

XID = "__xm_xid"      # the external row's index, carried through the worker and back
SEP = "__xm_sep"      # separation in degrees, computed in the worker
UPLOAD = "__xm"       # the name the external rows are shipped under (TAP_UPLOAD.__xm)
ZONES = "__xm_zones"  # the zones they occupy, with the zones' binning
CHUNKS = "__xm_chunks"  # the worker's chunks with external rows (sent when it visits many without)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class MatchJob:
    table: TableInfo                 # the partitioned director table matched against
    radius: float                    # degrees
    ext_ra: str                      # position columns of the external table (exact names)
    ext_dec: str
    ext_alias: str = "__xm_e"        # aliases the worker SQL gives the two sides
    cat_alias: str = "__xm_c"
    predicate: str | None = None     # DuckDB condition deciding a match (None: within radius)
    pushed: list[str] = field(default_factory=list)   # catalogue-only conditions (DuckDB SQL)
    columns: list[str] = field(default_factory=list)  # catalogue columns to return (exact names)

    @property
    def cat_ra(self) -> str:
        return self.table.manifest.ra_column

    @property
    def cat_dec(self) -> str:
        return self.table.manifest.dec_column

    @property
    def cat_id(self) -> str | None:
        return self.table.manifest.id_column

    def match_condition(self) -> str:
        if self.predicate is not None:
            return self.predicate
        c, e = quote(self.cat_alias), quote(self.ext_alias)
        return (f"qe_in_circle({c}.{quote(self.cat_ra)}, {c}.{quote(self.cat_dec)}, "
                f"{e}.{quote(self.ext_ra)}, {e}.{quote(self.ext_dec)}, {float(self.radius)!r})")

    def separation(self) -> str:
        c, e = quote(self.cat_alias), quote(self.ext_alias)
        return (f"qe_distance({e}.{quote(self.ext_ra)}, {e}.{quote(self.ext_dec)}, "
                f"{c}.{quote(self.cat_ra)}, {c}.{quote(self.cat_dec)})")
