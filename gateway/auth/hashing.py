"""Client secrets: generated at random, stored only as scrypt hashes (RFC 7914, stdlib ``hashlib``).

The stored form is the PHC-style string ``$scrypt$ln=15,r=8,p=1$<salt>$<hash>`` (salt and hash
unpadded base64), so the cost can be raised later without touching existing entries.

Make a secret and its hash for a new ``[[oauth_clients]]`` entry::

    python -m gateway.auth

It prints the secret (give it to the client, once) and the ``secret_hash`` line for the file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from .errors import InvalidCredentials

DEFAULT_LOG2_N = 15  # n = 32768, r = 8: 32 MiB and a few tens of milliseconds per check
MIN_LOG2_N = 14  # SECURITY: weaker stored hashes are refused when the configuration is loaded
MAX_LOG2_N = 20
SALT_BYTES = 16
HASH_BYTES = 32
_FORMAT = re.compile(r"\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class SecretHash:
    """A stored scrypt hash of one client secret; :meth:`verify` raises unless the secret matches."""

    log2_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def __post_init__(self) -> None:
        if not MIN_LOG2_N <= self.log2_n <= MAX_LOG2_N:
            raise ValueError(f"scrypt cost ln={self.log2_n} outside {MIN_LOG2_N}..{MAX_LOG2_N}")
        if not 1 <= self.r <= 32 or not 1 <= self.p <= 4:
            raise ValueError("scrypt r must be 1..32 and p 1..4")
        if len(self.salt) < SALT_BYTES or len(self.digest) != HASH_BYTES:
            raise ValueError(f"expected a salt of at least {SALT_BYTES} bytes and a {HASH_BYTES}-byte hash")

    @classmethod
    def parse(cls, text: str) -> SecretHash:
        """Read the stored form; raises ValueError naming what is wrong (never echoing the hash)."""
        match = _FORMAT.fullmatch(text)
        if match is None:
            raise ValueError("expected $scrypt$ln=<n>,r=<r>,p=<p>$<salt>$<hash> (see python -m gateway.auth)")
        log2_n, r, p, salt, digest = match.groups()
        try:
            return cls(int(log2_n), int(r), int(p), _b64decode(salt), _b64decode(digest))
        except (ValueError, TypeError) as error:  # binascii.Error is a ValueError
            raise ValueError(f"not a usable scrypt hash: {error}") from None

    def __str__(self) -> str:
        return f"$scrypt$ln={self.log2_n},r={self.r},p={self.p}${_b64encode(self.salt)}${_b64encode(self.digest)}"

    def _derive(self, secret: str) -> bytes:
        n = 1 << self.log2_n
        return hashlib.scrypt(
            secret.encode("utf-8"), salt=self.salt, n=n, r=self.r, p=self.p, dklen=len(self.digest),
            maxmem=128 * self.r * (n + self.p + 2) + (1 << 20),
        )  # fmt: skip

    def verify(self, secret: str) -> None:
        """Raise :class:`InvalidCredentials` unless ``secret`` hashes to this digest (constant-time compare)."""
        if not hmac.compare_digest(self._derive(secret), self.digest):
            raise InvalidCredentials("wrong client secret")


def hash_secret(secret: str, *, log2_n: int = DEFAULT_LOG2_N, r: int = 8, p: int = 1) -> SecretHash:
    """The stored form of ``secret`` with a fresh random salt."""
    unsalted = SecretHash(log2_n, r, p, secrets.token_bytes(SALT_BYTES), bytes(HASH_BYTES))
    return SecretHash(log2_n, r, p, unsalted.salt, unsalted._derive(secret))


def new_client_secret() -> tuple[str, SecretHash]:
    """A random client secret (256 bits, URL-safe) and its hash."""
    secret = secrets.token_urlsafe(32)
    return secret, hash_secret(secret)


def main() -> None:
    secret, stored = new_client_secret()
    print(f"client secret (give it to the client once, do not store it): {secret}")
    print(f'secret_hash = "{stored}"')

