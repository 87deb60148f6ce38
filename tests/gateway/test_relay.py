"""Multi-hop: a message from Luzern to Kriens through the cantonal hub, which relays it without being able to read it."""

from __future__ import annotations

import asyncio
import io
import re

import pytest
from lxml import etree

from gateway.audit import Action, Actor, ActorKind, Role, export_log, load_public_key, trace_message, verify_export, verify_log
from gateway.config import load_config
from gateway.federation import NodeSpec, build_federation
from gateway.ids import GatewayError, StatusCode
from gateway.samples import discover
from gateway.store import OutgoingState

from ..conftest import KANTON, LUZERN, SAMPLES, XSD
from .nodes import client, running, sample_envelope

KRIENS = "1-1059-1"
MOVE = next(s for s in discover(SAMPLES) if s.name.startswith("openech-ech0020-v2.2/div-movetest"))


def hub_federation(tmp_path, **options):
    """Luzern and Kriens each on their own node; every message between them goes through the canton's hub."""
    return build_federation(
        tmp_path / "hub",
        [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-hub", [KANTON]), NodeSpec("node-kriens", [KRIENS])],
        schemas=XSD, via={"node-luzern": {KRIENS: "node-hub"}, "node-kriens": {LUZERN: "node-hub"}},
        delivery_toml="retry_base_seconds = 0.2\nretry_max_seconds = 2.0\npoll_seconds = 0.05", **options,
    )  # fmt: skip


@pytest.fixture
def hub(tmp_path):
    return hub_federation(tmp_path)


async def send(federation, clock, sender=LUZERN, recipient=KRIENS):
    message_id, envelope, payload = sample_envelope(MOVE, sender, recipient, clock.now())
    async with client(federation, sender) as api:
        status, body = await api.submit(envelope, payload, "data.xml")
    assert status == 202, body
    return message_id, payload


async def run_forwarders(nodes, rounds=6):
    """Let each node forward and return receipts, in route order, a few times."""
    for _ in range(rounds):
        for node_id in ("node-luzern", "node-hub", "node-kriens"):
            if node_id in nodes:
                await nodes[node_id].forward_due()


def secrets_of(payload: bytes) -> set[str]:
    root = etree.fromstring(payload)
    return {e.text.strip() for e in root.iter() if isinstance(e.tag, str) and e.text and e.text.strip()
            and etree.QName(e).localname in ("vn", "officialName", "firstName", "street")}  # fmt: skip


async def test_a_message_through_the_hub_arrives_intact_and_the_sender_sees_every_hop(hub, clock):
    async with running(hub, clock) as nodes:
        message_id, payload = await send(hub, clock)
        await run_forwarders(nodes)
        async with client(hub, KRIENS) as api:
            assert await api.payload(KRIENS, LUZERN, message_id) == payload
        (row,) = nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)
        assert row.state is OutgoingState.DELIVERED and row.receipt_status == 100
        steps = [(e.node, e.kind) for e in nodes["node-luzern"].store.timeline(LUZERN, message_id)]
        assert steps[steps.index(("node-luzern", "forwarding")):] == [
            ("node-luzern", "forwarding"), ("node-hub", "received"), ("node-luzern", "handed"),
            ("node-hub", "forwarding"), ("node-kriens", "received"), ("node-kriens", "verified"), ("node-kriens", "delivered"),
            ("node-hub", "receipt"), ("node-luzern", "receipt"),
        ]  # fmt: skip
        assert nodes["node-hub"].store.due_returns(clock.timestamp() + 3600) == [], "the hub owes no receipt any more"


async def test_the_hub_holds_no_key_and_stores_no_plaintext(hub, clock):
    """The relay keeps only ciphertext; it hosts neither participant, so it has no key that opens the payload."""
    async with running(hub, clock) as nodes:
        message_id, payload = await send(hub, clock)
        await nodes["node-luzern"].forward_due()
        hub_node = nodes["node-hub"]
        (relayed,) = hub_node.store.outgoing_for(LUZERN, message_id)
        assert set(map(str, hub_node.hosted)) == {KANTON}
        secrets = secrets_of(payload)
        assert any(re.fullmatch(r"756\d{10}", s) for s in secrets)
        stored = relayed.blob.read_bytes() + (hub_node.config.store / "messages.db").read_bytes()
        stored += b"".join(p.read_bytes() for p in hub_node.config.audit_log.parent.iterdir())
        for secret in secrets:
            assert secret.encode() not in stored
        from gateway.crypto.seal import verify_seal

        seal = verify_seal(relayed.seal, relayed.envelope, sender=relayed_sender(relayed), trust=hub_node.trust, now=clock.now())
        assert set(seal.keys) == {KRIENS}, "the content key is wrapped for Kriens only"


