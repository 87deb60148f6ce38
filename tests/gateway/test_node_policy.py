"""The policy stage at every hop: denials stop the message before the next hop, redactions happen at the origin."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from gateway.federation import NodeSpec, build_federation
from gateway.ids import ParticipantId
from gateway.samples import discover, payload_for
from gateway.transport import TransferHeader

from ..conftest import KANTON, LUZERN, SAMPLES, XSD
from .nodes import client, running, sample_envelope

POLICIES = Path(__file__).resolve().parents[2] / "policies" / "demo"
KRIENS = "1-1059-1"
BFS = "3-CH-1"
ALL = discover(SAMPLES)
_SAMPLE = next(s for s in ALL if s.name.startswith("openech-ech0020-v2.2/movein-personsecondaryresidence"))


MOVE_IN = _SAMPLE  # sent from Luzern its header says production (testDeliveryFlag=false), see payload_for
E20 = "http://www.ech.ch/xmlns/eCH-0020/2"


def production_payload() -> bytes:
    return payload_for(_SAMPLE, ParticipantId(LUZERN), ParticipantId(KANTON), 20201)


@pytest.fixture
def governed(tmp_path):
    """Luzern on its own node; the canton, Kriens and BFS on the cantonal node; the demo policies on both."""
    return build_federation(
        tmp_path / "governed",
        [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-kanton", [KANTON, KRIENS, BFS])],
        schemas=XSD, policies=POLICIES, delivery_toml="poll_seconds = 0.05",
    )  # fmt: skip


async def send(federation, sample, recipient, clock, message_type=20201, payload=None):
    message_id, envelope, prepared = sample_envelope(sample, LUZERN, recipient, clock.now(), message_type=message_type)
    async with client(federation, LUZERN) as api:
        status, body = await api.submit(envelope, prepared if payload is None else payload, sample.data.name)
    return message_id, status, body


async def test_a_permitted_message_carries_its_purpose_and_legal_basis_on_the_timeline(governed, clock):
    """A Gemeinde's eCH-0020 event to the cantonal register is allowed, and the timeline names the rule."""
    async with running(governed, clock) as nodes:
        message_id, status, body = await send(governed, MOVE_IN, KANTON, clock)
        assert status == 202, body
        assert await nodes["node-luzern"].forward_due() == 1
        events = nodes["node-luzern"].store.timeline(LUZERN, message_id)
        (policy,) = [e for e in events if e.kind == "policy"]
        assert "lu-gemeinden-an-kantonsregister" in policy.detail and "purpose" in policy.detail
        async with client(governed, KANTON) as api:
            assert await api.payload(KANTON, LUZERN, message_id) == production_payload()


async def test_religion_is_removed_for_a_gemeinde_and_the_result_still_validates(governed, clock, catalog):
    """The move-in to Kriens arrives without religion, schema-valid, everything else kept."""
    async with running(governed, clock) as nodes:
        message_id, status, body = await send(governed, MOVE_IN, KRIENS, clock)
        assert status == 202, body
        assert await nodes["node-luzern"].forward_due() == 1
        async with client(governed, KRIENS) as api:
            delivered = await api.payload(KRIENS, LUZERN, message_id)
        tree = etree.fromstring(delivered).getroottree()
        catalog.validate(tree)
        assert tree.findall(f".//{{{E20}}}religion") == []
        original = etree.fromstring(production_payload())
        assert len(original.findall(f".//{{{E20}}}religion")) == 1
        assert tree.findtext(f".//{{{E20}}}moveInPerson//{{http://www.ech.ch/xmlns/eCH-0044/1}}vn") == original.findtext(
            f".//{{{E20}}}moveInPerson//{{http://www.ech.ch/xmlns/eCH-0044/1}}vn"
        )
        events = nodes["node-luzern"].store.timeline(LUZERN, message_id)
        assert any(e.kind == "policy" and "removed" in e.detail and "religion" in e.detail for e in events)


async def test_a_test_delivery_never_reaches_a_production_participant(governed, clock):
    """The sample as a test delivery (testDeliveryFlag=true) is refused for the production cantonal register."""
    test_delivery = production_payload().replace(b"testDeliveryFlag>false<", b"testDeliveryFlag>true<")
    assert test_delivery != production_payload()
    async with running(governed, clock) as nodes:
        message_id, status, body = await send(governed, _SAMPLE, KANTON, clock, payload=test_delivery)
        assert status == 403 and body["statusCode"] == 311, body
        assert nodes["node-luzern"].store.queued() == []


