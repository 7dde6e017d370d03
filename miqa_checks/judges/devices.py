"""Device, dtype and batch-size choices for the transformers judge; out-of-memory detection.

``auto``  CUDA when available (bfloat16), else CPU (float32).
``cuda``  CUDA (error when none); like ``auto``, a pytest-xdist worker ``gwK`` takes GPU
          ``K mod device_count`` so parallel workers spread over the GPUs.
``cuda:N`` that GPU exactly.  ``cpu``  CPU.

torch is imported inside the functions only.
"""

from __future__ import annotations

import glob
import os
import re

from ..errors import JudgeError, MiqaUsageError

#: first batch size of ``batch_size=auto``; halved on out-of-memory down to 1
AUTO_BATCH_GPU = 32
AUTO_BATCH_CPU = 8


class SimulatedOOM(RuntimeError):
    """Raised by the self-test hook to exercise the out-of-memory path on CPU."""


def xdist_worker_index() -> int:
    """K of the pytest-xdist worker ``gwK`` (from ``PYTEST_XDIST_WORKER``); 0 outside xdist."""
    match = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    return int(match.group(1)) if match else 0


def _no_gpu_driver() -> bool:
    """True when no NVIDIA (or WSL GPU) device node exists: CUDA cannot be available, so
    ``auto`` resolves to the CPU without importing torch (keeps warm, fully cached runs light)."""
    return not (os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/dxg") or glob.glob("/dev/nvidia[0-9]*"))


def resolve_device(spec: str) -> str:
    """``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` -> a concrete torch device string."""
    spec = (spec or "auto").strip().lower()
    if spec == "cpu" or (spec == "auto" and _no_gpu_driver()):
        return "cpu"
    import torch

    if spec in ("auto", "cuda"):
        if not torch.cuda.is_available():
            if spec == "cuda":
                raise JudgeError("device 'cuda' was asked for but torch sees no CUDA device; use --miqa-device cpu")
            return "cpu"
        return f"cuda:{xdist_worker_index() % torch.cuda.device_count()}"
    match = re.fullmatch(r"cuda:(\d+)", spec)
    if match:
        index = int(match.group(1))
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= count:
            raise JudgeError(f"device {spec!r} was asked for but torch sees {count} CUDA device(s)")
        return spec
    raise MiqaUsageError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")


def default_dtype(device: str):
    """bfloat16 on CUDA, float32 on CPU."""
    import torch

    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def dtype_label(device: str) -> str:
    """The name of :func:`default_dtype` for ``device``, without importing torch."""
    return "bfloat16" if device.startswith("cuda") else "float32"


def auto_batch_size(device: str) -> int:
    return AUTO_BATCH_GPU if device.startswith("cuda") else AUTO_BATCH_CPU


#: below this many parameters a CPU forward pass is a stream of tiny ops: one intra-op thread is
#: fastest, and more threads stall at every OpenMP barrier on a shared or oversubscribed CPU
#: (measured 3-11x slower on a busy 2-core machine for the tiny checkpoints: benchmarks/README.md)
SMALL_MODEL_PARAMS = 50_000_000


def limit_cpu_threads(n_params: int) -> int | None:
    """Set torch's intra-op thread count for CPU scoring; the count set, or None when left alone.

    One thread for a small model (``n_params`` < ``SMALL_MODEL_PARAMS``); under pytest-xdist, the
    CPU's cores shared among the workers for a larger one. Left alone when the user chose
    (``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` set) and outside xdist for a large model.
    """
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return None
    if n_params < SMALL_MODEL_PARAMS:
        n = 1
    else:
        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
        if workers <= 1:
            return None
        n = max(1, (os.cpu_count() or 1) // workers)
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def oom_exceptions() -> tuple[type[BaseException], ...]:
    """The narrow set of exceptions treated as out-of-memory (halve the batch and retry)."""
    import torch

    types: list[type[BaseException]] = [torch.cuda.OutOfMemoryError, SimulatedOOM]
    generic = getattr(torch, "OutOfMemoryError", None)
    if isinstance(generic, type) and generic not in types:
        types.append(generic)
    return tuple(types)


def empty_cache(device: str) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
