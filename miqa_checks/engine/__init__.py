"""The engine package: plan (cells -> keyed requests -> batches), workers (xdist sharing,
heartbeats), pipeline (preparation pool -> judge -> store), prepare (condition images and judge
inputs), store (the SQLite result store), keys (store keys), images / models (data and judges of
the run), rows (report rows).
:class:`Engine` composes them and is what the plugin uses.

Names load on first use, so that a preparation process, which imports ``engine.prepare`` only,
does not import the engine, the store and their dependencies.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Engine": "core", "image_hash": "keys", "MAX_BATCH_IMAGE_BYTES": "plan", "WorkItem": "plan",
    "HEARTBEAT_EVERY_S": "workers", "STALE_AFTER_S": "workers", "ResultStore": "store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
