"""Coverage-guided fuzzing (atheris): every target runs clean for a few seconds, and every crash it ever found stays fixed.

Inside ``make test`` each target of ``atheris_targets.py`` runs ``ATHERIS_SECONDS`` (default 2) in a
subprocess; ``make fuzz`` runs them for longer and saves crashes into ``tests/hostile/regressions/``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .atheris_targets import REGRESSIONS, TARGETS

ROOT = Path(__file__).resolve().parents[2]
SECONDS = float(os.environ.get("ATHERIS_SECONDS", "2"))
REGRESSION_FILES = sorted(path for path in REGRESSIONS.glob("*/*") if path.is_file())


@pytest.mark.timeout(120 + 6 * SECONDS)
def test_every_atheris_target_runs_without_a_crash_for_a_few_seconds():
    """Each coverage-guided target executes inputs for its time budget and ends without a crash, hang or memory blow-up."""
    run = subprocess.run([sys.executable, "-m", "tests.hostile.atheris_targets", "--all", "--seconds", str(SECONDS)],
                         cwd=ROOT, capture_output=True, text=True, timeout=90 + 6 * SECONDS)  # fmt: skip
    summary = [line for line in run.stdout.splitlines() if line.startswith("atheris ")]
    print("\n".join(summary))
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    executed = {m.group(1): int(m.group(2)) for m in (re.match(r"atheris (\S+)\s+(\d+) executions", line) for line in summary) if m}
    assert set(executed) == set(TARGETS), summary
    assert all(count >= 10 for count in executed.values()), executed


@pytest.mark.parametrize("path", REGRESSION_FILES, ids=[f"{p.parent.name}/{p.name[:60]}" for p in REGRESSION_FILES])
def test_a_crash_the_fuzzer_found_stays_fixed(path):
    """A saved crash input (tests/hostile/regressions/<target>/) now ends in a documented refusal or a correct result."""
    assert path.parent.name in TARGETS, f"{path.parent.name} is not an atheris target"
    TARGETS[path.parent.name].one(path.read_bytes())


def test_there_is_a_regression_input_for_every_finding_the_fuzzers_found():
    """The crashes found so far (F6 nested JSON, F17 undeclared prefix, F3 DTDs, the two certificate parse errors) are kept."""
    names = {f"{p.parent.name}/{p.name}" for p in REGRESSION_FILES}
    for expected in ("transfer/f6-", "jws/f6-", "payload/f17-", "payload/f3-", "jws/crash-"):
        assert any(name.startswith(expected) for name in names), expected
