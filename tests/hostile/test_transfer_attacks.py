"""Node-to-node transport over real mutual TLS: who may connect, transfer framing, and the returned-receipt endpoint."""

from __future__ import annotations

import base64
import json
import ssl
import struct

import aiohttp
import pytest

from gateway.config import load_config
from gateway.transport import TransferHeader, TransferRefused

from ..gateway.nodes import running
from .hostile import (
    RogueCA, assert_nothing_stored, b64url, foreign_context, mtls_context, nested_json, peer_url, post_transfer,
    queued_transfer,
)  # fmt: skip


def frame(header: bytes | dict, ciphertext: bytes = b"") -> bytes:
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack(">I", len(body)) + body + ciphertext


def fields(header: TransferHeader, **changes) -> dict:
    data = json.loads(header.encode()[4:])
    data.update(changes)
    return {k: v for k, v in data.items() if v is not ...}


# ------------------------------------------------------------------------------- who may connect


async def test_a_client_without_a_certificate_cannot_even_complete_the_handshake(pair, clock):
    """The node-to-node listener requires a client certificate: no certificate, no TLS session."""
    async with running(pair, clock) as nodes:
        context = ssl.create_default_context(cafile=str(pair.ca_file))
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, OSError)):
            await post_transfer(pair, context, "node-kanton", frame({}))
        assert_nothing_stored(nodes["node-kanton"])


async def test_a_client_certificate_from_a_rogue_ca_with_the_same_name_is_refused_in_the_handshake(pair, clock, tmp_path):
    """A certificate for 'node-luzern' from a second CA named like the federation's does not pass mutual TLS."""
    certificate, key = RogueCA.create(tmp_path / "rogue").tls_files("node-luzern")
    async with running(pair, clock) as nodes:
        header, ciphertext, _ = await queued_transfer(pair, clock, nodes["node-luzern"])
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, OSError)):
            await post_transfer(pair, foreign_context(pair, certificate, key), "node-kanton", header.encode() + ciphertext)
        assert_nothing_stored(nodes["node-kanton"])


async def test_a_participant_certificate_used_as_a_tls_client_is_not_a_peer(pair, clock):
    """A participant's signing certificate (same CA) may complete TLS but is no configured peer: 302, nothing stored."""
    config = load_config(pair.config_path("node-luzern"))
    participant = config.participants[0]
    async with running(pair, clock) as nodes:
        header, ciphertext, _ = await queued_transfer(pair, clock, nodes["node-luzern"])
        context = foreign_context(pair, participant.signing_certificate, participant.signing_key)
        try:
            status, body = await post_transfer(pair, context, "node-kanton", header.encode() + ciphertext)
        except (aiohttp.ClientError, ssl.SSLError, OSError):
            status, body = None, None  # refused in the handshake: as good
        if status is not None:
            assert status == 422 and body["statusCode"] == 302, body
        assert_nothing_stored(nodes["node-kanton"])


# ------------------------------------------------------------------------------- transfer framing

