"""The federation directory document: which node hosts each participant, with which keys.

A :class:`Directory` is what the hub signs (docs/directory.md §2): a version that only
grows, an issue and expiry time, the issuing node, the nodes with their URLs, and one
entry per participant (its node, environment, message types, certificates, retired
flag). :class:`DirectorySource` is the same tables without the times: what admins edit.

Both serialise to one JSON shape (camelCase keys, like the rest of the wire format);
parsing is strict — an unknown key, a wrong type or a duplicate fails with the path of
the offending value, because a signed document that says more than we read is a
document we did not verify.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlparse

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..crypto.seal import canonical_json, common_name
from ..ids import InvalidIdentifier, ParticipantId

MAX_MESSAGE_TYPE = 2699999  # eCH-0090 messageTypeType: xs:int 0 … 2699999
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class MalformedDocument(ValueError):
    """A directory document or source that does not have the expected shape."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where}: {why}" if where else why)
        self.where = where


class CertificateUse(enum.Enum):
    """What a participant certificate is listed for, and the key usage it must allow."""

    SIGNING = "signing"
    ENCRYPTION = "encryption"

    @property
    def key_usage(self) -> str:
        """The :meth:`gateway.crypto.seal.TrustStore.check` usage name."""
        return "digital_signature" if self is CertificateUse.SIGNING else "key_agreement"


