"""Memory bombs for the data layer, and their peak-memory measurement.

Each builder streams its output (never holds the decoded size):

- ``deflated_dicom``: a deflated DICOM whose data set inflates to ``pixel_bytes`` of zeros,
- ``zeros_npz``: a MediMeta-C dataset whose compressed ``clean.npz`` declares ``n`` 224 x 224 x 3 rows of zeros,
- ``png16``: a ``side`` x ``side`` 16-bit grey PNG of a smooth ramp (small file, 2 bytes a pixel decoded).

``python selftests/bombs.py [folder]`` builds the three issue-sized bombs (3 GB DICOM, 8000-row
npz, 7000 x 7000 PNG) and loads each through ``load_all`` in a fresh subprocess, printing the
subprocess's peak RSS (``ru_maxrss``), its seconds and what came back (records / error reasons).
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

_ZEROS = bytes(16 * 1024**2)


def _zeros(stream_write, nbytes: int) -> None:  # noqa: ANN001
    while nbytes > 0:
        step = min(nbytes, len(_ZEROS))
        stream_write(_ZEROS[:step])
        nbytes -= step


def deflated_dicom(path: Path, pixel_bytes: int) -> Path:
    """A deflated-transfer-syntax CT whose PixelData is ``pixel_bytes`` of zeros (512 x 512, 16 bit)."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    frames = max(pixel_bytes // (512 * 512 * 2), 1)
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 512, 512, 16, 16, 15
    ds.NumberOfFrames = frames
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta = io.BytesIO()
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    body = pydicom.filebase.DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    length = frames * 512 * 512 * 2
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(path, "wb") as fh:
        fh.write(b"\x00" * 128 + b"DICM" + meta.getvalue())
        fh.write(deflate.compress(body.getvalue() + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, length)))
        _zeros(lambda chunk: fh.write(deflate.compress(chunk)), length)
        fh.write(deflate.flush())
    return path


def zeros_npz(folder: Path, n: int, shape: tuple[int, ...] = (224, 224, 3)) -> Path:
    """``folder/<dataset>/test/clean.npz`` (compressed) declaring ``n`` rows of zeros; returns the root."""
    split = folder / "zeros" / "test"
    split.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(split / "clean.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("images.npy", "w", force_zip64=True) as fh:
            fh.write(_npy_header((n, *shape)))
            _zeros(fh.write, n * int(np.prod(shape)))
        buf = io.BytesIO()
        np.save(buf, np.zeros(n, np.int64))
        zf.writestr("labels.npy", buf.getvalue())
    return folder


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A .npy v1.0 header for a C-order uint8 array of ``shape``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buf.getvalue()


def png16(path: Path, side: int) -> Path:
    """A ``side`` x ``side`` 16-bit grey PNG (ramp), written row by row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = (np.arange(side, dtype=np.uint64) * 65535 // max(side - 1, 1)).astype(">u2").tobytes()
    deflate, idat = zlib.compressobj(9), []
    for _ in range(side):
        idat.append(deflate.compress(b"\x00" + row))
    idat.append(deflate.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(idat)) + chunk(b"IEND", b""))
    return path


_CHILD = """
import json, resource, sys, time
from miqa_checks.data import load_all
from miqa_checks.errors import MiqaUsageError
t = time.perf_counter()
try:
    got = load_all([sys.argv[1]], max_images=64, seed=0)
    out = {"records": sum(len(d.records) for d in got), "errors": [e.reason for d in got for e in d.errors]}
except MiqaUsageError as exc:
    out = {"records": 0, "errors": [str(exc)[-160:]]}
out["seconds"] = round(time.perf_counter() - t, 2)
out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps(out))
"""


def measure(source: Path, repo: Path) -> dict:
    """Load ``source`` through ``load_all`` (max_images 64) in a fresh interpreter importing
    ``miqa_checks`` from ``repo`` -> records, error reasons, seconds, peak RSS in MiB."""
    run = subprocess.run([sys.executable, "-c", _CHILD, str(source)], capture_output=True, text=True,
                         cwd=repo, env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"})
    if run.returncode != 0:
        return {"exit": run.returncode, "stderr": run.stderr[-300:]}
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(folder: Path, repo: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dicom").mkdir(exist_ok=True)
    (folder / "png").mkdir(exist_ok=True)
    cases = {
        "deflated DICOM, 3 GB inflated": deflated_dicom(folder / "dicom" / "bomb.dcm", 3 * 10**9).parent,
        "npz of zeros, 8000 x 224 x 224 x 3": zeros_npz(folder / "npz", 8000),
        "16-bit PNG, 7000 x 7000": png16(folder / "png" / "big16.png", 7000).parent,
    }
    for name, source in cases.items():
        size = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
        print(name, f"({size / 1024**2:.1f} MiB on disk):", json.dumps(measure(source, repo)), flush=True)


if __name__ == "__main__":
    here = Path(__file__).resolve().parent.parent
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/miqa_bombs"), Path(sys.argv[2]) if len(sys.argv) > 2 else here)
