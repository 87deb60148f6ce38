"""Verifying a signed directory, and looking participants up in what was verified."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import timedelta

import pytest

from gateway.crypto.seal import RECEIPT_TYPE, canonical_json
from gateway.directory import (
    DIRECTORY_TYPE,
    CertificateEntry,
    CertificateUse,
    DirectoryRefused,
    DirectoryTooLarge,
    NoCurrentCertificate,
    Refusal,
    UnknownParticipant,
    sign_directory,
    verify_directory,
)
from gateway.ids import StatusCode
from gateway.pki import load_certificate

from .conftest import HUB, KANTON, KANTON_NODE, KRIENS, LUZERN, LUZERN_NODE, Pki


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _with_claims(token: str, claims: dict) -> str:
    header, _, signature = token.split(".")
    return ".".join([header, _b64(canonical_json(claims)), signature])


def verify(pki: Pki, token: str, **options):
    options.setdefault("now", pki.now)
    return verify_directory(token, trust=pki.trust, issuer=HUB, **options)


def refusal(pki: Pki, token: str, **options) -> DirectoryRefused:
    with pytest.raises(DirectoryRefused) as caught:
        verify(pki, token, **options)
    assert caught.value.status is StatusCode.DIRECTORY_NOT_REACHABLE
    return caught.value


def test_a_directory_signed_by_the_hub_verifies_and_resolves(pki: Pki):
    """A valid directory gives each participant's node, URL, certificates and message types."""
    verified = verify(pki, pki.signed())
    found = verified.lookup(LUZERN, pki.now)
    assert (found.node_id, found.node_url) == (LUZERN_NODE, "https://luzern.example.ch:8443")
    signing, encryption = pki.participants[LUZERN]
    assert found.encryption_certificate == load_certificate(encryption.certificate)
    assert found.signing_certificate == load_certificate(signing.certificate)
    assert found.takes_part_in(10301) and not found.takes_part_in(99)
    assert not found.is_test and found.directory_version == 1
    assert verified.hosted_on(KANTON_NODE) == (KANTON,)


def test_an_expired_directory_is_refused(pki: Pki):
    """A directory is refused from its expiry on."""
    token = pki.signed(validity=timedelta(hours=1))
    error = refusal(pki, token, now=pki.now + timedelta(hours=1))
    assert error.reason is Refusal.EXPIRED and "expired at 2026-03-01T09:00:00+00:00" in str(error)


def test_an_expired_directory_is_accepted_inside_a_grace_period_given_by_the_caller(pki: Pki):
    """The grace argument extends acceptance past expiry, and no further."""
    token = pki.signed(validity=timedelta(hours=1))
    assert verify(pki, token, now=pki.now + timedelta(hours=2), grace=timedelta(hours=2)).version == 1
    assert refusal(pki, token, now=pki.now + timedelta(hours=3), grace=timedelta(hours=2)).reason is Refusal.EXPIRED


def test_a_directory_issued_in_the_future_is_refused(pki: Pki):
    """A directory issued after now plus the allowed skew is refused."""
    token = pki.signed(issued_at=pki.now + timedelta(hours=1))
    assert refusal(pki, token).reason is Refusal.NOT_YET_VALID


def test_tampered_claims_are_refused(pki: Pki):
    """Changing a node URL in the signed payload breaks the signature."""
    token = pki.signed()
    claims = _claims(token)
    claims["nodes"][1]["url"] = "https://attacker.example:443"
    error = refusal(pki, _with_claims(token, claims))
    assert error.reason is Refusal.BAD_SIGNATURE and "does not verify" in str(error)


def test_a_tampered_signature_is_refused(pki: Pki):
    """Flipping signature bits is refused."""
    header, payload, signature = pki.signed().split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    assert refusal(pki, ".".join([header, payload, flipped])).reason is Refusal.BAD_SIGNATURE


