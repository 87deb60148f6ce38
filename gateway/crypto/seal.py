"""Seal and open messages; sign and verify receipts.

Wire format (see docs/wire-format.md):

* The **seal** is a JWS (compact, ES256) made with the sending participant's signing
  key over a JSON manifest that binds the exact envelope bytes (SHA-256), the payload
  ciphertext (SHA-256 and length) and, per recipient, a JWE (ECDH-ES+A256KW / A256GCM)
  that carries the payload's content key to that recipient's encryption certificate.
* The **payload** is encrypted once with that content key as a segmented AES-256-GCM
  stream, so memory stays bounded for any size.

Verification raises; callers only ever see a :class:`VerifiedSeal`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from joserfc import jwe, jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from ..ids import GatewayError, ParticipantId, StatusCode
from . import primitives

if TYPE_CHECKING:  # ocsp.py imports this module
    from .ocsp import OcspChecker

SEAL_TYPE = "drehscheibe-seal+json;v=1"
KEY_TYPE = "drehscheibe-key+json;v=1"
RECEIPT_TYPE = "drehscheibe-receipt+json;v=1"
HOP_TYPE = "drehscheibe-hop+json;v=1"  # one node's entry in a message's route (docs/wire-format.md)
RELAY_TYPE = "drehscheibe-relay+json;v=1"  # a relay's hand-over acknowledgement or returned receipt
SIGNING_ALGORITHMS = ["ES256"]
KEY_ALGORITHMS = ["ECDH-ES+A256KW", "A256GCM"]
# SECURITY: the only JOSE header parameters we accept. Anything that points at keys
# elsewhere (jwk, jku, x5u) or changes processing (crit, b64, zip) is refused.
_ALLOWED_JWS_HEADER = {"alg", "typ", "x5c"}
DEFAULT_SEGMENT_SIZE = 64 * 1024
# SECURITY: the segment size a seal may declare (docs/wire-format.md §5). A decoder buffers
# one segment, so the upper bound is what a destination holds in memory per transfer (F5);
# the lower bound keeps the per-segment work of a maximal payload reasonable.
MIN_SEGMENT_SIZE = 1024
MAX_SEGMENT_SIZE = 1024 * 1024
# What parsing a certificate a peer sent can raise besides ValueError (found by the atheris jws
# target: InvalidVersion, DuplicateExtension; threat model F18).
_CERTIFICATE_ERRORS = (ValueError, TypeError, x509.InvalidVersion, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)
# SECURITY: the base64url protected header is refused above this length before it is
# decoded or parsed (joserfc's own limit on the decoded header comes only later).
_MAX_HEADER_B64 = 6 * 1024


def _jws_registry() -> jws.JWSRegistry:
    # joserfc caps the protected header at 512 bytes; ours carries one certificate (x5c).
    registry = jws.JWSRegistry(algorithms=SIGNING_ALGORITHMS)
    registry.max_header_length = 4096
    registry.max_payload_length = 256 * 1024
    return registry


_JWS = _jws_registry()


class SealError(GatewayError):
    """A seal, signature or ciphertext failed verification."""

    status = StatusCode.INVALID_ENVELOPE


class CertificateError(GatewayError):
    """A certificate is not valid for its purpose (chain, time, name or key usage)."""

    status = StatusCode.CERTIFICATE_NOT_VALID


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(data: bytes | str) -> object:
    """``json.loads`` for what a peer or sender controls: every failure is a ValueError.

    SECURITY: JSON nested deeper than the interpreter's recursion limit makes ``json.loads``
    raise RecursionError, which no caller expects (an HTTP 500, an aborted forwarder round:
    threat model F6). Sizes are bounded before this is called.
    """
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _protected_header(token: object) -> dict:
    """The decoded protected header of a compact JWS, refused (SealError) before any parse it could abuse."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise SealError("signature is not a compact JWS")
    header_b64 = token.split(".", 1)[0]
    if len(header_b64) > _MAX_HEADER_B64:
        raise SealError("signature header is too long")
    try:
        header = _json(_unb64(header_b64))
    except ValueError:
        raise SealError("signature is not a compact JWS") from None
    if not isinstance(header, dict):
        raise SealError("signature header is not acceptable")
    return header


