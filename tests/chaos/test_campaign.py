"""The long chaos campaign (``pytest tests/chaos -m chaos``, ``make chaos``): at least 1,000 messages.

Size, duration and seed come from ``CHAOS_MESSAGES`` (default 1000), ``CHAOS_SECONDS``
(default 150) and ``CHAOS_SEED`` (default: random, printed). The figures are printed and
written between the campaign markers of ``CHAOS_REPORT`` (default ``docs/reliability.md``;
set it empty to write nothing), also when the campaign finds a problem. ``CHAOS_DIR`` puts the
federation (stores, audit logs, node logs) in a directory of your choice, kept after the run for
inspection, instead of pytest's temporary one.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest

from .harness import Campaign
from .report import describe_revisions, source_revision, update_report
from .proxy import Fault
from .settings import NODES, Settings, random_seed

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "docs" / "reliability.md"


def command_line(settings: Settings) -> str:
    """How to run this campaign again: the CHAOS_* variables in effect and pytest's own arguments."""
    variables = [f"{name}={shlex.quote(os.environ[name])}" for name in ("CHAOS_MESSAGES", "CHAOS_SECONDS", "CHAOS_DIR") if os.environ.get(name)]
    variables.append(f"CHAOS_SEED={settings.seed}")
    return " ".join([*variables, ".venv/bin/pytest", *map(shlex.quote, sys.argv[1:])])


@pytest.mark.chaos
@pytest.mark.timeout(3 * 3600)
async def test_a_campaign_of_a_thousand_messages_loses_nothing_and_duplicates_nothing(tmp_path, capsys):
    """Under random SIGKILLs of every node and faults on every link, each message is delivered once and its receipt comes home."""
    settings = Settings.campaign(random_seed()).from_env(os.environ)
    directory = Path(os.environ["CHAOS_DIR"]) if os.environ.get("CHAOS_DIR") else tmp_path
    revision = source_revision(ROOT)  # what the node processes run, taken before they start
    figures = await Campaign(directory, settings).run()
    with capsys.disabled():
        print("\n" + figures.text())
    report = os.environ.get("CHAOS_REPORT", str(REPORT))
    if report:
        update_report(Path(report), figures.markdown(command_line(settings), describe_revisions(revision, source_revision(ROOT))))
    assert figures.problems == []
    assert figures.lost == 0 and figures.duplicated == 0
    assert all(figures.kills[node] >= 1 for node in NODES), figures.kills
    assert all(figures.faults[kind] >= 1 for kind in Fault), figures.faults