def test_garbage_is_refused_as_a_bad_signature(pki: Pki):
    """Text that is not a compact JWS is refused."""
    assert refusal(pki, "<html>502 Bad Gateway</html>").reason is Refusal.BAD_SIGNATURE


def test_a_jws_of_another_type_is_refused(pki: Pki):
    """A receipt signature cannot pass for a directory, even with directory claims."""
    token = pki.signer().sign(RECEIPT_TYPE, pki.directory().to_claims())
    assert refusal(pki, token).reason is Refusal.BAD_SIGNATURE


def test_a_directory_signed_by_another_federation_node_is_refused(pki: Pki):
    """A node certificate from the federation CA that is not the issuer's is the wrong signer."""
    token = pki.signer(LUZERN_NODE).sign(DIRECTORY_TYPE, pki.directory().to_claims())
    error = refusal(pki, token)
    assert error.reason is Refusal.WRONG_SIGNER and "node-luzern" in str(error)


def test_a_directory_signed_by_a_hub_key_from_another_ca_is_refused(pki: Pki):
    """A certificate named like the hub but not issued by the federation CA is the wrong signer."""
    token = sign_directory(pki.directory(), pki.rogue_signer())
    error = refusal(pki, token)
    assert error.reason is Refusal.WRONG_SIGNER and "not issued by the federation CA" in str(error)


def test_claims_naming_another_issuer_are_refused(pki: Pki):
    """The hub cannot sign a directory in another node's name."""
    claims = pki.directory().to_claims()
    claims["issuer"] = LUZERN_NODE
    token = pki.signer().sign(DIRECTORY_TYPE, claims)
    assert refusal(pki, token).reason is Refusal.WRONG_SIGNER


def test_an_older_version_is_a_rollback(pki: Pki):
    """Once version 5 is accepted, version 4 is refused even though it is validly signed."""
    five = verify(pki, pki.signed(version=5))
    error = refusal(pki, pki.signed(version=4), previous=five)
    assert error.reason is Refusal.ROLLBACK and "older than version 5" in str(error)


def test_the_same_version_with_other_content_is_a_rollback(pki: Pki):
    """A version number is never reused for different content."""
    five = verify(pki, pki.signed(version=5))
    other = pki.signed(version=5, participants=(pki.entry(LUZERN, LUZERN_NODE),))
    assert "already accepted with other content" in str(refusal(pki, other, previous=five))


def test_the_same_version_and_content_signed_again_is_accepted(pki: Pki):
    """Re-signing identical claims (a new ECDSA signature) is not a rollback."""
    five = verify(pki, pki.signed(version=5))
    again = pki.signed(version=5)
    assert again != five.token
    assert verify(pki, again, previous=five).digest == five.digest


def test_a_version_floor_refuses_older_versions(pki: Pki):
    """min_version refuses anything older without a previous copy."""
    assert refusal(pki, pki.signed(version=2), min_version=3).reason is Refusal.ROLLBACK


def test_a_listed_certificate_from_another_ca_is_refused(pki: Pki):
    """Every listed certificate must chain to the federation trust anchor."""
    rogue_encryption = pki.rogue_luzern[1].certificate.read_text()
    entry = pki.entry(LUZERN, LUZERN_NODE)
    entry = replace(entry, certificates=(*entry.certificates, CertificateEntry(CertificateUse.ENCRYPTION, rogue_encryption)))
    error = refusal(pki, pki.signed(participants=(entry,)))
    assert error.reason is Refusal.BAD_CERTIFICATE and "encryption certificate" in str(error) and str(LUZERN) in str(error)


def test_an_encryption_certificate_listed_for_signing_is_refused(pki: Pki):
    """A certificate must allow the key usage of the use it is listed for."""
    entry = pki.entry(LUZERN, LUZERN_NODE, certificates=(
        CertificateEntry(CertificateUse.SIGNING, pki.pem(LUZERN, CertificateUse.ENCRYPTION)),))
    error = refusal(pki, pki.signed(participants=(entry,)))
    assert error.reason is Refusal.BAD_CERTIFICATE and "digital_signature" in str(error)