class Environment(enum.Enum):
    """sedex keeps test and production apart; a ``T`` participant ID is always test."""

    PRODUCTION = "production"
    TEST = "test"


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with seconds, as in the seal manifest: ``2026-03-01T08:00:00+00:00``."""
    if moment.tzinfo is None:
        raise ValueError("directory times must be timezone-aware")
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"time without offset: {text!r}")
    return moment.astimezone(timezone.utc)


def check_node_id(value: object) -> str:
    """Return ``value`` if it can be a node ID (the CN of a node's TLS certificate)."""
    if not isinstance(value, str) or not _NODE_ID.fullmatch(value):
        raise ValueError(f"not a node ID: {value!r}")
    return value


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class CertificateEntry:
    """One certificate of a participant; ``not_before``/``not_after`` may narrow its X.509 validity.

    Key rotation: list the new certificate beside the old one (with ``not_before`` in the
    future to announce it ahead of use), then retire the old one or let ``not_after`` end it.
    """

    use: CertificateUse
    pem: str
    not_before: datetime | None = None
    not_after: datetime | None = None
    retired: bool = False
    certificate: x509.Certificate = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            cert = x509.load_pem_x509_certificate(self.pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError, AttributeError):
            raise ValueError("not a PEM certificate") from None
        object.__setattr__(self, "certificate", cert)
        # One spelling of each certificate, so equal certificates give equal documents.
        object.__setattr__(self, "pem", cert.public_bytes(Encoding.PEM).decode("ascii"))
        for name in ("not_before", "not_after"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, parse_time(format_time(value)))
        if self.not_before and self.not_after and self.not_before >= self.not_after:
            raise ValueError("notBefore must be before notAfter")

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER certificate, lowercase hex: how admins name a certificate."""
        return sha256_hex(self.certificate.public_bytes(Encoding.DER))

    @property
    def valid_from(self) -> datetime:
        start = self.certificate.not_valid_before_utc
        return max(start, self.not_before) if self.not_before else start

    @property
    def valid_until(self) -> datetime:
        end = self.certificate.not_valid_after_utc
        return min(end, self.not_after) if self.not_after else end

    def current_at(self, now: datetime) -> bool:
        return not self.retired and self.valid_from <= now <= self.valid_until

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"use": self.use.value, "pem": self.pem, "retired": self.retired}
        if self.not_before is not None:
            data["notBefore"] = format_time(self.not_before)
        if self.not_after is not None:
            data["notAfter"] = format_time(self.not_after)
        return data


@dataclass(frozen=True)
class NodeEntry:
    """A node of the federation: its ID (the CN of its TLS certificate) and its node-API URL."""

    id: str
    url: str

    def __post_init__(self) -> None:
        check_node_id(self.id)
        parsed = urlparse(self.url) if isinstance(self.url, str) else None
        # SECURITY: nodes talk HTTPS with mutual TLS only; a plain-HTTP address in the
        # directory would send transfers where anyone on the path can read the metadata.
        if parsed is None or parsed.scheme != "https" or not parsed.hostname or parsed.query or parsed.fragment:
            raise ValueError(f"node URL must be https://host[:port][/path]: {self.url!r}")
        try:
            parsed.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise ValueError(f"node URL has a bad port: {self.url!r}") from None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url}


@dataclass(frozen=True)
class ParticipantEntry:
    """One participant: the node hosting it, what it exchanges, its certificates."""

    id: ParticipantId
    node: str
    environment: Environment
    message_types: tuple[int, ...] = ()
    certificates: tuple[CertificateEntry, ...] = ()
    retired: bool = False

    def __post_init__(self) -> None:
        if self.id.is_test and self.environment is not Environment.TEST:
            raise ValueError(f"{self.id} is a test participant (T prefix) but is listed as {self.environment.value}")
        for message_type in self.message_types:
            if type(message_type) is not int or not 0 <= message_type <= MAX_MESSAGE_TYPE:
                raise ValueError(f"not an eCH-0090 messageType: {message_type!r}")
        object.__setattr__(self, "message_types", tuple(sorted(set(self.message_types))))
        fingerprints = [c.fingerprint for c in self.certificates]
        if len(set(fingerprints)) != len(fingerprints):
            raise ValueError(f"{self.id} lists a certificate twice")
        for cert in self.certificates:
            if common_name(cert.certificate) != str(self.id):
                raise ValueError(f"certificate {cert.fingerprint[:16]}… names {common_name(cert.certificate)!r}, not {self.id}")
        object.__setattr__(self, "certificates", tuple(sorted(self.certificates, key=lambda c: (c.use.value, c.fingerprint))))

    def certificate(self, fingerprint: str) -> CertificateEntry:
        """The certificate whose fingerprint is ``fingerprint`` or starts with it (at least 16 hex digits)."""
        wanted = fingerprint.lower().replace(":", "")
        if len(wanted) < 16:
            raise KeyError("give at least 16 hex digits of the fingerprint")
        found = [c for c in self.certificates if c.fingerprint.startswith(wanted)]
        if len(found) != 1:
            raise KeyError(f"{len(found)} certificates of {self.id} match {fingerprint}")
        return found[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "node": self.node,
            "environment": self.environment.value,
            "messageTypes": list(self.message_types),
            "retired": self.retired,
            "certificates": [c.to_json() for c in self.certificates],
        }

    def digest(self) -> str:
        return sha256_hex(canonical_json(self.to_json()))


def _check_tables(nodes: tuple[NodeEntry, ...], participants: tuple[ParticipantEntry, ...]) -> None:
    node_ids = [n.id for n in nodes]
    if len(set(node_ids)) != len(node_ids):
        raise ValueError("a node is listed twice")
    ids = [p.id for p in participants]
    if len(set(ids)) != len(ids):
        raise ValueError("a participant is listed twice")
    known = set(node_ids)
    for participant in participants:
        if participant.node not in known:
            raise ValueError(f"{participant.id} is hosted on {participant.node!r}, which is not a listed node")


@dataclass(frozen=True)
class DirectorySource:
    """What the hub's admins edit: the issuer, the last published version, nodes and participants."""

    issuer: str
    version: int = 0
    nodes: tuple[NodeEntry, ...] = ()
    participants: tuple[ParticipantEntry, ...] = ()

    def __post_init__(self) -> None:
        check_node_id(self.issuer)
        if type(self.version) is not int or self.version < 0:
            raise ValueError(f"version must be a non-negative integer: {self.version!r}")
        object.__setattr__(self, "nodes", tuple(sorted(self.nodes, key=lambda n: n.id)))
        object.__setattr__(self, "participants", tuple(sorted(self.participants, key=lambda p: p.id)))
        _check_tables(self.nodes, self.participants)

    def node(self, node_id: str) -> NodeEntry | None:
        return next((n for n in self.nodes if n.id == node_id), None)

    def participant(self, participant: ParticipantId) -> ParticipantEntry | None:
        return next((p for p in self.participants if p.id == participant), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "version": self.version,
            "nodes": [n.to_json() for n in self.nodes],
            "participants": [p.to_json() for p in self.participants],
        }

    @classmethod
    def from_json(cls, obj: Any) -> DirectorySource:
        reader = _Reader(obj, "")
        issuer = reader.take("issuer", str)
        version = reader.take("version", int, 0)
        nodes = _nodes(reader)
        participants = _participants(reader)
        reader.done()
        return reader.build(lambda: cls(issuer, version, nodes, participants))


@dataclass(frozen=True)
class Directory:
    """The signed document: one version of the federation's directory."""

    version: int
    issued_at: datetime
    expires_at: datetime
    issuer: str
    nodes: tuple[NodeEntry, ...] = ()
    participants: tuple[ParticipantEntry, ...] = ()

    def __post_init__(self) -> None:
        if type(self.version) is not int or self.version < 1:
            raise ValueError(f"version must be a positive integer: {self.version!r}")
        object.__setattr__(self, "issued_at", parse_time(format_time(self.issued_at)))
        object.__setattr__(self, "expires_at", parse_time(format_time(self.expires_at)))
        if self.expires_at <= self.issued_at:
            raise ValueError("expiresAt must be after issuedAt")
        check_node_id(self.issuer)
        object.__setattr__(self, "nodes", tuple(sorted(self.nodes, key=lambda n: n.id)))
        object.__setattr__(self, "participants", tuple(sorted(self.participants, key=lambda p: p.id)))
        _check_tables(self.nodes, self.participants)

    @classmethod
    def from_source(cls, source: DirectorySource, *, version: int, issued_at: datetime, expires_at: datetime) -> Directory:
        return cls(version, issued_at, expires_at, source.issuer, source.nodes, source.participants)

    def to_claims(self) -> dict[str, Any]:
        """The JSON object that is signed (canonical JSON of it is the JWS payload)."""
        return {
            "version": self.version,
            "issuedAt": format_time(self.issued_at),
            "expiresAt": format_time(self.expires_at),
            "issuer": self.issuer,
            "nodes": [n.to_json() for n in self.nodes],
            "participants": [p.to_json() for p in self.participants],
        }

    @classmethod
    def from_claims(cls, obj: Any) -> Directory:
        """Parse signed claims; raise :class:`MalformedDocument` naming the first bad value."""
        reader = _Reader(obj, "")
        version = reader.take("version", int)
        issued_at = reader.time("issuedAt")
        expires_at = reader.time("expiresAt")
        issuer = reader.take("issuer", str)
        nodes = _nodes(reader)
        participants = _participants(reader)
        reader.done()
        return reader.build(lambda: cls(version, issued_at, expires_at, issuer, nodes, participants))


_MISSING = object()


class _Reader:
    """Reads one JSON object strictly, remembering where it is for error messages."""

    def __init__(self, obj: Any, where: str) -> None:
        if not isinstance(obj, Mapping):
            raise MalformedDocument(where, "expected an object")
        self.obj = obj
        self.where = where
        self.seen: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def take(self, key: str, kind: type, default: Any = _MISSING) -> Any:
        self.seen.add(key)
        if key not in self.obj:
            if default is _MISSING:
                raise MalformedDocument(self.path(key), "missing")
            return default
        value = self.obj[key]
        # bool is an int in Python; a JSON true is never a version or a message type.
        if type(value) is not kind:
            raise MalformedDocument(self.path(key), f"expected {kind.__name__}, got {value!r:.60}")
        return value

    def time(self, key: str, default: Any = _MISSING) -> datetime | None:
        text = self.take(key, str, default)
        if text is None or text is default:
            return text
        try:
            return parse_time(text)
        except ValueError:
            raise MalformedDocument(self.path(key), f"not an ISO 8601 time with offset: {text!r:.60}") from None

    def items(self, key: str) -> list[_Reader]:
        values = self.take(key, list, [])
        return [_Reader(value, f"{self.path(key)}[{i}]") for i, value in enumerate(values)]

    def done(self) -> None:
        unknown = sorted(set(self.obj) - self.seen)
        if unknown:
            raise MalformedDocument(self.path(unknown[0]), "unknown key")

    def build(self, make):
        try:
            return make()
        except (ValueError, InvalidIdentifier) as exc:
            if isinstance(exc, MalformedDocument):
                raise
            raise MalformedDocument(self.where, str(exc)) from None


def _nodes(reader: _Reader) -> tuple[NodeEntry, ...]:
    nodes = []
    for item in reader.items("nodes"):
        node_id, url = item.take("id", str), item.take("url", str)
        item.done()
        nodes.append(item.build(lambda: NodeEntry(node_id, url)))
    return tuple(nodes)


def _enum(reader: _Reader, key: str, kind: type[enum.Enum], default: Any = _MISSING) -> Any:
    value = reader.take(key, str, default)
    if value is default:
        return value
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(repr(member.value) for member in kind)
        raise MalformedDocument(reader.path(key), f"{value!r:.60} is not one of {allowed}") from None


def _certificates(reader: _Reader) -> tuple[CertificateEntry, ...]:
    certificates = []
    for item in reader.items("certificates"):
        use = _enum(item, "use", CertificateUse)
        pem = item.take("pem", str)
        not_before, not_after = item.time("notBefore", None), item.time("notAfter", None)
        retired = item.take("retired", bool, False)
        item.done()
        certificates.append(item.build(lambda: CertificateEntry(use, pem, not_before, not_after, retired)))
    return tuple(certificates)


def _participants(reader: _Reader) -> tuple[ParticipantEntry, ...]:
    participants = []
    for item in reader.items("participants"):
        text = item.take("id", str)
        try:
            participant = ParticipantId(text)
        except InvalidIdentifier as exc:
            raise MalformedDocument(item.path("id"), str(exc)) from None
        node = item.take("node", str)
        environment = _enum(item, "environment", Environment, None)
        if environment is None:
            environment = Environment.TEST if participant.is_test else Environment.PRODUCTION
        message_types = item.take("messageTypes", list, [])
        retired = item.take("retired", bool, False)
        certificates = _certificates(item)
        item.done()
        participants.append(
            item.build(lambda: ParticipantEntry(participant, node, environment, tuple(message_types), certificates, retired))
        )
    return tuple(participants)
