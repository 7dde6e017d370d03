"""The miqa fixtures do not take pytest's ``request`` fixture: pytest builds a fresh fixture
definition for ``request`` (inspecting a signature) every time a fixture's arguments are resolved,
and it resolves a session fixture's arguments again for every item; over a warm audit's 2 000
items that was a tenth of the wall. Only pytest's own parametrisation of ``miqa_cell`` asks for it."""

from __future__ import annotations

from audit_runner import run_with_probe

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
    last, output = run_with_probe(tmp_path, PROBE, "samples_ct and pixelation",
                                  "' '.join(['ITEMS', str(probe.ITEMS[0]), 'ASKED', *sorted(probe.ASKED)])")
    assert last[:1] == ["ITEMS"] and int(last[1]) >= 10, output
    assert last[3:] == ["miqa_cell"]  # pytest's parametrisation only: not miqa, miqa_engine, nor the test
