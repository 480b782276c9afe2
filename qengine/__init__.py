"""qengine: a Qserv-compatible distributed query engine for astronomical catalogues.

The core (chunker, geometry, catalogue metadata, config) imports none of the
partitioner, worker or czar. ``qengine.connect`` and ``qengine.LocalCluster`` are
resolved lazily so that importing the core never imports the czar.
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "connect": ("czar.client", "connect"),
    "LocalCluster": ("czar.local", "LocalCluster"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # the czar has not been built yet
            raise AttributeError(f"qengine.{name} is not available: {exc}") from exc
        return getattr(module, attr)
    raise AttributeError(f"module 'qengine' has no attribute {name!r}")


__all__ = ["__version__", "connect", "LocalCluster"]
