"""An audit run keeps the engine's results and the test items out of the garbage collector's full
collections while it runs (``gc.freeze`` once the engine is prepared), and leaves nothing frozen
behind: a process that runs pytest in-process gets its heap back as it was."""

from __future__ import annotations

from audit_runner import run_with_probe

PROBE = '''
import gc

FROZEN = []


def pytest_runtest_call(item):
    FROZEN.append(gc.get_freeze_count())
'''


def test_the_heap_is_frozen_during_the_tests_and_thawed_after(tmp_path):
    last, output = run_with_probe(tmp_path, PROBE, "samples_ct and pixelation-3",
                                  "'DURING', min(probe.FROZEN), 'AFTER', gc.get_freeze_count(), 'RC', int(rc)")
    assert last[:1] == ["DURING"] and int(last[1]) > 10_000, output
    assert last[2:4] == ["AFTER", "0"] and last[5] in ("0", "1")
