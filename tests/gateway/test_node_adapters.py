"""Per-participant format adapters at the origin: recognise and validate what a sender speaks, convert for each recipient."""

from __future__ import annotations

import pytest
from lxml import etree

from gateway.federation import NodeSpec, build_federation
from gateway.generated import generated_ech0020_v3_bytes
from gateway.samples import discover

from ..conftest import KANTON, LUZERN, SAMPLES, XSD
from .nodes import client, running, sample_envelope

KRIENS = "1-1059-1"
MOVE_IN = next(s for s in discover(SAMPLES) if s.name.startswith("openech-ech0020-v2.2/movein-personsecondaryresidence"))
E20_V2 = "http://www.ech.ch/xmlns/eCH-0020/2"
E20_V3 = "http://www.ech.ch/xmlns/eCH-0020/3"
E44 = "http://www.ech.ch/xmlns/eCH-0044/"


@pytest.fixture
def mixed(tmp_path):
    """Luzern's register speaks eCH-0020 2.x; Kriens reads only 3.0; the canton reads both.

    The open-eCH samples leave localPersonId empty (3.0 requires one): Luzern's node fills it
    with the AHV number under the category it is configured with.
    """
    luzern = NodeSpec("node-luzern", [LUZERN], extra_toml='[adapters]\nlocal_person_id_category = "CH.VN"')
    return build_federation(
        tmp_path / "mixed", [luzern, NodeSpec("node-kanton", [KANTON, KRIENS])],
        schemas=XSD, adapters={LUZERN: ["ech0020-v2", "ech0020-v3"], KRIENS: ["ech0020-v3"], KANTON: ["ech0020-v2", "ech0020-v3"]},
    )  # fmt: skip


async def send(federation, clock, recipient, payload=None):
    message_id, envelope, prepared = sample_envelope(MOVE_IN, LUZERN, recipient, clock.now(), message_type=20201)
    async with client(federation, LUZERN) as api:
        status, body = await api.submit(envelope, prepared if payload is None else payload, "data.xml")
    return message_id, status, body, prepared


def vn_of(document: bytes) -> list[str]:
    root = etree.fromstring(document)
    return [e.text for e in root.iter() if isinstance(e.tag, str) and e.tag.startswith("{" + E44) and etree.QName(e).localname == "vn"]


async def test_a_2x_event_arrives_as_schema_valid_3_0_for_a_recipient_that_reads_only_3_0(mixed, clock, catalog):
    async with running(mixed, clock) as nodes:
        message_id, status, body, sent = await send(mixed, clock, KRIENS)
        assert status == 202, body
        assert await nodes["node-luzern"].forward_due() == 1
        async with client(mixed, KRIENS) as api:
            delivered = await api.payload(KRIENS, LUZERN, message_id)
        tree = etree.fromstring(delivered).getroottree()
        assert etree.QName(tree.getroot()).namespace == E20_V3
        assert catalog.validate(tree) == E20_V3
        assert vn_of(delivered) == vn_of(sent) and vn_of(sent), "the same person, by AHV number"
        events = nodes["node-luzern"].store.timeline(LUZERN, message_id)
        assert [e.detail for e in events if e.kind == "converted"] == [f"ech0020-v2 → ech0020-v3 for {KRIENS}"]


async def test_a_recipient_that_reads_the_senders_version_gets_the_bytes_unchanged(mixed, clock):
    async with running(mixed, clock) as nodes:
        message_id, status, body, sent = await send(mixed, clock, KANTON)
        assert status == 202, body
        assert await nodes["node-luzern"].forward_due() == 1
        async with client(mixed, KANTON) as api:
            assert await api.payload(KANTON, LUZERN, message_id) == sent


async def test_a_format_the_sender_does_not_speak_is_refused_with_303_and_nothing_is_queued(tmp_path, clock):
    """Luzern configured for 2.x only: a 3.0 document is not what its register sends."""
    federation = build_federation(
        tmp_path / "v2only", [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-kanton", [KANTON])],
        schemas=XSD, adapters={LUZERN: ["ech0020-v2"]},
    )  # fmt: skip
    async with running(federation, clock) as nodes:
        v3 = generated_ech0020_v3_bytes().replace(b"<e58:testDeliveryFlag>true", b"<e58:testDeliveryFlag>false")
        v3 = v3.replace(b"<e58:messageType>20001", b"<e58:messageType>20201")
        _, status, body, _ = await send(federation, clock, KANTON, payload=v3)
        assert (status, body["statusCode"]) == (422, 303), body
        assert nodes["node-luzern"].store.queued() == []


async def test_no_conversion_to_an_older_version_means_303_not_an_unreadable_delivery(tmp_path, clock):
    """A 3.0 event for a recipient that reads only 2.x: no mapping exists, the sender gets 303."""
    federation = build_federation(
        tmp_path / "downgrade", [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-kanton", [KANTON])],
        schemas=XSD, adapters={LUZERN: ["ech0020-v3"], KANTON: ["ech0020-v2"]},
    )  # fmt: skip
    async with running(federation, clock) as nodes:
        v3 = generated_ech0020_v3_bytes().replace(b"<e58:testDeliveryFlag>true", b"<e58:testDeliveryFlag>false")
        v3 = v3.replace(b"<e58:messageType>20001", b"<e58:messageType>20201")
        _, status, body, _ = await send(federation, clock, KANTON, payload=v3)
        assert (status, body["statusCode"]) == (422, 303), body
        assert "ech0020-v2" in body["statusInfo"]
        assert nodes["node-luzern"].store.queued() == []


async def test_without_a_local_id_category_an_empty_local_person_id_refuses_the_conversion(tmp_path, clock):
    """The node does not invent a localPersonId: unconfigured, the conversion is refused with 303 and the reason."""
    federation = build_federation(
        tmp_path / "nocategory", [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-kanton", [KRIENS])],
        schemas=XSD, adapters={LUZERN: ["ech0020-v2"], KRIENS: ["ech0020-v3"]},
    )  # fmt: skip
    async with running(federation, clock) as nodes:
        _, status, body, _ = await send(federation, clock, KRIENS)
        assert (status, body["statusCode"]) == (422, 303), body
        assert "localPersonId" in body["statusInfo"]
        assert nodes["node-luzern"].store.queued() == []
