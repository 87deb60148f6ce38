"""The destination verifies before anything touches the content: tampering is refused, nothing reaches the inbox."""

from __future__ import annotations

import base64

import pytest

from gateway.ids import StatusCode
from gateway.samples import discover
from gateway.transport import TransferHeader

from ..conftest import KANTON, LUZERN, SAMPLES
from .nodes import client, running, sample_envelope

MOVE = next(s for s in discover(SAMPLES) if s.name.startswith("openech-ech0020-v2.2/div-movetest"))


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


async def chunks(data: bytes):
    yield data


async def queued_transfer(federation, clock, nodes):
    message_id, envelope, payload = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
    async with client(federation, LUZERN) as api:
        status, _ = await api.submit(envelope, payload, "data.xml")
    assert status == 202
    (item,) = nodes["node-luzern"].store.queued()
    header = TransferHeader(item.sender, item.recipient, item.message_id, item.envelope, item.seal, item.hops)
    return header, item.blob.read_bytes()


def tamper_signature(header: TransferHeader) -> TransferHeader:
    head, payload, signature = header.seal.split(".")
    raw = base64.urlsafe_b64decode(signature + "==")
    forged = base64.urlsafe_b64encode(flip(raw, 5)).rstrip(b"=").decode()
    return TransferHeader(header.sender, header.recipient, header.message_id, header.envelope, f"{head}.{payload}.{forged}", header.hops)


def tamper_envelope(header: TransferHeader) -> TransferHeader:
    envelope = header.envelope.replace(b"<eCH-0090:messageClass>0<", b"<eCH-0090:messageClass>1<")
    assert envelope != header.envelope
    return TransferHeader(header.sender, header.recipient, header.message_id, envelope, header.seal, header.hops)


@pytest.mark.parametrize(
    ("case", "mutate_header", "mutate_body"),
    [
        ("flipped ciphertext byte", lambda h: h, lambda b: flip(b, len(b) // 2)),
        ("flipped tag byte", lambda h: h, lambda b: flip(b, len(b) - 1)),
        ("truncated ciphertext", lambda h: h, lambda b: b[:-20]),
        ("extended ciphertext", lambda h: h, lambda b: b + b"\0" * 16),
        ("flipped signature byte", tamper_signature, lambda b: b),
        ("changed envelope", tamper_envelope, lambda b: b),
    ],
)
async def test_a_tampered_transfer_is_refused_and_nothing_reaches_the_inbox(federation, clock, case, mutate_header, mutate_body):
    """Any change to ciphertext, seal or envelope is refused with a permanent receipt; the inbox stays empty."""
    async with running(federation, clock) as nodes:
        header, body = await queued_transfer(federation, clock, nodes)
        receipt = await nodes["node-kanton"].receive(mutate_header(header), chunks(mutate_body(body)), peer="node-luzern")
        assert StatusCode(receipt.status).is_permanent_failure, case
        assert nodes["node-kanton"].store.inbox(KANTON) == []
        assert list(nodes["node-kanton"].store.blobs.iterdir()) == [], "no partial ciphertext is kept"
        # The untouched transfer still goes through afterwards.
        receipt = await nodes["node-kanton"].receive(header, chunks(body), peer="node-luzern")
        assert receipt.status == 100


async def test_a_message_sealed_for_another_recipient_cannot_be_opened(federation, clock):
    """Redirecting a sealed message to a participant it was not sealed for is refused."""
    from gateway.federation import NodeSpec, build_federation

    from ..conftest import XSD

    three = build_federation(
        federation.directory.parent / "three",
        [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-kanton", [KANTON, "2-LU-2"])],
        schemas=XSD,
    )
    async with running(three, clock) as nodes:
        header, body = await queued_transfer(three, clock, nodes)
        redirected = TransferHeader(header.sender, "2-LU-2", header.message_id, header.envelope, header.seal, header.hops)
        receipt = await nodes["node-kanton"].receive(redirected, chunks(body), peer="node-luzern")
        assert StatusCode(receipt.status).is_permanent_failure
        assert nodes["node-kanton"].store.inbox("2-LU-2") == []


async def test_a_transfer_from_an_unconfigured_peer_is_refused(federation, clock):
    """Only configured peer nodes may hand over messages."""
    async with running(federation, clock) as nodes:
        header, body = await queued_transfer(federation, clock, nodes)
        receipt = await nodes["node-kanton"].receive(header, chunks(body), peer="node-stranger")
        assert receipt.status == int(StatusCode.UNKNOWN_PHYSICAL_SENDER)
