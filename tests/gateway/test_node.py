"""A node's origin and destination stages, with real mTLS between two in-process nodes."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from gateway.envelope import parse_envelope
from gateway.federation import NodeSpec, build_federation
from gateway.ids import ParticipantId, StatusCode
from gateway.node import UnreadablePayload
from gateway.samples import discover, payload_for
from gateway.store import OutgoingState

from ..conftest import KANTON, LUZERN, SAMPLES, XSD
from .nodes import client, running, sample_envelope

SEMPACH = next(s for s in discover(SAMPLES) if s.name.startswith("ech0099"))
MOVE = next(s for s in discover(SAMPLES) if s.name.startswith("openech-ech0020-v2.2/div-movetest"))


async def submit(federation, sample, now, sender=LUZERN, recipient=KANTON, message_id=None, envelope=None, payload=None):
    message_id, built, prepared = sample_envelope(sample, sender, recipient, now, message_id)
    async with client(federation, sender) as api:
        status, body = await api.submit(envelope or built, prepared if payload is None else payload, sample.data.name)
    return message_id, status, body


async def test_a_message_is_delivered_and_the_sender_sees_receipt_100_and_every_step(federation, clock):
    """A submitted message reaches the recipient's inbox byte-identical and the timeline shows each hop."""
    async with running(federation, clock) as nodes:
        message_id, status, body = await submit(federation, MOVE, clock.now())
        assert status == 202 and body["messageId"] == message_id
        assert await nodes["node-luzern"].forward_due() == 1
        async with client(federation, KANTON) as kanton:
            inbox = await kanton.inbox(KANTON)
            assert [m["messageId"] for m in inbox] == [message_id]
            assert await kanton.payload(KANTON, LUZERN, message_id) == payload_for(MOVE, ParticipantId(LUZERN), ParticipantId(KANTON), 20001)
        async with client(federation, LUZERN) as luzern:
            state = await luzern.status(LUZERN, message_id)
        assert state["recipients"][0]["state"] == "delivered"
        assert state["receipts"][0]["statusCode"] == 100
        kinds = [(e["node"], e["kind"]) for e in state["events"]]
        assert kinds == [
            ("node-luzern", "accepted"), ("node-luzern", "validated"), ("node-luzern", "sealed"),
            ("node-luzern", "forwarding"), ("node-kanton", "received"), ("node-kanton", "verified"),
            ("node-kanton", "delivered"), ("node-luzern", "receipt"),
        ]  # fmt: skip


async def test_an_identical_resubmission_is_accepted_once_and_a_different_one_gets_201(federation, clock):
    """Re-sending the same message is idempotent; reusing its messageId for other content is receipt 201."""
    async with running(federation, clock) as nodes:
        message_id, status, _ = await submit(federation, MOVE, clock.now())
        _, again, body = await submit(federation, MOVE, clock.now(), message_id=message_id)
        assert (status, again, body["duplicate"]) == (202, 202, True)
        _, conflict, body = await submit(federation, SEMPACH, clock.now(), message_id=message_id)
        assert conflict == 409 and body["statusCode"] == 201
        assert await nodes["node-luzern"].forward_due() == 1
        assert len(nodes["node-kanton"].store.inbox(KANTON)) == 1


async def test_a_message_dated_more_than_30_days_ago_is_refused_with_203(federation, clock):
    """messageDate older than the expiry window is refused at submission with receipt 203."""
    async with running(federation, clock):
        _, status, body = await submit(federation, MOVE, clock.now() - timedelta(days=31))
        assert status == 422 and body["statusCode"] == 203
        assert b"<eCH-0090:statusCode>203</eCH-0090:statusCode>" in body["receipt"].encode()


@pytest.mark.parametrize(("ahead", "status", "code"), [
    pytest.param(timedelta(minutes=50), 202, None, id="within-the-tolerated-skew"),
    pytest.param(timedelta(minutes=70), 422, 200, id="beyond-the-tolerated-skew"),
])  # fmt: skip
async def test_a_message_dated_ahead_is_accepted_only_within_the_tolerated_clock_skew(federation, clock, ahead, status, code):
    """messageDate may be up to an hour ahead of the node's clock (message_date_tolerance_seconds); further ahead is 200."""
    async with running(federation, clock):
        _, answered, body = await submit(federation, MOVE, clock.now() + ahead)
        assert answered == status and body.get("statusCode") == code, body


