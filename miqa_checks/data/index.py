"""A small persistent index of decoded images, kept next to the result store.

A warm rerun must not decode every image again only to key its requests. The index maps

- a file (named by a hash of its resolved path: the index holds no local path) and its
  identity (inode, size, ``mtime_ns``, ``ctime_ns``) to its content hash (sha256 of its
  bytes), so an unchanged file is not even read; a file changed within two seconds of being
  hashed is hashed again (its times may not have moved), and a write always moves ``ctime``;
- (content hashes of the image's files, reader version, where the image lies in them) to what
  the engine needs without pixels: the pixel digest (:func:`pixel_digest`), bytes, shape, dtype,
  and the group the file names (a DICOM's patient / study as the keyed hash the record carries,
  never the value; the key's locator holds the source's hashing key, so another source folder
  gets its own entries).

Freshness rule (as git's index): a file whose (inode, size, ``mtime_ns``, ``ctime_ns``) all
equal those recorded when it was hashed is trusted to hold the same bytes, unless that
``ctime`` was within ``RACY_NS`` of the hashing (then it is hashed again). Any write moves
``mtime`` and ``ctime``, and ``ctime`` cannot be set back (``touch -d``/``os.utime`` move it
too), so an edit that keeps the size and restores the ``mtime`` is still detected; a file that
is hashed again but has the same bytes keeps its image entries (nothing is decoded).

The reader version (:func:`reader_version`) hashes this package's data-layer source and the
versions of the decoding libraries, so a changed reader invalidates every entry. Only images
that decoded are indexed (an unreadable file is tried again next run). A damaged or foreign
index is ignored and rebuilt; writes are atomic (temp file, ``os.replace``) and merge what
another process wrote meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

INDEX_NAME = "images.index.json"
FORMAT = 2
#: Packages whose version changes what a file decodes to.
DECODERS = ("numpy", "pillow", "pydicom", "nibabel", "scikit-image")
#: A file whose ``ctime`` is this close to when it was hashed is hashed again (racy write).
RACY_NS = 2_000_000_000


def pixel_digest(image: np.ndarray) -> str:
    """sha256 over shape, dtype and bytes of an image (the request keys' image identity)."""
    digest = hashlib.sha256(f"{image.shape}|{image.dtype}|".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ImageFacts:
    """What keys and batches need of a decoded image: pixel digest, bytes, shape (H, W[, 3]), dtype;
    group: the group its file names (keyed hash, see ``groups``), "" when none."""

    digest: str
    nbytes: int
    shape: tuple[int, ...]
    dtype: str
    group: str = ""

    @classmethod
    def of(cls, image: np.ndarray, group: str = "") -> "ImageFacts":
        return cls(pixel_digest(image), int(image.nbytes), tuple(int(s) for s in image.shape), str(image.dtype), group)

    def to_json(self) -> list[Any]:
        return [self.digest, self.nbytes, list(self.shape), self.dtype, self.group]

    @classmethod
    def from_json(cls, value: Any) -> "ImageFacts | None":
        """None when ``value`` is not a well-formed entry."""
        if not (isinstance(value, list) and len(value) == 5):
            return None
        digest, nbytes, shape, dtype, group = value
        if not (isinstance(digest, str) and len(digest) == 64 and isinstance(nbytes, int) and isinstance(dtype, str)
                and isinstance(shape, list) and all(isinstance(s, int) and s > 0 for s in shape)
                and isinstance(group, str)):
            return None
        return cls(digest, nbytes, tuple(shape), dtype, group)


def reader_version() -> str:
    """sha256 of this data layer's source files and the decoders' versions (see module doc)."""
    from importlib import metadata

    digest = hashlib.sha256()
    folder = Path(__file__).parent
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for name in DECODERS:
        try:
            digest.update(f"{name}={metadata.version(name)}\0".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name}=-\0".encode())
    return digest.hexdigest()


def path_key(name: str) -> str:
    """The index's name for a resolved file path: a hash of it (the index holds no local path)."""
    return hashlib.blake2b(name.encode("utf-8", "surrogatepass"), person=b"miqa-index-path", digest_size=16).hexdigest()


def _file_entry(value: Any) -> tuple[list[int], str, int] | None:
    if not (isinstance(value, list) and len(value) == 3):
        return None
    stat, sha, checked = value
    if not (isinstance(stat, list) and len(stat) == 4 and all(isinstance(x, int) for x in stat)
            and isinstance(sha, str) and len(sha) == 64 and isinstance(checked, int)):
        return None
    return stat, sha, checked


class ImageIndex:
    """The index file ``<folder>/images.index.json``; ``folder`` None: in memory only."""

    def __init__(self, folder: Path | None) -> None:
        self.path = folder / INDEX_NAME if folder is not None else None
        self.version = reader_version()
        self._files: dict[str, list[Any]] = {}
        self._images: dict[str, list[Any]] = {}
        self._dirty = False
        self._read()

    def _read(self) -> None:
        """Load the file; anything unreadable or foreign is ignored (the index is rebuilt)."""
        files, images = self._load()
        self._files = {k: v for k, v in files.items() if _file_entry(v) is not None}
        self._images = {k: v for k, v in images.items() if ImageFacts.from_json(v) is not None}

    def _load(self) -> tuple[dict[str, Any], dict[str, Any]]:
        if self.path is None:
            return {}, {}
        try:
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return {}, {}
        if not (isinstance(data, dict) and data.get("format") == FORMAT and data.get("reader") == self.version):
            return {}, {}
        files, images = data.get("files"), data.get("images")
        return (files if isinstance(files, dict) else {}), (images if isinstance(images, dict) else {})

    def content_hash(self, path: Path) -> str:
        """sha256 of the file's bytes (not read again while its identity is unchanged); OSError
        when it cannot be read."""
        name = str(Path(path).resolve())
        st = os.stat(name)
        stat = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        where = path_key(name)
        known = _file_entry(self._files.get(where))
        if known is not None and known[0] == stat and st.st_ctime_ns < known[2] - RACY_NS:
            return known[1]
        digest = hashlib.sha256()
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        sha = digest.hexdigest()
        self._files[where] = [stat, sha, time.time_ns()]
        self._dirty = True
        return sha

    def key(self, files: Iterable[Path], locator: str) -> str:
        """The entry key of an image: its files' content hashes and where it lies in them."""
        return hashlib.sha256("\0".join([*(self.content_hash(p) for p in files), locator]).encode()).hexdigest()

    def get(self, key: str) -> ImageFacts | None:
        return ImageFacts.from_json(self._images.get(key))

    def put(self, key: str, facts: ImageFacts) -> None:
        if self._images.get(key) != facts.to_json():
            self._images[key] = facts.to_json()
            self._dirty = True

    def save(self) -> None:
        """Write the index atomically if it changed, merged with what another process wrote
        meanwhile (best effort: a folder that cannot be written keeps the index in memory)."""
        if self.path is None or not self._dirty:
            return
        from ..safe_io import atomic_write_text

        files, images = self._load()
        files.update(self._files)
        images.update(self._images)
        data = {"format": FORMAT, "reader": self.version, "files": files, "images": images}
        try:
            atomic_write_text(self.path, json.dumps(data, sort_keys=True))
        except OSError:
            return
        self._dirty = False
