"""Node configuration: one TOML file parsed once into frozen dataclasses.

A bad file fails at start with :class:`ConfigError` naming the file, the key and the
value. Relative paths are relative to the configuration file's directory.
"""

from __future__ import annotations

import fnmatch
import hashlib
import tomllib
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .crypto.ocsp import OcspMode, OcspSettings
from .auth import AuthConfigError, OAuth2Settings, OAuthClient, OidcSettings, parse_clients, parse_oauth2, parse_oidc
from .store_pg import InvalidStoreSetting, StoreSettings
from .ids import InvalidIdentifier, ParticipantId
from .safexml import XmlLimits


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names file, key and value."""


class PayloadAcceptance(Enum):
    """What a route demands of a payload before it is sealed."""

    SCHEMA_VALID = "schema-valid"  # XML whose namespace has a schema, and it validates (default)
    WELL_FORMED = "well-formed"  # XML, well-formed only (e.g. eCH-0020 v1, no public XSD)
    ANY = "any"  # any bytes (zip payloads, attachments)


@dataclass(frozen=True)
class Address:
    host: str
    port: int


@dataclass(frozen=True)
class TlsIdentity:
    certificate: Path
    private_key: Path
    trust_anchors: tuple[Path, ...]
    crls: tuple[Path, ...] = ()  # revocation lists of the trust anchors (fail closed when out of date)
    expiry_warning_days: int = 30  # warn this long before any loaded certificate expires
    ocsp: OcspSettings = field(default_factory=OcspSettings)  # ocsp = off | prefer | require (docs/operations.md)


@dataclass(frozen=True)
class HostedParticipant:
    id: ParticipantId
    signing_key: Path
    signing_certificate: Path
    encryption_key: Path
    encryption_certificate: Path
    folder: Path | None = None  # base of the sedex folder interface (outbox/, inbox/, receipts/, …)
    # eCH format adapters (adapters.registry names) this participant's systems speak: what it
    # sends is recognised and validated with them, what it receives is converted to them.
    # Empty: no format stage, the route's payload acceptance alone applies.
    adapters: tuple[str, ...] = ()
    # Earlier encryption keys, kept so that messages sealed for them still open (key rotation);
    # (private key, certificate) pairs, newest first. Drop one once nothing queued needs it.
    previous_encryption: tuple[tuple[Path, Path], ...] = ()


@dataclass(frozen=True)
class KnownParticipant:
    """A participant hosted elsewhere, with the certificate we encrypt for."""

    id: ParticipantId
    encryption_certificate: Path
    adapters: tuple[str, ...] = ()  # formats it accepts (see HostedParticipant.adapters)


@dataclass(frozen=True)
class LocalSystem:
    """An application (register software) allowed to act for some hosted participants."""

    name: str
    token_sha256: str
    participants: frozenset[ParticipantId]

    def accepts(self, token: str) -> bool:
        import hmac

        return hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), self.token_sha256)


class OperatorRole(Enum):
    """Who may use the node's admin and audit APIs (issue 7 replaces tokens with OAuth2 scopes)."""

    ADMIN = "admin"  # participants, routes, policies; never payloads or audit content
    AUDITOR = "auditor"  # the audit trail, read-only; every read is itself audited


@dataclass(frozen=True)
class Operator:
    name: str
    role: OperatorRole
    token_sha256: str

    def accepts(self, token: str) -> bool:
        import hmac

        return hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), self.token_sha256)


@dataclass(frozen=True)
class Peer:
    id: str
    url: str


@dataclass(frozen=True)
class Route:
    """Recipient (ID, glob pattern, or ``@group`` of those) → next hop (a peer id, or ``local``)."""

    recipient: str
    via: str
    payload: PayloadAcceptance = PayloadAcceptance.SCHEMA_VALID
    members: tuple[str, ...] = ()  # a group's IDs and patterns, resolved from [route_groups] at load

    def matches(self, recipient: ParticipantId) -> bool:
        patterns = self.members if self.recipient.startswith("@") else (self.recipient,)
        return any(fnmatch.fnmatchcase(str(recipient), pattern) for pattern in patterns)

    @property
    def is_local(self) -> bool:
        return self.via == "local"


