"""The run's images: chosen once per process (the same choice in every worker), decoded only
when their pixels are needed.

Keys and batches need an image's pixel digest and size only: with a result store, they come from
the image index next to it (``data.index``), so a warm rerun whose results are all stored
decodes no image (``data.lazy``).
"""

from __future__ import annotations

from typing import Any

from ..config import Settings
from ..records import ImageRecord


class Images:
    """Dataset name -> chosen readable images (their records, digests, sizes, groups); data errors."""

    def __init__(self, settings: Settings, errors: list[dict[str, str]]) -> None:
        self.settings = settings
        self.errors = errors  # the engine's error records; data errors are appended
        self._chosen: dict[str, Any] | None = None  # dataset -> data.lazy.LazyDataset
        self._by_id: dict[tuple[str, str], Any] = {}  # (dataset, image_id) -> data.lazy.LazyImage
        self._ids: dict[str, list[str]] = {}
        self._datasets: dict[str, Any] | None = None

    def load(self) -> dict[str, Any]:
        """Dataset name -> ``data.lazy.LazyDataset`` (chosen on first use; the index saved)."""
        if self._chosen is None:
            from ..data.index import ImageIndex
            from ..data.lazy import load_lazy

            index = ImageIndex(self.settings.cache_dir)
            loaded = load_lazy(list(self.settings.data), max_images=self.settings["max_images"], seed=self.settings.seed,
                               index=index)
            index.save()
            self._chosen = {d.name: d for d in loaded}
            for d in loaded:
                self._ids[d.name] = [i.image_id for i in d.images]
                self._by_id.update(((d.name, i.image_id), i) for i in d.images)
                self.errors.extend(
                    {"model": "", "dataset": e.dataset, "file_or_image": e.file, "stage": "data", "reason": e.reason}
                    for e in d.errors
                )
        return self._chosen

    def datasets(self) -> dict[str, Any]:
        """Dataset name -> ``miqa_checks.data.Dataset``, every chosen image decoded."""
        if self._datasets is None:
            self._datasets = {name: d.dataset() for name, d in self.load().items()}
        return self._datasets

    def image_ids(self, dataset: str) -> list[str]:
        """The chosen readable images of a dataset, sorted (the same list on every call: do not modify)."""
        if self._chosen is None:
            self.load()
        return self._ids.get(dataset, [])

    def modality(self, dataset: str) -> str:
        return self.load()[dataset].modality

    def record(self, dataset: str, image_id: str) -> ImageRecord:
        """The decoded image (decoded on first use)."""
        return self._image(dataset, image_id).record()

    def hash(self, dataset: str, image_id: str) -> str:
        """The image's pixel digest (``data.index.pixel_digest``), without decoding when indexed."""
        return self._image(dataset, image_id).facts.digest

    def nbytes(self, dataset: str, image_id: str) -> int:
        """The decoded image's size in bytes, without decoding when indexed."""
        return self._image(dataset, image_id).facts.nbytes

    def group(self, dataset: str, image_id: str) -> str:
        """The image's group (source file, clip, patient), without decoding."""
        return self._image(dataset, image_id).group

    def _image(self, dataset: str, image_id: str) -> Any:
        if self._chosen is None:
            self.load()
        return self._by_id[(dataset, image_id)]
