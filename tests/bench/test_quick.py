"""`make bench` stays runnable: its short smoke version runs every section end to end and exits 0.

Figures are not asserted here (a shared 2-core machine is too noisy for timed tests); the full
run writes them to docs/benchmarks.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_the_quick_benchmark_runs_every_section_and_reports_figures(tmp_path):
    result = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--output", str(tmp_path / "b.md"), "--json", str(tmp_path / "b.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = (tmp_path / "b.md").read_text()
    assert "B1" in report and "B2" in report and "B3" in report
    assert json.loads((tmp_path / "b.json").read_text())
