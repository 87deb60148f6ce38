"""A Drehscheibe node: the origin and destination stages of one hop, and the forwarder.

Origin (local system submits)::

    parse envelope → check participants → check message date → check payload + seal
    → persist → 202 → forward (mTLS) → receipt

Destination (a peer transfers)::

    authenticate peer → verify seal → check recipient → store ciphertext + authenticate
    it for the recipient → deliver to inbox → signed receipt 100

Each stage is a small method named after its job; a stage that refuses raises a
:class:`~gateway.ids.GatewayError` carrying its sedex status code, which the edge turns
into a receipt. Nothing after verification touches unverified bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import random
import signal
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives import hashes
from joserfc.jwk import ECKey
from lxml import etree

from adapters.ech0058 import UnsupportedHeaderVersion, check_header_against_envelope, extract_header, find_header
from adapters.pipeline import Inspection, adapt_for, inspect
from adapters.registry import AdapterRegistry, UnknownAdapter, default_registry

from .clock import Clock, backoff_delay
from .config import ConfigError, HostedParticipant, LocalSystem, NodeConfig, PayloadAcceptance, Route
from .crypto.ocsp import OcspChecker, certificates_in_tokens, issuing_anchor
from .crypto.primitives import StreamError, new_hash
from .crypto.seal import (
    HOP_TYPE,
    RECEIPT_TYPE,
    RELAY_TYPE,
    EncryptionIdentity,
    RecipientKey,
    Sealing,
    SealError,
    SigningIdentity,
    TrustStore,
    VerifiedSeal,
    verify_node_signed,
    verify_seal,
    verify_signed,
)
from .directory import DirectoryCache, https_fetcher
from .envelope import Envelope, InvalidEnvelope, parse_envelope
from .ids import GatewayError, ParticipantId, StatusCode, check_message_id
from .logs import bound
from .metrics import NodeMetrics, RetryReason, Stage, StageOutcome
from .inmemory import claims_xml, within_element_budget
from .payload import CheckedPayload, PayloadCheck, check_tree
from .audit import Action, Actor, ActorKind, AuditRecord, AuditUnavailable, EnvelopeMeta, PolicyRecord, Role, person_refs
from .audit.log_pg import open_audit_log
from .audit import Outcome as AuditOutcome
from .policy import PayloadFacts, PolicyRequest, PolicyStore, load_policy_set, payload_facts, redact
from .policy.store import ReloadResult
from .safexml import parse_xml
from .pki import load_certificate, load_crl, load_private_key
from .receipt import Receipt, parse_receipt
from .schemas import SchemaCatalog
from .groupcommit import AuditWriter
from .store import Event, Outcome, Outgoing, OutgoingState, StoredReceipt
from .store_pg import open_store
from .transport import RECEIPTS_PATH, TRANSFER_PATH, TransferHeader, client_context

log = logging.getLogger("drehscheibe.node")

HANDED_GRACE_SECONDS = 86400  # after expiry, how long the origin waits for a relay's 204 before settling itself
_CHECK_SLICE = 64 * 1024  # bytes of a streamed payload parsed per turn of the inspection thread
FAULT_ENV = "DREHSCHEIBE_FAULT"  # test-only fault injection points, see docs/operations.md


class Refused(GatewayError):
    """A submission or transfer refused by a stage; carries the status it names.

    ``per_recipient`` gives a multi-recipient message one receipt per recipient: the denied
    ones their own code and reason, the others 313 (another recipient is not allowed).
    """

    def __init__(self, info: str, *, status: StatusCode | None = None,
                 per_recipient: dict[str, tuple[StatusCode, str]] | None = None) -> None:  # fmt: skip
        super().__init__(info, status=status)
        self.per_recipient = per_recipient or {}


@dataclass(frozen=True)
class Accepted:
    envelope: Envelope
    duplicate: bool  # True when the identical message had already been accepted


@dataclass(frozen=True)
class SealedPart:
    """One ciphertext of a message and the recipients it is sealed for."""

    blob: Path
    ciphertext_sha256: str
    seal: str
    plan: tuple
    size: int
    namespace: str | None
    acceptance: PayloadAcceptance
    converted: str | None = None  # "ech0020-v2 → ech0020-v3" when converted for these recipients


class UnreadablePayload(GatewayError):
    """A payload that starts as XML but that ``gateway.safexml`` refuses to read (threat model F2)."""

    status = StatusCode.INVALID_ENVELOPE


@dataclass(frozen=True)
class PayloadVariant:
    """The bytes one group of recipients gets (after their redactions and format conversion)."""

    data: bytes
    members: list
    conversion: str | None


@dataclass(frozen=True)
class InspectedPayload:
    """What the inspection thread hands back: no tree, only decisions, refs and the bytes to seal."""

    decisions: dict
    refs: tuple
    acceptance: PayloadAcceptance
    is_xml: bool
    namespace: str | None
    variants: tuple[PayloadVariant, ...]


@dataclass(frozen=True)
class HostedKeys:
    participant: ParticipantId
    signer: SigningIdentity
    decryptor: EncryptionIdentity
    previous: tuple[EncryptionIdentity, ...] = ()  # earlier encryption keys, kept for queued messages
    encryption_certificate: object = None  # the current one: checked before each message is accepted for it

    def opener(self, verified: VerifiedSeal):
        """Open the content key with the current key, else with an earlier one (key rotation)."""
        error: SealError | None = None
        for identity in (self.decryptor, *self.previous):
            try:
                return verified.opener(identity)
            except SealError as failed:
                error = failed
        assert error is not None
        raise error


def _fault(point: str) -> None:
    """Kill this process at a named point when the test-only fault variable asks for it."""
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


class Node:
    """Everything one running node needs, loaded once at start."""

    def __init__(self, config: NodeConfig, *, clock: Clock | None = None, rng: random.Random | None = None,
                 worker: bool = False) -> None:
        self.config = config
        self.id = config.node_id
        self.clock = clock or Clock()
        self.rng = rng or random.Random()
        self.catalog = SchemaCatalog(config.schemas)
        # OCSP answers outlive trust-store reloads: one checker for the node's lifetime.
        self.ocsp = OcspChecker(config.tls.ocsp, clock=self.clock.now)
        self.trust = self._load_trust(config, self.ocsp)
        now = self.clock.now()
        # Keys are loaded once, here; never per message.
        self.hosted: dict[ParticipantId, HostedKeys] = {p.id: self._load_hosted(p, now) for p in config.participants}
        self.node_signer = SigningIdentity.from_key(
            self.id, load_private_key(config.tls.private_key), load_certificate(config.tls.certificate)
        )
        # At start without OCSP (no answer can have been fetched yet; serve() fetches them before the
        # listeners open): issuer, name, usage, validity period and CRLs.
        TrustStore(self.trust.anchors, self.trust.crls).check(self.node_signer.certificate, name=self.id, usage="digital_signature", now=now)
        # The federation directory (when configured) names every participant's node and keys;
        # entries in this file (known_participants, routes) take precedence over it.
        self._directory_keys: dict[tuple[ParticipantId, bytes], RecipientKey] = {}
        self.directory = self._open_directory(config)
        self.recipient_keys: dict[ParticipantId, RecipientKey] = {}
        for known in config.known_participants:
            self.recipient_keys[known.id] = RecipientKey.from_certificate(
                str(known.id), load_certificate(known.encryption_certificate), self.trust, now, validity=False
            )
        for participant in config.participants:
            self.recipient_keys[participant.id] = RecipientKey.from_certificate(
                str(participant.id), load_certificate(participant.encryption_certificate), self.trust, now, validity=False
            )
        self.participant_adapters, self.recipient_adapters = self._load_adapters(config)
        # Policies are loaded once; a reload swaps the whole set (PolicyStore keeps the old
        # one when the new files are bad).
        # Redactions are proved against the official XSDs at load: one that would break a
        # payload's validity refuses the whole set.
        self.policies = (
            PolicyStore(load_policy_set([config.policies], schemas=config.schemas), clock=self.clock.now, schemas=config.schemas)
            if config.policies else None
        )  # fmt: skip
        self.store = open_store(config, clock=self.clock.timestamp)  # SQLite, or PostgreSQL shared by replicas
        if not worker:
            # Not in a worker process ([node] workers > 1): it starts beside running processes, and
            # a blob another one has written but not yet referenced in a committed row is no orphan.
            self.store.remove_orphan_blobs()
        # SECURITY: no audit record, no processing. The log lives in its own file and is
        # signed with the node's key; a failing append refuses the message with 403.
        # On PostgreSQL every replica appends to the one log of this node identity.
        self.audit = open_audit_log(config, node=self.id, signing_key=load_private_key(config.tls.private_key))
        self.audit_writer = AuditWriter(self.audit, self.clock.now)  # group commit of the message path's records
        self.person_secret = config.audit_secret.read_bytes() if config.audit_secret else None
        self._wake = asyncio.Event()
        self._released_blobs: list[Path] = []  # ciphertexts to delete once their settle is on disk
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False
        delivery = config.delivery
        self.breakers = {peer.id: CircuitBreaker(delivery.breaker_failures, delivery.breaker_seconds, max(delivery.breaker_seconds, delivery.retry_max_seconds))
                         for peer in config.peers}  # fmt: skip
        self.metrics = NodeMetrics(self)
        # SECURITY: payload trees are built, inspected and dropped in this one thread, never on
        # the event loop, and one at a time: with in_memory_max_elements that bounds their memory (F4).
        self._inspector = ThreadPoolExecutor(1, thread_name_prefix="payload-inspection")

    @staticmethod
    def _load_trust(config: NodeConfig, ocsp: OcspChecker | None = None) -> TrustStore:
        return TrustStore((load_certificate(p) for p in config.tls.trust_anchors), (load_crl(p) for p in config.tls.crls), ocsp)

    def reload_trust(self) -> None:
        """Read the revocation lists again (hourly, and on SIGHUP); a bad file keeps the old ones."""
        try:
            self.trust = self._load_trust(self.config, self.ocsp)
        except (OSError, ValueError) as error:
            log.error("revocation lists not reloaded, the previous ones stay: %s", error)

    async def refresh_revocation(self) -> int:
        """OCSP (when configured): fetch fresh answers for every certificate this node holds or
        has seen (at start, then every ``ocsp_refresh_seconds``); returns how many were stored."""
        if not self.ocsp.enabled:
            return 0
        held = [self.node_signer.certificate, *(c for k in self.recipient_keys.values() if (c := k.certificate) is not None)]
        for keys in self.hosted.values():
            held += [keys.signer.certificate, keys.encryption_certificate]
        for cert in held:
            issuer = issuing_anchor(cert, self.trust.anchors)  # each was checked against the anchors at start
            if issuer is not None:
                self.ocsp.watch(cert, issuer)
        return await self.ocsp.refresh()

    async def prepare_revocation(self, *tokens: str) -> None:
        """Before verifying signed tokens synchronously: fetch OCSP answers for the certificates
        they carry that this node sees for the first time (no-op when OCSP is off)."""
        if self.ocsp.enabled:
            await self.ocsp.prepare(certificates_in_tokens(tokens, nested=("receipt",)), self.trust.anchors)

    async def prepare_recipient_revocation(self, envelope: Envelope) -> None:
        """Before the synchronous participant checks: fetch OCSP answers for the encryption
        certificates of recipients this node knows only from the directory (first sight)."""
        if not self.ocsp.enabled or self.directory is None:
            return
        certificates = []
        for recipient in envelope.recipients:
            if recipient in self.recipient_keys:
                continue
            try:
                certificates.append(self.directory.lookup(recipient).encryption_certificate)
            except GatewayError:
                continue  # check_participants refuses it with the right code
        await self.ocsp.prepare(certificates, self.trust.anchors)

    def certificate_expiries(self) -> list[tuple[str, str, datetime]]:
        """(what, whose, notAfter) of every certificate this node holds, for warnings and metrics."""
        found = [("node", self.id, self.node_signer.certificate.not_valid_after_utc)]
        for keys in self.hosted.values():
            found.append(("signing", str(keys.participant), keys.signer.certificate.not_valid_after_utc))
            found.append(("encryption", str(keys.participant), keys.encryption_certificate.not_valid_after_utc))
        return found

    def warn_expiring_certificates(self) -> list[str]:
        """Log (and return) a warning for each certificate within ``expiry_warning_days`` of its end."""
        now = self.clock.now()
        horizon = now + timedelta(days=self.config.tls.expiry_warning_days)
        warnings = []
        for what, whose, not_after in self.certificate_expiries():
            if not_after <= horizon:
                text = f"{what} certificate of {whose} expires {not_after.isoformat(timespec='minutes')}"
                log.warning("%s", text)
                warnings.append(text)
        return warnings

    def _open_directory(self, config: NodeConfig) -> DirectoryCache | None:
        settings = config.directory
        if settings is None or settings.url is None:
            return None
        settings.cache.parent.mkdir(parents=True, exist_ok=True)
        fetch = https_fetcher(settings.url, client_context(config))

        async def fetch_then_prepare() -> str:
            token = await fetch()
            await self.prepare_revocation(token)  # OCSP for the directory's signer before it is verified
            return token

        cache = DirectoryCache(settings.cache, trust=self.trust, issuer=settings.issuer,
                               fetch=fetch_then_prepare, clock=self.clock,
                               grace=timedelta(hours=settings.grace_hours), on_state_change=self._directory_state)  # fmt: skip
        cache.load()
        return cache

    def _directory_state(self, status) -> None:
        log.warning("federation directory is %s (version %s)%s", status.state.value, status.version,
                    f": {status.last_error.info}" if status.last_error else "")  # fmt: skip

    def recipient_key(self, recipient: ParticipantId) -> RecipientKey | None:
        """The key to encrypt for: from this node's configuration, else from the directory."""
        key = self.recipient_keys.get(recipient)
        if key is not None or self.directory is None:
            return key
        resolved = self.directory.lookup(recipient)  # 301 unknown/retired, 312 no certificate, 402 unusable
        certificate = resolved.encryption_certificate
        cached = self._directory_keys.get((recipient, certificate.fingerprint(hashes.SHA256())))
        if cached is None:
            cached = RecipientKey.from_certificate(str(recipient), certificate, self.trust, self.clock.now())
            self._directory_keys[(recipient, certificate.fingerprint(hashes.SHA256()))] = cached
        return cached

    def route_for(self, recipient: ParticipantId):
        """The configured route, else the directory's: straight to the hosting node when it is a peer."""
        route = self.config.route_for(recipient)
        if route is not None or self.directory is None:
            return route
        resolved = self.directory.lookup(recipient)
        if resolved.node_id == self.id:
            return None  # listed as ours but not configured here: not deliverable
        if self.config.peer(resolved.node_id) is not None:
            return Route(str(recipient), resolved.node_id)
        return None

    def _load_adapters(self, config: NodeConfig) -> tuple[dict[ParticipantId, AdapterRegistry], dict[ParticipantId, AdapterRegistry]]:
        """Per participant: the formats it sends (hosted) and accepts (hosted or known)."""
        shipped = default_registry(self.catalog, local_id_category=config.local_person_id_category)
        selected: dict[tuple[str, ...], AdapterRegistry] = {}
        sending, accepting = {}, {}
        for participant in (*config.participants, *config.known_participants):
            if not participant.adapters:
                continue
            try:
                registry = selected.setdefault(participant.adapters, shipped.select(participant.adapters))
            except UnknownAdapter as error:
                raise ConfigError(f"{config.source}: participant {participant.id}: adapters: {error}") from None
            accepting[participant.id] = registry
            if isinstance(participant, HostedParticipant):
                sending[participant.id] = registry
        return sending, accepting

    def _load_hosted(self, participant: HostedParticipant, now: datetime) -> HostedKeys:
        signing_cert = load_certificate(participant.signing_certificate)
        # Issuer, name and usage must be right to start; time and revocation are checked per
        # message, so one participant's expired or revoked certificate stops only its traffic (312).
        self.trust.check(signing_cert, name=str(participant.id), usage="digital_signature", now=now, validity=False)
        signer = SigningIdentity.from_key(str(participant.id), load_private_key(participant.signing_key), signing_cert)
        decryptor = EncryptionIdentity(str(participant.id), ECKey.import_key(load_private_key(participant.encryption_key)))
        previous = tuple(EncryptionIdentity(str(participant.id), ECKey.import_key(load_private_key(key)))
                         for key, _ in participant.previous_encryption)  # fmt: skip
        return HostedKeys(participant.id, signer, decryptor, previous, load_certificate(participant.encryption_certificate))

    def audit_record(
        self, envelope: Envelope, action: Action, role: Role, actor: Actor, *, outcome=AuditOutcome.OK,
        received=None, sent=None, policy=None, receipt_code=None, refs=(), recipients=None,
    ) -> AuditRecord:  # fmt: skip
        meta = EnvelopeMeta(
            sender=str(envelope.sender),
            recipients=tuple(recipients or (str(r) for r in envelope.recipients)),
            message_type=str(envelope.message_type),
            message_class=str(envelope.message_class),
            message_date=envelope.message_date.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        return AuditRecord(
            time=self.clock.now(), node=self.id, role=role, action=action, actor=actor, outcome=outcome,
            message_id=envelope.message_id, envelope=meta, received_digest=received, sent_digest=sent,
            policy=policy, receipt_code=receipt_code, person_refs=tuple(refs),
        )  # fmt: skip

    def audit_append(self, records: list[AuditRecord]) -> None:
        """Append durably or raise AuditUnavailable (403): the caller must not go on."""
        self.audit.append(records, now=self.clock.now())

    async def audit_durably(self, records: list[AuditRecord]) -> None:
        """:meth:`audit_append` for the message path: appends of concurrent messages share one transaction.

        With ``[store] commit = "each"`` every append is its own transaction, in line.
        """
        if getattr(self.store, "commit", "group") == "each":
            self.audit_append(records)
        else:
            await self.audit_writer.append(records)

    def event(self, kind: str, *, status: int | None = None, detail: str | None = None) -> Event:
        return Event(time=self.clock.timestamp(), node=self.id, kind=kind, status=status, detail=detail)

    # ------------------------------------------------------------------ administration

    def reload_policies(self, actor: Actor) -> ReloadResult:
        """Load the policy files again; a bad set keeps the running one. Audited before it takes effect.

        The candidate set is built beside the live one and swapped in only once its audit
        record (who, old and new revision, what changed) is durable; a refused set is audited
        too, with the reason.
        """
        if self.policies is None or self.config.policies is None:
            raise Refused("this node runs without a policy directory", status=StatusCode.NOT_ALLOWED_TO_SEND)
        candidate = PolicyStore(self.policies.engine.policy_set, clock=self.clock.now, schemas=self.config.schemas)
        result = candidate.reload([self.config.policies], actor.id)
        record = AuditRecord(time=self.clock.now(), node=self.id, role=Role.NONE, action=Action.POLICY_RELOAD, actor=actor,
                             outcome=AuditOutcome.OK if result.accepted else AuditOutcome.REFUSED, details=result.audit_details())  # fmt: skip
        self.audit_append([record])  # AuditUnavailable: the running set stays, the caller gets 403
        if result.accepted:
            self.policies = candidate
            log.info("policies reloaded by %s: revision %s → %s", actor.id, result.old_revision, result.new_revision)
        else:
            log.warning("policy reload by %s refused, revision %s stays active", actor.id, result.old_revision)
        return result

    def reload_routes(self, actor: Actor) -> RoutesReload:
        """Read the node file again and swap in its routes, route groups and peers (audited first).

        Everything else in the file needs a restart; the result names what differs. A file
        that does not load keeps the running routes, and the refusal is audited with the error.
        """
        from .config import load_config

        old = self._configuration_digests()
        try:
            fresh = load_config(self.config.source)
        except ConfigError as error:
            result = RoutesReload(False, old["routes"], None, (), str(error))
        else:
            kept = dataclasses.replace(fresh, routes=self.config.routes, peers=self.config.peers)
            restart = tuple(sorted(f.name for f in dataclasses.fields(NodeConfig)
                                   if f.name not in ("routes", "peers") and getattr(kept, f.name) != getattr(self.config, f.name)))  # fmt: skip
            candidate = dataclasses.replace(self.config, routes=fresh.routes, peers=fresh.peers)
            result = RoutesReload(True, old["routes"], _digest_routes(candidate), restart, None)
        details = {"change": "routes_reload", "accepted": str(result.accepted).lower(), "old_routes": result.old_routes,
                   "new_routes": result.new_routes or "-", "restart_needed": ", ".join(result.restart_needed) or "-"}  # fmt: skip
        if result.error:
            details["error"] = result.error[:500]
        self.audit_append([AuditRecord(time=self.clock.now(), node=self.id, role=Role.NONE, action=Action.CONFIG_CHANGE, actor=actor,
                                       outcome=AuditOutcome.OK if result.accepted else AuditOutcome.REFUSED, details=details)])  # fmt: skip
        if result.accepted:
            self.config = candidate
            delivery = self.config.delivery
            for peer in self.config.peers:
                self.breakers.setdefault(peer.id, CircuitBreaker(delivery.breaker_failures, delivery.breaker_seconds,
                                                                 max(delivery.breaker_seconds, delivery.retry_max_seconds)))  # fmt: skip
            log.info("routes reloaded by %s (%d routes, %d peers)", actor.id, len(self.config.routes), len(self.config.peers))
            self._wake.set()
        return result

    def record_configuration(self) -> None:
        """Audit what this node starts with: digests of participants, routes, peers, keys, tokens, policies.

        Recorded at every start, so an auditor sees each configuration a node ran under and
        when it changed (compare the digests of consecutive starts); never secrets in clear.
        """
        details = {"change": "node_start", **self._configuration_digests()}
        self.audit_append([AuditRecord(time=self.clock.now(), node=self.id, role=Role.NONE, action=Action.CONFIG_CHANGE,
                                       actor=Actor(ActorKind.NODE, self.id), details=details)])  # fmt: skip

    def _configuration_digests(self) -> dict[str, str]:
        def digest(*parts: object) -> str:
            return hashlib.sha256(repr(parts).encode()).hexdigest()

        def file_digest(path: Path) -> str:
            return hashlib.sha256(path.read_bytes()).hexdigest()

        config = self.config
        return {
            "participants": digest(sorted((str(p.id), p.adapters, str(p.folder)) for p in config.participants)),
            "known_participants": digest(sorted((str(k.id), file_digest(k.encryption_certificate), k.adapters) for k in config.known_participants)),
            "routes": _digest_routes(config),
            "peers": digest(sorted((p.id, p.url) for p in config.peers)),
            "keys": digest(sorted((str(p.id), file_digest(p.signing_certificate), file_digest(p.encryption_certificate)) for p in config.participants),
                           file_digest(config.tls.certificate)),
            "local_systems": digest(sorted((s.name, s.token_sha256, sorted(map(str, s.participants))) for s in config.local_systems)),
            "operators": digest(sorted((o.name, o.role.value, o.token_sha256) for o in config.operators)),
            "oauth": digest(sorted(repr(c) for c in config.oauth_clients), repr(config.oauth2), repr(config.oidc)),
            "policy_revision": (self.policies.revision or "") if self.policies else "",
        }  # fmt: skip

    def apply_retention(self) -> int:
        """Prune audit records older than the configured retention (at least a year)."""
        return self.audit.apply_retention(self.config.audit_retention_days, now=self.clock.now(), actor=Actor(ActorKind.NODE, self.id))

    # ------------------------------------------------------------------ origin stages

    def parse_envelope(self, envelope_xml: bytes) -> Envelope:
        if len(envelope_xml) > self.config.limits.max_envelope_bytes:
            raise InvalidEnvelope("envelope larger than the configured limit")
        return parse_envelope(envelope_xml, self.catalog, self.config.limits.xml)

    def check_participants(self, envelope: Envelope, system: LocalSystem | None) -> list[tuple[ParticipantId, str, PayloadAcceptance]]:
        """The sender must be hosted here (and the system's); every recipient needs a route and a key."""
        if envelope.sender not in self.hosted:
            raise Refused(f"sender {envelope.sender} is not hosted on node {self.id}", status=StatusCode.UNKNOWN_SENDER)
        if system is not None and envelope.sender not in system.participants:
            raise Refused(
                f"local system {system.name} may not send for {envelope.sender}", status=StatusCode.NOT_ALLOWED_TO_SEND
            )
        now = self.clock.now()
        # SECURITY: a sender whose signing certificate expired or was revoked stops sending (312).
        self.trust.check(self.hosted[envelope.sender].signer.certificate, name=str(envelope.sender), usage="digital_signature", now=now)
        plan = []
        for recipient in envelope.recipients:
            # SECURITY: test traffic never reaches production participants and vice versa,
            # whatever the routes say.
            if recipient.is_test != envelope.sender.is_test:
                raise Refused(
                    f"test and production participants cannot exchange messages ({envelope.sender} → {recipient})",
                    status=StatusCode.NOT_ALLOWED_TO_SEND,
                )
            route = self.route_for(recipient)
            key = self.recipient_key(recipient) if route is not None else None
            if route is None or key is None:
                raise Refused(f"no route to recipient {recipient}", status=StatusCode.UNKNOWN_RECIPIENT)
            if route.is_local and recipient not in self.hosted:
                raise Refused(f"recipient {recipient} is not hosted here", status=StatusCode.UNKNOWN_RECIPIENT)
            key.check(self.trust, now)  # an expired or revoked recipient certificate: 312
            plan.append((recipient, route.via, route.payload))
        return plan

    def check_message_date(self, envelope: Envelope) -> None:
        age = self.clock.now() - envelope.message_date
        if age > timedelta(days=self.config.delivery.expiry_days):
            raise Refused(
                f"messageDate is more than {self.config.delivery.expiry_days} days old",
                status=StatusCode.MESSAGE_TOO_OLD,
            )
        # SECURITY: expiry counts from messageDate; a date far ahead would keep the message
        # queued (and retried) for ever, so only clock skew is tolerated (threat model F9).
        tolerance = self.config.delivery.message_date_tolerance_seconds
        if -age.total_seconds() > tolerance:
            raise Refused(f"messageDate is more than {tolerance:g} seconds in the future", status=StatusCode.INVALID_ENVELOPE)

    async def submit(
        self, envelope_xml: bytes, payload: AsyncIterator[bytes], *, payload_name: str, system: LocalSystem | None
    ) -> Accepted:
        """The origin hop. Returns only when the message is durably stored (then: 202)."""
        with self.metrics.timed(Stage.SUBMIT) as hop:
            accepted = await self._submit(envelope_xml, payload, payload_name=payload_name, system=system)
            if accepted.duplicate:
                hop.outcome = StageOutcome.DUPLICATE
            return accepted

    async def _submit(self, envelope_xml: bytes, payload: AsyncIterator[bytes], *, payload_name: str, system: LocalSystem | None) -> Accepted:
        try:
            with self.metrics.timed(Stage.PARSE_ENVELOPE):
                envelope = self.parse_envelope(envelope_xml)
        except GatewayError as error:
            # Nothing can be recorded against an unreadable envelope but the receipt.
            raise Refused(error.info, status=error.status) from None
        with bound(message_id=envelope.message_id, sender=str(envelope.sender)):
            await self.prepare_recipient_revocation(envelope)  # OCSP for directory keys first met here
            try:
                with self.metrics.timed(Stage.CHECK_PARTICIPANTS):
                    plan = self.check_participants(envelope, system)
                with self.metrics.timed(Stage.CHECK_MESSAGE_DATE):
                    self.check_message_date(envelope)
                content = new_hash()
                content.update(len(envelope_xml).to_bytes(8, "big") + envelope_xml)
                actor = Actor(ActorKind.LOCAL_SYSTEM, system.name if system else f"sedex-folder:{envelope.sender}")
                with self.metrics.timed(Stage.SEAL):
                    head, rest = await self.read_head(payload)
                    if rest is None:
                        content.update(head)
                        parts, decisions, refs = await self.inspect_decide_and_seal(envelope, envelope_xml, head, payload_name, plan)
                    else:
                        parts, decisions, refs = await self.decide_and_seal_streamed(envelope, envelope_xml, head, rest, payload_name, plan, content)
                with self.metrics.timed(Stage.PERSIST):
                    return await self.persist(envelope, envelope_xml, parts, decisions, content.hexdigest(), actor, refs)
            except GatewayError as error:
                self._record_refusal(envelope, error)
                raise

    async def read_head(self, payload: AsyncIterator[bytes]) -> tuple[bytes, AsyncIterator[bytes] | None]:
        """Read up to the in-memory limit; ``rest`` is None when that was the whole payload.

        Payloads that fit are inspected (header, format, policy facts, person refs) and may be
        redacted or converted; larger ones stream through to the seal untouched.
        """
        limit = self.config.limits.in_memory_payload_bytes
        head = bytearray()
        iterator = payload.__aiter__()
        async for chunk in iterator:
            head += chunk
            if len(head) > limit:

                async def rest() -> AsyncIterator[bytes]:
                    yield bytes(head)
                    async for more in iterator:
                        yield more

                return bytes(head), rest()
        return bytes(head), None

    def parse_payload(self, payload: bytes) -> etree._ElementTree | None:
        """The payload as a safely parsed XML tree, or None when it is not XML (a zip, a PDF).

        SECURITY: a payload that starts as markup but that safexml refuses (a DOCTYPE, an
        encoding trick, broken markup) raises :class:`UnreadablePayload` (200): passed on as
        "not XML" it would skip the header check, the policy's payload facts and the person
        refs, and its recipient would still read it as XML (threat model F2).
        """
        try:
            return parse_xml(payload, self.config.limits.xml)
        except GatewayError as error:
            if claims_xml(payload):
                raise UnreadablePayload(f"payload looks like XML but cannot be read safely: {error.info}") from None
            return None

    def check_header(self, envelope: Envelope, tree: etree._ElementTree) -> None:
        """eCH-0058: the payload's own header must not contradict the envelope (receipt 200)."""
        if find_header(tree) is None:
            return  # not every payload is an eCH delivery with a header
        try:
            header = extract_header(tree)
        except UnsupportedHeaderVersion:
            return  # eCH-0058 v1 (eCH-0020 v1 documents): the versions this check covers are 2–5
        check_header_against_envelope(header, envelope)

    def inspect_format(self, envelope: Envelope, tree: etree._ElementTree, plan) -> Inspection | None:
        """Recognise and validate the payload with the sender's configured adapters.

        Validation is as strict as the strictest route: only when every recipient's route
        accepts well-formed payloads (eCH-0020 v1 has no public XSD) is the schema skipped.
        """
        adapters = self.participant_adapters.get(envelope.sender)
        if adapters is None:
            return None
        lenient = _strictest(mode for _, _, mode in plan) is not PayloadAcceptance.SCHEMA_VALID
        return inspect(tree, adapters, self.catalog, well_formed_only=lenient)

    def decide(self, envelope: Envelope, plan, size: int, facts: PayloadFacts | None) -> dict[str, object]:
        """Policy (egress): decide per recipient; any denial refuses the whole message."""
        if self.policies is None:
            return {}
        requests = [
            PolicyRequest(envelope.sender, recipient, envelope.message_type, envelope.message_class, size, facts)
            for recipient, _, _ in plan
        ]
        now = self.clock.now()
        decisions = [self.policies.engine.decide(request, now, "origin") for request in requests]
        for decision in decisions:
            self.metrics.policy_decision("origin", decision)
        denied = [(str(recipient), d) for (recipient, _, _), d in zip(plan, decisions) if not d.allowed]
        if denied:
            names = ", ".join(r for r, _ in denied)
            per_recipient = {
                str(recipient): (d.status or StatusCode.NOT_ALLOWED_TO_SEND, d.reason) if not d.allowed
                else (StatusCode.RECIPIENT_NOT_ALLOWED, f"another recipient of this message is not allowed: {names}")
                for (recipient, _, _), d in zip(plan, decisions)
            }  # fmt: skip
            first = denied[0][1]
            raise Refused(first.reason, status=first.status or StatusCode.NOT_ALLOWED_TO_SEND, per_recipient=per_recipient)
        return {str(recipient): decision for (recipient, _, _), decision in zip(plan, decisions)}

    async def inspect_decide_and_seal(self, envelope, envelope_xml, payload: bytes, payload_name, plan):
        """An in-memory payload: header, format, policy (in the inspection thread), then one ciphertext per distinct variant.

        Recipients that get the same bytes (same redactions, same target format) share one
        ciphertext; the variant is built redaction first (paths name the sender's format), then
        converted to the recipient's format.
        """
        inspected = await asyncio.get_running_loop().run_in_executor(self._inspector, self.inspect_payload, envelope, payload, plan)
        if inspected is None:
            # More elements than a tree may hold: checked and sealed as it streams, like a larger payload.
            return await self.decide_and_seal_streamed(envelope, envelope_xml, payload, _chunks(payload), payload_name, plan,
                                                       new_hash(), size=len(payload))  # fmt: skip
        parts = []
        for variant in inspected.variants:
            check = CheckedPayload(inspected.acceptance, inspected.namespace) if inspected.is_xml else None
            part = await self.seal_payload(envelope, envelope_xml, _once(variant.data), payload_name, variant.members, check=check)
            parts.append(dataclasses.replace(part, converted=variant.conversion) if variant.conversion else part)
        return parts, inspected.decisions, inspected.refs

    def inspect_payload(self, envelope: Envelope, payload: bytes, plan) -> InspectedPayload | None:
        """Header, format, policy, person refs and the per-recipient variants of an in-memory payload.

        Runs in the inspection thread: the tree is built, used and dropped there. None when the
        payload holds more than ``in_memory_max_elements`` elements (it is then streamed).
        """
        if claims_xml(payload) and not within_element_budget(payload, self.config.limits.in_memory_max_elements):
            return None
        try:
            tree, unreadable = self.parse_payload(payload), None
        except UnreadablePayload as error:
            tree, unreadable = None, error
        facts = payload_facts(tree) if tree is not None else None
        # Policy first: a test delivery to a production register is 311 whatever else is wrong.
        decisions = self.decide(envelope, plan, len(payload), facts)
        if unreadable is not None:
            raise unreadable
        refs, inspection = (), None
        if tree is not None:
            self.check_header(envelope, tree)
            inspection = self.inspect_format(envelope, tree, plan)
            refs = person_refs(tree, self.person_secret) if self.person_secret else ()
        variants: dict[tuple, list] = {}
        for item in plan:
            decision = decisions.get(str(item[0]))
            redactions = tuple(decision.redactions) if decision is not None else ()
            target = self.recipient_adapters.get(item[0]) if inspection is not None else None
            variants.setdefault((redactions, target), []).append(item)
        # The payload was parsed once above; validate that tree rather than parse it again to seal.
        acceptance = _strictest(mode for _, _, mode in plan)
        checked = None
        if tree is not None:
            checked = check_tree(tree, acceptance, self.catalog)
        built = []
        for (redactions, target), members in variants.items():
            data = payload
            if redactions:
                data = redact(data, redactions, self.catalog).payload
            conversion = None
            if target is not None:
                converted = adapt_for(inspection, parse_xml(data, self.config.limits.xml), target)
                if converted is not None:
                    data = converted
                    target_name = target.detect(parse_xml(data, self.config.limits.xml))[0].name
                    conversion = f"{inspection.adapter.name} → {target_name}"
            built.append(PayloadVariant(data, members, conversion))
        return InspectedPayload(decisions, refs, acceptance, tree is not None, checked, tuple(built))

    async def decide_and_seal_streamed(self, envelope, envelope_xml, head, rest, payload_name, plan, content, *, size: int | None = None):
        """A payload too large to hold: envelope-level policy only, sealed as it streams.

        ``size`` is the payload's size when it is known (in memory, but too many elements for a tree).
        """
        decisions = self.decide(envelope, plan, self.config.limits.max_payload_bytes if size is None else size, None)
        if any(d.redactions for d in decisions.values()):
            raise Refused("payload too large to apply the redactions its policy requires", status=StatusCode.MESSAGE_TOO_LARGE)
        return [await self.seal_payload(envelope, envelope_xml, _hashed(rest, content), payload_name, plan)], decisions, ()

    async def seal_payload(self, envelope, envelope_xml, payload, payload_name, plan, *, check=None) -> SealedPart:
        """Check the payload as it streams (route's acceptance) and seal it for ``plan``'s recipients.

        ``check`` is a :class:`CheckedPayload` when the payload was already checked in memory.
        """
        acceptance = _strictest(mode for _, _, mode in plan)
        check = check or PayloadCheck(acceptance, self.catalog, self.config.limits.xml)
        sealing = Sealing(
            sender=envelope.sender,
            message_id=envelope.message_id,
            envelope_xml=envelope_xml,
            payload_name=payload_name,
            recipients=[self.recipient_key(r) for r, _, _ in plan],
            node=self.id,
            segment_size=self.config.limits.segment_size,
        )
        # SECURITY: parsing a streamed XML payload is CPU work that a sender controls (2 MiB of
        # <e/> take a second); it runs in the inspection thread, in slices of 64 KiB, so the event
        # loop gets its turn between slices and keeps serving everyone else (F4).
        parses = isinstance(check, PayloadCheck) and check.acceptance is not PayloadAcceptance.ANY
        loop = asyncio.get_running_loop()
        blob = self.store.new_blob()
        try:
            async for chunk in payload:
                if check.size + len(chunk) > self.config.limits.max_payload_bytes:
                    raise Refused("payload exceeds the node's size limit", status=StatusCode.MESSAGE_TOO_LARGE)
                if parses:
                    for start in range(0, len(chunk), _CHECK_SLICE):
                        await loop.run_in_executor(self._inspector, check.feed, chunk[start : start + _CHECK_SLICE])
                else:
                    check.feed(chunk)
                blob.write(sealing.feed(chunk))
            if check.size == 0:
                raise Refused("no payload found", status=StatusCode.NO_PAYLOAD)
            if parses:
                await loop.run_in_executor(self._inspector, check.finish)
            else:
                check.finish()
            blob.write(sealing.finish())
            seal = sealing.seal(self.hosted[envelope.sender].signer, self.clock.now())
            path = await self.store.close_blob(blob)
        except BaseException:
            blob.discard()
            raise
        return SealedPart(path, blob.sha256, seal, tuple(plan), check.size, check.namespace, acceptance)

    async def persist(self, envelope: Envelope, envelope_xml: bytes, parts: list[SealedPart], decisions: dict,
                      content_sha256: str, actor: Actor, refs: tuple[str, ...]) -> Accepted:  # fmt: skip
        """Audit, then persist, then 202: one transaction for every recipient's row; blobs are durable first.

        Every wait for the disk here is shared with the messages in flight beside this one
        (group commit, gateway/groupcommit.py); the 202 still waits for all of them.
        """
        await self.store.blobs_durable()
        now = self.clock.now()
        records = []
        for part in parts:
            for recipient, _, _ in part.plan:
                decision = decisions.get(str(recipient))
                policy = None
                if decision is not None:
                    policy = PolicyRecord(rule_ids=tuple(decision.rule_ids), purpose="; ".join(decision.purpose) or None,
                                          legal_basis="; ".join(decision.legal_basis) or None,
                                          redactions=tuple(decision.redactions), revision=decision.revision)  # fmt: skip
                records.append(self.audit_record(envelope, Action.ACCEPTED, Role.ORIGIN, actor, refs=refs, recipients=[str(recipient)]))
                if policy is not None:
                    records.append(self.audit_record(envelope, Action.POLICY_DECISION, Role.ORIGIN, actor, policy=policy, recipients=[str(recipient)]))
                records.append(self.audit_record(envelope, Action.SEALED, Role.ORIGIN, actor, sent=part.ciphertext_sha256, recipients=[str(recipient)]))
        try:
            await self.audit_durably(records)
        except AuditUnavailable:
            for part in parts:
                part.blob.unlink(missing_ok=True)
            raise
        expires = envelope.message_date + timedelta(days=self.config.delivery.expiry_days)
        rows = []
        for part in parts:
            for recipient, via, _ in part.plan:
                rows.append({
                    "sender": str(envelope.sender), "message_id": envelope.message_id, "recipient": str(recipient),
                    "message_type": envelope.message_type, "message_class": envelope.message_class,
                    "message_date": envelope.message_date.timestamp(), "envelope": envelope_xml, "seal": part.seal,
                    "blob": str(part.blob), "ciphertext_sha256": part.ciphertext_sha256, "via": via,
                    "next_attempt": now.timestamp(), "expires": expires.timestamp(),
                    "hops": json.dumps([] if via == "local" else [self.hop_entry(envelope, str(recipient), decisions.get(str(recipient)))]),
                })  # fmt: skip
        first = parts[0]
        detail = f"{first.size} bytes" + (f", {first.namespace}" if first.namespace else "")
        events = [(None, self.event("accepted", detail=detail)), (None, self.event("validated", detail=first.acceptance.value))]
        for recipient, decision in decisions.items():
            summary = f"allowed by {', '.join(decision.rule_ids)}; purpose: {'; '.join(decision.purpose)}"
            if decision.redactions:
                summary += f"; removed: {', '.join(decision.redactions)}"
            events.append((recipient, self.event("policy", detail=summary[:500])))
        for part in parts:
            if part.converted:
                for recipient, _, _ in part.plan:
                    events.append((str(recipient), self.event("converted", detail=f"{part.converted} for {recipient}")))
        events.append((None, self.event("sealed", detail=f"{len(parts)} ciphertext(s)")))
        outcome = self.store.submit(
            sender=str(envelope.sender), message_id=envelope.message_id, content_sha256=content_sha256,
            rows=rows, events=events, now=now.timestamp(),
        )  # fmt: skip
        if outcome is not Outcome.NEW:
            for part in parts:
                part.blob.unlink(missing_ok=True)
        if outcome is Outcome.CONFLICT:
            raise Refused(
                f"messageId {envelope.message_id} was already used by {envelope.sender}",
                status=StatusCode.DUPLICATE_MESSAGE_ID,
            )
        # DURABILITY: no 202 (and no outbox file removed) before the rows are on disk; a
        # resubmission (SAME) may be answered before the first one's commit was synced.
        await self.store.durable()
        self._wake.set()
        return Accepted(envelope, duplicate=outcome is Outcome.SAME)

    def _record_refusal(self, envelope: Envelope, error: GatewayError) -> None:
        if error.status is StatusCode.DUPLICATE_MESSAGE_ID:
            return  # the first message's timeline and receipts stay as they are
        try:
            self.audit_append([self.audit_record(envelope, Action.REFUSED, Role.ORIGIN, Actor(ActorKind.NODE, self.id),
                                                 outcome=AuditOutcome.REFUSED, receipt_code=int(error.status))])  # fmt: skip
        except AuditUnavailable:
            log.error("refusal of a message could not be audited (audit log unavailable)")
        now = self.clock.now()
        per_recipient = getattr(error, "per_recipient", {})
        receipts = []
        for r in envelope.recipients:
            status, info = per_recipient.get(str(r), (error.status, error.info))
            self.metrics.receipt(int(status))
            receipts.append(StoredReceipt(str(envelope.sender), envelope.message_id, str(r), int(status),
                                          Receipt.for_envelope(envelope, r, status, info, now).to_xml(), None, now.timestamp()))  # fmt: skip
        self.store.refuse(
            sender=str(envelope.sender),
            message_id=envelope.message_id,
            receipts=receipts,
            event=self.event("refused", status=int(error.status), detail=error.info),
        )

    # ------------------------------------------------------------- destination stages

    def verify_transfer(self, header: TransferHeader, peer: str | None) -> tuple[VerifiedSeal, Envelope, HostedKeys]:
        """Authenticate the peer, verify the origin seal, then read the (verified) envelope."""
        if peer is not None and self.config.peer(peer) is None:
            raise Refused(f"peer node {peer} is not configured here", status=StatusCode.UNKNOWN_PHYSICAL_SENDER)
        try:
            sender = ParticipantId.parse(header.sender)
            recipient = ParticipantId.parse(header.recipient)
        except ValueError:
            raise Refused("transfer names an invalid participant", status=StatusCode.INVALID_ENVELOPE) from None
        verified = verify_seal(header.seal, header.envelope, sender=sender, trust=self.trust, now=self.clock.now())
        envelope = self.parse_envelope(verified.envelope_xml)
        if envelope.sender != sender or envelope.message_id != verified.message_id or envelope.message_id != header.message_id:
            raise SealError("envelope, seal and transfer disagree on sender or messageId")
        if recipient not in envelope.recipients:
            raise SealError(f"recipient {recipient} is not in the sealed envelope")
        self.check_hops(header, peer)
        keys = self.hosted.get(recipient)
        if keys is not None:
            # SECURITY: a recipient whose encryption certificate expired or was revoked stops receiving (312).
            self.trust.check(keys.encryption_certificate, name=str(recipient), usage="key_agreement", now=self.clock.now())
        if keys is None:
            route = self.route_for(recipient)
            if route is None or route.is_local or peer is None:
                raise Refused(f"recipient {recipient} is not hosted on node {self.id} and has no onward route", status=StatusCode.UNKNOWN_RECIPIENT)
        if self.policies is not None:
            # Policy (ingress): a relay applies its transit rules, the destination re-checks the
            # envelope-level rules for its recipient; neither can read the payload.
            request = PolicyRequest(envelope.sender, recipient, envelope.message_type, envelope.message_class,
                                    verified.plaintext_length, None)  # fmt: skip
            decision = self.policies.engine.decide(request, self.clock.now(), "destination" if keys else "relay")
            self.metrics.policy_decision("destination" if keys else "relay", decision)
            if not decision.allowed:
                raise Refused(decision.reason, status=decision.status or StatusCode.NOT_ALLOWED_TO_RECEIVE)
        return verified, envelope, keys

    def check_hops(self, header: TransferHeader, peer: str | None = None) -> list[str]:
        """The signed hop entries of a transfer: each by a federation node, about this message, no loop, not too many.

        SECURITY: a peer may only hand over what it forwards itself: the last entry must be
        the connecting peer's own (its mTLS identity), signed at most ``expiry_days`` ago and
        not in the future (clock skew of five minutes tolerated). A transfer from a peer
        without its entry is refused with 302.
        """
        nodes = []
        now = self.clock.timestamp()
        for token in header.hops:
            node, claims = verify_node_signed(token, typ=HOP_TYPE, trust=self.trust, now=self.clock.now())
            if (claims.get("messageId"), claims.get("sender"), claims.get("recipient")) != (header.message_id, header.sender, header.recipient):
                raise SealError("a hop entry is about another message or recipient")
            when = claims.get("time")
            if not isinstance(when, (int, float)) or when > now + 300 or when < now - (self.config.delivery.expiry_days + 1) * 86400:
                raise SealError(f"the hop entry of {node} is outside the accepted time window")
            nodes.append(node)
        if peer is not None and (not nodes or nodes[-1] != peer):
            raise Refused(f"peer {peer} did not forward this transfer itself (its hop entry is missing)",
                          status=StatusCode.UNKNOWN_PHYSICAL_SENDER)  # fmt: skip
        if self.id in nodes or len(set(nodes)) != len(nodes):
            raise Refused(f"routing loop: the message already passed {', '.join(nodes)}", status=StatusCode.UNKNOWN_RECIPIENT)
        if len(nodes) >= self.config.delivery.max_hops:
            raise Refused(f"the message already passed {len(nodes)} nodes (limit {self.config.delivery.max_hops})", status=StatusCode.UNKNOWN_RECIPIENT)
        return nodes

    def hop_entry(self, envelope: Envelope, recipient: str, decision=None) -> str:
        """This node's signed entry in the message's route: node, time, and a digest of its decision."""
        digest = None
        if decision is not None:
            digest = hashlib.sha256(repr((decision.rule_ids, decision.revision, tuple(decision.redactions))).encode()).hexdigest()
        return self.node_signer.sign(HOP_TYPE, {"node": self.id, "time": self.clock.timestamp(), "sender": str(envelope.sender),
                                                "messageId": envelope.message_id, "recipient": recipient, "decision": digest})  # fmt: skip

    async def receive(self, header: TransferHeader, ciphertext: AsyncIterator[bytes], peer: str | None) -> StoredReceipt | RelayAck:
        """The destination hop: returns the signed receipt (100, or the refusal's code).

        For a recipient hosted further on, this node is a relay: see :meth:`relay`.
        """
        with bound(message_id=header.message_id, sender=header.sender, recipient=header.recipient, peer=peer), \
                self.metrics.timed(Stage.RECEIVE) as hop:
            result = await self._receive(header, ciphertext, peer)
            # DURABILITY: no receipt 100 or hand-over acknowledgement before the inbox or
            # queue row is on disk (shared fsync, gateway/groupcommit.py).
            await self.store.durable()
            if isinstance(result, StoredReceipt) and result.status != int(StatusCode.DELIVERED):
                hop.refused(result.status)
            return result

    async def _receive(self, header: TransferHeader, ciphertext: AsyncIterator[bytes], peer: str | None) -> StoredReceipt | RelayAck:
        await self.prepare_revocation(header.seal, *header.hops)  # OCSP on first sight, before the synchronous checks
        try:
            verified, envelope, keys = self.verify_transfer(header, peer)
        except GatewayError as error:
            return await self._refusal_receipt(peer, header, error)
        if keys is None:
            return await self.relay(header, verified, envelope, ciphertext, peer)
        recipient = keys.participant
        known = self.store.find_inbox(str(envelope.sender), envelope.message_id, str(recipient))
        if known is not None and known.ciphertext_sha256 == verified.ciphertext_sha256:
            # An identical transfer sent again (e.g. the answer got lost): same receipt, no second delivery.
            async for _ in ciphertext:
                pass
            return StoredReceipt(known.sender, known.message_id, known.recipient, 100, known.receipt, known.receipt_signature, known.received)
        blob = self.store.new_blob()
        try:
            decryptor = keys.opener(verified)
            async for chunk in ciphertext:
                if blob.length + len(chunk) > verified.ciphertext_length:
                    raise SealError("more ciphertext than sealed")
                blob.write(chunk)
                decryptor.feed(chunk)  # authenticates every segment; the plaintext is discarded here
            verified.check_ciphertext(blob.sha256, blob.length)
            decryptor.finish()
            path = await self.store.close_blob(blob)
            await self.store.blobs_durable()
        except (GatewayError, StreamError) as error:
            blob.discard()
            if isinstance(error, StreamError):
                error = SealError(f"payload ciphertext does not authenticate: {error}")
            return await self._refusal_receipt(peer, header, error, envelope)
        except BaseException:
            blob.discard()
            raise
        now = self.clock.now()
        receipt = Receipt.for_envelope(envelope, recipient, StatusCode.DELIVERED, None, now)
        events = [self.event("received", detail=f"from {peer or 'local'}"), self.event("verified"), self.event("delivered", detail=f"inbox of {recipient}")]
        receipt_xml = receipt.to_xml()
        signature = self._sign_receipt(receipt_xml, verified.ciphertext_sha256, events)
        peer_actor = Actor(ActorKind.PEER_NODE, peer) if peer else Actor(ActorKind.NODE, self.id)
        try:
            await self.audit_durably([
                self.audit_record(envelope, Action.RECEIVED, Role.DESTINATION, peer_actor, received=verified.ciphertext_sha256, recipients=[str(recipient)]),
                self.audit_record(envelope, Action.DELIVERED, Role.DESTINATION, peer_actor, receipt_code=100, recipients=[str(recipient)]),
            ])  # fmt: skip
        except AuditUnavailable as error:
            path.unlink(missing_ok=True)
            return await self._refusal_receipt(peer, header, error, envelope)
        outcome = self.store.deliver(
            {
                "sender": str(envelope.sender),
                "message_id": envelope.message_id,
                "recipient": str(recipient),
                "message_type": envelope.message_type,
                "envelope": verified.envelope_xml,
                "seal": verified.token,
                "blob": str(path),
                "ciphertext_sha256": verified.ciphertext_sha256,
                "received": now.timestamp(),
                "receipt": receipt_xml,
                "receipt_signature": signature,
            },
            events,
        )
        if outcome is not Outcome.NEW:
            path.unlink(missing_ok=True)
        if outcome is Outcome.CONFLICT:
            return await self._refusal_receipt(
                peer, header, Refused("messageId already delivered with other content", status=StatusCode.DUPLICATE_MESSAGE_ID), envelope
            )
        if outcome is Outcome.SAME:
            known = self.store.find_inbox(str(envelope.sender), envelope.message_id, str(recipient))
            assert known is not None
            return StoredReceipt(known.sender, known.message_id, known.recipient, 100, known.receipt, known.receipt_signature, known.received)
        _fault("kill-after-deliver")
        return StoredReceipt(str(envelope.sender), envelope.message_id, str(recipient), 100, receipt_xml, signature, now.timestamp())

    def _sign_receipt(self, receipt_xml: bytes, ciphertext_sha256: str | None, events: Iterable[Event]) -> str:
        return self.node_signer.sign(
            RECEIPT_TYPE,
            {
                "node": self.id,
                "receipt": receipt_xml.decode("utf-8"),
                "ciphertextSha256": ciphertext_sha256,
                "events": [e.as_dict() for e in events],
            },
        )

    async def _refusal_receipt(self, peer: str | None, header: TransferHeader, error: GatewayError,
                               envelope: Envelope | None = None) -> StoredReceipt:  # fmt: skip
        """The signed receipt refusing a transfer, audited here first (destination or relay).

        SECURITY: issue 7 asks for an audit record of every refused input; a refusal that
        cannot be audited becomes 403 (temporary), so the origin sends again and no permanent
        outcome exists without its record here (threat model F12).
        """
        if not isinstance(error, AuditUnavailable):
            try:
                await self.audit_durably([self._refusal_record(peer, header, error, envelope)])
            except AuditUnavailable as unavailable:
                error = unavailable
        return self._signed_refusal(header, error, envelope)

    def _refusal_record(self, peer: str | None, header: TransferHeader, error: GatewayError, envelope: Envelope | None) -> AuditRecord:
        """What this hop refused and with which code: envelope fields once verified, else only the transfer's claims.

        Never the reason text (it may quote what the peer sent) and never payload content.
        """
        actor = Actor(ActorKind.PEER_NODE, peer) if peer else Actor(ActorKind.NODE, self.id)
        try:
            recipient = ParticipantId.parse(header.recipient)
        except ValueError:
            recipient = None
        route = self.config.route_for(recipient) if recipient is not None and recipient not in self.hosted else None
        role = Role.RELAY if route is not None and not route.is_local else Role.DESTINATION
        if envelope is not None and recipient is not None:
            return self.audit_record(envelope, Action.REFUSED, role, actor, outcome=AuditOutcome.REFUSED,
                                     receipt_code=int(error.status), recipients=[str(recipient)])  # fmt: skip
        claims = {"verified": "false"}
        for key, value in (("claimed_sender", header.sender), ("claimed_recipient", header.recipient)):
            with contextlib.suppress(ValueError, TypeError):
                claims[key] = str(ParticipantId.parse(value))
        try:
            message_id = check_message_id(header.message_id)
        except (ValueError, TypeError):
            message_id = None
        return AuditRecord(time=self.clock.now(), node=self.id, role=role, action=Action.REFUSED, actor=actor,
                           outcome=AuditOutcome.REFUSED, message_id=message_id, receipt_code=int(error.status), details=claims)  # fmt: skip

    def _signed_refusal(self, header: TransferHeader, error: GatewayError, envelope: Envelope | None = None) -> StoredReceipt:
        now = self.clock.now()
        log.warning("transfer refused: status %s: %s", int(error.status), error.info)
        if envelope is not None:
            receipt_xml = Receipt.for_envelope(envelope, ParticipantId.parse(header.recipient), error.status, error.info, now).to_xml()
        else:
            receipt_xml = _bare_receipt(header, error, now)
        events = [self.event("refused", status=int(error.status), detail=error.info)]
        return StoredReceipt(header.sender, header.message_id, header.recipient, int(error.status), receipt_xml, self._sign_receipt(receipt_xml, None, events), now.timestamp())

    # ---------------------------------------------------------------------- relay

    async def relay(self, header: TransferHeader, verified: VerifiedSeal, envelope: Envelope,
                    ciphertext: AsyncIterator[bytes], peer: str) -> StoredReceipt | RelayAck:  # fmt: skip
        """Take over a message for a recipient further on: store the ciphertext durably, audit, queue it.

        The relay holds no key of the recipient: it checks that the ciphertext is exactly the
        one the origin sealed (digest and length), never what is inside. It answers with a
        signed hand-over acknowledgement; the final receipt travels back later (RECEIPTS_PATH).
        """
        recipient = ParticipantId.parse(header.recipient)
        route = self.route_for(recipient)
        assert route is not None and not route.is_local
        known = self.store.find_outgoing(str(envelope.sender), envelope.message_id, str(recipient))
        if known is not None and known.ciphertext_sha256 == verified.ciphertext_sha256:
            async for _ in ciphertext:
                pass
            return self._relay_ack(known, route.via)
        blob = self.store.new_blob()
        try:
            async for chunk in ciphertext:
                if blob.length + len(chunk) > verified.ciphertext_length:
                    raise SealError("more ciphertext than sealed")
                blob.write(chunk)
            verified.check_ciphertext(blob.sha256, blob.length)
            path = await self.store.close_blob(blob)
            await self.store.blobs_durable()
        except GatewayError as error:
            blob.discard()
            return await self._refusal_receipt(peer, header, error, envelope)
        except BaseException:
            blob.discard()
            raise
        decision = None
        if self.policies is not None:
            request = PolicyRequest(envelope.sender, recipient, envelope.message_type, envelope.message_class, verified.plaintext_length, None)
            decision = self.policies.engine.decide(request, self.clock.now(), "relay")
        peer_actor = Actor(ActorKind.PEER_NODE, peer)
        records = [self.audit_record(envelope, Action.RECEIVED, Role.RELAY, peer_actor, received=verified.ciphertext_sha256, recipients=[str(recipient)])]
        if decision is not None:
            records.append(self.audit_record(envelope, Action.POLICY_DECISION, Role.RELAY, peer_actor, recipients=[str(recipient)],
                                             policy=PolicyRecord(rule_ids=tuple(decision.rule_ids), revision=decision.revision)))  # fmt: skip
        try:
            await self.audit_durably(records)
        except AuditUnavailable as error:
            path.unlink(missing_ok=True)
            return await self._refusal_receipt(peer, header, error, envelope)
        now = self.clock.now()
        row = {
            "sender": str(envelope.sender), "message_id": envelope.message_id, "recipient": str(recipient),
            "message_type": envelope.message_type, "message_class": envelope.message_class,
            "message_date": envelope.message_date.timestamp(), "envelope": verified.envelope_xml, "seal": verified.token,
            "blob": str(path), "ciphertext_sha256": verified.ciphertext_sha256, "via": route.via,
            "next_attempt": now.timestamp(), "expires": (envelope.message_date + timedelta(days=self.config.delivery.expiry_days)).timestamp(),
            "upstream": peer, "hops": json.dumps([*header.hops, self.hop_entry(envelope, str(recipient), decision)]),
        }  # fmt: skip
        outcome = self.store.relay(row, [self.event("relaying", detail=f"from {peer} to {route.via}")])
        if outcome is not Outcome.NEW:
            path.unlink(missing_ok=True)
        if outcome is Outcome.CONFLICT:
            return await self._refusal_receipt(peer, header, Refused("messageId already relayed with other content", status=StatusCode.DUPLICATE_MESSAGE_ID), envelope)
        self._wake.set()
        stored = self.store.find_outgoing(str(envelope.sender), envelope.message_id, str(recipient))
        assert stored is not None
        return self._relay_ack(stored, route.via)

    def _relay_ack(self, item: Outgoing, via: str) -> RelayAck:
        events = [self.event("received", detail=f"from {item.upstream}, relaying to {via}")]
        token = self.node_signer.sign(RELAY_TYPE, {
            "node": self.id, "kind": "accepted", "sender": item.sender, "messageId": item.message_id, "recipient": item.recipient,
            "ciphertextSha256": item.ciphertext_sha256, "events": [e.as_dict() for e in events],
        })  # fmt: skip
        return RelayAck(token)

    def _return_token(self, item: Outgoing, final_token: str, events: Iterable[Event]) -> str | None:
        """What a relay sends back to its upstream node once a relayed message is settled."""
        if item.upstream is None:
            return None
        # This relay's own steps for the row (relaying, forwarding, retries), then what came back.
        own = [e for e in self.store.timeline(item.sender, item.message_id)
               if e.node == self.id and e.recipient == item.recipient and e.kind != "relaying"]  # fmt: skip
        events = [*own, *events]
        return self.node_signer.sign(RELAY_TYPE, {
            "node": self.id, "kind": "receipt", "sender": item.sender, "messageId": item.message_id, "recipient": item.recipient,
            "ciphertextSha256": item.ciphertext_sha256, "receipt": final_token, "events": [e.as_dict() for e in events],
        })  # fmt: skip

    async def accept_returned_receipt(self, token: str, peer: str) -> bool:
        """A relay we handed a message to returns its final receipt: settle our row (idempotent)."""
        claims = verify_signed(token, typ=RELAY_TYPE, signer=peer, trust=self.trust, now=self.clock.now())
        if claims.get("kind") != "receipt" or not isinstance(claims.get("receipt"), str):
            raise SealError("not a returned receipt")
        item = self.store.find_outgoing(str(claims.get("sender")), str(claims.get("messageId")), str(claims.get("recipient")))
        if item is None or item.via != peer or item.ciphertext_sha256 != claims.get("ciphertextSha256"):
            raise Refused("returned receipt for a message not handed to this peer", status=StatusCode.UNKNOWN_RECIPIENT)
        if item.state not in (OutgoingState.QUEUED, OutgoingState.HANDED):
            return False  # already settled: the relay sent it again
        final = claims["receipt"]
        _, inner = verify_node_signed(final, typ=RECEIPT_TYPE, trust=self.trust, now=self.clock.now())
        relayed_events = _events(claims.get("events", []))
        if await self._conclude(item, final, inner, relayed_events, Actor(ActorKind.PEER_NODE, peer), receipt_events=False):
            return True
        current = self.store.find_outgoing(item.sender, item.message_id, item.recipient)
        if current is not None and current.state in (OutgoingState.QUEUED, OutgoingState.HANDED):
            # Not taken (e.g. the audit log could not record it): the relay must send it again.
            raise TemporaryReturnFailure("the returned receipt could not be recorded now", status=StatusCode.LOGGING_NOT_REACHABLE)
        return False

    async def return_receipts(self) -> int:
        """Send the final receipts this relay owes upstream nodes; retry later on failure."""
        done = 0
        for item in self.store.due_returns(self.clock.timestamp()):
            peer = self.config.peer(item.upstream)
            try:
                if peer is None:
                    raise TemporaryFailure(f"upstream {item.upstream} is not a configured peer")
                session = await self._client()
                async with session.post(peer.url + RECEIPTS_PATH, json={"token": item.token}) as response:
                    if response.status != 200:
                        raise TemporaryFailure(f"upstream answered HTTP {response.status}")
                self.store.return_done(item)
                done += 1
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, TemporaryFailure) as error:
                delay = backoff_delay(item.attempts, base=self.config.delivery.retry_base_seconds,
                                      cap=self.config.delivery.retry_max_seconds, rng=self.rng)  # fmt: skip
                log.info("receipt return to %s failed (%s); next attempt in %.1fs", item.upstream, _describe(error), delay)
                self.metrics.retry(item.upstream, RetryReason.RETURN_FAILED)
                self.store.return_later(item, self.clock.timestamp() + delay)
        return done

    # ---------------------------------------------------------------------- inbox

    def open_inbox_entry(self, entry) -> tuple[VerifiedSeal, AsyncIterator[bytes]]:
        """Re-verify a stored message and stream its decrypted payload (for the recipient's system)."""
        keys = self.hosted[ParticipantId.parse(entry.recipient)]
        received = datetime.fromtimestamp(entry.received, timezone.utc)
        verified = verify_seal(entry.seal, entry.envelope, sender=ParticipantId.parse(entry.sender), trust=self.trust, now=received)
        decryptor = keys.opener(verified)

        async def plaintext() -> AsyncIterator[bytes]:
            digest = new_hash()
            length = 0
            with open(entry.blob, "rb") as handle:
                while chunk := handle.read(256 * 1024):
                    digest.update(chunk)
                    length += len(chunk)
                    out = decryptor.feed(chunk)
                    if out:
                        yield out
                    await asyncio.sleep(0)
            # SECURITY: the last segment is only released once the whole stream authenticated.
            verified.check_ciphertext(digest.hexdigest(), length)
            yield decryptor.finish()

        return verified, plaintext()

    def record_fetch(self, entry, actor: Actor) -> None:
        """Audit that a local system takes a delivered message (before the first byte leaves)."""
        envelope = parse_envelope(entry.envelope, None)
        self.audit_append([self.audit_record(envelope, Action.FETCHED, Role.DESTINATION, actor,
                                             sent=entry.ciphertext_sha256, recipients=[entry.recipient])])  # fmt: skip

    # ------------------------------------------------------------------ forwarder

    def stop_forwarding(self) -> None:
        """Finish the current round, then stop (graceful shutdown)."""
        self._stopping = True
        self._wake.set()

    async def run_forwarder(self) -> None:
        """Forward queued messages until cancelled or :meth:`stop_forwarding`."""
        while not self._stopping:
            try:
                await self.forward_due()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the forwarder must survive and retry
                log.exception("forwarder round failed")
            next_due = min((t for t in (self.store.next_due_time(), self.store.next_return_time()) if t is not None), default=None)
            wait = self.config.delivery.poll_seconds * 10
            if next_due is not None:
                wait = max(0.0, min(wait, next_due - self.clock.timestamp()))
            if self._stopping:
                break
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait, self.config.delivery.poll_seconds / 10))

    async def forward_due(self) -> int:
        """One round: expire what is too old, send what is due. Returns messages settled."""
        # DURABILITY: what the last round settled is on disk before anything new goes out.
        await self.flush_released_blobs()
        self.expire_due()
        returned = await self.return_receipts()
        now = self.clock.timestamp()
        probes: set[str] = set()
        due = [item for item in self.store.due(now, limit=200) if self._breaker_allows(item.via, now, probes)]
        if not due:
            await self.flush_released_blobs()  # what expire_due released
            return returned
        semaphore = asyncio.Semaphore(self.config.delivery.parallel_transfers)

        async def one(item: Outgoing) -> bool:
            async with semaphore:
                with bound(message_id=item.message_id, sender=item.sender, recipient=item.recipient, peer=item.via), \
                        self.metrics.timed(Stage.FORWARD) as attempt:
                    settled = await self.forward(item)
                    if not settled:
                        attempt.outcome = StageOutcome.RETRIED
                    return settled

        results = await asyncio.gather(*(one(item) for item in due))
        await self.flush_released_blobs()
        return sum(results)

    def expire_due(self) -> None:
        """701 seven days before a message expires, 204 when it does.

        A message handed to a relay expires there, and the relay returns the 204; the origin
        only settles it itself one day later, should that receipt never come.
        """
        now = self.clock.now()
        for item in self.store.expiring(now.timestamp(), 7 * 86400):
            remaining = item.expires - now.timestamp()
            if item.state is OutgoingState.HANDED and remaining <= 0:
                if remaining <= -HANDED_GRACE_SECONDS:
                    self._settle_locally(item, OutgoingState.EXPIRED, StatusCode.MESSAGE_EXPIRED, now,
                                         f"expired; no final receipt came back from relay {item.via}")  # fmt: skip
                elif not item.warned:
                    self.store.mark_warned(item, self.event("expires-soon", status=int(StatusCode.EXPIRES_SOON)))
            elif remaining <= 0:
                self._settle_locally(item, OutgoingState.EXPIRED, StatusCode.MESSAGE_EXPIRED, now)
            elif not item.warned:
                self.store.mark_warned(item, self.event("expires-soon", status=int(StatusCode.EXPIRES_SOON)))

    def _settle_locally(self, item: Outgoing, state: OutgoingState, status: StatusCode, now: datetime, info: str | None = None) -> None:
        envelope = parse_envelope(item.envelope, None)
        role = Role.RELAY if item.upstream else Role.ORIGIN
        self.audit_append([self.audit_record(envelope, Action.EXPIRED, role, Actor(ActorKind.NODE, self.id),
                                             outcome=AuditOutcome.REFUSED, receipt_code=int(status), recipients=[item.recipient])])  # fmt: skip
        receipt_xml = Receipt.for_envelope(envelope, ParticipantId.parse(item.recipient), status, info, now).to_xml()
        events = [self.event(state.value, status=int(status), detail=info)]
        signature = self._sign_receipt(receipt_xml, item.ciphertext_sha256, events)
        self.store.settle(item, state, receipt_status=int(status), receipt=receipt_xml, receipt_signature=signature,
                          events=events, now=now.timestamp(), return_token=self._return_token(item, signature, events))  # fmt: skip
        self.metrics.receipt(int(status))
        self._release_blob(item)

    def _breaker_allows(self, via: str, now: float, probes: set[str]) -> bool:
        """Closed: send. Open: hold. Half-open: one probe per round, the rest held until it answers."""
        breaker = self.breakers.get(via)
        if breaker is None or breaker.state == "closed":
            return True
        if breaker.allows(now) and via not in probes:
            probes.add(via)
            return True
        # Held, so the forwarder sleeps instead of spinning: while open, until it half-opens;
        # behind a half-open probe, for a while (a successful probe releases them at once).
        self.store.postpone(via, breaker.open_until if not breaker.allows(now) else now + breaker.base)
        return False

    def _peer_succeeded(self, via: str) -> None:
        """A transfer to ``via`` was answered (a receipt or a relay's hand-over): close its breaker."""
        breaker = self.breakers.get(via)
        if breaker is not None and breaker.failures:
            reopened = breaker.state == "open"
            breaker.succeeded()
            if reopened:
                log.info("circuit breaker for peer %s closed; %d held message(s) released", via,
                         self.store.release(via, self.clock.timestamp()))  # fmt: skip
                self._wake.set()

    def _peer_failed(self, via: str) -> None:
        breaker = self.breakers.get(via)
        now = self.clock.timestamp()
        if breaker is not None and breaker.failed(now):
            held = self.store.postpone(via, breaker.open_until)
            log.warning("circuit breaker for peer %s open for %.0fs after %d failures; %d message(s) held",
                        via, breaker.period, breaker.failures, held)  # fmt: skip

    async def forward(self, item: Outgoing) -> bool:
        """Send one queued message to its next hop; settle it on a receipt, else back off."""
        header = TransferHeader(item.sender, item.recipient, item.message_id, item.envelope, item.seal, item.hops)
        try:
            if item.via == "local":
                receipt = await self.receive(header, _read_file(item.blob), peer=None)
                signer = self.id
            else:
                receipt, signer = await self._post_transfer(item, header)
            await self.prepare_revocation(receipt.token if isinstance(receipt, RelayAck) else receipt.signature or "")
            if isinstance(receipt, RelayAck):
                self._peer_succeeded(item.via)
                return await self._handed_over(item, receipt, signer)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, TemporaryFailure) as error:
            delay = backoff_delay(item.attempts, base=self.config.delivery.retry_base_seconds,
                                  cap=self.config.delivery.retry_max_seconds, rng=self.rng)  # fmt: skip
            self.store.reschedule(
                item, self.clock.timestamp() + delay,
                self.event("retry", status=int(StatusCode.NETWORK_ERROR), detail=f"{item.via}: {_describe(error)}; next attempt in {delay:.1f}s"),
            )  # fmt: skip
            self.metrics.retry(item.via, RetryReason.NETWORK)
            self._peer_failed(item.via)
            return False
        # The breaker learns from the receipt itself: _conclude closes it for a receipt about
        # this message, _receipt_rejected counts a forged or mismatched one as a failure.
        return await self._settle_with_receipt(item, receipt, signer)

    async def _post_transfer(self, item: Outgoing, header: TransferHeader) -> tuple[StoredReceipt, str]:
        peer = self.config.peer(item.via)
        if peer is None:
            raise TemporaryFailure(f"peer {item.via} is not configured")
        session = await self._client()

        async def body() -> AsyncIterator[bytes]:
            yield header.encode()
            async for chunk in _read_file(item.blob):
                yield chunk

        self.store.add_events(item.sender, item.message_id, [(item.recipient, self.event("forwarding", detail=f"to {peer.id}"))])
        async with session.post(peer.url + TRANSFER_PATH, data=body(), headers={"Content-Type": "application/octet-stream"}) as response:
            if response.status >= 500 or response.status in (408, 429):
                raise TemporaryFailure(f"peer answered HTTP {response.status}")
            try:
                data = await response.json(content_type=None)
            except (ValueError, RecursionError):
                # SECURITY: the peer's answer is untrusted input; an HTML error page or JSON
                # nested too deep is a failed attempt like a dropped connection (threat model F19).
                raise TemporaryFailure(f"peer answered HTTP {response.status} with a body that is not a JSON object") from None
        if isinstance(data, dict) and isinstance(data.get("relayed"), str):
            return RelayAck(data["relayed"]), peer.id
        token = data.get("receipt") if isinstance(data, dict) else None
        if not isinstance(token, str):
            raise TemporaryFailure(f"peer answered HTTP {response.status} without a receipt")
        return StoredReceipt(item.sender, item.message_id, item.recipient, 0, b"", token, self.clock.timestamp()), peer.id

    async def _handed_over(self, item: Outgoing, ack: RelayAck, relay: str) -> bool:
        """The peer is a relay and took the message over durably: stop sending, await the final receipt."""
        try:
            claims = verify_signed(ack.token, typ=RELAY_TYPE, signer=relay, trust=self.trust, now=self.clock.now())
            if (claims.get("kind"), claims.get("sender"), claims.get("messageId"), claims.get("recipient"), claims.get("ciphertextSha256")) != (
                "accepted", item.sender, item.message_id, item.recipient, item.ciphertext_sha256
            ):
                raise SealError("the hand-over acknowledgement is about another message")
        except GatewayError as error:
            log.warning("hand-over acknowledgement from %s rejected: %s", relay, error.info)
            self.store.reschedule(item, self.clock.timestamp() + self.config.delivery.retry_base_seconds,
                                  self.event("retry", detail=f"acknowledgement from {relay} rejected"))  # fmt: skip
            return False
        envelope = parse_envelope(item.envelope, None)
        role = Role.RELAY if item.upstream else Role.ORIGIN
        try:
            await self.audit_durably([self.audit_record(envelope, Action.FORWARDED, role, Actor(ActorKind.PEER_NODE, relay),
                                                        sent=item.ciphertext_sha256, recipients=[item.recipient])])  # fmt: skip
        except AuditUnavailable:
            self.store.reschedule(item, self.clock.timestamp() + self.config.delivery.retry_base_seconds,
                                  self.event("retry", status=int(StatusCode.LOGGING_NOT_REACHABLE), detail="audit log unavailable"))  # fmt: skip
            return False
        events = [*_events(claims.get("events", [])), self.event("handed", status=int(StatusCode.HANDED_OVER), detail=f"to {relay}")]
        handed = self.store.hand_over(item, events)
        self._release_blob(item)
        return handed

    async def _settle_with_receipt(self, item: Outgoing, stored: StoredReceipt, signer: str) -> bool:
        """The next hop answered with its signed receipt (it was the destination, or refused)."""
        try:
            claims = verify_signed(stored.signature or "", typ=RECEIPT_TYPE, signer=signer, trust=self.trust, now=self.clock.now())
        except GatewayError as error:
            return self._receipt_rejected(item, signer, error.info)
        actor = Actor(ActorKind.PEER_NODE, signer) if signer != self.id else Actor(ActorKind.NODE, self.id)
        # A local delivery already wrote its events into this store's timeline.
        return await self._conclude(item, stored.signature or "", claims, [], actor, receipt_events=signer != self.id)

    def _receipt_rejected(self, item: Outgoing, peer: str, why: str) -> bool:
        """An answer that cannot settle ``item``: unverifiable, unreadable, or about another message or content.

        SECURITY: the row backs off as after a network failure and the peer's circuit breaker
        counts it, so a lying or broken peer cannot make this node re-send the ciphertext to
        it in a tight loop (threat model F11). The message stays queued with its ciphertext.
        """
        log.warning("receipt from %s rejected: %s", peer, why)
        delay = backoff_delay(item.attempts, base=self.config.delivery.retry_base_seconds,
                              cap=self.config.delivery.retry_max_seconds, rng=self.rng)  # fmt: skip
        self.metrics.retry(item.via, RetryReason.RECEIPT_REJECTED)
        self.store.reschedule(item, self.clock.timestamp() + delay,
                              self.event("retry", detail=f"receipt from {peer} rejected; next attempt in {delay:.1f}s"))  # fmt: skip
        self._peer_failed(item.via)
        return False

    async def _conclude(self, item: Outgoing, final: str, claims: dict, relayed: list[Event], actor: Actor, *,
                        receipt_events: bool = True) -> bool:  # fmt: skip
        """Settle ``item`` with its final receipt (``final``, signed by the node that issued it).

        ``relayed`` are the events of the relays on the way back (they already include the
        final receipt's own events; then ``receipt_events`` is False). A relayed row passes
        the receipt on to its upstream node in the same transaction.
        """
        try:
            receipt_xml = str(claims["receipt"]).encode("utf-8")
            receipt = parse_receipt(receipt_xml, self.catalog)
        except (GatewayError, KeyError) as error:
            return self._receipt_rejected(item, actor.id, error.info if isinstance(error, GatewayError) else "no receipt in the claims")
        if receipt.message_id != item.message_id or str(receipt.recipient) != item.recipient or str(receipt.sender) != item.sender:
            return self._receipt_rejected(item, actor.id, "the receipt answers another message")
        if receipt.status is StatusCode.DELIVERED and claims.get("ciphertextSha256") != item.ciphertext_sha256:
            return self._receipt_rejected(item, actor.id, "the receipt is bound to other content")
        self._peer_succeeded(item.via)  # a verified receipt about this message: the peer answers
        remote_events = _events(claims.get("events", [])) if receipt_events else []
        if receipt.status.is_temporary_failure:
            self.metrics.retry(item.via, RetryReason.TEMPORARY_CODE)
            self.store.reschedule(item, self.clock.timestamp() + self.config.delivery.retry_base_seconds,
                                  self.event("retry", status=int(receipt.status), detail=receipt.status_info))  # fmt: skip
            return False
        state = {StatusCode.DELIVERED: OutgoingState.DELIVERED, StatusCode.MESSAGE_EXPIRED: OutgoingState.EXPIRED}.get(receipt.status, OutgoingState.FAILED)
        events = [*relayed, *remote_events, self.event("receipt", status=int(receipt.status), detail=receipt.status_info)]
        envelope = parse_envelope(item.envelope, None)
        role = Role.RELAY if item.upstream else Role.ORIGIN
        records = []
        if item.state is OutgoingState.QUEUED:
            records.append(self.audit_record(envelope, Action.FORWARDED, role, actor, sent=item.ciphertext_sha256, recipients=[item.recipient]))
        records.append(self.audit_record(envelope, Action.DELIVERED if state is OutgoingState.DELIVERED else Action.REFUSED,
                                         role, actor, receipt_code=int(receipt.status), recipients=[item.recipient],
                                         outcome=AuditOutcome.OK if state is OutgoingState.DELIVERED else AuditOutcome.REFUSED))  # fmt: skip
        try:
            await self.audit_durably(records)
        except AuditUnavailable:
            # Fail closed: the receipt is not taken; the retry gets the same receipt again.
            self.metrics.retry(item.via, RetryReason.AUDIT_UNAVAILABLE)
            self.store.reschedule(item, self.clock.timestamp() + self.config.delivery.retry_base_seconds,
                                  self.event("retry", status=int(StatusCode.LOGGING_NOT_REACHABLE), detail="audit log unavailable"))  # fmt: skip
            return False
        settled = self.store.settle(item, state, receipt_status=int(receipt.status), receipt=receipt_xml,
                                    receipt_signature=final, events=events, now=self.clock.timestamp(),
                                    return_token=self._return_token(item, final, events))  # fmt: skip
        self._release_blob(item)
        if settled:
            self.metrics.receipt(int(receipt.status))
        if settled and item.upstream:
            self._wake.set()
        return settled

    def _release_blob(self, item: Outgoing) -> None:
        """Delete the ciphertext once no recipient of the message still waits for it.

        DURABILITY: only after the settle that releases it is on disk (the next forwarder
        round or :meth:`flush_released_blobs`): a crash before that finds the row queued
        again, and its ciphertext must still be there to send.
        """
        if not any(o.state is OutgoingState.QUEUED for o in self.store.outgoing_for(item.sender, item.message_id)):
            self._released_blobs.append(item.blob)

    async def flush_released_blobs(self) -> None:
        """Make every settle so far durable, then delete the ciphertexts they released."""
        released, self._released_blobs = self._released_blobs, []
        try:
            await self.store.durable()
        except BaseException:
            self._released_blobs[:0] = released
            raise
        for blob in released:
            blob.unlink(missing_ok=True)

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Connections to peers are pooled and kept alive: a new mTLS handshake per
            # message costs ~20x the throughput (docs/benchmarks.md).
            connector = aiohttp.TCPConnector(ssl=client_context(self.config), limit_per_host=16)
            self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60))
        return self._session

    async def close(self) -> None:
        await self.ocsp.close()
        if self._session is not None:
            await self._session.close()
        with contextlib.suppress(OSError):
            await self.flush_released_blobs()
        self.audit_writer.close()
        self._inspector.shutdown(wait=False, cancel_futures=True)
        self.store.close()
        self.audit.close()


