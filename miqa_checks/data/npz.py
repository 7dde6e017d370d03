"""Lazy access to the ``images`` array of an ``.npz`` file.

Members stored uncompressed (``np.savez``) are memory-mapped straight from the zip; compressed
ones (``np.savez_compressed``) are read once and cached (a few files at a time).
"""

from __future__ import annotations

import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from .validate import ImageError, describe

_LOCAL_HEADER = 30
MAX_LOADED_BYTES = 4 * 1024**3
"""Largest compressed npz member read into memory, in bytes."""
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


@lru_cache(maxsize=64)
def _mapped(path: str, member: str, stamp: tuple[int, int]) -> np.ndarray:
    """Memory-map ``member`` (a stored .npy) of the zip at ``path`` (``stamp``: mtime, size)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED:
            return _loaded(path, member, stamp)
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(_LOCAL_HEADER)
        if local[:4] != b"PK\x03\x04":
            raise ImageError("corrupt npz (bad zip entry header)")
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        fh.seek(info.header_offset + _LOCAL_HEADER + name_len + extra_len)
        version = np.lib.format.read_magic(fh)
        read_header = _HEADER_READERS.get(version)
        if read_header is None:
            return _loaded(path, member, stamp)
        shape, fortran, dtype = read_header(fh)
        offset = fh.tell()
    if dtype.hasobject:
        raise ImageError("npz array holds Python objects (refused)")
    count = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if offset + count > Path(path).stat().st_size:
        raise ImageError("truncated npz (array runs past the end of the file)")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


@lru_cache(maxsize=4)
def _loaded(path: str, member: str, stamp: tuple[int, int]) -> np.ndarray:
    """Read a compressed member fully (no pickles; ``stamp`` keys the cache on mtime, size)."""
    with zipfile.ZipFile(path) as zf, zf.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        read_header = _HEADER_READERS.get(version)
        if read_header is None:
            raise ImageError(f"npz array uses .npy format {version} (unsupported)")
        shape, fortran, dtype = read_header(stream)
        if dtype.hasobject:
            raise ImageError("npz array holds Python objects (refused)")
        count = int(np.prod(shape, dtype=np.int64))
        if count * dtype.itemsize > MAX_LOADED_BYTES:
            raise ImageError(f"npz array declares {count * dtype.itemsize / 1024**3:.1f} GiB (over the limit)")
        data = stream.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise ImageError("truncated npz (array shorter than its header says)")
    arr = np.frombuffer(data, dtype=dtype, count=count)
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def images(path: Path) -> np.ndarray:
    """The ``images`` array of ``path`` (N x H x W [x C], uint8); ImageError naming the problem."""
    try:
        stat = path.stat()
        arr = _mapped(str(path), "images.npy", (stat.st_mtime_ns, stat.st_size))
    except ImageError:
        raise
    except KeyError:
        raise ImageError("npz has no 'images' array") from None
    except Exception as exc:  # noqa: BLE001 - zip, zlib, npy header errors of any kind
        raise ImageError(f"corrupt npz ({describe(exc, 80)})") from None
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[3] not in (1, 3, 4)):
        raise ImageError(f"npz 'images' is {arr.dtype} {tuple(arr.shape)} (expected uint8 N x H x W x 3)")
    return arr
