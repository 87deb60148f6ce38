"""Node-to-node transport: HTTPS with mutual TLS and the transfer framing.

A transfer request body is ``uint32 big-endian header length || header JSON ||
payload ciphertext``; the header carries the envelope and the origin seal. See
docs/wire-format.md.
"""

from __future__ import annotations

import base64
import json
import ssl
import struct
from dataclasses import dataclass

from .config import NodeConfig
from .pki import key_passphrase
from .ids import GatewayError, StatusCode

MAX_HEADER_BYTES = 2 * 1024 * 1024
# TLS 1.2: forward secrecy and AEAD only (no CBC, no RSA key exchange, no SHA-1 MACs).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
RECEIPTS_PATH = "/node/v1/receipts"  # a relay returns a final receipt to the node it took the message from
TRANSFER_PATH = "/node/v1/transfers"


class TransferRefused(GatewayError):
    status = StatusCode.INVALID_ENVELOPE


def server_context(config: NodeConfig, *, require_client_cert: bool) -> ssl.SSLContext:
    """TLS for our listeners: TLS 1.2+, our node certificate, peers checked against the trust store."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)  # TLS 1.3 suites are all AEAD and stay as OpenSSL sets them
    context.load_cert_chain(config.tls.certificate, config.tls.private_key, password=key_passphrase)
    for anchor in config.tls.trust_anchors:
        context.load_verify_locations(cafile=str(anchor))
    # SECURITY: the node-to-node listener demands a client certificate from the federation CA.
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


def client_context(config: NodeConfig) -> ssl.SSLContext:
    """TLS for calls to peers: our certificate as client identity, peers verified by the trust store."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)  # TLS 1.3 suites are all AEAD and stay as OpenSSL sets them
    for anchor in config.tls.trust_anchors:
        context.load_verify_locations(cafile=str(anchor))
    context.load_cert_chain(config.tls.certificate, config.tls.private_key, password=key_passphrase)
    return context


def peer_common_name(ssl_object: ssl.SSLObject | None) -> str | None:
    """The common name of the verified peer certificate of a TLS connection."""
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


@dataclass(frozen=True)
class TransferHeader:
    """What travels in front of the ciphertext of one transfer."""

    sender: str
    recipient: str
    message_id: str
    envelope: bytes
    seal: str
    hops: tuple[str, ...] = ()  # signed hop entries (HOP_TYPE JWS) of the nodes it passed, in order

    def encode(self) -> bytes:
        fields = {
            "sender": self.sender,
            "recipient": self.recipient,
            "messageId": self.message_id,
            "envelope": base64.b64encode(self.envelope).decode("ascii"),
            "seal": self.seal,
        }
        if self.hops:
            fields["hops"] = list(self.hops)
        body = json.dumps(fields, separators=(",", ":")).encode()
        return struct.pack(">I", len(body)) + body

    @classmethod
    def decode(cls, body: bytes) -> TransferHeader:
        """Read a header as wire format §7 defines it; anything else is :class:`TransferRefused` (HTTP 400).

        SECURITY: the body is the peer's: its size is bounded before it is parsed, JSON nested
        too deeply for the parser is a refusal, not a RecursionError (threat model F6), and
        every field must have its type; nothing is coerced (F16).
        """
        if len(body) > MAX_HEADER_BYTES:
            raise TransferRefused("transfer header too large")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise TransferRefused("transfer header is not JSON") from None
        if not isinstance(data, dict):
            raise TransferRefused("transfer header is not a JSON object")
        fields = [data.get(name) for name in ("sender", "recipient", "messageId", "envelope", "seal")]
        if not all(isinstance(value, str) for value in fields):
            raise TransferRefused("transfer header lacks one of its five string fields")
        hops = data.get("hops", [])
        if not isinstance(hops, list) or not all(isinstance(hop, str) for hop in hops):
            raise TransferRefused("transfer header hops is not an array of strings")
        sender, recipient, message_id, envelope, seal = fields
        try:
            envelope_bytes = base64.b64decode(envelope, validate=True)
        except ValueError:
            raise TransferRefused("transfer header envelope is not base64") from None
        return cls(sender, recipient, message_id, envelope_bytes, seal, tuple(hops))


async def read_header(content) -> TransferHeader:
    """Read the length-prefixed header from an aiohttp StreamReader."""
    try:
        prefix = await content.readexactly(4)
        (length,) = struct.unpack(">I", prefix)
        if length > MAX_HEADER_BYTES:
            raise TransferRefused("transfer header too large")
        return TransferHeader.decode(await content.readexactly(length))
    except Exception as exc:  # noqa: BLE001 - IncompleteReadError and friends
        if isinstance(exc, GatewayError):
            raise
        raise TransferRefused("transfer header truncated") from None
