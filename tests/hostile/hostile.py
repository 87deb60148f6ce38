"""Helpers for the hostile-input corpus: real nodes on loopback, forged tokens, and what "nothing stored" means.

Nothing here replaces the code under test. Attackers are built from the federation's own
material (a participant's signing key, a node's TLS key, a second CA with the same name),
because that is what a compromised participant or peer node holds.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from joserfc import jwe

from gateway.audit import Action
from gateway.config import load_config
from gateway.crypto import primitives
from gateway.crypto.seal import HOP_TYPE, KEY_ALGORITHMS, KEY_TYPE, SEAL_TYPE, SigningIdentity, canonical_json
from gateway.federation import Federation, NodeSpec, build_federation
from gateway.ids import ParticipantId
from gateway.node import Node
from gateway.pki import DevelopmentCA, load_certificate, load_private_key
from gateway.samples import discover
from gateway.transport import TransferHeader, client_context, server_context

from ..conftest import KANTON, LUZERN, SAMPLES, XSD
from ..gateway.nodes import new_message_id, sample_envelope

KRIENS = "1-1059-1"
MOVE = next(s for s in discover(SAMPLES) if s.name.startswith("openech-ech0020-v2.2/div-movetest"))
DELIVERY = "retry_base_seconds = 0.2\nretry_max_seconds = 2.0\npoll_seconds = 0.05"


def pair_federation(directory: Path, **options) -> Federation:
    """Stadt Luzern on node-luzern; the canton and Kriens (two participants, two local systems) on node-kanton."""
    return build_federation(
        directory, [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-kanton", [KANTON, KRIENS])],
        schemas=XSD, delivery_toml=DELIVERY, **options,
    )  # fmt: skip


def hub_federation(directory: Path, **options) -> Federation:
    """Luzern → hub → Kriens: every message between the two Gemeinden is relayed by the canton's node."""
    return build_federation(
        directory, [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-hub", [KANTON]), NodeSpec("node-kriens", [KRIENS])],
        schemas=XSD, via={"node-luzern": {KRIENS: "node-hub"}, "node-kriens": {LUZERN: "node-hub"}},
        delivery_toml=DELIVERY, **options,
    )  # fmt: skip


# ------------------------------------------------------------------------------------ the local API


def api_session(federation: Federation, token: str | None) -> aiohttp.ClientSession:
    """A client of the local API that trusts the federation's CA and sends ``token`` (none if None)."""
    context = ssl.create_default_context(cafile=str(federation.ca_file))
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context), headers=headers)


def api_url(federation: Federation, participant: str, path: str) -> str:
    return federation.api_url(federation.node_of(participant).id) + path


async def submit(federation: Federation, sender: str, envelope: bytes, payload: bytes | None, name: str = "data.xml",
                 token: str | None = None) -> tuple[int, dict | str]:
    """POST /api/v1/messages as the sender's local system; the body is JSON when the node answered JSON."""
    form = aiohttp.FormData()
    form.add_field("envelope", envelope, filename="envelope.xml", content_type="application/xml")
    if payload is not None:
        form.add_field("payload", payload, filename=name, content_type="application/octet-stream")
    async with api_session(federation, federation.tokens[sender] if token is None else token) as session:
        async with session.post(api_url(federation, sender, "/api/v1/messages"), data=form) as response:
            return response.status, await _body(response)


async def _body(response: aiohttp.ClientResponse) -> dict | str:
    text = await response.text(errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def message(clock, sender: str = LUZERN, recipient: str = KANTON, message_id: str | None = None) -> tuple[str, bytes, bytes]:
    """A fresh, valid eCH-0020 move message (messageId, envelope, payload) for sender → recipient."""
    return sample_envelope(MOVE, sender, recipient, clock.now(), message_id)


async def still_serving(federation: Federation, clock, sender: str = LUZERN, recipient: str = KANTON) -> None:
    """The node keeps serving honest clients after a hostile input: a valid message is accepted."""
    _, envelope, payload = message(clock, sender, recipient)
    status, body = await submit(federation, sender, envelope, payload)
    assert status == 202, body


# ------------------------------------------------------------------------------- what is stored


def counts(node: Node) -> dict[str, int]:
    """Rows a message would leave in the store, and ciphertext blobs on disk."""
    db = node.store.db
    tables = {name: db.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0] for name in ("outgoing", "inbox")}  # noqa: S608
    tables["blobs"] = sum(1 for _ in node.store.blobs.iterdir())
    return tables


def assert_nothing_stored(*nodes: Node) -> None:
    """No queued or delivered message and no ciphertext blob on any of ``nodes``."""
    for node in nodes:
        assert counts(node) == {"outgoing": 0, "inbox": 0, "blobs": 0}, f"{node.id} kept something: {counts(node)}"


def audit_actions(node: Node, message_id: str) -> list[tuple[Action, int | None]]:
    return [(r.action, r.receipt_code) for _, _, r in node.audit.iter_records() if r.message_id == message_id]


