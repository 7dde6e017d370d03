"""Start and stop real local servers for self-tests (127.0.0.1 only).

``transformers_server(checkpoint)`` runs ``transformers serve <checkpoint> --host 127.0.0.1 --port P
--device cpu`` (transformers[serving]: OpenAI-compatible ``/v1/chat/completions``, ``/v1/models``,
``/health``) in its own process group, waits for health with a bounded timeout, writes the
server's output to a log file, and kills the process group on exit.

The checkpoint folder is served under its folder name (the server runs with the folder's parent
as working directory), so the OpenAI ``model`` field is e.g. ``tiny-qwen2vl`` and no absolute
path ends up in a judge's identity. ``transformers serve`` ignores ``logprobs``/``top_logprobs``.

Example::

    with tiny_server("tiny-qwen2vl", tmp_path) as server:
        judge = OpenAIJudge(f"openai:{server.base_url}#{server.model}", JudgeSettings())
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx


@dataclass(frozen=True)
class ServerHandle:
    """A running local server: ``base_url`` ends in ``/v1``; ``model`` is the served model id."""

    base_url: str
    model: str
    port: int
    log_path: Path
    pid: int

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _transformers_cli() -> list[str]:
    script = Path(sys.executable).parent / "transformers"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from transformers.cli.transformers import main; sys.exit(main())"]


def _kill_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=grace_s)


def wait_healthy(root_url: str, model: str | None, proc: subprocess.Popen, timeout_s: float, log_path: Path) -> None:
    """Poll ``GET /v1/models`` until it answers 200 (listing ``model`` when given)."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with code {proc.returncode} before it was healthy; log {log_path}:\n"
                    + _tail(log_path)
                )
            try:
                r = client.get(f"{root_url}/v1/models")
                if r.status_code == 200:
                    ids = [m.get("id") for m in r.json().get("data", [])]
                    if model is None or model in ids:
                        return
                    last = f"models listed: {ids}"
                else:
                    last = f"HTTP {r.status_code}"
            except (httpx.HTTPError, ValueError) as exc:
                last = f"{type(exc).__name__}"
            time.sleep(0.25)
    raise TimeoutError(f"server at {root_url} not healthy after {timeout_s:g} s ({last}); log {log_path}:\n" + _tail(log_path))


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@contextmanager
def transformers_server(
    checkpoint: Path,
    *,
    log_path: Path | None = None,
    startup_timeout_s: float = 120.0,
    extra_args: tuple[str, ...] = (),
) -> Iterator[ServerHandle]:
    """Serve a local checkpoint folder with ``transformers serve`` on a free 127.0.0.1 port."""
    checkpoint = Path(checkpoint).resolve()
    if not (checkpoint / "config.json").exists():
        raise FileNotFoundError(f"{checkpoint} is not a checkpoint folder (no config.json)")
    model = checkpoint.name
    log_path = Path(log_path) if log_path else checkpoint.parent / f"serve-{model}.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(var, None)
    last_error: Exception | None = None
    for _ in range(3):  # another process may grab the port between free_port() and bind
        port = free_port()
        cmd = _transformers_cli() + ["serve", model, "--host", "127.0.0.1", "--port", str(port),
                                     "--device", "cpu", "--log-level", "info", *extra_args]
        log = open(log_path, "ab")
        log.write(f"\n--- {' '.join(cmd)} (cwd {checkpoint.parent})\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, cwd=checkpoint.parent, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_healthy(f"http://127.0.0.1:{port}", model, proc, startup_timeout_s, log_path)
        except RuntimeError as exc:
            _kill_group(proc)
            log.close()
            last_error = exc
            if "address already in use" in _tail(log_path, 20).lower():
                continue
            raise
        except BaseException:
            _kill_group(proc)
            log.close()
            raise
        try:
            yield ServerHandle(f"http://127.0.0.1:{port}/v1", model, port, log_path, proc.pid)
        finally:
            _kill_group(proc)
            log.close()
        return
    raise RuntimeError(f"could not start the server: {last_error}")


def tiny_checkpoint_path(spec: str, home: Path) -> Path:
    """The tiny offline checkpoint for ``spec`` (``tiny-qwen2vl``, ...), built under ``home``."""
    from miqa_checks.judges.tiny import tiny_checkpoint

    return tiny_checkpoint(spec, Path(home))


@contextmanager
def tiny_server(spec: str, home: Path, **kwargs: object) -> Iterator[ServerHandle]:
    """Build (or reuse) the tiny checkpoint ``spec`` under ``home`` and serve it."""
    checkpoint = tiny_checkpoint_path(spec, home)
    with transformers_server(checkpoint, log_path=Path(home) / f"serve-{spec}.log", **kwargs) as server:  # type: ignore[arg-type]
        yield server


def server_fixture(spec: str = "tiny-qwen2vl", scope: str = "module"):
    """A pytest fixture serving the tiny checkpoint ``spec``: ``my_server = server_fixture()`` in a test module.

    The checkpoint is built under a fresh ``tmp_path_factory`` folder (one server per scope and
    xdist worker); the fixture yields a :class:`ServerHandle`.
    """
    import pytest

    @pytest.fixture(scope=scope)
    def _server(tmp_path_factory):
        with tiny_server(spec, tmp_path_factory.mktemp(spec)) as handle:
            yield handle

    return _server
