"""Sign a directory; verify one; look participants up in what was verified.

The directory is a compact JWS (ES256, header ``alg``/``typ``/``x5c`` only) made with
:meth:`gateway.crypto.seal.SigningIdentity.sign` by the hub's node identity, over the
canonical JSON of :meth:`Directory.to_claims`. Nodes only ever read a
:class:`VerifiedDirectory`, built by :func:`verify_directory` from verified bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..crypto.seal import CertificateError, SealError, SigningIdentity, TrustStore, canonical_json, verify_signed
from ..ids import ParticipantId
from .errors import DirectoryRefused, NoCurrentCertificate, Refusal, UnknownParticipant
from .model import (
    CertificateUse,
    Directory,
    Environment,
    MalformedDocument,
    NodeEntry,
    ParticipantEntry,
    format_time,
    sha256_hex,
)

DIRECTORY_TYPE = "drehscheibe-directory+json;v=1"
# A directory issued this far in the future is refused: the hub's clock or ours is wrong,
# and trusting it would stretch its validity by the difference.
CLOCK_SKEW = timedelta(minutes=5)
# gateway.crypto.seal's JWS registry accepts at most 256 KiB of base64url payload,
# which is 196,608 bytes of claims. Publishing refuses anything larger with this
# message instead of a signature that no node could verify.
MAX_CLAIMS_BYTES = 196_608


class DirectoryTooLarge(ValueError):
    """The directory does not fit the JWS payload limit of the signature recipe."""


def sign_directory(directory: Directory, signer: SigningIdentity) -> str:
    """The compact JWS of ``directory``, signed by the issuing node."""
    if signer.name != directory.issuer:
        raise ValueError(f"the directory names issuer {directory.issuer!r}, the signing identity is {signer.name!r}")
    claims = directory.to_claims()
    size = len(canonical_json(claims))
    if size > MAX_CLAIMS_BYTES:
        raise DirectoryTooLarge(f"directory version {directory.version} is {size} bytes; the signature recipe takes at most {MAX_CLAIMS_BYTES}")
    return signer.sign(DIRECTORY_TYPE, claims)


@dataclass(frozen=True)
class ResolvedParticipant:
    """What a node needs about one participant at one moment, from a verified directory.

    ``encryption_certificates`` and ``signing_certificates`` hold only the certificates
    current at the lookup time (not retired, inside their validity), newest first: a
    sender encrypts for the first; a receiver accepts a seal made with any of them.
    """

    id: ParticipantId
    node: NodeEntry
    environment: Environment
    message_types: frozenset[int]
    encryption_certificates: tuple[x509.Certificate, ...]
    signing_certificates: tuple[x509.Certificate, ...]
    directory_version: int

    @property
    def node_id(self) -> str:
        return self.node.id

    @property
    def node_url(self) -> str:
        return self.node.url

    @property
    def is_test(self) -> bool:
        return self.environment is Environment.TEST

    @property
    def encryption_certificate(self) -> x509.Certificate:
        """The certificate to encrypt for now; raises :class:`NoCurrentCertificate` (312) if none."""
        if not self.encryption_certificates:
            raise NoCurrentCertificate(f"{self.id} has no current encryption certificate in directory version {self.directory_version}")
        return self.encryption_certificates[0]

    @property
    def signing_certificate(self) -> x509.Certificate:
        """The newest current signing certificate; raises :class:`NoCurrentCertificate` (312) if none."""
        if not self.signing_certificates:
            raise NoCurrentCertificate(f"{self.id} has no current signing certificate in directory version {self.directory_version}")
        return self.signing_certificates[0]

    def takes_part_in(self, message_type: int) -> bool:
        return message_type in self.message_types

    def check_signing_certificate(self, certificate: x509.Certificate) -> None:
        """Raise :class:`NoCurrentCertificate` (312) unless ``certificate`` is one of the
        participant's current signing certificates (pins a seal's ``x5c`` to the directory)."""
        der = certificate.public_bytes(Encoding.DER)
        if not any(c.public_bytes(Encoding.DER) == der for c in self.signing_certificates):
            raise NoCurrentCertificate(f"the seal's certificate is not a current signing certificate of {self.id}")


def _current(entry: ParticipantEntry, use: CertificateUse, now: datetime) -> tuple[x509.Certificate, ...]:
    entries = [c for c in entry.certificates if c.use is use and c.current_at(now)]
    # Newest first: during a rotation senders move to the new key as soon as it is valid.
    entries.sort(key=lambda c: (c.valid_from, c.fingerprint), reverse=True)
    return tuple(c.certificate for c in entries)


@dataclass(frozen=True)
class VerifiedDirectory:
    """A directory whose signature, signer, shape and certificates were verified.

    Built only by :func:`verify_directory`. ``token`` is the exact signed text (what
    a cache stores and a hub serves); ``digest`` is the SHA-256 of the signed claims.
    """

    token: str
    digest: str
    directory: Directory
    _participants: dict[ParticipantId, ParticipantEntry] = field(init=False, repr=False, compare=False)
    _nodes: dict[str, NodeEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_participants", {p.id: p for p in self.directory.participants})
        object.__setattr__(self, "_nodes", {n.id: n for n in self.directory.nodes})

    @property
    def version(self) -> int:
        return self.directory.version

    @property
    def issuer(self) -> str:
        return self.directory.issuer

    @property
    def issued_at(self) -> datetime:
        return self.directory.issued_at

    @property
    def expires_at(self) -> datetime:
        return self.directory.expires_at

    def entry(self, participant: ParticipantId | str) -> ParticipantEntry:
        """The participant's entry, retired or not; raises :class:`UnknownParticipant` (301)."""
        pid = participant if isinstance(participant, ParticipantId) else ParticipantId.parse(participant)
        entry = self._participants.get(pid)
        if entry is None:
            raise UnknownParticipant(f"{pid} is not in directory version {self.version}")
        return entry

    def node(self, node_id: str) -> NodeEntry:
        node = self._nodes.get(node_id)
        if node is None:
            raise KeyError(f"node {node_id!r} is not in directory version {self.version}")
        return node

    def hosted_on(self, node_id: str) -> tuple[ParticipantId, ...]:
        """The active (not retired) participants a node hosts."""
        return tuple(p.id for p in self.directory.participants if p.node == node_id and not p.retired)

    def lookup(self, participant: ParticipantId | str, now: datetime) -> ResolvedParticipant:
        """Resolve an active participant at ``now``; raises :class:`UnknownParticipant` (301)
        if it is missing or retired. Certificates not current at ``now`` are left out."""
        entry = self.entry(participant)
        if entry.retired:
            raise UnknownParticipant(f"{entry.id} is retired in directory version {self.version}")
        return ResolvedParticipant(
            id=entry.id,
            node=self._nodes[entry.node],
            environment=entry.environment,
            message_types=frozenset(entry.message_types),
            encryption_certificates=_current(entry, CertificateUse.ENCRYPTION, now),
            signing_certificates=_current(entry, CertificateUse.SIGNING, now),
            directory_version=self.version,
        )