async def test_a_denied_message_is_refused_at_the_origin_and_never_reaches_the_peer(governed, clock):
    """Stadt Luzern may not send directly to BFS: 310/311 at the origin, nothing queued, nothing at the peer."""
    async with running(governed, clock) as nodes:
        message_id, status, body = await send(governed, MOVE_IN, BFS, clock)
        assert status == 403 and body["statusCode"] in (310, 311), body
        assert nodes["node-luzern"].store.queued() == []
        await nodes["node-luzern"].forward_due()
        assert nodes["node-kanton"].store.inbox(BFS) == []
        assert nodes["node-kanton"].store.timeline(LUZERN, message_id) == []


async def test_the_destination_refuses_what_its_own_policy_forbids(governed, clock, tmp_path):
    """A transfer the destination's envelope-level rules do not permit is refused there (ingress check)."""
    async with running(governed, clock) as nodes:
        message_id, status, _ = await send(governed, MOVE_IN, KANTON, clock)
        assert status == 202
        (item,) = nodes["node-luzern"].store.queued()
        kanton = nodes["node-kanton"]
        # The canton's node now runs a policy set without the Gemeinden → canton permit.
        from gateway.policy import PolicyStore, load_policy_set

        strict = tmp_path / "strict"
        strict.mkdir()
        (strict / "participants.toml").write_text((POLICIES / "participants.toml").read_text())
        kanton.policies = PolicyStore(load_policy_set([strict]), clock=clock.now)

        async def body():
            yield item.blob.read_bytes()

        header = TransferHeader(item.sender, item.recipient, item.message_id, item.envelope, item.seal, item.hops)
        receipt = await kanton.receive(header, body(), peer="node-luzern")
        assert receipt.status in (310, 311)
        assert kanton.store.inbox(KANTON) == []


def multi_envelope(sample, recipients, clock, message_type):
    """The sample's envelope addressed to several recipients (eCH-0090 allows recipientId+)."""
    from dataclasses import replace as _replace

    from gateway.envelope import parse_envelope

    message_id, envelope, _ = sample_envelope(sample, LUZERN, recipients[0], clock.now(), message_type=message_type)
    parsed = parse_envelope(envelope, None)
    return message_id, _replace(parsed, recipients=tuple(ParticipantId(r) for r in recipients)).to_xml()


async def test_one_denied_recipient_refuses_the_message_with_a_receipt_per_recipient(governed, clock):
    """Canton allowed, BFS forbidden: BFS gets 310 with the forbid's reason, the canton 313; nothing is queued."""
    async with running(governed, clock) as nodes:
        message_id, envelope = multi_envelope(MOVE_IN, [KANTON, BFS], clock, 20001)
        async with client(governed, LUZERN) as api:
            status, body = await api.submit(envelope, payload_for(_SAMPLE, ParticipantId(LUZERN), ParticipantId(KANTON), 20001), "data.xml")
            assert status == 403, body
            receipts = {r["recipientId"]: r for r in await api.receipts(LUZERN) if r["messageId"] == message_id}
        assert receipts[BFS]["statusCode"] == 310 and "lu-keine-direktlieferung-an-bfs" in receipts[BFS]["statusInfo"]
        assert receipts[KANTON]["statusCode"] == 313 and BFS in receipts[KANTON]["statusInfo"]
        assert nodes["node-luzern"].store.queued() == []


async def test_two_allowed_recipients_get_their_own_variant_and_their_own_receipt(governed, clock):
    """One envelope to the canton and Kriens: the canton gets the religion, Kriens does not; two receipts 100."""
    async with running(governed, clock) as nodes:
        message_id, envelope = multi_envelope(MOVE_IN, [KANTON, KRIENS], clock, 20201)
        sent = production_payload()
        async with client(governed, LUZERN) as api:
            status, body = await api.submit(envelope, sent, "data.xml")
        assert status == 202, body
        assert await nodes["node-luzern"].forward_due() == 2
        rows = nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)
        assert {r.recipient: r.receipt_status for r in rows} == {KANTON: 100, KRIENS: 100}
        assert rows[0].ciphertext_sha256 != rows[1].ciphertext_sha256, "two variants, two ciphertexts"
        async with client(governed, KANTON) as api:
            assert await api.payload(KANTON, LUZERN, message_id) == sent
        async with client(governed, KRIENS) as api:
            delivered = await api.payload(KRIENS, LUZERN, message_id)
        assert etree.fromstring(delivered).findall(f".//{{{E20}}}religion") == []
