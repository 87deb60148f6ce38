"""Signed checkpoints: exact signed bytes, signature verification and forgeries."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.audit.checkpoint import Checkpoint, load_public_key, sign_checkpoint, verify_checkpoint
from gateway.audit.errors import AuditVerificationError

from .conftest import NODE, T0, test_key

VECTOR_NOTE = (
    b"drehscheibe-audit-checkpoint/v1\nnode-lu-hub\n3\n"
    b"1b/WYTLLiPXdNG6QqyyTeARj4CqH53kXj17xd6QhfVs=\n2026-03-01T08:00:00.000000Z\n"
)
VECTOR_SIGNATURE = bytes.fromhex(
    "3045022059bafb1500195d61f28a306e957d03b64887b973af3ce085026d68ed04db7619022100c341e012e5f21f1d"
    "fff7e724c29ab53a7b78cb111b75999cfb8dcfb0839805e5"
)
VECTOR_PUBLIC_KEY = b"""-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEPZDtvuEST8Y9bq6xeTxOqykc/zg4
wjmM0WTlmYhx03Rq6mURY+elR4UgnrOhF0kNEBkOZjeqT8uN22JPb1Rrcw==
-----END PUBLIC KEY-----
"""
VECTOR_ROOT = bytes.fromhex("d5bfd66132cb88f5dd346e90ab2c93780463e02a87e779178f5ef177a4217d5b")


def test_signed_bytes_match_the_documented_vector():
    """A checkpoint of the 3-record vector log signs exactly the documented note."""
    assert Checkpoint(NODE, 3, VECTOR_ROOT, T0).signed_bytes() == VECTOR_NOTE


def test_documented_signature_verifies_with_the_documented_key():
    """The documented signature verifies over the documented note with the documented public key."""
    checkpoint = verify_checkpoint(VECTOR_NOTE, VECTOR_SIGNATURE, load_public_key(VECTOR_PUBLIC_KEY), origin=NODE)
    assert (checkpoint.size, checkpoint.root) == (3, VECTOR_ROOT)


def test_fresh_signatures_verify():
    """A checkpoint signed by the node's key verifies with its public key."""
    signed = sign_checkpoint(Checkpoint(NODE, 3, VECTOR_ROOT, T0), test_key())
    verify_checkpoint(signed.checkpoint.signed_bytes(), signed.signature, test_key().public_key())


def test_forged_checkpoints_are_refused():
    """A changed size, root or origin, or another key's signature, does not verify."""
    public = test_key().public_key()
    forged_size = VECTOR_NOTE.replace(b"\n3\n", b"\n4\n")
    forged_root = VECTOR_NOTE.replace(b"1b/W", b"1b/X")
    forged_origin = VECTOR_NOTE.replace(b"node-lu-hub", b"node-lu-hua")
    for note in (forged_size, forged_root, forged_origin):
        with pytest.raises(AuditVerificationError):
            verify_checkpoint(note, VECTOR_SIGNATURE, public)
    other = ec.generate_private_key(ec.SECP256R1())
    signature = other.sign(VECTOR_NOTE, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(AuditVerificationError):
        verify_checkpoint(VECTOR_NOTE, signature, public)


def test_origin_must_be_the_expected_node():
    """A genuine checkpoint of another node is refused when a specific node is expected."""
    with pytest.raises(AuditVerificationError):
        verify_checkpoint(VECTOR_NOTE, VECTOR_SIGNATURE, load_public_key(VECTOR_PUBLIC_KEY), origin="node-be")


def test_non_canonical_notes_are_refused_even_if_signed():
    """A correctly signed note with a leading-zero size is refused by the parser."""
    note = VECTOR_NOTE.replace(b"\n3\n", b"\n03\n")
    signature = test_key().sign(note, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(AuditVerificationError):
        verify_checkpoint(note, signature, test_key().public_key())


def test_certificates_and_public_keys_are_accepted_other_curves_are_not():
    """The verification key may be a PEM certificate or public key, but only EC P-256."""
    key = test_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NODE)])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(T0).not_valid_after(T0.replace(year=2030)).sign(key, hashes.SHA256())
    )
    loaded = load_public_key(cert.public_bytes(serialization.Encoding.PEM))
    verify_checkpoint(VECTOR_NOTE, VECTOR_SIGNATURE, loaded)
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(ValueError):
        load_public_key(p384.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert base64.b64decode(VECTOR_NOTE.split(b"\n")[3]) == VECTOR_ROOT