def relayed_sender(item):
    from gateway.ids import ParticipantId

    return ParticipantId(item.sender)


async def test_the_trace_runs_origin_relay_destination_with_matching_digests(hub, clock):
    async with running(hub, clock) as nodes:
        message_id, _ = await send(hub, clock)
        await run_forwarders(nodes)
        exports = []
        for node_id, node in nodes.items():
            node.audit.checkpoint(clock.now())
            key = load_public_key(load_config(hub.config_path(node_id)).tls.certificate.read_bytes())
            verify_log(node.config.audit_log, key)
            out = io.StringIO()
            export_log(node.audit, out, actor=Actor(ActorKind.AUDITOR, "dsb"), now=clock.now())
            exports.append(verify_export(out.getvalue(), key))
        trace = trace_message(message_id, exports)
        assert [(h.node, h.role) for h in trace.hops] == [
            ("node-luzern", Role.ORIGIN), ("node-hub", Role.RELAY), ("node-kriens", Role.DESTINATION),
        ]
        assert trace.hops[0].sent_digest == trace.hops[1].received_digest == trace.hops[1].sent_digest == trace.hops[2].received_digest


async def test_while_kriens_is_down_the_message_waits_at_the_hub_and_is_delivered_once_when_it_is_back(hub, clock):
    async with running(hub, clock, "node-luzern", "node-hub") as nodes:
        message_id, _ = await send(hub, clock)
        await run_forwarders(nodes)
        (origin,) = nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)
        assert origin.state is OutgoingState.HANDED
        (waiting,) = nodes["node-hub"].store.outgoing_for(LUZERN, message_id)
        assert waiting.state is OutgoingState.QUEUED and waiting.attempts >= 1
        assert not origin.blob.exists(), "the origin released its copy once the hub held it durably"
        hub_node = nodes["node-hub"]
        async with running(hub, clock, "node-kriens") as kriens:
            clock.advance(seconds=5)
            await hub_node.forward_due()
            clock.advance(seconds=5)
            await hub_node.forward_due()
            assert len(kriens["node-kriens"].store.inbox(KRIENS)) == 1
        (origin,) = nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)
        assert origin.state is OutgoingState.DELIVERED and origin.receipt_status == 100


async def test_a_receipt_return_that_fails_is_retried_until_the_origin_has_it(hub, clock):
    async with running(hub, clock, "node-hub", "node-kriens") as nodes:
        async with running(hub, clock, "node-luzern") as luzern:
            message_id, _ = await send(hub, clock)
            await luzern["node-luzern"].forward_due()
        # Luzern is down now: Kriens gets it, the hub cannot return the receipt.
        await nodes["node-hub"].forward_due()
        await nodes["node-hub"].forward_due()
        (owed,) = nodes["node-hub"].store.due_returns(clock.timestamp() + 3600)
        assert owed.upstream == "node-luzern" and owed.attempts >= 1
        async with running(hub, clock, "node-luzern") as luzern:
            clock.advance(seconds=10)
            await nodes["node-hub"].forward_due()
            (row,) = luzern["node-luzern"].store.outgoing_for(LUZERN, message_id)
            assert row.state is OutgoingState.DELIVERED and row.receipt_status == 100
        assert nodes["node-hub"].store.due_returns(clock.timestamp() + 3600) == []


async def test_a_routing_loop_is_refused_with_301_and_reaches_no_one(tmp_path, clock):
    """The hub sends Kriens' messages back to Luzern, which sends them to the hub: the signed hops show the loop."""
    federation = build_federation(
        tmp_path / "loop",
        [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-hub", [KANTON]), NodeSpec("node-kriens", [KRIENS])],
        schemas=XSD, via={"node-luzern": {KRIENS: "node-hub"}, "node-hub": {KRIENS: "node-luzern"}},
    )  # fmt: skip
    async with running(federation, clock) as nodes:
        message_id, _ = await send(federation, clock)
        await run_forwarders(nodes)
        (row,) = nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)
        assert row.state is OutgoingState.FAILED and row.receipt_status == int(StatusCode.UNKNOWN_RECIPIENT)
        assert "loop" in (row.receipt or b"").decode()
        assert nodes["node-kriens"].store.inbox(KRIENS) == []