@pytest.mark.parametrize(
    ("sender", "recipient", "code"),
    [("1-1024-1", KANTON, 300), (LUZERN, "1-1059-1", 301), (LUZERN, "T2-LU-1", 310)],
)
async def test_unknown_or_forbidden_participants_are_refused_with_their_code(federation, clock, sender, recipient, code):
    """An unhosted sender is 300, an unrouted recipient 301, production→test traffic 310."""
    async with running(federation, clock):
        message_id, envelope, payload = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
        parsed = parse_envelope(envelope, None)
        forged = replace(parsed, sender=ParticipantId(sender), recipients=(ParticipantId(recipient),)).to_xml()
        async with client(federation, LUZERN) as api:
            status, body = await api.submit(forged, payload)
        assert body["statusCode"] == code, body


async def test_a_payload_that_breaks_its_schema_is_refused_with_200_and_nothing_is_queued(federation, clock):
    """A schema-invalid eCH payload gets receipt 200 and never enters the outgoing queue."""
    async with running(federation, clock) as nodes:
        broken = payload_for(MOVE, ParticipantId(LUZERN), ParticipantId(KANTON), 20001).replace(b"<e20:move>", b"<e20:moveX>").replace(b"</e20:move>", b"</e20:moveX>")
        assert broken != MOVE.payload()
        _, status, body = await submit(federation, MOVE, clock.now(), payload=broken)
        assert status == 422 and body["statusCode"] == 200
        assert nodes["node-luzern"].store.queued() == []


async def test_a_payload_without_schema_is_refused_unless_the_route_accepts_well_formed(federation, clock):
    """An eCH-0020 v1 payload (no public XSD) is refused with 200 on a schema-valid route."""
    v1 = next(s for s in discover(SAMPLES) if s.namespace == "http://www.ech.ch/xmlns/eCH-0020/1")
    async with running(federation, clock):
        _, status, body = await submit(federation, v1, clock.now())
        assert status == 422 and body["statusCode"] == 200
        assert "no schema" in body["statusInfo"]


async def test_a_down_peer_means_retries_with_growing_backoff_then_delivery(federation, clock):
    """While the peer is down the message waits with exponential backoff; it is delivered once the peer is back."""
    async with running(federation, clock, "node-luzern") as nodes:
        luzern = nodes["node-luzern"]
        message_id, status, _ = await submit(federation, MOVE, clock.now())
        delays = []
        for _ in range(4):
            assert await luzern.forward_due() == 0
            (item,) = luzern.store.queued()
            delays.append(item.next_attempt - clock.timestamp())
            clock.advance(seconds=delays[-1] + 0.001)
        assert delays[-1] > delays[0]
        async with running(federation, clock, "node-kanton"):
            assert await luzern.forward_due() == 1
        (row,) = luzern.store.outgoing_for(LUZERN, message_id)
        assert row.state is OutgoingState.DELIVERED and row.attempts == 5


async def test_a_message_that_cannot_be_delivered_warns_701_and_expires_with_204(federation, clock):
    """Seven days before expiry the sender is warned (701); at 30 days the message expires (204)."""
    async with running(federation, clock, "node-luzern") as nodes:
        luzern = nodes["node-luzern"]
        message_id, _, _ = await submit(federation, MOVE, clock.now())
        clock.advance(days=23, seconds=1)
        await luzern.forward_due()
        kinds = [e.kind for e in luzern.store.timeline(LUZERN, message_id)]
        assert "expires-soon" in kinds and "expired" not in kinds
        clock.advance(days=7)
        await luzern.forward_due()
        (row,) = luzern.store.outgoing_for(LUZERN, message_id)
        assert row.state is OutgoingState.EXPIRED and row.receipt_status == int(StatusCode.MESSAGE_EXPIRED)
        assert not row.blob.exists(), "the ciphertext of an expired message is released"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ((b">1-1061-1<", b">1-1024-1<"), "senderId"),
        ((b"Type>20001<", b"Type>20201<"), "messageType"),
        ((b"testDeliveryFlag>false<", b"testDeliveryFlag>true<"), "testDeliveryFlag"),
    ],
    ids=["sender", "message-type", "test-flag"],
)
async def test_a_payload_header_that_contradicts_the_envelope_is_refused_with_200(federation, clock, change, named):
    """The eCH-0058 header inside the payload must agree with the envelope; the receipt names the field, nothing is queued."""
    _, _, prepared = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
    contradicting = prepared.replace(*change)
    assert contradicting != prepared
    async with running(federation, clock) as nodes:
        _, status, body = await submit(federation, MOVE, clock.now(), payload=contradicting)
        assert (status, body["statusCode"]) == (422, 200), body
        assert named in body["statusInfo"]
        assert nodes["node-luzern"].store.queued() == []