FRAMING = {
    # name: (body(header, ciphertext) -> bytes, expected HTTP status, expected sedex status or None, bug)
    "empty-body": (lambda h, c: b"", 400, 200, ""),
    "two-byte-prefix": (lambda h, c: b"\x00\x00", 400, 200, ""),
    "length-above-2-mib": (lambda h, c: struct.pack(">I", 2 * 1024 * 1024 + 1) + b"{}", 400, 200, ""),
    "length-4-gib": (lambda h, c: b"\xff\xff\xff\xff" + b"{}", 400, 200, ""),
    "header-shorter-than-announced": (lambda h, c: struct.pack(">I", 1000) + b'{"sender":', 400, 200, ""),
    "header-not-json": (lambda h, c: frame(b"not json") + c, 400, 200, ""),
    "header-is-a-json-array": (lambda h, c: frame(b"[1,2,3]") + c, 400, 200, ""),
    "header-invalid-utf8": (lambda h, c: frame(b'{"sender":"\xff"}') + c, 400, 200, ""),
    "header-nested-50000-deep": (lambda h, c: frame(nested_json()) + c, 400, 200, ""),
    "missing-seal": (lambda h, c: frame(fields(h, seal=...)) + c, 400, 200, ""),
    "missing-envelope": (lambda h, c: frame(fields(h, envelope=...)) + c, 400, 200, ""),
    "envelope-not-base64": (lambda h, c: frame(fields(h, envelope="@@not base64@@")) + c, 400, 200, ""),
    "envelope-urlsafe-base64": (lambda h, c: frame(fields(h, envelope=base64.urlsafe_b64encode(h.envelope).decode().rstrip("="))) + c, 400, 200, ""),
    "envelope-base64-with-newlines": (lambda h, c: frame(fields(h, envelope=base64.encodebytes(h.envelope).decode())) + c, 400, 200, ""),
    # Threat model F16 (fixed): the five fields are strings and hops an array of strings, nothing is coerced.
    "sender-not-a-string": (lambda h, c: frame(fields(h, sender=1061)) + c, 400, 200, ""),
    "hops-a-string-not-an-array": (lambda h, c: frame(fields(h, hops="abc")) + c, 400, 200, ""),
    "hops-with-a-number": (lambda h, c: frame(fields(h, hops=[*h.hops, 7])) + c, 400, 200, ""),
    "seal-null": (lambda h, c: frame(fields(h, seal=None)) + c, 400, 200, ""),
    "truncated-ciphertext": (lambda h, c: h.encode() + c[:-20], 422, 200, ""),
    "extended-ciphertext": (lambda h, c: h.encode() + c + b"\0" * 16, 422, 200, ""),
    "no-ciphertext": (lambda h, c: h.encode(), 422, 200, ""),
    # Threat model F6 (fixed): nested JSON in a JWS header is a signed 422/200, not an HTTP 500.
    "seal-nested-50000-deep": (lambda h, c: frame(fields(h, seal=f"{b64url(nested_json())}.e30.AA")) + c, 422, 200, ""),
    "hop-nested-50000-deep": (lambda h, c: frame(fields(h, hops=[f"{b64url(nested_json())}.e30.AA"])) + c, 422, 200, ""),
    "seal-nested-1500-deep-inside-the-length-limit": (lambda h, c: frame(fields(h, seal=f"{b64url(nested_json(1500))}.e30.AA")) + c, 422, 200, ""),
}  # fmt: skip


def _framing(name):
    bug = FRAMING[name][3]
    return pytest.param(name, id=name, marks=[pytest.mark.xfail(strict=True, reason=bug)] if bug else [])


@pytest.mark.parametrize("name", [_framing(n) for n in FRAMING])
async def test_a_malformed_transfer_is_refused_and_nothing_is_stored(pair, clock, name):
    """Over real mTLS from a configured peer: a malformed frame is 400 (no receipt); a framed transfer with a bad body is a
    signed 422/200; either way the destination stores nothing and still takes the genuine transfer afterwards."""
    body, http, code, _ = FRAMING[name]
    async with running(pair, clock) as nodes:
        header, ciphertext, _ = await queued_transfer(pair, clock, nodes["node-luzern"])
        context = mtls_context(pair, "node-luzern")
        status, answer = await post_transfer(pair, context, "node-kanton", body(header, ciphertext))
        assert status == http, answer
        assert isinstance(answer, dict) and answer.get("statusCode") == code, answer
        if http == 422:
            assert "receipt" in answer, "a framed refusal carries a signed receipt"
        assert_nothing_stored(nodes["node-kanton"])
        status, answer = await post_transfer(pair, context, "node-kanton", header.encode() + ciphertext)
        assert (status, answer["statusCode"]) == (200, 100), "the node still serves its peer"


def test_transfer_header_decode_refuses_deeply_nested_json():
    """TransferHeader.decode raises TransferRefused for any body it cannot read, however deep its JSON nests."""
    with pytest.raises(TransferRefused):
        TransferHeader.decode(nested_json())


# ------------------------------------------------------------------------------ returned receipts


@pytest.mark.parametrize(("body", "http"), [
    pytest.param(b"not json", 400, id="not-json"),
    pytest.param(b'{"token": 5}', 400, id="token-not-a-string"),
    pytest.param(b'["token"]', 400, id="not-an-object"),
    pytest.param(json.dumps({"token": "a.b.c"}).encode(), 422, id="token-garbage"),
    pytest.param(json.dumps({"token": f"{b64url(nested_json())}.e30.AA"}).encode(), 422, id="token-nested-50000-deep"),
    pytest.param(nested_json(), 400, id="body-nested-50000-deep"),
])  # fmt: skip
async def test_a_malformed_returned_receipt_is_refused(pair, clock, body, http):
    """POST /node/v1/receipts from a configured peer: malformed bodies are 400, unverifiable tokens 422, never 500."""
    async with running(pair, clock) as nodes:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=mtls_context(pair, "node-kanton"))) as session:
            async with session.post(peer_url(pair, "node-luzern", "/node/v1/receipts"), data=body,
                                    headers={"Content-Type": "application/json"}) as response:  # fmt: skip
                assert response.status == http, await response.text()
        assert_nothing_stored(nodes["node-luzern"])


