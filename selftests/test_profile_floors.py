"""The severity-5 floor is a decision per corruption, with its reason (issue 13, item 8)."""

from __future__ import annotations

import pytest

from miqa_checks.conditions import ids
from miqa_checks.profiles import FALL_REQUIRED_REASONS, PROFILES


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_floor_and_every_missing_floor_has_a_reason(profile):
    floors = PROFILES[profile]["fall_required_pct"]
    for corruption in ids("imagenet_c"):
        reason = FALL_REQUIRED_REASONS[corruption]
        assert reason.startswith("floor:" if corruption in floors else "no floor:"), (corruption, reason)
    assert "brightness" not in floors
    assert all(0 < pct <= 10 for pct in floors.values())