async def test_too_many_hops_are_refused(tmp_path, clock):
    federation = hub_federation(tmp_path, )
    config = federation.config_path("node-hub")
    config.write_text(config.read_text().replace("poll_seconds = 0.05", "poll_seconds = 0.05\nmax_hops = 1"))
    async with running(federation, clock) as nodes:
        message_id, _ = await send(federation, clock)
        await run_forwarders(nodes)
        (row,) = nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)
        assert row.receipt_status == int(StatusCode.UNKNOWN_RECIPIENT) and "limit 1" in row.receipt.decode()


async def test_a_forged_returned_receipt_is_refused(hub, clock):
    """A returned receipt must be signed by the relay the message was handed to, and the final receipt by a node."""
    async with running(hub, clock, "node-luzern", "node-hub") as nodes:
        message_id, _ = await send(hub, clock)
        await nodes["node-luzern"].forward_due()
        (row,) = nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)
        assert row.state is OutgoingState.HANDED
        from gateway.crypto.seal import RELAY_TYPE, SealError
        from gateway.receipt import Receipt

        # Kriens' participant signing key is not a node key: it cannot sign a final receipt.
        kriens_signer = participant_signer(hub, KRIENS)
        from gateway.envelope import parse_envelope

        receipt_xml = Receipt.for_envelope(parse_envelope(row.envelope, None), relayed_recipient(), StatusCode.DELIVERED, None, clock.now()).to_xml()
        forged_final = kriens_signer.sign("drehscheibe-receipt+json;v=1", {"node": KRIENS, "receipt": receipt_xml.decode(), "ciphertextSha256": row.ciphertext_sha256})
        hub_node = nodes["node-hub"]
        token = hub_node.node_signer.sign(RELAY_TYPE, {
            "node": "node-hub", "kind": "receipt", "sender": LUZERN, "messageId": message_id, "recipient": KRIENS,
            "ciphertextSha256": row.ciphertext_sha256, "receipt": forged_final, "events": [],
        })  # fmt: skip
        with pytest.raises(SealError):
            await nodes["node-luzern"].accept_returned_receipt(token, "node-hub")
        with pytest.raises(GatewayError):
            await nodes["node-luzern"].accept_returned_receipt(token, "node-kriens")  # not signed by that peer
        (row,) = nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)
        assert row.state is OutgoingState.HANDED


def participant_signer(federation, participant):
    from gateway.crypto.seal import SigningIdentity
    from gateway.pki import load_certificate, load_private_key

    config = load_config(federation.config_path(federation.node_of(participant).id))
    hosted = next(p for p in config.participants if str(p.id) == participant)
    return SigningIdentity.from_key(participant, load_private_key(hosted.signing_key), load_certificate(hosted.signing_certificate))


def relayed_recipient():
    from gateway.ids import ParticipantId

    return ParticipantId(KRIENS)


async def test_relay_records_are_written_at_the_hub(hub, clock):
    async with running(hub, clock) as nodes:
        message_id, _ = await send(hub, clock)
        await run_forwarders(nodes)
        actions = [(r.role, r.action) for _, _, r in nodes["node-hub"].audit.iter_records() if r.message_id == message_id]
        assert actions == [(Role.RELAY, Action.RECEIVED), (Role.RELAY, Action.FORWARDED), (Role.RELAY, Action.DELIVERED)]


async def test_processes_relay_end_to_end_over_mtls(hub, tmp_path):
    """Three node processes: submit at Luzern, read at Kriens, receipt 100 at Luzern."""
    from gateway.demo import start_node, wait_ready

    processes = [start_node(hub, n.id, tmp_path / "logs") for n in hub.nodes]
    try:
        for node, process in zip(hub.nodes, processes):
            await wait_ready(hub, node.id, process=process)
        from datetime import datetime, timezone

        from gateway.clock import FixedClock

        message_id, payload = await send(hub, FixedClock(datetime.now(timezone.utc)))
        async with client(hub, LUZERN) as api:
            for _ in range(200):
                state = await api.status(LUZERN, message_id)
                if state["receipts"]:
                    break
                await asyncio.sleep(0.05)
        assert state["receipts"][-1]["statusCode"] == 100, state
        async with client(hub, KRIENS) as api:
            assert await api.payload(KRIENS, LUZERN, message_id) == payload
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


