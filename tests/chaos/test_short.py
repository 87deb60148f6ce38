"""A short chaos run inside ``make test``: 150 messages through three node processes under kills and network faults."""

from __future__ import annotations

import os

from .harness import Campaign
from .proxy import Fault
from .settings import NODES, Settings, random_seed


async def test_under_kills_and_network_faults_every_message_arrives_once_and_every_receipt_comes_home(tmp_path, capsys):
    """Every node is SIGKILLed and every fault is injected; afterwards nothing is lost or duplicated and every audit log verifies."""
    seed = int(os.environ.get("CHAOS_SEED") or random_seed())  # printed with the figures, to replay a failure's plan
    figures = await Campaign(tmp_path, Settings.short(seed)).run()
    with capsys.disabled():
        print("\n" + figures.text())
    assert figures.problems == []
    assert figures.lost == 0 and figures.duplicated == 0
    assert all(figures.kills[node] >= 1 for node in NODES), figures.kills
    assert all(figures.faults[kind] >= 1 for kind in Fault), figures.faults