def store_bytes(node: Node) -> bytes:
    """Every byte a node keeps about messages: its SQLite files, blobs and audit log."""
    parts = []
    for directory in (node.config.store, node.config.audit_log.parent):
        for path in Path(directory).rglob("*"):
            if path.is_file():
                parts.append(path.read_bytes())
    return b"".join(parts)


# ------------------------------------------------------------------------------------ canaries


class NetworkCanary:
    """A loopback TCP listener that counts connections: a parser that fetches a DTD or an entity shows up here."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    async def __aenter__(self) -> NetworkCanary:
        async def handle(reader, writer):
            self.connections += 1
            writer.close()

        self._server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/evil.dtd"


# ----------------------------------------------------------------------------- forging tokens


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def raw_jws(header: dict | bytes, payload: dict | bytes, signature: bytes = b"") -> str:
    """A compact JWS put together by hand (no library checks), for tokens no honest signer makes."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    body = payload if isinstance(payload, bytes) else canonical_json(payload)
    return f"{b64url(head)}.{b64url(body)}.{b64url(signature)}"


def split_jws(token: str) -> tuple[dict, dict]:
    head, body, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return json.loads(base64.urlsafe_b64decode(pad(head))), json.loads(base64.urlsafe_b64decode(pad(body)))


def nested_json(depth: int = 50_000) -> bytes:
    """JSON nested deeper than Python's recursion limit: '[[[[…'."""
    return b"[" * depth + b"]" * depth


def identity(federation: Federation, name: str) -> SigningIdentity:
    """The signing identity of a node (its TLS key) or of a participant (its signing key), from the federation's files."""
    for spec in federation.nodes:
        config = load_config(federation.config_path(spec.id))
        if spec.id == name:
            return SigningIdentity.from_key(name, load_private_key(config.tls.private_key), load_certificate(config.tls.certificate))
        for hosted in config.participants:
            if str(hosted.id) == name:
                return SigningIdentity.from_key(name, load_private_key(hosted.signing_key), load_certificate(hosted.signing_certificate))
    raise KeyError(name)


@dataclass(frozen=True)
class RogueCA:
    """A second CA with the very same subject name as the federation's: its certificates must never pass."""

    ca: DevelopmentCA
    directory: Path

    @classmethod
    def create(cls, directory: Path) -> RogueCA:
        return cls(DevelopmentCA(directory), directory)

    def node(self, node_id: str) -> SigningIdentity:
        issued = self.ca.issue_node(node_id, self.directory / "nodes")
        return SigningIdentity.from_key(node_id, load_private_key(issued.private_key), load_certificate(issued.certificate))

    def participant(self, participant: str) -> SigningIdentity:
        signing, _ = self.ca.issue_participant(ParticipantId(participant), self.directory / "participants")
        return SigningIdentity.from_key(participant, load_private_key(signing.private_key), load_certificate(signing.certificate))

    def tls_files(self, node_id: str) -> tuple[Path, Path]:
        issued = self.ca.issue_node(node_id, self.directory / "tls")
        return issued.certificate, issued.private_key


def hop_entry(signer: SigningIdentity, sender: str, message_id: str, recipient: str, **changes) -> str:
    """A hop entry as ``signer`` (a node, or an impostor) would add it when forwarding."""
    claims = {"node": signer.name, "time": time.time(), "sender": sender, "messageId": message_id,
              "recipient": recipient, "decision": None, **changes}  # fmt: skip
    return signer.sign(HOP_TYPE, claims)


@dataclass(frozen=True)
class Forged:
    """A transfer built by a malicious participant that holds its own valid signing key."""

    header: TransferHeader
    ciphertext: bytes
    manifest: dict


def forge_transfer(
    origin: Node,
    recipient_node: Node,
    envelope: bytes,
    message_id: str,
    plaintext: bytes,
    *,
    sender: str = LUZERN,
    recipient: str = KANTON,
    segment_size: int = 64 * 1024,
    encrypt_segment_size: int | None = None,
    key_record: object = None,
    manifest: Callable[[dict], None] | None = None,
    ciphertext: Callable[[bytes], bytes] | None = None,
    signer: SigningIdentity | None = None,
) -> Forged:
    """Seal ``plaintext`` exactly as the wire format says, then let the caller bend one part of it.

    The seal is signed with the sender's real key (from ``origin``) unless ``signer`` says
    otherwise, the key record is a real JWE to the recipient's certificate, and the hop
    entry is ``origin``'s own, so only the bent part can make the destination refuse.
    """
    key, prefix = os.urandom(32), os.urandom(7)
    aad = f"{SEAL_TYPE}\0{sender}\0{message_id}".encode()
    stream = b"".join(primitives.SegmentEncryptor(key, prefix, aad, encrypt_segment_size or segment_size).encrypt([plaintext]))
    if ciphertext is not None:
        stream = ciphertext(stream)
    record = key_record if key_record is not None else {
        "typ": KEY_TYPE, "cek": b64url(key), "sender": sender, "messageId": message_id, "recipient": recipient}  # fmt: skip
    record_bytes = record if isinstance(record, bytes) else json.dumps(record).encode()
    recipient_key = recipient_node.recipient_key(ParticipantId(recipient))
    assert recipient_key is not None
    wrapped = jwe.encrypt_compact({"alg": "ECDH-ES+A256KW", "enc": "A256GCM"}, record_bytes, recipient_key.key, algorithms=KEY_ALGORITHMS)
    claims = {
        "messageId": message_id, "sender": sender, "node": origin.id, "sealedAt": "2025-05-01T10:00:00+00:00",
        "envelopeSha256": hashlib.sha256(envelope).hexdigest(),
        "payload": {"name": "data.xml", "ciphertextSha256": hashlib.sha256(stream).hexdigest(), "ciphertextLength": len(stream),
                    "plaintextLength": len(plaintext), "segmentSize": segment_size, "noncePrefix": b64url(prefix)},
        "keys": {recipient: wrapped},
    }  # fmt: skip
    if manifest is not None:
        manifest(claims)
    seal_signer = signer or origin.hosted[ParticipantId(sender)].signer
    seal = seal_signer.sign(SEAL_TYPE, claims)
    hops = (hop_entry(origin.node_signer, sender, message_id, recipient),)
    return Forged(TransferHeader(sender, recipient, message_id, envelope, seal, hops), stream, claims)