class TemporaryFailure(Exception):
    """A transfer that should be retried later."""


class TemporaryReturnFailure(GatewayError):
    """A returned receipt this node could not take now; the relay keeps it and retries."""


@dataclass(frozen=True)
class RoutesReload:
    """What a routes reload did: digests of the old and new routes, what still needs a restart."""

    accepted: bool
    old_routes: str
    new_routes: str | None
    restart_needed: tuple[str, ...]
    error: str | None

    def to_json(self) -> dict:
        return {"accepted": self.accepted, "oldRoutes": self.old_routes, "newRoutes": self.new_routes,
                "restartNeeded": list(self.restart_needed), "error": self.error}  # fmt: skip


def _digest_routes(config: NodeConfig) -> str:
    """One digest over routes (with resolved groups) and peers: what a routes reload swaps."""
    routes = [(r.recipient, r.via, r.payload.value, r.members) for r in config.routes]
    return hashlib.sha256(repr((routes, sorted((p.id, p.url) for p in config.peers))).encode()).hexdigest()


@dataclass
class CircuitBreaker:
    """One peer's breaker: after ``threshold`` consecutive failures, nothing is sent to it for a while.

    Closed: send. Open (``open_until`` in the future): hold the peer's queue, no attempts.
    Then half-open: the next transfer is a probe; success closes, failure opens again for
    twice as long (capped). Queued messages keep their place; nothing is lost or refused.
    """

    threshold: int
    base: float
    cap: float
    failures: int = 0
    open_until: float = 0.0
    period: float = 0.0

    def allows(self, now: float) -> bool:
        return now >= self.open_until

    @property
    def state(self) -> str:
        return "closed" if self.failures < self.threshold else "open"

    def succeeded(self) -> None:
        self.failures, self.open_until, self.period = 0, 0.0, 0.0

    def failed(self, now: float) -> bool:
        """Count a failure; True when it (re)opens the breaker."""
        self.failures += 1
        if self.failures < self.threshold:
            return False
        self.period = min(self.cap, self.period * 2 if self.period else self.base)
        self.open_until = now + self.period
        return True