@dataclass(frozen=True)
class DirectorySettings:
    """Where a node gets the federation directory (docs/directory.md), and where a hub serves it."""

    url: str | None  # the issuing hub's directory URL (https, mTLS); None: this node does not fetch
    issuer: str  # node ID of the hub that signs it
    cache: Path  # the last good signed copy
    grace_hours: float = 24.0  # use the cached copy this long past its expiry while the hub is unreachable
    refresh_seconds: float = 900.0
    retry_seconds: float = 60.0  # after a failed fetch
    publish: Path | None = None  # on the hub: the signed directory file it serves at /node/v1/directory


@dataclass(frozen=True)
class Delivery:
    """Retry and expiry policy for forwarding."""

    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 600.0
    expiry_days: int = 30
    # A messageDate further ahead than this is refused (200): expiry counts from messageDate,
    # so a forged future date would keep a message from ever expiring (threat model F9).
    message_date_tolerance_seconds: float = 3600.0
    poll_seconds: float = 0.2
    parallel_transfers: int = 8
    max_hops: int = 8  # a transfer that already passed this many nodes is refused (301)
    breaker_failures: int = 5  # consecutive failures that open a peer's circuit breaker
    breaker_seconds: float = 30.0  # first open period; doubles while the peer keeps failing (up to retry_max_seconds)
    shutdown_seconds: float = 10.0  # on SIGTERM, time given to transfers in flight before they are cut (and resent later)


@dataclass(frozen=True)
class Limits:
    max_envelope_bytes: int = 1024 * 1024
    max_payload_bytes: int = 16 * 1024**3
    in_memory_payload_bytes: int = 8 * 1024 * 1024
    # A payload with more elements is streamed like a larger one: its tree would cost ~250 bytes
    # per element (~60 MB here), whatever its size in bytes (threat model F4).
    in_memory_max_elements: int = 250_000
    segment_size: int = 64 * 1024
    xml: XmlLimits = field(default_factory=XmlLimits)
    read_timeout_seconds: float = 60.0  # a transfer or upload that sends nothing for this long is cut
    min_bytes_per_second: int = 16 * 1024  # after 30 s, a slower sender is cut (slow-client protection)


@dataclass(frozen=True)
class NodeConfig:
    source: Path
    node_id: str
    listen: Address
    api: Address
    tls: TlsIdentity
    store: Path
    schemas: Path
    participants: tuple[HostedParticipant, ...]
    known_participants: tuple[KnownParticipant, ...]
    local_systems: tuple[LocalSystem, ...]
    peers: tuple[Peer, ...]
    routes: tuple[Route, ...]
    delivery: Delivery = field(default_factory=Delivery)
    limits: Limits = field(default_factory=Limits)
    policies: Path | None = None  # a policy directory or file; None: no policy stage (development only)
    audit_log: Path | None = None  # the audit log's own SQLite file (never inside the message store)
    audit_secret: Path | None = None  # per-deployment secret for keyed person hashes in audit records
    audit_retention_days: int = 366  # records older than this are pruned (never less than a year, leap years included)
    operators: tuple[Operator, ...] = ()
    # eCH-0020 2.x → 3.0: an empty localPersonId (allowed in 2.x, not in 3.0) becomes
    # (this category, the AHV number); None refuses such a conversion with 303.
    local_person_id_category: str | None = None
    directory: DirectorySettings | None = None
    ops: Address | None = None  # /healthz, /readyz, /metrics (plain HTTP, for probes and Prometheus)
    oauth2: OAuth2Settings | None = None  # the node's token endpoint (docs/authentication.md)
    oauth_clients: tuple[OAuthClient, ...] = ()
    oidc: OidcSettings | None = None  # tokens from an external OpenID Connect provider
    store_backend: StoreSettings = field(default_factory=StoreSettings)  # [store]: sqlite (default) or postgresql
    workers: int = 1  # processes serving this node's listeners (SO_REUSEPORT); only the first forwards (docs/operations.md)

    def operator(self, token: str, role: OperatorRole) -> Operator | None:
        return next((o for o in self.operators if o.role is role and token and o.accepts(token)), None)

    def hosted(self, participant: ParticipantId) -> HostedParticipant | None:
        return next((p for p in self.participants if p.id == participant), None)

    def route_for(self, recipient: ParticipantId) -> Route | None:
        """The first route whose recipient pattern matches (exact IDs before patterns)."""
        exact = [r for r in self.routes if r.recipient == str(recipient)]
        return (exact or [r for r in self.routes if r.matches(recipient)] or [None])[0]

    def peer(self, peer_id: str) -> Peer | None:
        return next((p for p in self.peers if p.id == peer_id), None)

    def known(self, participant: ParticipantId) -> KnownParticipant | None:
        return next((k for k in self.known_participants if k.id == participant), None)


