"""The segmented AES-256-GCM stream, checked against the test vector in docs/wire-format.md."""

from __future__ import annotations

import hashlib

from gateway.crypto.primitives import SegmentDecryptor, SegmentEncryptor, ciphertext_length

KEY = bytes(range(32))
PREFIX = bytes.fromhex("a0a1a2a3a4a5a6")
AAD = b"drehscheibe-seal+json;v=1\x001-1061-1\x00m-1"
PLAINTEXT = b"Drehscheibe" * 10  # 110 bytes
# Published in docs/wire-format.md, "Test vector: segment stream".
EXPECTED_SHA256 = "7fc77a94c55b5d009cbe57565f34e10e50aa747273ae67e8bdb2c36a9316463c"


def encrypt(segment_size: int = 64) -> bytes:
    return b"".join(SegmentEncryptor(KEY, PREFIX, AAD, segment_size).encrypt([PLAINTEXT]))


def test_the_stream_has_one_tag_per_segment():
    """110 bytes in 64-byte segments give two segments of ciphertext plus 16-byte tags."""
    assert len(encrypt()) == ciphertext_length(110, 64) == 110 + 2 * 16


def test_the_stream_matches_the_published_vector():
    """Encryption is deterministic given key, nonce prefix and AAD, and matches the documented digest."""
    assert hashlib.sha256(encrypt()).hexdigest() == EXPECTED_SHA256


def test_the_documented_nonce_layout_reproduces_the_stream():
    """prefix || uint32 counter || final flag, one AES-256-GCM call per segment, gives the same bytes."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(KEY)
    first = aead.encrypt(PREFIX + (0).to_bytes(4, "big") + b"\x00", PLAINTEXT[:64], AAD)
    last = aead.encrypt(PREFIX + (1).to_bytes(4, "big") + b"\x01", PLAINTEXT[64:], AAD)
    assert encrypt() == first + last


def test_an_empty_payload_is_one_final_segment():
    """Even an empty payload carries an authenticated final segment, so truncation to nothing is detected."""
    ciphertext = b"".join(SegmentEncryptor(KEY, PREFIX, AAD, 64).encrypt([]))
    assert len(ciphertext) == 16
    decryptor = SegmentDecryptor(KEY, PREFIX, AAD, 64)
    assert decryptor.feed(ciphertext) == b"" and decryptor.finish() == b""


def test_a_stream_cut_at_a_segment_boundary_is_refused():
    """Dropping the final segment makes the previous one fail as non-final."""
    import pytest

    from gateway.crypto.primitives import StreamError

    ciphertext = encrypt()
    decryptor = SegmentDecryptor(KEY, PREFIX, AAD, 64)
    decryptor.feed(ciphertext[: 64 + 16])
    with pytest.raises(StreamError):
        decryptor.finish()


def test_a_plaintext_of_another_length_than_declared_is_refused():
    """With the seal's plaintextLength, the decoder refuses an authenticated stream that is longer or shorter than declared."""
    import pytest

    from gateway.crypto.primitives import StreamError

    stream = encrypt()
    exact = SegmentDecryptor(KEY, PREFIX, AAD, 64, plaintext_length=len(PLAINTEXT))
    assert exact.feed(stream) + exact.finish() == PLAINTEXT
    for declared in (len(PLAINTEXT) - 1, len(PLAINTEXT) + 1, 0):
        decryptor = SegmentDecryptor(KEY, PREFIX, AAD, 64, plaintext_length=declared)
        with pytest.raises(StreamError, match="plaintext"):
            decryptor.feed(stream)
            decryptor.finish()
