"""TAP 1.1 front end of the czar (sync, async/UWS 1.1, VOSI, TAP_SCHEMA, uploads).

``TapService(czar, job_dir).routes()`` gives the Starlette routes under ``/tap``;
``czar.server`` puts them in the czar's ASGI app next to ``/api/v1``."""
from __future__ import annotations

from czar.tap.app import TapService
from czar.tap.params import Limits

__all__ = ["Limits", "TapService"]
