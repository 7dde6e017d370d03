"""A corpus of broken (and awkward-but-readable) input files for the data-layer self-tests.

``build_broken_corpus(folder)`` writes, under ``folder``:

- ``images/``: broken image files beside awkward ones that must load (16-bit and float TIFF,
  RGBA, CMYK, palette, 16-bit PNG) and plain good images,
- ``manifest.csv``: every file of ``images/`` plus rows with a bad dataset id or a path that
  leaves the manifest folder; ``manifest_missing_columns.csv``: lacks ``modality``,
- ``medimeta_c/oct/test/clean.npz``: a corrupt npz,
- ``escape_link.png``: a symlink to ``<folder's parent>/<folder name>_outside.png`` (written there).

It returns {name: expected reason keyword}; names are paths relative to ``folder`` (the
``file`` an error record names) and a keyword of ``READABLE`` means "must load as an image".
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np

READABLE = ""
"""Keyword meaning: this file is awkward but valid and must become an image."""

GOOD = ("images/good_grey.png", "images/good_rgb.jpg", "images/good_ct.dcm", "images/good_volume.nii.gz")
"""Plain good files of the corpus (also READABLE)."""


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png_header(width: int = 60000, height: int = 60000) -> bytes:
    """A PNG that declares width x height grey pixels but carries one tiny IDAT (nothing allocated)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _encode(img: np.ndarray, fmt: str, **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _pattern(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth uint8 test pattern, H x W."""
    y, x = np.mgrid[0:h, 0:w]
    return ((x * 3 + y * 2) % 256).astype(np.uint8)


def _huge_jpeg(jpeg: bytes, size: int = 60000) -> bytes:
    """Patch the frame header (SOF0) of a baseline JPEG to declare size x size pixels."""
    at = jpeg.index(b"\xff\xc0")
    return jpeg[: at + 5] + struct.pack(">HH", size, size) + jpeg[at + 9:]


def build_broken_corpus(folder: Path) -> dict[str, str]:
    """Write the corpus under ``folder`` -> {relative name: expected reason keyword or READABLE}."""
    import nibabel as nib
    import pydicom
    import tifffile
    from PIL import Image
    from pydicom.data import get_testdata_file

    folder = Path(folder)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    expect: dict[str, str] = {}

    def put(name: str, data: bytes, keyword: str) -> None:
        (folder / name).write_bytes(data)
        expect[name] = keyword

    grey = _pattern()
    rgb = np.stack([grey, grey[::-1], 255 - grey], axis=-1)
    png, jpg = _encode(grey, "PNG"), _encode(rgb, "JPEG", quality=90)

    # good files
    put("images/good_grey.png", png, READABLE)
    put("images/good_rgb.jpg", jpg, READABLE)
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ct.save_as(images / "good_ct.dcm")
    expect["images/good_ct.dcm"] = READABLE
    volume = np.random.default_rng(0).normal(100, 20, (24, 20, 6)).astype(np.float32)
    nib.Nifti1Image(volume, np.eye(4)).to_filename(images / "good_volume.nii.gz")
    expect["images/good_volume.nii.gz"] = READABLE

    # broken files
    put("images/truncated.png", png[: len(png) // 2], "truncated")
    put("images/truncated.jpg", jpg[: len(jpg) // 2], "truncated")
    put("images/zero_byte.png", b"", "zero-byte")
    put("images/jpeg_named.png", jpg, "wrong extension")
    put("images/text_named.png", b"this is a text file, not an image\n" * 4, "not a PNG")
    put("images/one_pixel.png", _encode(np.zeros((1, 1), np.uint8), "PNG"), "too small")
    put("images/huge_header.png", huge_png_header(), "60000x60000")
    put("images/huge_header.jpg", _huge_jpeg(jpg), "over the 50 MP limit")
    put("images/notes.txt", b"labels live elsewhere\n", "unsupported file type")
    put("images/garbage_no_extension", b"\x00\x01garbage" * 40, "DICM")
    put("images/random_bytes.tif", bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8)), "not a TIFF")
    no_pixels = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del no_pixels.PixelData
    no_pixels.save_as(images / "no_pixels.dcm")
    expect["images/no_pixels.dcm"] = "without pixel data"
    whole = (images / "good_ct.dcm").read_bytes()
    put("images/truncated.dcm", whole[: len(whole) - 5000], "DICOM")
    nib.Nifti1Image(np.full((16, 16, 4), np.nan, np.float32), np.eye(4)).to_filename(images / "nan.nii.gz")
    expect["images/nan.nii.gz"] = "NaN"
    gz = (images / "good_volume.nii.gz").read_bytes()
    put("images/truncated.nii.gz", gz[: len(gz) // 2], "NIfTI")
    with_inf = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    with_inf[3, 3] = np.inf
    tifffile.imwrite(images / "inf_float.tif", with_inf)
    expect["images/inf_float.tif"] = "infinite"

    # awkward but readable files
    tifffile.imwrite(images / "ramp16.tif", np.tile(np.arange(0, 65536, 256, dtype=np.uint16), (16, 1)))
    expect["images/ramp16.tif"] = READABLE
    tifffile.imwrite(images / "float32.tif", np.linspace(-5, 5, 40 * 30, dtype=np.float32).reshape(40, 30))
    expect["images/float32.tif"] = READABLE
    tifffile.imwrite(images / "rgb16.tif", (np.stack([grey, grey, 255 - grey], -1).astype(np.uint16) * 257))
    expect["images/rgb16.tif"] = READABLE
    rgba = np.dstack([rgb, np.full(grey.shape, 128, np.uint8)])
    put("images/rgba.png", _encode(rgba, "PNG"), READABLE)
    put("images/cmyk.jpg", _encode(Image.fromarray(rgb).convert("CMYK"), "JPEG"), READABLE)
    put("images/palette.png", _encode(Image.fromarray(rgb).convert("P"), "PNG"), READABLE)
    put("images/grey16.png", _encode(Image.fromarray((grey.astype(np.uint16) * 200)), "PNG"), READABLE)

    # MediMeta-C with a corrupt npz
    npz_dir = folder / "medimeta_c" / "oct" / "test"
    npz_dir.mkdir(parents=True, exist_ok=True)
    put("medimeta_c/oct/test/clean.npz", b"PK\x03\x04" + b"\x00" * 40 + b"not a zip", "corrupt npz")

    # manifests
    outside = folder.parent / f"{folder.name}_outside.png"
    outside.write_bytes(png)
    link = folder / "escape_link.png"
    link.symlink_to(outside)
    rows = [("path", "dataset", "modality")]
    rows += [(name, "corpus", "mixed") for name in sorted(expect) if name.startswith("images/")]
    rows += [
        ("images/for_empty_dataset.png", "", "mixed"),
        ("images/for_bad_dataset.png", "Not An Id!", "mixed"),
        (f"../{outside.name}", "corpus", "mixed"),
        ("escape_link.png", "corpus", "mixed"),
        (str(outside.resolve()), "corpus", "mixed"),
    ]
    (folder / "manifest.csv").write_text("\n".join(",".join(r) for r in rows) + "\n", encoding="utf-8")
    absolute_row = len(rows)  # header is row 1
    expect["images/for_empty_dataset.png"] = "empty dataset id"
    expect["images/for_bad_dataset.png"] = "unknown dataset id"
    expect[f"../{outside.name}"] = "leaves the manifest folder"
    expect["escape_link.png"] = "leaves the manifest folder"
    expect[f"row {absolute_row}"] = "leaves the manifest folder"
    (folder / "manifest_missing_columns.csv").write_text("path,dataset\nimages/good_grey.png,corpus\n", encoding="utf-8")
    expect["manifest_missing_columns.csv"] = "modality"
    return expect