class _Reader:
    """Reads typed values from a TOML table, naming file and key in every error."""

    def __init__(self, source: Path, data: dict[str, Any], prefix: str = "") -> None:
        self.source = source
        self.data = data
        self.prefix = prefix

    def fail(self, key: str, value: Any, why: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.prefix}{key} = {value!r}: {why}")

    def sub(self, key: str, required: bool = True) -> _Reader:
        value = self.data.get(key, None if required else {})
        if not isinstance(value, dict):
            raise self.fail(key, value, "expected a table")
        return _Reader(self.source, value, f"{self.prefix}{key}.")

    def items(self, key: str) -> list[_Reader]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(key, value, "expected an array of tables")
        return [_Reader(self.source, v, f"{self.prefix}{key}[{i}].") for i, v in enumerate(value)]

    def get(self, key: str, kind: type, default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise self.fail(key, None, "missing")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(key, value, f"expected {kind.__name__}")
        return value

    def positive(self, key: str, kind: type, default: Any) -> Any:
        value = self.get(key, kind, default)
        if value <= 0:
            raise self.fail(key, value, "must be positive")
        return value

    def path(self, key: str, *, must_exist: bool = True, default: Any = ...) -> Path:
        raw = self.get(key, str, default)
        path = (self.source.parent / raw).resolve()
        if must_exist and not path.exists():
            raise self.fail(key, raw, f"file not found ({path})")
        return path

    def participant(self, key: str) -> ParticipantId:
        raw = self.get(key, str)
        try:
            return ParticipantId.parse(raw)
        except InvalidIdentifier:
            raise self.fail(key, raw, "not a sedex participant ID (T?n-XXX-n)") from None

    def address(self, key: str) -> Address:
        table = self.sub(key)
        host = table.get("host", str, "127.0.0.1")
        port = table.get("port", int)
        if not 0 <= port <= 65535:
            raise table.fail("port", port, "not a TCP port")
        return Address(host, port)


def load_config(path: Path | str) -> NodeConfig:
    source = Path(path).resolve()
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{source}: configuration file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    root = _Reader(source, data)
    node = root.sub("node")
    tls = root.sub("tls")
    anchors = tls.get("trust_anchors", list)
    if not anchors or not all(isinstance(a, str) for a in anchors):
        raise tls.fail("trust_anchors", anchors, "expected a non-empty list of file names")
    trust = tuple(_Reader(source, {"a": a}, tls.prefix + "trust_anchors.").path("a") for a in anchors)

    participants = []
    for table in root.items("participants"):
        participants.append(
            HostedParticipant(
                id=table.participant("id"),
                signing_key=table.path("signing_key"),
                signing_certificate=table.path("signing_certificate"),
                encryption_key=table.path("encryption_key"),
                encryption_certificate=table.path("encryption_certificate"),
                folder=table.path("folder", must_exist=False) if "folder" in table.data else None,
                adapters=_names(table, "adapters"),
                previous_encryption=tuple(
                    (t.path("key"), t.path("certificate")) for t in table.items("previous_encryption")
                ),
            )
        )
    hosted_ids = {p.id for p in participants}
    try:
        oauth2 = parse_oauth2(data.get("oauth2"), source=source, node_id=node.get("id", str))
        oauth_clients = parse_clients(data.get("oauth_clients"), source=source, hosted=hosted_ids)
        oidc = parse_oidc(data.get("oidc"), source=source, hosted=hosted_ids)
    except AuthConfigError as error:
        raise ConfigError(str(error)) from None

    systems = []
    for table in root.items("local_systems"):
        token = _token_hash(table)
        ids = table.get("participants", list)
        parsed = set()
        for i, raw in enumerate(ids):
            pid = _Reader(source, {str(i): raw}, table.prefix + "participants.").participant(str(i))
            if pid not in hosted_ids:
                raise table.fail("participants", raw, "not a participant hosted on this node")
            parsed.add(pid)
        systems.append(LocalSystem(table.get("name", str), token, frozenset(parsed)))

    operators = []
    for table in root.items("operators"):
        role = table.get("role", str)
        try:
            operator_role = OperatorRole(role)
        except ValueError:
            raise table.fail("role", role, f"expected one of {[r.value for r in OperatorRole]}") from None
        operators.append(Operator(table.get("name", str), operator_role, _token_hash(table)))

    peers = []
    for table in root.items("peers"):
        url = table.get("url", str)
        if urlparse(url).scheme != "https":
            raise table.fail("url", url, "peers are reached over https only")
        peers.append(Peer(table.get("id", str), url.rstrip("/")))
    peer_ids = {p.id for p in peers}

    routes = []
    groups: dict[str, tuple[str, ...]] = {}
    group_table = root.sub("route_groups", required=False)
    for name in group_table.data:
        members = group_table.get(name, list)
        if not members or not all(isinstance(m, str) and m for m in members):
            raise group_table.fail(name, members, "expected a non-empty list of participant IDs or patterns")
        groups[name] = tuple(members)
    for table in root.items("routes"):
        via = table.get("via", str)
        if via != "local" and via not in peer_ids:
            raise table.fail("via", via, "neither 'local' nor a configured peer")
        mode = table.get("payload", str, PayloadAcceptance.SCHEMA_VALID.value)
        try:
            acceptance = PayloadAcceptance(mode)
        except ValueError:
            raise table.fail("payload", mode, f"expected one of {[m.value for m in PayloadAcceptance]}") from None
        recipient = table.get("recipient", str)
        members: tuple[str, ...] = ()
        if recipient.startswith("@"):
            if recipient[1:] not in groups:
                raise table.fail("recipient", recipient, "no such group in [route_groups]")
            members = groups[recipient[1:]]
        routes.append(Route(recipient, via, acceptance, members))

    known = [
        KnownParticipant(t.participant("id"), t.path("encryption_certificate"), _names(t, "adapters"))
        for t in root.items("known_participants")
    ]

    delivery_table = root.sub("delivery", required=False)
    delivery = Delivery(
        retry_base_seconds=delivery_table.positive("retry_base_seconds", float, Delivery.retry_base_seconds),
        retry_max_seconds=delivery_table.positive("retry_max_seconds", float, Delivery.retry_max_seconds),
        expiry_days=delivery_table.positive("expiry_days", int, Delivery.expiry_days),
        message_date_tolerance_seconds=delivery_table.positive("message_date_tolerance_seconds", float,
                                                               Delivery.message_date_tolerance_seconds),  # fmt: skip
        poll_seconds=delivery_table.positive("poll_seconds", float, Delivery.poll_seconds),
        parallel_transfers=delivery_table.positive("parallel_transfers", int, Delivery.parallel_transfers),
        max_hops=delivery_table.positive("max_hops", int, Delivery.max_hops),
        breaker_failures=delivery_table.positive("breaker_failures", int, Delivery.breaker_failures),
        breaker_seconds=delivery_table.positive("breaker_seconds", float, Delivery.breaker_seconds),
        shutdown_seconds=delivery_table.positive("shutdown_seconds", float, Delivery.shutdown_seconds),
    )
    limits_table = root.sub("limits", required=False)
    xml_defaults = XmlLimits()
    limits = Limits(
        max_envelope_bytes=limits_table.positive("max_envelope_bytes", int, Limits.max_envelope_bytes),
        max_payload_bytes=limits_table.positive("max_payload_bytes", int, Limits.max_payload_bytes),
        in_memory_payload_bytes=limits_table.positive("in_memory_payload_bytes", int, Limits.in_memory_payload_bytes),
        in_memory_max_elements=limits_table.positive("in_memory_max_elements", int, Limits.in_memory_max_elements),
        segment_size=_segment_size(limits_table),
        read_timeout_seconds=limits_table.positive("read_timeout_seconds", float, Limits.read_timeout_seconds),
        min_bytes_per_second=limits_table.positive("min_bytes_per_second", int, Limits.min_bytes_per_second),
        xml=XmlLimits(
            max_bytes=limits_table.positive("xml_max_bytes", int, xml_defaults.max_bytes),
            max_depth=limits_table.positive("xml_max_depth", int, xml_defaults.max_depth),
            max_elements=limits_table.positive("xml_max_elements", int, xml_defaults.max_elements),
        ),
    )
    return NodeConfig(
        source=source,
        node_id=node.get("id", str),
        listen=node.address("listen"),
        api=node.address("api"),
        tls=TlsIdentity(tls.path("certificate"), tls.path("private_key"), trust, _paths(tls, "crls"),
                        tls.positive("expiry_warning_days", int, 30), _ocsp(tls)),
        store=node.path("store", must_exist=False),
        schemas=node.path("schemas"),
        policies=node.path("policies") if "policies" in node.data else None,
        audit_log=node.path("audit_log", must_exist=False, default="audit/audit.db"),
        audit_secret=node.path("audit_secret") if "audit_secret" in node.data else None,
        audit_retention_days=_retention(node),
        operators=tuple(operators),
        local_person_id_category=root.sub("adapters", required=False).get("local_person_id_category", str, None),
        directory=_directory(root),
        ops=node.address("ops") if "ops" in node.data else None,
        oauth2=oauth2,
        oauth_clients=oauth_clients,
        oidc=oidc,
        store_backend=_store_backend(root),
        workers=_workers(node),
        participants=tuple(participants),
        known_participants=tuple(known),
        local_systems=tuple(systems),
        peers=tuple(peers),
        routes=tuple(routes),
        delivery=delivery,
        limits=limits,
    )


def _token_hash(table: _Reader) -> str:
    token = table.get("token_sha256", str)
    if len(token) != 64 or any(c not in "0123456789abcdef" for c in token):
        raise table.fail("token_sha256", token, "expected a lowercase hex SHA-256")
    return token


def _names(table: _Reader, key: str) -> tuple[str, ...]:
    names = table.get(key, list, [])
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise table.fail(key, names, "expected a list of distinct names")
    return tuple(names)


def _segment_size(limits: _Reader) -> int:
    # Every node refuses seals whose segmentSize is outside the wire-format bounds (threat
    # model F5): a node must not seal what its peers refuse.
    from .crypto.seal import MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE

    size = limits.positive("segment_size", int, Limits.segment_size)
    if not MIN_SEGMENT_SIZE <= size <= MAX_SEGMENT_SIZE:
        raise limits.fail("segment_size", size, f"must be between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE}")
    return size


def _workers(node: _Reader) -> int:
    """``[node] workers``: 1 (one process) to 64. Several processes share the listening ports
    with SO_REUSEPORT, so each must bind the same fixed port: port 0 would give each its own."""
    workers = node.positive("workers", int, 1)
    if workers > 64:
        raise node.fail("workers", workers, "at most 64 processes per node")
    if workers > 1:
        for key in ("listen", "api"):
            if node.address(key).port == 0:
                raise node.fail("workers", workers, f"several workers need a fixed {key}.port (0 would give each process its own port)")
    return workers


def _retention(node: _Reader) -> int:
    days = node.positive("audit_retention_days", int, 366)
    if days < 366:
        raise node.fail("audit_retention_days", days, "access logs are kept for at least one year (366 days)")
    return days


def _directory(root: _Reader) -> DirectorySettings | None:
    if "directory" not in root.data:
        return None
    table = root.sub("directory")
    url = table.get("url", str, None)
    if url is not None and urlparse(url).scheme != "https":
        raise table.fail("url", url, "the directory is fetched over https only")
    publish = table.path("publish", must_exist=False) if "publish" in table.data else None
    if url is None and publish is None:
        raise table.fail("url", None, "set url (to fetch the directory) or publish (to serve it), or both")
    return DirectorySettings(
        url=url,
        issuer=table.get("issuer", str),
        cache=table.path("cache", must_exist=False, default="directory/directory.jws"),
        grace_hours=table.positive("grace_hours", float, 24.0),
        refresh_seconds=table.positive("refresh_seconds", float, 900.0),
        retry_seconds=table.positive("retry_seconds", float, 60.0),
        publish=publish,
    )


def _ocsp(tls: _Reader) -> OcspSettings:
    """``[tls] ocsp``, ``ocsp_responder``, ``ocsp_timeout_seconds``, ``ocsp_refresh_seconds``."""
    raw = tls.get("ocsp", str, "off")
    try:
        mode = OcspMode(raw)
    except ValueError:
        raise tls.fail("ocsp", raw, "expected off, prefer or require") from None
    responder = tls.get("ocsp_responder", str, None)
    if responder is not None and (urlparse(responder).scheme not in ("http", "https") or not urlparse(responder).hostname):
        raise tls.fail("ocsp_responder", responder, "expected an http:// or https:// URL")
    return OcspSettings(mode, responder, tls.positive("ocsp_timeout_seconds", float, 5.0),
                        tls.positive("ocsp_refresh_seconds", float, 300.0))  # fmt: skip


def _paths(table: _Reader, key: str) -> tuple[Path, ...]:
    values = table.get(key, list, [])
    if not all(isinstance(v, str) for v in values):
        raise table.fail(key, values, "expected a list of file names")
    return tuple(_Reader(table.source, {"p": v}, f"{table.prefix}{key}.").path("p") for v in values)


def _store_backend(root: _Reader) -> StoreSettings:
    table = root.sub("store", required=False)
    for key in sorted(set(table.data) - {"backend", "dsn", "schema", "replica", "lease_seconds", "orphan_grace_seconds", "commit"}):
        raise table.fail(key, table.data[key], "unknown key")
    try:
        return StoreSettings(backend=table.get("backend", str, "sqlite"), dsn=table.get("dsn", str, None),
                             schema=table.get("schema", str, "drehscheibe"), replica=table.get("replica", str, None),
                             lease_seconds=table.get("lease_seconds", float, 300.0),
                             orphan_grace_seconds=table.get("orphan_grace_seconds", float, 3600.0),
                             commit=table.get("commit", str, "group"))  # fmt: skip
    except InvalidStoreSetting as error:
        raise table.fail(error.key, error.value, error.why) from None