async def test_a_message_between_two_participants_of_one_node_shows_each_step_once(tmp_path, clock):
    """Local delivery (route via local): the timeline has one received, verified and delivered event each."""
    from gateway.federation import NodeSpec, build_federation

    from ..conftest import XSD

    federation = build_federation(tmp_path / "one", [NodeSpec("node-kanton", [LUZERN, KANTON])], schemas=XSD)
    async with running(federation, clock) as nodes:
        message_id, status, body = await submit(federation, MOVE, clock.now())
        assert status == 202, body
        assert await nodes["node-kanton"].forward_due() == 1
        kinds = [e.kind for e in nodes["node-kanton"].store.timeline(LUZERN, message_id)]
        assert [k for k in kinds if k in ("received", "verified", "delivered", "receipt")] == ["received", "verified", "delivered", "receipt"]


@pytest.mark.parametrize(("payload", "readable"), [
    pytest.param(lambda p: p, True, id="ech-xml"),
    pytest.param(lambda p: b"PK\x03\x04" + p, None, id="zip-like-not-xml"),
    pytest.param(lambda p: p.replace(b"?>", b"?><!DOCTYPE x>", 1), False, id="doctype"),
    pytest.param(lambda p: p.decode().replace('encoding="UTF-8"', 'encoding="UTF-16"').replace("?>", "?><!DOCTYPE x>", 1).encode("utf-16"),
                 False, id="utf16-doctype"),
    pytest.param(lambda p: p[: len(p) // 2], False, id="truncated-markup"),
])  # fmt: skip
async def test_a_payload_is_a_tree_not_xml_or_refused_never_unreadable_xml_passed_as_opaque(federation, clock, payload, readable):
    """parse_payload gives a tree for XML and None for what is not XML; XML it cannot read safely is refused with 200."""
    _, _, xml = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
    async with running(federation, clock, "node-luzern") as nodes:
        node = nodes["node-luzern"]
        if readable is False:
            with pytest.raises(UnreadablePayload) as refused:
                node.parse_payload(payload(xml))
            assert refused.value.status is StatusCode.INVALID_ENVELOPE
        else:
            assert (node.parse_payload(payload(xml)) is not None) is bool(readable)


@pytest.fixture
def tight(tmp_path):
    """As ``federation``, but node-luzern holds payloads of at most 40 elements as a tree (the move sample has 49)."""
    return build_federation(
        tmp_path / "tight",
        [NodeSpec("node-luzern", [LUZERN], extra_toml="[limits]\nin_memory_max_elements = 40"), NodeSpec("node-kanton", [KANTON])],
        schemas=XSD, delivery_toml="retry_base_seconds = 0.2\nretry_max_seconds = 2.0\npoll_seconds = 0.05",
    )  # fmt: skip


async def test_a_payload_with_more_elements_than_a_tree_may_hold_is_checked_as_it_streams(tight, clock):
    """Over in_memory_max_elements no tree is built; the payload is still validated as it streams: delivered if valid, 200 if not."""
    async with running(tight, clock) as nodes:
        origin = nodes["node-luzern"]
        _, envelope, payload = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
        plan = origin.check_participants(parse_envelope(envelope, None), None)
        assert origin.inspect_payload(parse_envelope(envelope, None), payload, plan) is None, "no tree for 49 elements"
        message_id, status, _ = await submit(tight, MOVE, clock.now())
        assert status == 202
        _, status, body = await submit(tight, MOVE, clock.now(), payload=payload.replace(b"</", b"<extra/></", 1))
        assert status == 422 and body["statusCode"] == 200, body
        assert await origin.forward_due() == 1
        async with client(tight, KANTON) as kanton:
            assert [m["messageId"] for m in await kanton.inbox(KANTON)] == [message_id]
