"""Crossmatch of external catalogues against partitioned director tables (issue 8).

* :func:`answer_crossmatch` - the czar's hook: ADQL/Qserv SQL joining ``TAP_UPLOAD.x`` with a
  director table by ``CONTAINS(POINT, CIRCLE)`` / ``DISTANCE < r`` (None for anything else);
* :func:`crossmatch` - the Python API (all or nearest matches, inner or outer, separation in arcsec);
* ``czar.crossmatch.cli`` - ``qengine xmatch``.

Modules: ``detect`` (the planner), ``placement`` (external rows into chunks), ``cells`` (zones and
RA bins in SQL), ``algorithms`` (one class per match algorithm), ``execute`` (the distributed
glue), ``limits`` (radius/upload checks), ``io`` (table files), ``cli``.
"""
from czar.crossmatch.execute import SEPARATION, answer_crossmatch, crossmatch
from czar.crossmatch.limits import max_radius

__all__ = ["SEPARATION", "answer_crossmatch", "crossmatch", "max_radius"]