def verify_directory(
    token: str,
    *,
    trust: TrustStore,
    issuer: str,
    now: datetime,
    grace: timedelta = timedelta(0),
    previous: VerifiedDirectory | None = None,
    min_version: int = 0,
) -> VerifiedDirectory:
    """Verify a signed directory; raise :class:`DirectoryRefused` naming the first failed check.

    A verifier MUST, in this order:

    1. verify the JWS with :func:`verify_signed`: ES256 only, header ``alg``/``typ``/``x5c``
       only, ``typ`` = ``drehscheibe-directory+json;v=1`` (else *bad-signature*), the
       ``x5c`` certificate issued by a federation trust anchor, valid at ``now``, CN =
       the configured ``issuer``, allowing digitalSignature (else *wrong-signer*);
    2. parse the claims strictly (else *malformed*) and check their ``issuer`` is the
       configured one (else *wrong-signer*);
    3. refuse a version below ``min_version`` or below ``previous.version``, and the
       version of ``previous`` with other content (*rollback*);
    4. refuse ``issuedAt`` more than :data:`CLOCK_SKEW` after ``now`` (*not-yet-valid*) and
       ``now`` at or after ``expiresAt + grace`` (*expired*);
    5. check that every certificate that is not retired chains to a trust anchor, names
       its participant and allows the key usage of its listed use (*bad-certificate*).
       Validity in time and revocation are not reasons to refuse the directory: they are
       applied per certificate at lookup and use, so a key announced ahead of use, kept
       past its end or revoked does not take the whole federation down.
    """
    try:
        claims = verify_signed(token, typ=DIRECTORY_TYPE, signer=issuer, trust=trust, now=now)
    except CertificateError as exc:
        raise DirectoryRefused(Refusal.WRONG_SIGNER, f"not signed by the configured issuer {issuer}: {exc}") from None
    except SealError as exc:
        raise DirectoryRefused(Refusal.BAD_SIGNATURE, str(exc)) from None
    try:
        directory = Directory.from_claims(claims)
    except MalformedDocument as exc:
        raise DirectoryRefused(Refusal.MALFORMED, str(exc)) from None
    if directory.issuer != issuer:
        raise DirectoryRefused(Refusal.WRONG_SIGNER, f"the document names issuer {directory.issuer!r}, expected {issuer!r}")
    digest = sha256_hex(canonical_json(claims))
    floor = max(min_version, previous.version if previous else 0)
    if directory.version < floor:
        raise DirectoryRefused(Refusal.ROLLBACK, f"version {directory.version} is older than version {floor} already accepted")
    if previous is not None and directory.version == previous.version and digest != previous.digest:
        raise DirectoryRefused(Refusal.ROLLBACK, f"version {directory.version} was already accepted with other content")
    if directory.issued_at > now + CLOCK_SKEW:
        raise DirectoryRefused(Refusal.NOT_YET_VALID, f"version {directory.version} is issued at {format_time(directory.issued_at)}, in the future")
    if now >= directory.expires_at + grace:
        ended = "" if not grace else f" (grace of {grace} ended at {format_time(directory.expires_at + grace)})"
        raise DirectoryRefused(Refusal.EXPIRED, f"version {directory.version} expired at {format_time(directory.expires_at)}{ended}")
    for participant in directory.participants:
        for cert in participant.certificates:
            if cert.retired:
                continue
            try:
                # SECURITY: chain, name and usage are checked here for every listed key;
                # time and revocation (CRL, OCSP) are left out of this check (see step 5
                # above): lookups apply the validity window, and each use checks the key
                # again at that moment (RecipientKey.check, seal verification).
                trust.check(cert.certificate, name=str(participant.id), usage=cert.use.key_usage,
                            now=cert.certificate.not_valid_before_utc, validity=False)  # fmt: skip
            except CertificateError as exc:
                raise DirectoryRefused(
                    Refusal.BAD_CERTIFICATE, f"{cert.use.value} certificate {cert.fingerprint[:16]}… of {participant.id}: {exc}"
                ) from None
    return VerifiedDirectory(token=token, digest=digest, directory=directory)