@dataclass(frozen=True)
class RelayAck:
    """A relay's signed acknowledgement that it took a message over (RELAY_TYPE, kind "accepted")."""

    token: str


def _events(items: Iterable) -> list[Event]:
    """Timeline events from signed claims of another node (unknown keys ignored)."""
    events = []
    for item in items:
        if isinstance(item, dict) and {"time", "node", "kind"} <= item.keys():
            events.append(Event(**{k: item[k] for k in ("time", "node", "kind", "status", "detail") if k in item}))
    return events


async def _hashed(chunks: AsyncIterator[bytes], digest) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        digest.update(chunk)
        yield chunk


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _chunks(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    """``data`` in the chunks a streamed payload arrives in, yielding the loop between them."""
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


def _strictest(modes: Iterable[PayloadAcceptance]) -> PayloadAcceptance:
    order = [PayloadAcceptance.SCHEMA_VALID, PayloadAcceptance.WELL_FORMED, PayloadAcceptance.ANY]
    return min(modes, key=order.index, default=PayloadAcceptance.SCHEMA_VALID)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error)[:120]}" if str(error) else type(error).__name__


async def _read_file(path: Path, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(size):
            yield chunk
            await asyncio.sleep(0)


def _bare_receipt(header: TransferHeader, error: GatewayError, now: datetime) -> bytes:
    """A receipt for a transfer whose envelope could not be trusted: only transfer-level fields."""
    try:
        sender = ParticipantId.parse(header.sender)
        recipient = ParticipantId.parse(header.recipient)
    except ValueError:
        sender = recipient = ParticipantId("0-sedex-0")
    try:
        message_id = check_message_id(header.message_id)
    except ValueError:
        message_id = "0"
    return Receipt(error.status, error.info[:255], message_id, 0, 0, sender, recipient, now).to_xml()
