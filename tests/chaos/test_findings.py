"""Gateway defects the chaos campaign ran into, each pinned down by a small, deterministic test.

These tests describe the behaviour the gateway documents (docs/operations.md, docs/wire-format.md);
a failing one here is an open defect, described in docs/reliability.md ("Findings").
"""

from __future__ import annotations

from gateway.federation import NodeSpec, build_federation
from gateway.samples import discover
from gateway.store import OutgoingState

from ..conftest import KANTON, LUZERN, SAMPLES, XSD
from ..gateway.nodes import client, running, sample_envelope

MOVE = next(s for s in discover(SAMPLES) if s.name.startswith("openech-ech0020-v2.2/div-movetest"))


KRIENS = "1-1059-1"


async def submit(federation, clock, count: int, recipient: str = KANTON) -> list[str]:
    ids = []
    async with client(federation, LUZERN) as api:
        for _ in range(count):
            message_id, envelope, payload = sample_envelope(MOVE, LUZERN, recipient, clock.now())
            status, body = await api.submit(envelope, payload, "data.xml")
            assert status == 202, body
            ids.append(message_id)
    return ids


async def test_a_message_arriving_while_a_breaker_is_open_does_not_extend_the_open_period(federation, clock):
    """The breaker half-opens ``breaker_seconds`` after it opened, whatever was submitted for that peer meanwhile."""
    async with running(federation, clock, "node-luzern") as nodes:
        luzern = nodes["node-luzern"]
        await submit(federation, clock, 5)
        breaker = luzern.breakers["node-kanton"]
        clock.advance(seconds=1)
        await luzern.forward_due()  # the canton's node is down: five failures open the breaker
        assert breaker.state == "open"
        opened_until = breaker.open_until
        clock.advance(seconds=breaker.period * 2 / 3)
        await submit(federation, clock, 1)  # one more message for the canton while the breaker is open
        assert await luzern.forward_due() == 0, "nothing is attempted while the breaker is open"
        held_until = min(r.next_attempt for r in luzern.store.queued())
        async with running(federation, clock, "node-kanton"):
            clock.advance(seconds=opened_until - clock.timestamp() + 0.1)
            delivered = await luzern.forward_due()
        assert held_until <= opened_until + 0.001, (
            f"the held queue was postponed to {held_until - opened_until:.0f}s after the end of the open period"
        )
        assert delivered >= 1, "half-open after breaker_seconds: a probe goes out and succeeds"


async def test_a_successful_hand_over_to_a_relay_closes_the_breaker_and_releases_the_held_queue(tmp_path, clock):
    """A relay's signed acknowledgement (HTTP 202, state handed) is a successful transfer for the peer's circuit breaker."""
    federation = build_federation(
        tmp_path / "hub", [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-hub", [KANTON]), NodeSpec("node-kriens", [KRIENS])],
        schemas=XSD, via={"node-luzern": {KRIENS: "node-hub"}, "node-kriens": {LUZERN: "node-hub"}},
        delivery_toml="retry_base_seconds = 0.2\nretry_max_seconds = 2.0\npoll_seconds = 0.05",
    )  # fmt: skip
    async with running(federation, clock, "node-luzern") as nodes:
        luzern = nodes["node-luzern"]
        ids = await submit(federation, clock, 5, recipient=KRIENS)  # every one of them goes through the hub
        breaker = luzern.breakers["node-hub"]
        clock.advance(seconds=1)
        await luzern.forward_due()  # the hub is down: five failures open the breaker
        assert breaker.state == "open"
        async with running(federation, clock, "node-hub"):
            clock.advance(seconds=breaker.open_until - clock.timestamp() + 0.1)
            assert await luzern.forward_due() == 1, "half-open: one probe, handed over to the hub"
            clock.advance(seconds=0.1)
            await luzern.forward_due()
            states = [r.state for m in ids for r in luzern.store.outgoing_for(LUZERN, m)]
        assert breaker.state == "closed", f"the breaker is still open after a successful hand-over ({breaker.failures} failures)"
        assert states == [OutgoingState.HANDED] * 5, "the held messages are released once the probe succeeded"
