"""Seal and open: what the origin signs and encrypts, and what a verifier refuses."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest
from joserfc.jwk import ECKey

from gateway.crypto.primitives import StreamError
from gateway.crypto.seal import (
    CertificateError,
    EncryptionIdentity,
    RecipientKey,
    Sealing,
    SealError,
    SigningIdentity,
    TrustStore,
    verify_seal,
)
from gateway.ids import ParticipantId
from gateway.pki import DevelopmentCA, load_certificate, load_private_key

SENDER = ParticipantId("1-1061-1")
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca = DevelopmentCA(directory, now=NOW)
    issued = {p: ca.issue_participant(ParticipantId(p), directory) for p in ("1-1061-1", "2-LU-1", "1-1059-1")}
    other_ca = DevelopmentCA(directory / "other", now=NOW)
    return ca, issued, other_ca, directory


def signer(issued, participant="1-1061-1"):
    signing, _ = issued[participant]
    return SigningIdentity.from_key(participant, load_private_key(signing.private_key), load_certificate(signing.certificate))


def decryptor(issued, participant):
    return EncryptionIdentity(participant, ECKey.import_key(load_private_key(issued[participant][1].private_key)))


def seal(pki, payload=b"<x/>" * 1000, recipients=("2-LU-1",), segment_size=1024):
    ca, issued, _, _ = pki
    trust = TrustStore([ca.certificate])
    keys = [RecipientKey.from_certificate(r, load_certificate(issued[r][1].certificate), trust, NOW) for r in recipients]
    sealing = Sealing(sender=SENDER, message_id="m-1", envelope_xml=b"<envelope/>", payload_name="data_m-1.xml",
                      recipients=keys, node="node-luzern", segment_size=segment_size)  # fmt: skip
    ciphertext = b"".join(sealing.encrypt([payload[i : i + 700] for i in range(0, len(payload), 700)]))
    return trust, sealing.seal(signer(issued), NOW), ciphertext


def open_all(verified, identity, ciphertext, step=333):
    opener = verified.opener(identity)
    return b"".join(opener.feed(ciphertext[i : i + step]) for i in range(0, len(ciphertext), step)) + opener.finish()


def test_a_sealed_payload_opens_byte_identical_for_its_recipient(pki):
    """The recipient's key opens the segmented ciphertext to the exact plaintext, in any chunking."""
    trust, token, ciphertext = seal(pki)
    verified = verify_seal(token, b"<envelope/>", sender=SENDER, trust=trust, now=NOW)
    verified.check_ciphertext(__import__("hashlib").sha256(ciphertext).hexdigest(), len(ciphertext))
    assert open_all(verified, decryptor(pki[1], "2-LU-1"), ciphertext) == b"<x/>" * 1000


def test_one_ciphertext_serves_every_recipient_and_nobody_else(pki):
    """A multi-recipient seal wraps the key for each recipient; a participant not named cannot open it."""
    trust, token, ciphertext = seal(pki, recipients=("2-LU-1", "1-1059-1"))
    verified = verify_seal(token, b"<envelope/>", sender=SENDER, trust=trust, now=NOW)
    for recipient in ("2-LU-1", "1-1059-1"):
        assert open_all(verified, decryptor(pki[1], recipient), ciphertext) == b"<x/>" * 1000
    with pytest.raises(SealError):
        verified.opener(decryptor(pki[1], "1-1061-1"))


def test_a_key_record_for_one_recipient_does_not_open_with_another_key(pki):
    """Presenting recipient A's key record with recipient B's private key fails."""
    trust, token, _ = seal(pki)
    verified = verify_seal(token, b"<envelope/>", sender=SENDER, trust=trust, now=NOW)
    thief = EncryptionIdentity("2-LU-1", decryptor(pki[1], "1-1059-1").key)
    with pytest.raises(SealError):
        verified.opener(thief)


@pytest.mark.parametrize("where", ["middle", "last-tag", "truncate", "append", "swap-segments"])
def test_any_change_to_the_ciphertext_stream_fails_authentication(pki, where):
    """Flipped bytes, truncation, extension and reordered segments all raise."""
    trust, token, ciphertext = seal(pki)
    verified = verify_seal(token, b"<envelope/>", sender=SENDER, trust=trust, now=NOW)
    size = 1024 + 16
    altered = {
        "middle": ciphertext[:100] + bytes([ciphertext[100] ^ 1]) + ciphertext[101:],
        "last-tag": ciphertext[:-1] + bytes([ciphertext[-1] ^ 1]),
        "truncate": ciphertext[:size],
        "append": ciphertext + ciphertext[-size:],
        "swap-segments": ciphertext[size : 2 * size] + ciphertext[:size] + ciphertext[2 * size :],
    }[where]
    with pytest.raises(StreamError):
        open_all(verified, decryptor(pki[1], "2-LU-1"), altered)


def test_the_seal_binds_the_exact_envelope_bytes(pki):
    """An envelope that differs by one byte from the sealed one is refused."""
    trust, token, _ = seal(pki)
    with pytest.raises(SealError, match="envelope"):
        verify_seal(token, b"<envelope />", sender=SENDER, trust=trust, now=NOW)


def test_a_seal_claimed_for_another_sender_is_refused(pki):
    """A valid seal by Luzern cannot be presented as Kriens' message."""
    trust, token, _ = seal(pki)
    with pytest.raises(CertificateError):
        verify_seal(token, b"<envelope/>", sender=ParticipantId("1-1059-1"), trust=trust, now=NOW)


def test_a_seal_from_outside_the_federation_is_refused(pki):
    """A certificate issued by another CA is not trusted, even with the right name."""
    _, _, other_ca, directory = pki
    trust, token, _ = seal(pki)
    with pytest.raises(CertificateError, match="not issued"):
        verify_seal(token, b"<envelope/>", sender=SENDER, trust=TrustStore([other_ca.certificate]), now=NOW)


def test_an_expired_signing_certificate_is_refused(pki):
    """Verification at a time outside the certificate's validity raises."""
    trust, token, _ = seal(pki)
    with pytest.raises(CertificateError, match="not valid"):
        verify_seal(token, b"<envelope/>", sender=SENDER, trust=trust, now=NOW + timedelta(days=3000))


def _reheader(token: str, change) -> str:
    head, payload, signature = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=="))
    change(header)
    new = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return f"{new}.{payload}.{signature}"


@pytest.mark.parametrize(
    "attack",
    [
        lambda h: h.update(alg="none"),
        lambda h: h.update(alg="HS256"),
        lambda h: h.update(jwk={"kty": "EC"}),
        lambda h: h.update(jku="https://attacker.example/keys"),
        lambda h: h.update(x5u="https://attacker.example/cert"),
        lambda h: h.update(crit=["b64"], b64=False),
    ],
)
def test_jose_header_attacks_are_refused(pki, attack):
    """alg none, algorithm confusion and keys pointed at from the header never verify."""
    trust, token, _ = seal(pki)
    with pytest.raises(SealError):
        verify_seal(_reheader(token, attack), b"<envelope/>", sender=SENDER, trust=trust, now=NOW)
