"""The chaos suite: the ``chaos`` marker, and the long campaign left out unless it is asked for.

``pytest`` (``make test``) runs everything here but the long campaign: the proxy, ledger and
settings tests, the findings, and the short, bounded campaign (``test_short.py``). The long campaign is marked ``chaos`` and is deselected — reported as
deselected, not skipped — unless the marker expression names it: ``pytest tests/chaos -m chaos``.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: long fault-injection campaign (≥ 1,000 messages); runs only with -m chaos (make chaos)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "chaos" in (config.getoption("markexpr") or ""):
        return  # the caller chose by marker: -m chaos runs the campaign, -m "not chaos" leaves it out itself
    campaign = [item for item in items if item.get_closest_marker("chaos")]
    if campaign:
        config.hook.pytest_deselected(items=campaign)
        items[:] = [item for item in items if not item.get_closest_marker("chaos")]
