"""Lazy, row-by-row access to the ``images`` array of an ``.npz`` file.

Members stored uncompressed (``np.savez``) are memory-mapped straight from the zip; compressed
ones (``np.savez_compressed``) are streamed: ``take`` inflates the member once, in order, and
keeps only the rows asked for, so memory holds those rows and one read step, never the whole
array (a small npz of zeros may declare gigabytes). Every row is bounded by the header before
anything is read: at most ``MAX_PIXELS`` pixels and ``MAX_FILE_DECODED_BYTES`` bytes.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np

from .validate import ImageError, check_decoded_bytes, check_header_size, describe

_LOCAL_HEADER = 30
_READ_STEP = 16 * 1024**2
"""Bytes inflated and discarded per read while skipping to a row."""
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
_MEMBER = "images.npy"


def _check_header(shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Refuse what the reader cannot stream or a row over the per-image limits (header only)."""
    if dtype.hasobject:
        raise ImageError("npz array holds Python objects (refused)")
    if dtype != np.uint8 or len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3, 4)):
        raise ImageError(f"npz 'images' is {dtype} {tuple(shape)} (expected uint8 N x H x W x 3)")
    check_header_size(int(shape[2]), int(shape[1]))
    check_decoded_bytes(float(np.prod(shape[1:], dtype=np.float64)), "one npz row")


class Rows:
    """The ``images`` array of one npz: ``len``, ``shape``, ``dtype``, ``ndim``, ``rows[i]``
    (one H x W [x C] uint8 copy), ``rows[a:b]`` and ``take(indices)``. Read failures of any kind
    are ``ImageError``."""

    def __init__(self, path: str, shape: tuple[int, ...], mapped: np.ndarray | None) -> None:
        self.path = path
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(np.uint8)
        self.ndim = len(self.shape)
        self._mapped = mapped
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: int | slice) -> np.ndarray:
        if isinstance(key, slice):
            wanted = range(*key.indices(len(self)))
            got = self.take(wanted)
            return np.stack([got[i] for i in wanted]) if wanted else np.empty((0, *self.shape[1:]), np.uint8)
        index = int(key)
        if not 0 <= index < len(self):
            raise IndexError(f"npz has {len(self)} images, no index {index}")
        return self.take([index])[index]

    def take(self, indices: Iterable[int]) -> dict[int, np.ndarray]:
        """{index: row copy} for valid ``indices`` (one pass over a compressed member)."""
        wanted = sorted({int(i) for i in indices if 0 <= int(i) < len(self)})
        try:
            if self._mapped is not None:
                return {i: np.array(self._mapped[i]) for i in wanted}
            return self._stream(wanted)
        except ImageError:
            raise
        except Exception as exc:  # noqa: BLE001 - zlib, CRC, I/O errors of any kind
            raise ImageError(f"corrupt npz ({describe(exc, 80)})") from None

    def _stream(self, wanted: list[int]) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        if not wanted:
            return out
        with zipfile.ZipFile(self.path) as zf, zf.open(_MEMBER) as stream:
            version = np.lib.format.read_magic(stream)
            _HEADER_READERS[version](stream)
            position = 0
            for index in wanted:
                _skip(stream, (index - position) * self._row_bytes)
                data = stream.read(self._row_bytes)
                if len(data) != self._row_bytes:
                    raise ImageError("truncated npz (array shorter than its header says)")
                out[index] = np.frombuffer(data, np.uint8).reshape(self.shape[1:]).copy()
                position = index + 1
        return out


def _skip(stream, nbytes: int) -> None:  # noqa: ANN001 - a zipfile.ZipExtFile
    """Inflate and discard ``nbytes`` of ``stream`` in steps of ``_READ_STEP``."""
    while nbytes > 0:
        got = len(stream.read(min(nbytes, _READ_STEP)))
        if got == 0:
            raise ImageError("truncated npz (array shorter than its header says)")
        nbytes -= got


@lru_cache(maxsize=64)
def _open(path: str, stamp: tuple[int, int]) -> Rows:
    """Read the header of ``images.npy`` in the zip at ``path`` (``stamp``: mtime, size, keys the cache)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(_MEMBER)
        with zf.open(info) as stream:
            version = np.lib.format.read_magic(stream)
            read_header = _HEADER_READERS.get(version)
            if read_header is None:
                raise ImageError(f"npz array uses .npy format {version} (unsupported)")
            shape, fortran, dtype = read_header(stream)
            header_len = stream.tell()
    _check_header(shape, dtype)
    count = int(np.prod(shape, dtype=np.int64))
    if info.file_size < header_len + count:
        raise ImageError("truncated npz (array shorter than its header says)")
    if info.compress_type != zipfile.ZIP_STORED:
        if fortran and shape[0] > 1:
            raise ImageError("compressed npz 'images' in Fortran order (rows not contiguous; unsupported)")
        rows = Rows(path, shape, None)
        rows.take([0])  # the first row must inflate: a broken stream is reported when opened
        return rows
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(_LOCAL_HEADER)
        if local[:4] != b"PK\x03\x04":
            raise ImageError("corrupt npz (bad zip entry header)")
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        offset = info.header_offset + _LOCAL_HEADER + name_len + extra_len + header_len
    if offset + count > Path(path).stat().st_size:
        raise ImageError("truncated npz (array runs past the end of the file)")
    mapped = np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=tuple(shape), order="F" if fortran else "C")
    return Rows(path, shape, mapped)


def images(path: Path) -> Rows:
    """The ``images`` array of ``path`` (N x H x W [x C], uint8), rows read lazily; ImageError
    naming the problem (checked: zip, header, row size, declared length, first row)."""
    try:
        stat = path.stat()
        return _open(str(path), (stat.st_mtime_ns, stat.st_size))
    except ImageError:
        raise
    except KeyError:
        raise ImageError("npz has no 'images' array") from None
    except Exception as exc:  # noqa: BLE001 - zip, zlib, npy header errors of any kind
        raise ImageError(f"corrupt npz ({describe(exc, 80)})") from None
