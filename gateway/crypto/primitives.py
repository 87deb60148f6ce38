"""Raw primitives, used only by :mod:`gateway.crypto.seal`.

WARNING: nothing outside ``gateway.crypto`` may import this module. The segmented
stream below is the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015)
over AES-256-GCM from pyca/cryptography: nonce = 7-byte random prefix || 4-byte
segment counter || 1-byte final flag, so segments cannot be reordered, dropped or
truncated without the final tag failing.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TAG_BYTES = 16
NONCE_PREFIX_BYTES = 7
KEY_BYTES = 32
MAX_SEGMENTS = 2**32 - 1


class StreamError(Exception):
    """The ciphertext stream is altered, truncated, reordered or extended."""


def random_bytes(count: int) -> bytes:
    return os.urandom(count)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_hash():
    return hashlib.sha256()


def _nonce(prefix: bytes, counter: int, final: bool) -> bytes:
    if counter > MAX_SEGMENTS:
        raise StreamError("too many segments")
    return prefix + struct.pack(">IB", counter, 1 if final else 0)


class SegmentEncryptor:
    """Encrypts a plaintext stream into authenticated segments, incrementally.

    Feed plaintext with :meth:`feed` in any chunking and call :meth:`finish` once; one
    full segment is always held back because only the end of the stream tells which
    segment is the final one.
    """

    def __init__(self, key: bytes, nonce_prefix: bytes, aad: bytes, segment_size: int) -> None:
        if len(key) != KEY_BYTES or len(nonce_prefix) != NONCE_PREFIX_BYTES:
            raise ValueError("bad key or nonce prefix length")
        self._aead = AESGCM(key)
        self._prefix = nonce_prefix
        self._aad = aad
        self.segment_size = segment_size
        self._buffer = bytearray()
        self._counter = 0
        self._done = False

    def _seal(self, block: bytes, final: bool) -> bytes:
        out = self._aead.encrypt(_nonce(self._prefix, self._counter, final), block, self._aad)
        self._counter += 1
        return out

    def feed(self, chunk: bytes) -> bytes:
        if self._done:
            raise StreamError("stream already finished")
        self._buffer += chunk
        out = bytearray()
        while len(self._buffer) > self.segment_size:
            block = bytes(self._buffer[: self.segment_size])
            del self._buffer[: self.segment_size]
            out += self._seal(block, final=False)
        return bytes(out)

    def finish(self) -> bytes:
        if self._done:
            raise StreamError("stream already finished")
        self._done = True
        block = bytes(self._buffer)
        self._buffer.clear()
        return self._seal(block, final=True)

    def encrypt(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            out = self.feed(chunk)
            if out:
                yield out
        yield self.finish()


class SegmentDecryptor:
    """Decrypts and authenticates a segment stream incrementally (bounded memory).

    Feed ciphertext with :meth:`feed` in any chunking; call :meth:`finish` at the end,
    which raises unless the final segment was seen and nothing follows it. With
    ``plaintext_length`` it also raises unless the authenticated plaintext has exactly
    that length (the sender's claim in the seal is checked, not trusted).
    """

    def __init__(self, key: bytes, nonce_prefix: bytes, aad: bytes, segment_size: int, *, plaintext_length: int | None = None) -> None:
        if len(key) != KEY_BYTES or len(nonce_prefix) != NONCE_PREFIX_BYTES:
            raise StreamError("bad key or nonce prefix length")
        if segment_size <= 0:
            raise StreamError("segment size must be positive")
        self._expected = plaintext_length
        self._released = 0
        self._aead = AESGCM(key)
        self._prefix = nonce_prefix
        self._aad = aad
        self._size = segment_size + TAG_BYTES
        self._buffer = bytearray()
        self._counter = 0
        self._done = False

    def _open(self, segment: bytes, final: bool) -> bytes:
        try:
            return self._aead.decrypt(_nonce(self._prefix, self._counter, final), segment, self._aad)
        except InvalidTag:
            raise StreamError(f"segment {self._counter} failed authentication") from None

    def feed(self, chunk: bytes) -> bytes:
        if self._done and chunk:
            raise StreamError("data after the final segment")
        self._buffer += chunk
        out = bytearray()
        # Keep at least one full segment buffered: we only learn that a segment is the
        # final one when the stream ends, so never open the last buffered segment here.
        while len(self._buffer) > self._size:
            segment = bytes(self._buffer[: self._size])
            del self._buffer[: self._size]
            out += self._open(segment, final=False)
            self._counter += 1
        return self._counted(bytes(out))

    def _counted(self, plain: bytes) -> bytes:
        self._released += len(plain)
        if self._expected is not None and self._released > self._expected:
            raise StreamError("more plaintext than the seal declares")
        return plain

    def finish(self) -> bytes:
        if self._done:
            return b""
        if len(self._buffer) < TAG_BYTES:
            raise StreamError("ciphertext truncated")
        plain = self._counted(self._open(bytes(self._buffer), final=True))
        if self._expected is not None and self._released != self._expected:
            raise StreamError("the plaintext is shorter than the seal declares")
        self._buffer.clear()
        self._done = True
        return plain


def ciphertext_length(plaintext_length: int, segment_size: int) -> int:
    segments = max(1, -(-plaintext_length // segment_size))
    return plaintext_length + segments * TAG_BYTES
