"""Under pytest-xdist a worker waits for a peer's share only while that peer can still deliver it."""

from __future__ import annotations

import time

from miqa_checks.engine import workers
from miqa_checks.engine.store import ResultStore
from miqa_checks.config import resolve_settings
from miqa_checks.engine import Engine
from miqa_checks.matrix import plan_cells


def _engine(tmp_path, worker: str, index: int) -> Engine:
    settings = resolve_settings({"model": ["sim-robust"], "max_images": 5, "cache": str(tmp_path / "c")})
    return Engine(settings, store=ResultStore(tmp_path / "c", "run"), worker=worker, worker_index=index, worker_count=2, progress=False)


def test_a_peer_that_never_starts_is_given_up_on_and_its_share_computed(tmp_path, monkeypatch):
    monkeypatch.setattr(workers, "STALE_AFTER_S", 1.0)
    gw0 = _engine(tmp_path, "gw0", 0)
    cell = next(c for c in plan_cells(["sim-robust"], [("samples_ct", "CT")], with_baseline=False) if c.property == "repeatability")
    gw0.prepare([cell])  # its own share only; gw1 never shows up
    start = time.monotonic()
    lookup = gw0.lookup_for(cell)
    waited = time.monotonic() - start
    assert 1.0 <= waited < 10.0
    assert all(lookup(spec, image_id) is not None for spec in cell.requests() for image_id in gw0.image_ids("samples_ct"))


def test_a_finished_peer_is_not_waited_for(tmp_path):
    gw0, gw1 = _engine(tmp_path, "gw0", 0), _engine(tmp_path, "gw1", 1)
    cell = next(c for c in plan_cells(["sim-robust"], [("samples_ct", "CT")], with_baseline=False) if c.property == "repeatability")
    gw0.prepare([cell])
    gw1.prepare([cell])
    start = time.monotonic()
    gw0.lookup_for(cell)
    assert time.monotonic() - start < 1.0
    assert gw0.inferred + gw1.inferred == 2 * len(gw0.image_ids("samples_ct"))  # each request once



def test_whole_batches_are_shared_out_evenly(tmp_path):
    """Each worker owns as many of the plan's full batches, and of its single-request batches, as
    the other (within one), so the device time splits evenly; both workers plan the same shares."""
    from collections import Counter

    cells = plan_cells(["sim-robust"], [("samples_ct", "CT"), ("samples_dermoscopy", "dermoscopy")], with_baseline=False)
    settings = resolve_settings({"model": ["sim-robust"], "max_images": 5, "batch_size": 4, "cache": str(tmp_path / "c")})
    shares = []
    for index in (0, 1):
        engine = Engine(settings, store=ResultStore(tmp_path / "c", "run"), worker=f"gw{index}", worker_index=index,
                        worker_count=2, progress=False)
        engine.prepare(cells)
        batches = engine._plan_batches(engine.plan(cells))
        owners = [engine.peers.owner(b[0].key) for b in batches]
        assert all(engine.peers.owner(i.key) == owner for b, owner in zip(batches, owners) for i in b)
        kinds = Counter((len(b) > 1, owner) for b, owner in zip(batches, owners))
        assert len(batches) > 40 and kinds[(False, 0)] + kinds[(False, 1)] >= 4
        for full in (True, False):
            assert abs(kinds[(full, 0)] - kinds[(full, 1)]) <= 1, kinds
        shares.append(owners)
        engine.close()
    assert shares[0] == shares[1]