def test_a_retired_certificate_is_not_resolved(pki: Pki):
    """Lookups leave retired certificates out; with none left, asking for one is a 312."""
    entry = pki.entry(LUZERN, LUZERN_NODE)
    entry = replace(entry, certificates=tuple(replace(c, retired=c.use is CertificateUse.ENCRYPTION) for c in entry.certificates))
    found = verify(pki, pki.signed(participants=(entry,))).lookup(LUZERN, pki.now)
    assert found.encryption_certificates == ()
    with pytest.raises(NoCurrentCertificate) as caught:
        found.encryption_certificate
    assert caught.value.status is StatusCode.CERTIFICATE_NOT_VALID


def test_a_retired_participant_is_not_resolved(pki: Pki):
    """A retired participant stays listed but lookups answer 301."""
    entry = pki.entry(LUZERN, LUZERN_NODE, retired=True)
    verified = verify(pki, pki.signed(participants=(entry,)))
    assert verified.entry(LUZERN).retired
    with pytest.raises(UnknownParticipant, match="retired") as caught:
        verified.lookup(LUZERN, pki.now)
    assert caught.value.status is StatusCode.UNKNOWN_RECIPIENT
    assert verified.hosted_on(LUZERN_NODE) == ()


def test_an_unlisted_participant_is_unknown(pki: Pki):
    """A participant the directory does not list answers 301."""
    with pytest.raises(UnknownParticipant, match="not in directory version 1"):
        verify(pki, pki.signed()).lookup(KRIENS, pki.now)


def test_a_rotated_key_takes_over_when_its_window_opens(pki: Pki):
    """A new encryption key announced ahead is used from its notBefore; the old one until its notAfter."""
    switch = pki.now + timedelta(days=2)
    old = CertificateEntry(CertificateUse.ENCRYPTION, pki.pem(LUZERN, CertificateUse.ENCRYPTION), not_after=switch + timedelta(days=1))
    new_pem = pki.luzern_next[1].certificate.read_text()
    new = CertificateEntry(CertificateUse.ENCRYPTION, new_pem, not_before=switch)
    entry = pki.entry(LUZERN, LUZERN_NODE, certificates=(old, new))
    verified = verify(pki, pki.signed(participants=(entry,)))

    assert verified.lookup(LUZERN, pki.now).encryption_certificates == (old.certificate,)
    assert verified.lookup(LUZERN, switch + timedelta(hours=1)).encryption_certificates == (new.certificate, old.certificate)
    assert verified.lookup(LUZERN, switch + timedelta(days=2)).encryption_certificates == (new.certificate,)


def test_a_seal_certificate_must_be_a_current_signing_certificate(pki: Pki):
    """check_signing_certificate pins a seal's x5c to the participant's listed signing keys."""
    found = verify(pki, pki.signed()).lookup(LUZERN, pki.now)
    found.check_signing_certificate(load_certificate(pki.participants[LUZERN][0].certificate))
    with pytest.raises(NoCurrentCertificate):
        found.check_signing_certificate(load_certificate(pki.luzern_next[0].certificate))


def test_a_directory_beyond_the_signature_size_limit_is_not_signed(pki: Pki):
    """Signing refuses a directory the verifier could not accept, instead of making one."""
    huge = pki.entry(LUZERN, LUZERN_NODE, message_types=tuple(range(1_000_000, 1_030_000)))
    with pytest.raises(DirectoryTooLarge, match="at most 196608"):
        sign_directory(pki.directory(participants=(huge,)), pki.signer())


def test_the_hub_cannot_sign_in_another_issuers_name(pki: Pki):
    """sign_directory refuses a signer that is not the document's issuer."""
    with pytest.raises(ValueError, match="issuer"):
        sign_directory(pki.directory(issuer=KANTON_NODE), pki.signer())