async def test_kriens_down_for_a_day_then_back_gets_the_message_and_the_origin_its_receipt(hub, clock):
    async with running(hub, clock, "node-luzern", "node-hub") as nodes:
        message_id, payload = await send(hub, clock)
        for _ in range(24):  # a day of hourly rounds with Kriens unreachable
            await run_forwarders(nodes, rounds=1)
            clock.advance(hours=1)
        (waiting,) = nodes["node-hub"].store.outgoing_for(LUZERN, message_id)
        assert waiting.state is OutgoingState.QUEUED and waiting.attempts >= 3
        async with running(hub, clock, "node-kriens") as kriens:
            clock.advance(seconds=hub_retry_ceiling(nodes["node-hub"]))
            await run_forwarders({**nodes, **kriens})
            async with client(hub, KRIENS) as api:
                assert await api.payload(KRIENS, LUZERN, message_id) == payload
        (origin,) = nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)
        assert origin.state is OutgoingState.DELIVERED and origin.receipt_status == 100


def hub_retry_ceiling(node):
    delivery = node.config.delivery
    return max(delivery.retry_max_seconds, delivery.breaker_seconds) * 2 + 1


async def test_behind_a_relay_the_sender_is_warned_701_and_gets_the_relays_204_at_expiry(hub, clock):
    async with running(hub, clock, "node-luzern", "node-hub") as nodes:
        message_id, _ = await send(hub, clock)
        await run_forwarders(nodes, rounds=1)
        clock.advance(days=23, seconds=1)
        await run_forwarders(nodes, rounds=2)
        luzern_kinds = [(e.node, e.kind) for e in nodes["node-luzern"].store.timeline(LUZERN, message_id)]
        assert ("node-luzern", "expires-soon") in luzern_kinds and ("node-hub", "expires-soon") in [
            (e.node, e.kind) for e in nodes["node-hub"].store.timeline(LUZERN, message_id)
        ]
        clock.advance(days=7)
        await run_forwarders(nodes, rounds=2)
        (origin,) = nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)
        assert origin.state is OutgoingState.EXPIRED and origin.receipt_status == int(StatusCode.MESSAGE_EXPIRED)
        signer = origin.receipt_signature
        from gateway.crypto.seal import RECEIPT_TYPE, verify_node_signed

        node, _ = verify_node_signed(signer, typ=RECEIPT_TYPE, trust=nodes["node-luzern"].trust, now=clock.now())
        assert node == "node-hub", "the 204 is the relay's, signed by it"


async def test_if_a_relay_never_answers_the_origin_settles_a_day_after_expiry(hub, clock):
    async with running(hub, clock, "node-luzern") as nodes:
        async with running(hub, clock, "node-hub") as hubs:
            message_id, _ = await send(hub, clock)
            await nodes["node-luzern"].forward_due()
            assert hubs["node-hub"].store.outgoing_for(LUZERN, message_id)
        clock.advance(days=30, seconds=1)  # the hub stays down
        await nodes["node-luzern"].forward_due()
        (origin,) = nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)
        assert origin.state is OutgoingState.HANDED
        clock.advance(days=1)
        await nodes["node-luzern"].forward_due()
        (origin,) = nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)
        assert origin.state is OutgoingState.EXPIRED and "no final receipt" in origin.receipt.decode()


async def test_a_returned_receipt_the_origin_cannot_audit_stays_owed_until_it_can(hub, clock):
    """Fail closed on the way back too: while Luzern's audit log is locked, the hub keeps the receipt and retries."""
    import sqlite3

    async with running(hub, clock) as nodes:
        message_id, _ = await send(hub, clock)
        await nodes["node-luzern"].forward_due()
        blocker = sqlite3.connect(nodes["node-luzern"].config.audit_log, timeout=0.1)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            await nodes["node-hub"].forward_due()  # delivers to Kriens, then tries to return the receipt
            await nodes["node-hub"].forward_due()
            (owed,) = nodes["node-hub"].store.due_returns(clock.timestamp() + 3600)
            assert owed.attempts >= 1
        finally:
            blocker.rollback()
            blocker.close()
        (row,) = nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)
        assert row.state is OutgoingState.HANDED
        clock.advance(seconds=hub_retry_ceiling(nodes["node-hub"]))
        await nodes["node-hub"].forward_due()
        (row,) = nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)
        assert row.state is OutgoingState.DELIVERED and row.receipt_status == 100
        assert nodes["node-hub"].store.due_returns(clock.timestamp() + 3600) == []
