"""scipy is imported when a statistic first needs a distribution function, not at start-up:
neither ``pytest --collect-only`` of the audit nor loading the run-time side (engine, statistics,
assertion helpers, reports) imports it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_loading_the_run_time_side_imports_no_scipy():
    out = _python("import sys; import miqa_checks.runtime, miqa_checks.stats, miqa_checks.properties.check; "
                  "from miqa_checks import stats; print('scipy' in sys.modules); "
                  "stats.t_ppf(0.975, 9); print('scipy.special' in sys.modules)")
    assert out.split() == ["False", "True"]  # ... until a statistic asks for a quantile


def test_collect_only_imports_no_scipy(tmp_path):
    out = _python("import sys, pytest; "
                  f"pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', 'tests', '--miqa-report-dir', {str(tmp_path)!r}]); "
                  "print('SCIPY', 'scipy' in sys.modules)")
    assert out.strip().splitlines()[-1] == "SCIPY False"
