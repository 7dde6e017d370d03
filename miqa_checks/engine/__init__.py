"""The engine package: plan (cells -> keyed requests -> batches), workers (xdist sharing,
heartbeats), pipeline (preparation pool -> judge -> store), prepare (condition images and judge
inputs), keys (store keys), images / models (data and judges of the run), rows (report rows).
:class:`Engine` composes them and is what the plugin uses."""

from .core import Engine
from .keys import image_hash
from .plan import MAX_BATCH_IMAGE_BYTES, WorkItem
from .workers import HEARTBEAT_EVERY_S, STALE_AFTER_S

__all__ = ["HEARTBEAT_EVERY_S", "MAX_BATCH_IMAGE_BYTES", "STALE_AFTER_S", "Engine", "WorkItem", "image_hash"]
