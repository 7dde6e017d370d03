"""Self-tests of the corruption registry (miqa_checks.conditions.registry): registration rules,
seeding, batching and the light import; a user's corruption is planned at collection time."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import miqa_checks
from miqa_checks import conditions as C
from miqa_checks.conditions import registry as R

SEVEN = ("brightness", "contrast", "gaussian_noise", "impulse_noise", "motion_blur", "pixelation", "zoom_blur")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def user_ids() -> Iterator[list[str]]:
    """Ids registered by a test, removed from the registry afterwards."""
    added: list[str] = []
    yield added
    for name in added:
        R.REGISTRY._entries.pop(name, None)


def _invert(user_ids: list[str], name: str = "invert_some", **kw) -> None:
    @miqa_checks.corruption(name, table={"share": (0.1, 0.2, 0.3, 0.4, 0.5)}, source="selftest", **kw)
    def invert_some(image, severity, rng, share):
        out = image.copy()
        hit = rng.random(image.shape[:2]) < share
        out[hit] = 255 - out[hit]
        return out

    user_ids.append(name)


def test_one_list_of_ids_in_protocol_order() -> None:
    assert C.ids("imagenet_c") == SEVEN
    assert C.audit_ids() == SEVEN  # no user corruption registered: the built-in matrix is the seven
    assert set(C.ids("medical")).isdisjoint(SEVEN)
    assert C.ids() == SEVEN + C.ids("medical")


def test_light_import_and_metadata_without_numpy() -> None:
    code = (
        "import sys, json, miqa_checks.conditions as C, miqa_checks.matrix, miqa_checks.config\n"
        "ids = C.ids()\n"
        "meta = [C.REGISTRY[i].properties for i in ids] + [C.corruptions_for('chest X-ray', ('medical',))]\n"
        "print(json.dumps({'numpy': 'numpy' in sys.modules, 'n': len(ids)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert json.loads(out.stdout) == {"numpy": False, "n": len(C.ids())}


def test_user_corruption_is_seeded_by_content_like_the_builtins(user_ids: list[str]) -> None:
    _invert(user_ids)
    image = np.random.default_rng(3).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    a = C.apply(image, "invert_some", 3, seed=5)
    assert np.array_equal(a, C.apply(image.copy(), "invert_some", 3, seed=5))  # content, not identity
    assert not np.array_equal(a, C.apply(image, "invert_some", 3, seed=6))
    assert not np.array_equal(a, C.apply(image, "invert_some", 4, seed=5))
    others = [np.full((40, 48, 3), v, np.uint8) for v in (0, 90)]
    batch = C.apply_batch([others[0], image, others[1]], "invert_some", 3, seed=5)
    assert np.array_equal(batch[1], a)  # batch companions and position do not matter
    expected = R.rng_for(image, "invert_some", 3, 5).random(image.shape[:2]) < 0.3
    assert np.array_equal(a != image, np.broadcast_to(expected[..., None], image.shape))
    assert C.parameters("invert_some", 2) == {
        "corruption": "invert_some", "severity": 2, "params": "imagenet_c", "source": "selftest", "share": 0.2,
    }
    assert C.parse_condition(C.condition_id("invert_some", 5)) == ("invert_some", 5)
    assert "invert_some" in C.audit_ids() and "invert_some" not in C.ids("imagenet_c", "medical")


def test_deterministic_corruption_never_hashes_the_image(user_ids: list[str], monkeypatch) -> None:
    calls = []
    real = R.rng_for
    monkeypatch.setattr(R, "rng_for", lambda *a: calls.append(a) or real(*a))
    image = np.zeros((16, 16), np.uint8)
    C.apply(image, "contrast", 2)
    assert calls == []
    C.apply(image, "gaussian_noise", 2)
    assert len(calls) == 1


def test_bad_registrations_are_refused(user_ids: list[str]) -> None:
    def fn(image, severity, rng):
        return image

    for bad, match in (
        (dict(id="Bad-Id", fn=fn), "bad corruption id"),
        (dict(id="2fast", fn=fn), "bad corruption id"),
        (dict(id="x_sev", fn=fn, severities=(2, 1)), "severities"),
        (dict(id="x_tab", fn=fn, table={"q": (1, 2)}), "has 2 values"),
        (dict(id="x_res", fn=fn, table={"source": (1,) * 5}), "reserved"),
        (dict(id="x_prop", fn=fn, properties=("vibes",)), "unknown properties"),
        (dict(id="contrast", fn=fn), "already registered"),
    ):
        with pytest.raises(ValueError, match=match):
            R.REGISTRY.add(R.Corruption(**bad))


def test_wrong_output_is_an_error_not_a_corrupted_image(user_ids: list[str]) -> None:
    @miqa_checks.corruption("half_size")
    def half_size(image, severity, rng):
        return image[::2]

    user_ids.append("half_size")
    with pytest.raises(ValueError, match="expected uint8 of shape"):
        C.apply(np.zeros((16, 16), np.uint8), "half_size", 1)


def test_user_corruption_is_planned_at_collection(tmp_path: Path) -> None:
    """A user's conftest registers a corruption; collection gives it cells and ``-k`` ids."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_audit_corruption.py").write_text((REPO / "tests" / "test_audit_corruption.py").read_text())
    (tmp_path / "pytest.ini").write_text("[pytest]\ntestpaths = tests\n")
    (tmp_path / "conftest.py").write_text(textwrap.dedent("""
        import miqa_checks

        @miqa_checks.corruption("stripe_dropout", table={"every": (9, 7, 5, 3, 2)}, source="my lab")
        def stripe_dropout(image, severity, rng, every):
            out = image.copy()
            out[::every] = 0
            return out
    """))
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-k", "stripe_dropout",
           f"--miqa-report-dir={tmp_path / 'reports'}", f"--miqa-cache={tmp_path / 'cache'}", "--miqa-data=samples"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    ids = [line for line in out.stdout.splitlines() if "::" in line]
    assert any(i.endswith("-stripe_dropout-3]") and "test_corruption_stability[" in i for i in ids)
    assert any(i.endswith("-stripe_dropout]") and "test_severity_response[" in i for i in ids)
    assert all("stripe_dropout" in i for i in ids)


