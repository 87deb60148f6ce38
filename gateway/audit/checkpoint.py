"""Signed checkpoints: the node's statement "my log had this size and this root".

The signed bytes are a small text note (the C2SP tlog-checkpoint shape)::

    drehscheibe-audit-checkpoint/v1\\n
    <origin: the node id>\\n
    <log size, decimal>\\n
    <root hash, standard base64>\\n
    <time, UTC YYYY-MM-DDTHH:MM:SS.ffffffZ>\\n

signed with ECDSA P-256 / SHA-256 (DER signature) by the node's own key, through
``cryptography`` — no hand-rolled crypto.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .errors import AuditVerificationError
from .record import format_time, parse_time

HEADER = "drehscheibe-audit-checkpoint/v1"
_ORIGIN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_ECDSA = ec.ECDSA(hashes.SHA256())


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    time: datetime

    def __post_init__(self) -> None:
        if not _ORIGIN.fullmatch(self.origin):
            raise ValueError("checkpoint origin must match [A-Za-z0-9._:-]{1,128}")
        if self.size < 0 or len(self.root) != 32:
            raise ValueError("checkpoint needs a size >= 0 and a 32-byte root")

    def signed_bytes(self) -> bytes:
        root = base64.b64encode(self.root).decode("ascii")
        return f"{HEADER}\n{self.origin}\n{self.size}\n{root}\n{format_time(self.time)}\n".encode()

    @classmethod
    def parse(cls, note: bytes) -> Checkpoint:
        try:
            lines = note.decode("ascii").split("\n")
            if len(lines) != 6 or lines[0] != HEADER or lines[5] != "":
                raise ValueError("bad checkpoint layout")
            if not lines[2].isdigit() or (lines[2] != "0" and lines[2].startswith("0")):
                raise ValueError("bad checkpoint size")
            checkpoint = cls(
                origin=lines[1],
                size=int(lines[2]),
                root=base64.b64decode(lines[3], validate=True),
                time=parse_time(lines[4]),
            )
        except (ValueError, UnicodeDecodeError) as exc:
            raise AuditVerificationError(f"malformed checkpoint: {exc}") from None
        if checkpoint.signed_bytes() != note:
            raise AuditVerificationError("checkpoint note is not in canonical form")
        return checkpoint


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    signature: bytes  # DER-encoded ECDSA P-256 / SHA-256 over checkpoint.signed_bytes()


def sign_checkpoint(checkpoint: Checkpoint, key: ec.EllipticCurvePrivateKey) -> SignedCheckpoint:
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("checkpoint keys must be EC P-256")
    return SignedCheckpoint(checkpoint, key.sign(checkpoint.signed_bytes(), _ECDSA))


def verify_checkpoint(
    note: bytes, signature: bytes, public_key: ec.EllipticCurvePublicKey, *, origin: str | None = None
) -> Checkpoint:
    """Verify the signature over the exact ``note`` bytes and return what it says.

    A verifier MUST check the signature over the note bytes before reading any field,
    and SHOULD check that the origin is the node whose log it expects.
    """
    try:
        public_key.verify(signature, note, _ECDSA)
    except InvalidSignature:
        raise AuditVerificationError("checkpoint signature does not verify") from None
    checkpoint = Checkpoint.parse(note)
    if origin is not None and checkpoint.origin != origin:
        raise AuditVerificationError("checkpoint origin is not the expected node")
    return checkpoint


def load_public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    """Accept a PEM certificate or a PEM public key; refuse anything but EC P-256."""
    if b"-----BEGIN CERTIFICATE-----" in pem:
        key = x509.load_pem_x509_certificate(pem).public_key()
    else:
        key = serialization.load_pem_public_key(pem)
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the audit verification key must be EC P-256")
    return key
