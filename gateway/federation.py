"""A development federation on localhost: PKI, node configurations and credentials.

Used by ``make demo`` and by the tests that start real node processes. It writes
everything into one directory; ``federation.json`` lists nodes, URLs and the local
systems' bearer tokens (development credentials only).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

from .ids import ParticipantId
from .pki import DevelopmentCA

DEFAULT_SCHEMAS = Path(__file__).resolve().parents[1] / ".." / "shared" / "ech" / "xsd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class NodeSpec:
    id: str
    participants: list[str]
    listen_port: int = 0
    api_port: int = 0
    extra_toml: str = ""


@dataclass
class Federation:
    directory: Path
    nodes: list[NodeSpec]
    tokens: dict[str, str] = field(default_factory=dict)  # participant -> bearer token
    operator_tokens: dict[str, dict[str, str]] = field(default_factory=dict)  # node -> role -> bearer token
    folders: dict[str, str] = field(default_factory=dict)  # participant -> base of its sedex folder interface

    def config_path(self, node_id: str) -> Path:
        return self.directory / "nodes" / node_id / "node.toml"

    def node(self, node_id: str) -> NodeSpec:
        return next(n for n in self.nodes if n.id == node_id)

    def node_of(self, participant: str) -> NodeSpec:
        return next(n for n in self.nodes if participant in n.participants)

    def folder(self, participant: str) -> Path:
        return self.directory / "folders" / participant

    def api_url(self, node_id: str) -> str:
        return f"https://127.0.0.1:{self.node(node_id).api_port}"

    @property
    def ca_file(self) -> Path:
        return self.directory / "pki" / "ca.pem"

    def describe(self) -> dict:
        return {
            "ca": str(self.ca_file),
            "nodes": [
                {
                    "id": n.id,
                    "config": str(self.config_path(n.id)),
                    "peerUrl": f"https://127.0.0.1:{n.listen_port}",
                    "apiUrl": self.api_url(n.id),
                    "participants": n.participants,
                }
                for n in self.nodes
            ],
            "tokens": self.tokens,
            "operatorTokens": self.operator_tokens,
            "folders": {
                participant: {name: str(Path(base) / name) for name in ("outbox", "inbox", "receipts", "processed", "failed")}
                for participant, base in self.folders.items()
            },
        }


def build_federation(
    directory: Path,
    nodes: list[NodeSpec],
    *,
    schemas: Path = DEFAULT_SCHEMAS,
    route_payload: dict[str, str] | None = None,
    delivery_toml: str = "",
    policies: Path | None = None,
    folders: bool | set[str] = False,
    adapters: dict[str, list[str]] | None = None,
    via: dict[str, dict[str, str]] | None = None,
    directory_hub: str | None = None,
    known_participants: bool = True,
) -> Federation:
    """Generate a CA, node and participant certificates and one config per node.

    ``route_payload`` maps a recipient participant to a payload acceptance mode other
    than the default ``schema-valid`` (e.g. ``well-formed`` for eCH-0020 v1); ``adapters``
    maps a participant to the eCH format adapters it speaks (see adapters.registry). Each
    node gets one admin and one auditor operator token. ``via`` overrides the next hop per
    node: ``{"node-luzern": {"1-1059-1": "node-hub"}}`` sends Luzern's messages for Kriens
    through the hub (default: straight to the node hosting the recipient). With
    ``directory_hub`` that node signs and serves a federation directory of every node and
    participant, and every node fetches it; ``known_participants=False`` then leaves the
    other nodes' participants out of each file, so keys come from the directory alone.
    """
    directory = Path(directory).resolve()
    pki = directory / "pki"
    ca = DevelopmentCA(pki)
    federation = Federation(directory, nodes)
    issued = {}
    for node in nodes:
        node.listen_port = node.listen_port or free_port()
        node.api_port = node.api_port or free_port()
        issued[node.id] = ca.issue_node(node.id, pki / "nodes")
        for participant in node.participants:
            issued[participant] = ca.issue_participant(ParticipantId(participant), pki / "participants")
            federation.tokens[participant] = secrets.token_urlsafe(24)
        federation.operator_tokens[node.id] = {role: secrets.token_urlsafe(24) for role in ("admin", "auditor")}
    route_payload = route_payload or {}
    adapters = adapters or {}
    via_overrides = via or {}

    def adapter_line(participant: str) -> list[str]:
        names = adapters.get(participant)
        return [f"adapters = {json.dumps(names)}"] if names else []

    secret = directory / "audit-secret"
    if not secret.exists():
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600)
        with open(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    for node in nodes:
        lines = [
            "[node]",
            f'id = "{node.id}"',
            'store = "store"',
            f'schemas = "{Path(schemas).resolve()}"',
            f'listen = {{ host = "127.0.0.1", port = {node.listen_port} }}',
            f'api = {{ host = "127.0.0.1", port = {node.api_port} }}',
            *([f'policies = "{Path(policies).resolve()}"'] if policies else []),
            'audit_log = "audit/audit.db"',
            f'audit_secret = "{secret}"',
            "",
            "[tls]",
            f'certificate = "{issued[node.id].certificate}"',
            f'private_key = "{issued[node.id].private_key}"',
            f'trust_anchors = ["{ca.cert_path}"]',
            "",
        ]
        for participant in node.participants:
            signing, encryption = issued[participant]
            lines += [
                "[[participants]]",
                f'id = "{participant}"',
                f'signing_key = "{signing.private_key}"',
                f'signing_certificate = "{signing.certificate}"',
                f'encryption_key = "{encryption.private_key}"',
                f'encryption_certificate = "{encryption.certificate}"',
                *([f'folder = "{federation.folders.setdefault(participant, str(directory / "folders" / participant))}"']
                  if folders is True or participant in (folders or ()) else []),
                *adapter_line(participant),
                "",
                "[[local_systems]]",
                f'name = "register-{participant}"',
                f'token_sha256 = "{hashlib.sha256(federation.tokens[participant].encode()).hexdigest()}"',
                f'participants = ["{participant}"]',
                "",
            ]
        for role, token in federation.operator_tokens[node.id].items():
            lines += ["[[operators]]", f'name = "{role}-{node.id}"', f'role = "{role}"',
                      f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"', ""]  # fmt: skip
        for other in nodes:
            if other.id != node.id:
                lines += ["[[peers]]", f'id = "{other.id}"', f'url = "https://127.0.0.1:{other.listen_port}"', ""]
        for other in nodes:
            for participant in other.participants:
                via = "local" if other.id == node.id else (via_overrides.get(node.id, {}).get(participant) or other.id)
                mode = route_payload.get(participant, "schema-valid")
                lines += ["[[routes]]", f'recipient = "{participant}"', f'via = "{via}"', f'payload = "{mode}"', ""]
                if other.id != node.id and known_participants:
                    lines += [
                        "[[known_participants]]",
                        f'id = "{participant}"',
                        f'encryption_certificate = "{issued[participant][1].certificate}"',
                        *adapter_line(participant),
                        "",
                    ]
        if directory_hub is not None:
            hub = next(n for n in nodes if n.id == directory_hub)
            lines += ["[directory]", f'url = "https://127.0.0.1:{hub.listen_port}/node/v1/directory"', f'issuer = "{hub.id}"',
                      'cache = "directory/directory.jws"', "retry_seconds = 1",
                      *([f'publish = "{directory / "directory" / "published.jws"}"'] if node.id == hub.id else []), ""]  # fmt: skip
        if delivery_toml:
            lines += ["[delivery]", delivery_toml, ""]
        if node.extra_toml:
            lines += [node.extra_toml, ""]
        path = federation.config_path(node.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines), encoding="utf-8")
    if directory_hub is not None:
        _publish_directory(directory, ca, issued, nodes, directory_hub)
    (directory / "federation.json").write_text(json.dumps(federation.describe(), indent=2), encoding="utf-8")
    return federation


def _publish_directory(directory: Path, ca: DevelopmentCA, issued: dict, nodes: list[NodeSpec], hub_id: str) -> None:
    """Sign the federation directory of every node and participant with the hub's node key."""
    from .audit import Actor, ActorKind
    from .crypto.seal import SigningIdentity, TrustStore
    from .directory import CertificateUse, DirectoryEditor
    from .pki import load_certificate, load_private_key

    target = directory / "directory"
    target.mkdir(parents=True, exist_ok=True)
    editor, _ = DirectoryEditor.create(target / "source.toml", issuer=hub_id, actor=Actor(ActorKind.ADMIN, "federation-builder"))
    for node in nodes:
        editor.set_node(node.id, f"https://127.0.0.1:{node.listen_port}")
    for node in nodes:
        for participant in node.participants:
            signing, encryption = issued[participant]
            editor.add_participant(participant, node=node.id)
            editor.add_certificate(participant, Path(signing.certificate).read_text(), use=CertificateUse.SIGNING)
            editor.add_certificate(participant, Path(encryption.certificate).read_text(), use=CertificateUse.ENCRYPTION)
    editor.save()
    hub = issued[hub_id]
    signer = SigningIdentity.from_key(hub_id, load_private_key(hub.private_key), load_certificate(hub.certificate))
    trust = TrustStore([load_certificate(ca.cert_path)])
    editor.publish(editor.sign(signer, trust), target / "published.jws")


def add_replica(federation: Federation, node_id: str, index: int) -> tuple[Path, int]:
    """A configuration for one more replica of ``node_id``: the node's file with its own ports.

    Written beside the node's file (``replica-<index>.toml``), so relative paths (the blob
    store that replicas share) resolve to the same directory. Returns (path, API port).
    Replicas share state only through a ``[store] backend = "postgresql"`` table in the file.
    """
    original = federation.config_path(node_id)
    spec = federation.node(node_id)
    api = free_port()
    text = original.read_text(encoding="utf-8")
    for old, new in ((f"port = {spec.listen_port} }}", f"port = {free_port()} }}"), (f"port = {spec.api_port} }}", f"port = {api} }}")):
        if text.count(old) != 1:
            raise ValueError(f"{original}: expected one '{old}'")
        text = text.replace(old, new)
    path = original.with_name(f"replica-{index}.toml")
    path.write_text(text, encoding="utf-8")
    return path, api