def _keys(value: object) -> dict:
    if not isinstance(value, dict):
        raise SealError("seal keys is not an object")
    return dict(value)


def _strict_int(value: object, name: str) -> int:
    # SECURITY: lengths come from the sender: JSON integers only (no bools, floats or strings).
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SealError(f"seal field {name} is not a non-negative integer")
    return value


def canonical_json(value: dict) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


class TrustStore:
    """The federation's trust anchors; checks that a certificate is fit for a purpose."""

    def __init__(self, anchors: Iterable[x509.Certificate], crls: Iterable[x509.CertificateRevocationList] = (),
                 ocsp: OcspChecker | None = None) -> None:  # fmt: skip
        self.anchors = tuple(anchors)
        if not self.anchors:
            raise ValueError("a trust store needs at least one anchor")
        self.crls = tuple(crls)
        self.ocsp = ocsp  # cached OCSP answers, consulted after the CRLs (gateway/crypto/ocsp.py)
        # (fingerprint, name, usage) of certificates whose issuer, name and usage were checked:
        # those never change, so a message pays only for the time and revocation checks.
        self._identities: set[tuple[bytes, str, str]] = set()
        for crl in self.crls:
            if not any(crl.issuer == a.subject and crl.is_signature_valid(a.public_key()) for a in self.anchors):
                raise ValueError("a revocation list is not signed by a trust anchor")

    def check_validity(self, cert: x509.Certificate, *, name: str, now: datetime) -> None:
        """The time-dependent part of :meth:`check`: inside its validity period, not revoked."""
        if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
            raise CertificateError(f"certificate of {name} is not valid at {now.isoformat(timespec='seconds')}")
        if self.revoked(cert, now):
            raise CertificateError(f"certificate of {name} is revoked")
        if self.ocsp is not None:
            self.ocsp.consult(cert, self.anchors, name=name, now=now)

    def revoked(self, cert: x509.Certificate, now: datetime) -> bool:
        """True when a CRL of the certificate's issuer lists it.

        SECURITY: fail closed: a configured CRL of that issuer that is past its nextUpdate
        makes every certificate of the issuer unusable (CertificateError) until a fresh one
        is installed.
        """
        listed = False
        for crl in self.crls:
            if crl.issuer != cert.issuer:
                continue
            if crl.next_update_utc is not None and now > crl.next_update_utc:
                raise CertificateError("the revocation list of the federation CA is out of date")
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                listed = True
        return listed

    def check(self, cert: x509.Certificate, *, name: str, usage: str, now: datetime, validity: bool = True) -> None:
        """Raise :class:`CertificateError` unless ``cert`` chains to an anchor, is valid
        at ``now`` and not revoked, names ``name`` as its common name and allows ``usage``
        (``"digital_signature"`` or ``"key_agreement"``).

        ``validity=False`` checks only what cannot change with time (issuer, name, usage):
        at start a node loads a participant whose certificate has expired or was revoked,
        and refuses that participant's messages one by one (312) instead of not starting.
        """
        identity = (cert.fingerprint(hashes.SHA256()), name, usage)
        if identity not in self._identities:
            self._check_identity(cert, name=name, usage=usage)
            if len(self._identities) > 10_000:
                self._identities.clear()
            self._identities.add(identity)
        if validity:
            self.check_validity(cert, name=name, now=now)

    def _check_identity(self, cert: x509.Certificate, *, name: str, usage: str) -> None:
        for anchor in self.anchors:
            try:
                cert.verify_directly_issued_by(anchor)
                break
            except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
                continue
        else:
            raise CertificateError(f"certificate of {name} is not issued by the federation CA")
        if common_name(cert) != name:
            raise CertificateError(f"certificate names {common_name(cert)!r}, expected {name!r}")
        try:
            key_usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            raise CertificateError(f"certificate of {name} has no key usage") from None
        if not getattr(key_usage, usage):
            raise CertificateError(f"certificate of {name} does not allow {usage}")


