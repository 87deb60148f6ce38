"""Fixtures of the hostile-input corpus, and the tally it prints at the end of a run.

Every test in ``tests/hostile`` except the fuzz targets is one hostile input (or one family
of them) with its expected outcome. A known, unfixed weakness is a strict xfail whose reason
starts with ``BUG:``; the tally counts those separately so they stay visible.
"""

from __future__ import annotations

from collections import Counter

import pytest

from .hostile import KANTON, hub_federation, pair_federation

_TALLY: Counter = Counter()


@pytest.fixture
def pair(tmp_path):
    """node-luzern (Stadt Luzern) and node-kanton (the canton and Kriens); the canton's route takes any well-formed XML,
    so the XML defences themselves, not the schema, decide about hostile payloads."""
    return pair_federation(tmp_path / "pair", route_payload={KANTON: "well-formed"})


@pytest.fixture
def hub(tmp_path):
    return hub_federation(tmp_path / "hub")


def pytest_runtest_logreport(report):
    if "tests/hostile/" not in report.nodeid.replace("\\", "/") or "test_fuzz" in report.nodeid:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        if hasattr(report, "wasxfail"):
            _TALLY["known bug (strict xfail)" if report.skipped else "known bug FIXED (xpass)"] += 1
        elif report.passed:
            _TALLY["refused as expected"] += 1
        elif report.failed:
            _TALLY["NOT refused as expected (failed)"] += 1
        elif report.skipped:
            _TALLY["skipped"] += 1


def pytest_terminal_summary(terminalreporter):
    from . import fuzzing

    if not _TALLY and not fuzzing.STATS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("hostile-input corpus")
    if _TALLY:
        write(f"{sum(_TALLY.values())} hostile inputs (test cases) tried: " + ", ".join(f"{n} {k}" for k, n in sorted(_TALLY.items())))
    for target, stats in sorted(fuzzing.STATS.items()):
        outcomes = ", ".join(f"{name} {count}" for name, count in stats.outcomes.most_common(6))
        write(f"fuzz {target}: {stats.examples} examples in {stats.seconds:.1f} s ({outcomes})")
    fuzzing.write_report()