def test_digest_seeding_hashes_each_read_only_image_once_and_stays_content_determined(monkeypatch) -> None:
    """``seeding="digest"`` (the medical set): one pixel hash per read-only image object, shared by every
    corruption and severity of it; the result depends on the pixels only (a writable copy, a mutated
    array, a read-only view of a writable array all get their own, fresh digest)."""
    big = []
    real = R.hashlib.sha256

    class Counting:
        def __init__(self, data: bytes = b"") -> None:
            self._h = real(data)

        def update(self, data) -> None:
            if memoryview(data).nbytes > 1000:
                big.append(1)
            self._h.update(data)

        def digest(self) -> bytes:
            return self._h.digest()

    monkeypatch.setattr(R.hashlib, "sha256", Counting)
    image = np.random.default_rng(7).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    frozen = image.copy()
    frozen.setflags(write=False)
    first = {(n, s): C.apply(frozen, n, s, seed=1) for n in ("speckle_noise", "bubble", "characters") for s in (1, 3, 5)}
    assert len(big) == 1  # nine conditions, one hash of the pixels
    for (name, sev), out in first.items():
        assert np.array_equal(out, C.apply(image, name, sev, seed=1))  # a writable copy: same content, same bytes
    assert len(big) == 1 + len(first)  # a writable array is hashed at every call (it may change)
    image[0, 0] ^= 1
    assert not np.array_equal(C.apply(image, "speckle_noise", 3, seed=1), first[("speckle_noise", 3)])
    view = image[:]
    view.setflags(write=False)  # read-only, but its base can still be written
    before = len(big)
    C.apply(view, "speckle_noise", 3, seed=1)
    image[5, 5] ^= 1
    C.apply(view, "speckle_noise", 3, seed=1)
    assert len(big) == before + 2 and id(view) not in R._DIGESTS
    batch = C.apply_batch([np.zeros_like(frozen), frozen], "bubble", 3, seed=1)
    assert np.array_equal(batch[1], first[("bubble", 3)])  # batch companions and position do not matter
    # the imagenet_c set keeps its per-call pixel seeding (pinned outputs)
    assert C.REGISTRY["gaussian_noise"].seeding == "pixels" and C.REGISTRY["bubble"].seeding == "digest"


def test_unknown_seeding_is_refused(user_ids: list[str]) -> None:
    with pytest.raises(ValueError, match="unknown seeding"):
        R.REGISTRY.add(R.Corruption(id="x_seed", fn=lambda image, severity, rng: image, seeding="order"))