@dataclass(frozen=True)
class SigningIdentity:
    """A private signing key with its certificate (a participant or a node)."""

    name: str
    key: ECKey
    certificate: x509.Certificate

    @classmethod
    def from_key(cls, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> SigningIdentity:
        return cls(name, ECKey.import_key(key), cert)

    def sign(self, typ: str, claims: dict) -> str:
        header = {"alg": "ES256", "typ": typ, "x5c": [base64.b64encode(self.certificate.public_bytes(Encoding.DER)).decode()]}
        return jws.serialize_compact(header, canonical_json(claims), self.key, registry=_JWS)




def verify_signed(token: str, *, typ: str, signer: str, trust: TrustStore, now: datetime) -> dict:
    """Verify a compact JWS made by :meth:`SigningIdentity.sign` and return its claims.

    A verifier MUST: accept only ES256; refuse unknown header parameters; check the
    embedded certificate against the trust store for ``signer`` and digital signature
    at ``now``; and only then read the payload.
    """
    header = _protected_header(token)
    if set(header) - _ALLOWED_JWS_HEADER or header.get("alg") != "ES256":
        raise SealError("signature header is not acceptable")
    if header.get("typ") != typ:
        raise SealError(f"signature is not of type {typ}")
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    except (KeyError, IndexError, *_CERTIFICATE_ERRORS):
        raise SealError("signature carries no usable certificate") from None
    trust.check(cert, name=signer, usage="digital_signature", now=now)
    try:
        verified = jws.deserialize_compact(token, ECKey.import_key(cert.public_key()), registry=_JWS)
    except (JoseError, ValueError):
        raise SealError(f"signature of {signer} does not verify") from None
    try:
        claims = _json(verified.payload)
    except ValueError:
        raise SealError("signed claims are not JSON") from None
    if not isinstance(claims, dict):
        raise SealError("signed claims are not an object")
    return claims


def verify_node_signed(token: str, *, typ: str, trust: TrustStore, now: datetime) -> tuple[str, dict]:
    """Verify a JWS signed by some federation *node* (not a participant); return ``(node, claims)``.

    For what a node receives from further along a route (a final receipt relayed back): the
    signer is not the peer it talks to. A node certificate is one that allows TLS client
    and server authentication; participant certificates do not, so a participant's key can
    never pass for a node's.
    """
    header = _protected_header(token)
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        # SECURITY: cryptography parses the subject lazily; an unparsable one raises ValueError
        # here, before the chain is checked (found by the atheris jws target).
        node = common_name(cert)
    except (IndexError, KeyError, x509.ExtensionNotFound, *_CERTIFICATE_ERRORS):
        raise SealError("signature carries no usable node certificate") from None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages or ExtendedKeyUsageOID.SERVER_AUTH not in usages:
        raise SealError("signature is not by a node certificate")
    claims = verify_signed(token, typ=typ, signer=node, trust=trust, now=now)
    if claims.get("node") != node:
        raise SealError("signed claims name another node than the signer")
    return node, claims


@dataclass(frozen=True)
class EncryptionIdentity:
    """A hosted participant's private encryption key."""

    name: str
    key: ECKey


@dataclass(frozen=True)
class RecipientKey:
    """A recipient's public encryption key, taken from a checked certificate."""

    name: str
    key: ECKey
    certificate: x509.Certificate | None = None

    @classmethod
    def from_certificate(cls, name: str, cert: x509.Certificate, trust: TrustStore, now: datetime, *, validity: bool = True) -> RecipientKey:
        trust.check(cert, name=name, usage="key_agreement", now=now, validity=validity)
        return cls(name, ECKey.import_key(cert.public_key()), cert)

    def check(self, trust: TrustStore, now: datetime) -> None:
        """Still fit now (not expired, not revoked): checked for every message sealed for it."""
        if self.certificate is not None:
            trust.check(self.certificate, name=self.name, usage="key_agreement", now=now)


def _aad(sender: str, message_id: str) -> bytes:
    # The payload is bound to its sender and messageId: a ciphertext cannot be moved
    # under another sender's seal or another message.
    return f"{SEAL_TYPE}\0{sender}\0{message_id}".encode()


class Sealing:
    """One message being sealed: stream the payload through :meth:`encrypt`, then :meth:`seal`."""

    def __init__(
        self,
        *,
        sender: ParticipantId,
        message_id: str,
        envelope_xml: bytes,
        payload_name: str,
        recipients: Iterable[RecipientKey],
        node: str,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
    ) -> None:
        self.sender = sender
        self.message_id = message_id
        self.envelope_xml = envelope_xml
        self.payload_name = payload_name
        self.recipients = tuple(recipients)
        self.node = node
        self.segment_size = segment_size
        self._key = primitives.random_bytes(primitives.KEY_BYTES)
        self._prefix = primitives.random_bytes(primitives.NONCE_PREFIX_BYTES)
        self._hash = primitives.new_hash()
        self._length = 0
        self._plain_length = 0
        self._encryptor = primitives.SegmentEncryptor(
            self._key, self._prefix, _aad(str(self.sender), self.message_id), self.segment_size
        )

    def feed(self, chunk: bytes) -> bytes:
        """Encrypt the next plaintext chunk; returns ciphertext ready to be stored."""
        self._plain_length += len(chunk)
        return self._counted(self._encryptor.feed(chunk))

    def finish(self) -> bytes:
        return self._counted(self._encryptor.finish())

    def _counted(self, ciphertext: bytes) -> bytes:
        self._hash.update(ciphertext)
        self._length += len(ciphertext)
        return ciphertext

    def encrypt(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            yield self.feed(chunk)
        yield self.finish()

    def seal(self, signer: SigningIdentity, now: datetime) -> str:
        keys = {}
        for recipient in self.recipients:
            record = canonical_json(
                {"typ": KEY_TYPE, "cek": _b64(self._key), "sender": str(self.sender), "messageId": self.message_id, "recipient": recipient.name}
            )
            keys[recipient.name] = jwe.encrypt_compact(
                {"alg": "ECDH-ES+A256KW", "enc": "A256GCM"}, record, recipient.key, algorithms=KEY_ALGORITHMS
            )
        manifest = {
            "messageId": self.message_id,
            "sender": str(self.sender),
            "node": self.node,
            "sealedAt": now.isoformat(timespec="seconds"),
            "envelopeSha256": primitives.sha256_hex(self.envelope_xml),
            "payload": {
                "name": self.payload_name,
                "ciphertextSha256": self._hash.hexdigest(),
                "ciphertextLength": self._length,
                "plaintextLength": self._plain_length,
                "segmentSize": self.segment_size,
                "noncePrefix": _b64(self._prefix),
            },
            "keys": keys,
        }
        return signer.sign(SEAL_TYPE, manifest)


@dataclass(frozen=True)
class VerifiedSeal:
    """The verified manifest of a sealed message. Built only by :func:`verify_seal`."""

    token: str
    message_id: str
    sender: ParticipantId
    origin_node: str
    envelope_xml: bytes
    payload_name: str
    ciphertext_sha256: str
    ciphertext_length: int
    plaintext_length: int
    segment_size: int
    nonce_prefix: bytes
    keys: dict

    def check_ciphertext(self, sha256_hex: str, length: int) -> None:
        """Raise unless the received ciphertext is exactly the sealed one."""
        if length != self.ciphertext_length or sha256_hex != self.ciphertext_sha256:
            raise SealError("payload ciphertext does not match the seal")

    def opener(self, recipient: EncryptionIdentity) -> primitives.SegmentDecryptor:
        """A decryptor for the payload, for one of this message's recipients."""
        token = self.keys.get(recipient.name)
        if token is None:
            raise SealError(f"message is not sealed for {recipient.name}")
        try:
            record = _json(jwe.decrypt_compact(token, recipient.key, algorithms=KEY_ALGORITHMS).plaintext)
        except (JoseError, ValueError, TypeError):
            raise SealError(f"content key for {recipient.name} cannot be opened") from None
        # SECURITY: the key record is the sender's: its shape is checked like anything else it
        # sends (a list, a missing or non-string cek were an HTTP 500, threat model F8).
        if not isinstance(record, dict):
            raise SealError(f"content key for {recipient.name} is not a key record")
        if (
            record.get("typ") != KEY_TYPE
            or record.get("sender") != str(self.sender)
            or record.get("messageId") != self.message_id
            or record.get("recipient") != recipient.name
        ):
            raise SealError("content key is bound to another message")
        try:
            key = _unb64(record["cek"])
        except (KeyError, TypeError, ValueError):
            raise SealError(f"content key for {recipient.name} is missing or not base64url") from None
        if len(key) != primitives.KEY_BYTES:
            raise SealError(f"content key for {recipient.name} is not {primitives.KEY_BYTES} bytes")
        # The decryptor also counts the authenticated plaintext against plaintextLength (F10).
        return primitives.SegmentDecryptor(
            key, self.nonce_prefix, _aad(str(self.sender), self.message_id), self.segment_size, plaintext_length=self.plaintext_length
        )


def verify_seal(token: str, envelope_xml: bytes, *, sender: ParticipantId, trust: TrustStore, now: datetime) -> VerifiedSeal:
    """Verify an origin seal against the envelope bytes that came with it.

    A verifier MUST check the signature with the sender's certificate from the trust
    store, that the manifest names that sender, and that the envelope bytes hash to the
    signed digest; the ciphertext is checked later with :meth:`VerifiedSeal.check_ciphertext`.
    """
    claims = verify_signed(token, typ=SEAL_TYPE, signer=str(sender), trust=trust, now=now)
    try:
        payload = claims["payload"]
        if claims["sender"] != str(sender):
            raise SealError("seal names another sender")
        if claims["envelopeSha256"] != primitives.sha256_hex(envelope_xml):
            raise SealError("envelope does not match the seal")
        ciphertext_length = _strict_int(payload["ciphertextLength"], "ciphertextLength")
        plaintext_length = _strict_int(payload["plaintextLength"], "plaintextLength")
        segment_size = _strict_int(payload["segmentSize"], "segmentSize")
        # SECURITY: the decoder buffers one segment of the size the sender declares: bounded
        # here, before a byte of ciphertext is read (threat model F5).
        if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise SealError(f"seal segmentSize is outside {MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE}")
        # SECURITY: plaintextLength is what relays and destinations decide size policies on and
        # what a fetch announces as Content-Length: it must be the one the stream framing allows
        # (wire format §5); the decryptor then checks it against the authenticated plaintext (F10).
        if primitives.ciphertext_length(plaintext_length, segment_size) != ciphertext_length:
            raise SealError("seal plaintextLength does not match ciphertextLength and segmentSize")
        nonce_prefix = _unb64(payload["noncePrefix"])
        if len(nonce_prefix) != primitives.NONCE_PREFIX_BYTES:
            raise SealError("seal noncePrefix is not 7 bytes")
        return VerifiedSeal(
            token=token,
            message_id=str(claims["messageId"]),
            sender=sender,
            origin_node=str(claims["node"]),
            envelope_xml=envelope_xml,
            payload_name=str(payload["name"]),
            ciphertext_sha256=str(payload["ciphertextSha256"]),
            ciphertext_length=ciphertext_length,
            plaintext_length=plaintext_length,
            segment_size=segment_size,
            nonce_prefix=nonce_prefix,
            keys=_keys(claims["keys"]),
        )
    except (KeyError, TypeError, ValueError):
        raise SealError("seal manifest is incomplete") from None
