"""The run's images: datasets loaded once per process (the same choice in every worker)."""

from __future__ import annotations

from typing import Any

from ..config import Settings
from ..records import ImageRecord
from .keys import image_hash


class Images:
    """Dataset name -> chosen readable images, their records and content hashes; data errors."""

    def __init__(self, settings: Settings, errors: list[dict[str, str]]) -> None:
        self.settings = settings
        self.errors = errors  # the engine's error records; data errors are appended
        self._datasets: dict[str, Any] | None = None
        self.records: dict[tuple[str, str], ImageRecord] = {}
        self._hashes: dict[tuple[str, str], str] = {}

    def datasets(self) -> dict[str, Any]:
        """Dataset name -> ``miqa_checks.data.Dataset`` (loaded on first use)."""
        if self._datasets is None:
            from ..data import load_all

            loaded = load_all(list(self.settings.data), max_images=self.settings["max_images"], seed=self.settings.seed)
            self._datasets = {d.name: d for d in loaded}
            for d in loaded:
                for r in d.records:
                    self.records[(d.name, r.image_id)] = r
                self.errors.extend(
                    {"model": "", "dataset": e.dataset, "file_or_image": e.file, "stage": "data", "reason": e.reason}
                    for e in d.errors
                )
        return self._datasets

    def image_ids(self, dataset: str) -> list[str]:
        """The chosen readable images of a dataset, sorted."""
        d = self.datasets().get(dataset)
        return sorted(r.image_id for r in d.records) if d is not None else []

    def modality(self, dataset: str) -> str:
        return self.datasets()[dataset].modality

    def record(self, dataset: str, image_id: str) -> ImageRecord:
        return self.records[(dataset, image_id)]

    def hash(self, dataset: str, image_id: str) -> str:
        """The image's content hash (computed once per process)."""
        key = (dataset, image_id)
        if key not in self._hashes:
            self._hashes[key] = image_hash(self.records[key].image)
        return self._hashes[key]