async def chunks(data: bytes, size: int = 256 * 1024):
    for start in range(0, len(data), size):
        yield data[start : start + size]
    if not data:
        return


async def queued_transfer(federation: Federation, clock, origin: Node, recipient: str = KANTON) -> tuple[TransferHeader, bytes, bytes]:
    """A real transfer: submitted through the local API, taken from the origin's queue (header, ciphertext, payload)."""
    message_id, envelope, payload = message(clock, LUZERN, recipient)
    status, body = await submit(federation, LUZERN, envelope, payload)
    assert status == 202, body
    (item,) = [o for o in origin.store.queued() if o.message_id == message_id]
    return TransferHeader(item.sender, item.recipient, item.message_id, item.envelope, item.seal, item.hops), item.blob.read_bytes(), payload


# ------------------------------------------------------------------------------ talking to nodes


def mtls_context(federation: Federation, node_id: str) -> ssl.SSLContext:
    """The TLS client identity of ``node_id``: what a (possibly compromised) peer presents."""
    return client_context(load_config(federation.config_path(node_id)))


def foreign_context(federation: Federation, certificate: Path, key: Path) -> ssl.SSLContext:
    """A TLS client that trusts the federation's CA but presents a certificate of its own choosing."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(federation.ca_file))
    context.load_cert_chain(certificate, key)
    return context


def peer_url(federation: Federation, node_id: str, path: str = "/node/v1/transfers") -> str:
    return f"https://127.0.0.1:{federation.node(node_id).listen_port}{path}"


async def post_transfer(federation: Federation, context: ssl.SSLContext | None, node_id: str, body: bytes) -> tuple[int, dict | str]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        async with session.post(peer_url(federation, node_id), data=body, headers={"Content-Type": "application/octet-stream"}) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text


class HostilePeer:
    """A compromised peer node: listens where ``node_id`` would, with its real TLS identity, and answers as told.

    ``answer(header) -> (http_status, body)`` decides the answer to each transfer: a body of
    bytes is sent as it is (e.g. a proxy's HTML error page), anything else as JSON.
    """

    def __init__(self, federation: Federation, node_id: str, answer: Callable[[TransferHeader], tuple[int, object]]) -> None:
        self.federation = federation
        self.node_id = node_id
        self.answer = answer
        self.transfers: list[TransferHeader] = []
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> HostilePeer:
        from gateway.transport import read_header

        async def transfer(request: web.Request) -> web.Response:
            header = await read_header(request.content)
            while await request.content.read(256 * 1024):
                pass
            self.transfers.append(header)
            status, body = self.answer(header)
            if isinstance(body, bytes):
                return web.Response(body=body, status=status, content_type="text/html")
            return web.json_response(body, status=status)

        app = web.Application()
        app.router.add_post("/node/v1/transfers", transfer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        config = load_config(self.federation.config_path(self.node_id))
        site = web.TCPSite(self._runner, "127.0.0.1", self.federation.node(self.node_id).listen_port,
                           ssl_context=server_context(config, require_client_cert=True))  # fmt: skip
        await site.start()
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


__all__ = [
    "DELIVERY", "KANTON", "KRIENS", "LUZERN", "MOVE", "Forged", "HostilePeer", "NetworkCanary", "RogueCA", "api_session",
    "api_url", "assert_nothing_stored", "audit_actions", "b64url", "chunks", "counts", "foreign_context", "forge_transfer",
    "hop_entry", "hub_federation", "identity", "message", "mtls_context", "nested_json", "new_message_id", "pair_federation",
    "peer_url", "post_transfer", "queued_transfer", "raw_jws", "split_jws", "still_serving", "store_bytes", "submit",
]  # fmt: skip
