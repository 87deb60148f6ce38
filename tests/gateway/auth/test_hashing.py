"""Client secrets are stored as scrypt hashes; verification raises unless the secret matches."""

from __future__ import annotations

import pytest

from gateway.auth import InvalidCredentials, SecretHash, hash_secret, new_client_secret


def test_a_secret_verifies_against_its_own_hash_and_the_stored_form_round_trips():
    """hash → str → parse gives the same hash; the right secret verifies, a wrong one raises."""
    stored = hash_secret("correct horse", log2_n=14)
    parsed = SecretHash.parse(str(stored))
    assert parsed == stored and str(stored).startswith("$scrypt$ln=14,r=8,p=1$")
    parsed.verify("correct horse")
    with pytest.raises(InvalidCredentials):
        parsed.verify("correct horse ")


def test_the_same_secret_hashes_differently_each_time():
    """A fresh salt per hash: equal secrets do not show as equal hashes in the file."""
    assert hash_secret("same", log2_n=14).digest != hash_secret("same", log2_n=14).digest


def test_new_client_secrets_are_long_random_and_match_their_hash():
    """256-bit URL-safe secrets at the default cost (ln=15)."""
    secret, stored = new_client_secret()
    assert len(secret) >= 43 and stored.log2_n == 15
    stored.verify(secret)


@pytest.mark.parametrize("text", [
    "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",  # plain SHA-256
    "$scrypt$ln=12,r=8,p=1$ThJ5JfMfWtKuATSBNzo5/g$YGeYED/OR5nE3djlFtV/WoqzGDNzmTDB3WbbaR4t0TA",  # too cheap
    "$scrypt$ln=15,r=8,p=1$c2FsdA$YGeYED/OR5nE3djlFtV/WoqzGDNzmTDB3WbbaR4t0TA",  # 4-byte salt
    "$scrypt$ln=15,r=8,p=1$ThJ5JfMfWtKuATSBNzo5/g$YGeYED",  # truncated hash
    "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaA",  # another scheme
], ids=["sha256", "weak-cost", "short-salt", "short-hash", "argon2"])  # fmt: skip
def test_unusable_stored_hashes_are_refused(text):
    with pytest.raises(ValueError):
        SecretHash.parse(text)
