"""Reliability of forwarding: a circuit breaker per peer, and a graceful shutdown that loses and duplicates nothing."""

from __future__ import annotations

import asyncio
import signal
import sqlite3

from gateway.demo import start_node, wait_ready
from gateway.samples import discover
from gateway.store import OutgoingState

from ..conftest import KANTON, LUZERN, SAMPLES
from .nodes import client, running, sample_envelope

MOVE = next(s for s in discover(SAMPLES) if s.name.startswith("openech-ech0020-v2.2/div-movetest"))


async def submit(federation, clock, count):
    ids = []
    async with client(federation, LUZERN) as api:
        for _ in range(count):
            message_id, envelope, payload = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
            status, body = await api.submit(envelope, payload, "data.xml")
            assert status == 202, body
            ids.append(message_id)
    return ids


async def test_a_failing_peer_opens_its_breaker_holds_its_queue_and_a_probe_closes_it(federation, clock):
    """Five failures open the breaker: nothing is attempted while it is open, then one success closes it."""
    async with running(federation, clock, "node-luzern") as nodes:
        luzern = nodes["node-luzern"]
        ids = await submit(federation, clock, 3)
        breaker = luzern.breakers["node-kanton"]
        for _ in range(2):
            clock.advance(seconds=60)
            await luzern.forward_due()  # the canton's node is down: every transfer fails
        assert breaker.state == "open" and breaker.failures >= 5
        attempts = {r.message_id: r.attempts for r in luzern.store.queued()}
        clock.advance(seconds=breaker.period / 2)
        assert await luzern.forward_due() == 0
        assert {r.message_id: r.attempts for r in luzern.store.queued()} == attempts, "no attempt while open"
        assert min(r.next_attempt for r in luzern.store.queued()) >= breaker.open_until, "held until the breaker half-opens"
        async with running(federation, clock, "node-kanton"):
            clock.advance(seconds=breaker.period)
            assert await luzern.forward_due() == 1, "half-open: one probe"
            assert breaker.state == "closed"
            assert await luzern.forward_due() == 2, "the held messages are released at once"
        assert breaker.state == "closed" and breaker.failures == 0
        assert all(r.state is OutgoingState.DELIVERED for m in ids for r in luzern.store.outgoing_for(LUZERN, m))


async def test_a_probe_that_fails_opens_the_breaker_for_twice_as_long(tmp_path, clock):
    from gateway.federation import NodeSpec, build_federation

    from ..conftest import XSD

    federation = build_federation(
        tmp_path / "breaker", [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-kanton", [KANTON])], schemas=XSD,
        delivery_toml="retry_base_seconds = 0.2\nretry_max_seconds = 60\nbreaker_seconds = 5",
    )  # fmt: skip
    async with running(federation, clock, "node-luzern") as nodes:
        luzern = nodes["node-luzern"]
        await submit(federation, clock, 5)
        breaker = luzern.breakers["node-kanton"]
        clock.advance(seconds=60)
        await luzern.forward_due()
        first = breaker.period
        assert breaker.state == "open" and first == 5
        clock.advance(seconds=first + 1)
        await luzern.forward_due()
        assert breaker.period == 2 * first


def outgoing_states(federation, node_id):
    db = sqlite3.connect(federation.config_path(node_id).parent / "store" / "messages.db")
    try:
        return dict(db.execute("SELECT state, COUNT(*) FROM outgoing GROUP BY state").fetchall())
    finally:
        db.close()


def inbox_counts(federation, node_id):
    db = sqlite3.connect(federation.config_path(node_id).parent / "store" / "messages.db")
    try:
        return [n for (n,) in db.execute("SELECT COUNT(*) FROM inbox GROUP BY sender, message_id, recipient")]
    finally:
        db.close()


async def test_sigterm_under_load_exits_cleanly_and_after_a_restart_everything_arrives_exactly_once(federation, clock, tmp_path):
    processes = {n.id: start_node(federation, n.id, tmp_path / "logs") for n in federation.nodes}
    try:
        for node_id, process in processes.items():
            await wait_ready(federation, node_id, process=process)
        ids = await submit(federation, clock, 40)
        processes["node-luzern"].send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(processes["node-luzern"].wait, 30) == 0, "a clean exit on SIGTERM"
        processes["node-luzern"] = start_node(federation, "node-luzern", tmp_path / "logs")
        await wait_ready(federation, "node-luzern", process=processes["node-luzern"])
        for _ in range(300):
            if outgoing_states(federation, "node-luzern") == {"delivered": len(ids)}:
                break
            await asyncio.sleep(0.05)
        assert outgoing_states(federation, "node-luzern") == {"delivered": len(ids)}
        counts = inbox_counts(federation, "node-kanton")
        assert len(counts) == len(ids) and set(counts) == {1}, "each message exactly once"
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
