"""Group ids that identify a patient or study without revealing it.

A DICOM PatientID or a MedIMeta patient column must never reach a report, yet images of one
patient must share a group (they are not independent). The group is a keyed BLAKE2b hash of the
value; the key is derived from the source's resolved local path, so the id is stable across runs
(and xdist workers) on one source, while a list of candidate patient ids cannot be matched
against a report without that path.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_CONTEXT = b"miqa-checks group v1"


def salt_for(root: Path) -> bytes:
    """The hashing key of a source rooted at ``root`` (32 bytes)."""
    try:
        where = str(Path(root).resolve())
    except (OSError, RuntimeError, ValueError):
        where = str(root)
    return hashlib.blake2b(where.encode("utf-8", "surrogatepass"), key=_CONTEXT, digest_size=32).digest()


def hashed(kind: str, value: str, salt: bytes) -> str:
    """``<kind>-<16 hex digits>``: a keyed hash of ``value`` (``kind``: ``patient``, ``study``)."""
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), key=salt, person=kind.encode()[:16], digest_size=8)
    return f"{kind}-{digest.hexdigest()}"
