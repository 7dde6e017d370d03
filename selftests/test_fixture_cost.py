"""The miqa fixtures do not take pytest's ``request`` fixture: pytest builds a fresh fixture
definition for ``request`` (inspecting a signature) every time a fixture's arguments are resolved,
and it resolves a session fixture's arguments again for every item; over a warm audit's 2 000
items that was a tenth of the wall. Only pytest's own parametrisation of ``miqa_cell`` asks for it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = '''
import collections

from _pytest import fixtures

ASKED = collections.Counter()
_init = fixtures.RequestFixtureDef.__init__


def counted(self, request, *args, **kwargs):
    ASKED[getattr(request, "fixturename", None) or "the test"] += 1
    _init(self, request, *args, **kwargs)


fixtures.RequestFixtureDef.__init__ = counted
ITEMS = [0]


def pytest_runtest_call(item):
    ITEMS[0] += 1
'''


def test_the_miqa_fixtures_build_no_request_fixture(tmp_path):
    (tmp_path / "request_probe.py").write_text(PROBE)
    code = (
        "import sys, pytest; sys.path.insert(0, sys.argv[1]); import request_probe as p; "
        "pytest.main(['-q', '-p', 'no:cacheprovider', '-p', 'request_probe', 'tests', '--miqa-model=sim-robust', "
        "'-k', 'samples_ct and pixelation', '--miqa-cache', sys.argv[1] + '/cache', '--miqa-report-dir', sys.argv[1] + '/r']); "
        "print('ITEMS', p.ITEMS[0], 'ASKED', *sorted(p.ASKED))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600)
    last = done.stdout.strip().splitlines()[-1].split()
    assert last[0] == "ITEMS" and int(last[1]) >= 10, done.stdout[-2000:] + done.stderr[-2000:]
    assert last[3:] == ["miqa_cell"]  # pytest's parametrisation only: not miqa, miqa_engine, nor the test
