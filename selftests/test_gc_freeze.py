"""An audit run keeps the engine's results and the test items out of the garbage collector's full
collections while it runs (``gc.freeze`` once the engine is prepared), and leaves nothing frozen
behind: a process that runs pytest in-process gets its heap back as it was."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = '''
import gc

FROZEN = []


def pytest_runtest_call(item):
    FROZEN.append(gc.get_freeze_count())
'''


def test_the_heap_is_frozen_during_the_tests_and_thawed_after(tmp_path):
    (tmp_path / "gc_probe.py").write_text(PROBE)
    code = (
        "import gc, sys, pytest; sys.path.insert(0, sys.argv[1]); import gc_probe; "
        "rc = pytest.main(['-q', '-p', 'no:cacheprovider', '-p', 'gc_probe', 'tests', '--miqa-model=sim-robust', "
        "'-k', 'samples_ct and pixelation-3', '--miqa-cache', sys.argv[1] + '/cache', '--miqa-report-dir', sys.argv[1] + '/reports']); "
        "print('DURING', min(gc_probe.FROZEN), 'AFTER', gc.get_freeze_count(), 'RC', int(rc))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600)
    last = done.stdout.strip().splitlines()[-1].split()
    assert last[0] == "DURING" and int(last[1]) > 10_000, done.stdout[-2000:] + done.stderr[-2000:]
    assert last[2:4] == ["AFTER", "0"] and last[5] in ("0", "1")
