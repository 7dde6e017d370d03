"""``junit.xml`` written from the test reports the controller received, properties included.

pytest's own writer drops ``record_property`` values under ``junit_family=xunit2``; writing the
file here keeps one testcase per property cell with its properties in every configuration.
Every text is scrubbed, then its control characters are escaped (``\x1b`` -> ``\\x1b``): XML 1.0
cannot hold them, and a model's answer may contain any.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from .safe_io import atomic_write_bytes, printable


@dataclass
class CaseRecord:
    """One finished test: nodeid, outcome (passed/failed/skipped/error), seconds, message, properties."""

    nodeid: str
    outcome: str
    duration: float
    message: str = ""
    details: str = ""
    properties: list[tuple[str, str]] = field(default_factory=list)


def write_junit(path: Path, cases: list[CaseRecord], *, suite_name: str = "miqa-checks", scrub=lambda s: s) -> None:
    """Write a JUnit XML file (one testsuite) atomically; ``scrub`` cleans each text first."""
    def text(value: object, multiline: bool = False) -> str:
        return printable(scrub(str(value)), multiline=multiline)

    counts = {k: sum(c.outcome == k for c in cases) for k in ("failed", "skipped", "error")}
    suite = ET.Element(
        "testsuite",
        name=text(suite_name),
        tests=str(len(cases)),
        failures=str(counts["failed"]),
        errors=str(counts["error"]),
        skipped=str(counts["skipped"]),
        time=f"{sum(c.duration for c in cases):.3f}",
    )
    for case in cases:
        module, _, name = case.nodeid.rpartition("::")
        element = ET.SubElement(
            suite, "testcase", classname=text(module.replace("/", ".").removesuffix(".py")), name=text(name),
            time=f"{case.duration:.3f}",
        )
        if case.properties:
            props = ET.SubElement(element, "properties")
            for key, value in case.properties:
                ET.SubElement(props, "property", name=text(key), value=text(value))
        if case.outcome in ("failed", "error", "skipped"):
            tag = {"failed": "failure", "error": "error", "skipped": "skipped"}[case.outcome]
            child = ET.SubElement(element, tag, message=text(case.message[:2000]))
            child.text = text(case.details, multiline=True)
    ET.indent(suite)
    atomic_write_bytes(path, ET.tostring(suite, encoding="utf-8", xml_declaration=True))
