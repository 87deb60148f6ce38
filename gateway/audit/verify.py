"""Whole-log verification against the node's signed checkpoints.

What a verifier MUST check, in this order:

1. every checkpoint's signature over its exact note bytes, with the node's public key,
   and that its origin is the node;
2. that the records are numbered 0..n-1 without gaps (a gap is a deleted record);
3. that each stored body hashes to its stored leaf hash (a pruned body has no bytes
   left to check, only its leaf hash);
4. that the RFC 6962 root over the first ``size`` leaf hashes equals each checkpoint's
   root, and that no checkpoint claims more records than the log holds (truncation).

Records after the newest checkpoint are not yet covered by a signature; they are
reported as the unsigned tail, and a verifier MUST NOT treat them as verified.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from .checkpoint import Checkpoint, verify_checkpoint
from .errors import AuditVerificationError
from .log import connect
from .merkle import MerkleTree


@dataclass(frozen=True, slots=True)
class VerifiedLog:
    size: int
    checkpoints: int
    latest: Checkpoint | None
    pruned: int

    @property
    def unsigned_tail(self) -> int:
        return self.size - (self.latest.size if self.latest else 0)


def verify_log(path: Path | str, public_key: ec.EllipticCurvePublicKey, *, origin: str | None = None) -> VerifiedLog:
    """Verify the whole log file; raise :class:`AuditVerificationError` at the first bad index."""
    try:
        conn = connect(Path(path), read_only=True)
        try:
            # Column types are checked in SQL: the node writes BLOBs only, and SQL edits
            # such as replace() silently turn them into TEXT.
            bad_type = conn.execute(
                "SELECT MIN(idx) FROM records WHERE typeof(leaf_hash) != 'blob'"
                " OR (body IS NOT NULL AND typeof(body) != 'blob')"
            ).fetchone()[0]
            first_idx, last_idx = conn.execute("SELECT MIN(idx), MAX(idx) FROM records").fetchone()
            rows = conn.execute("SELECT leaf_hash, body FROM records ORDER BY idx").fetchall()
            indices = None
            if rows and (first_idx != 0 or last_idx != len(rows) - 1):
                indices = [row[0] for row in conn.execute("SELECT idx FROM records ORDER BY idx")]
            cps = conn.execute("SELECT size, note, signature FROM checkpoints ORDER BY id").fetchall()
            stored_origin = conn.execute("SELECT value FROM meta WHERE key='node'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise AuditVerificationError(f"audit log unreadable: {exc}") from None
    origin = origin or (stored_origin[0] if stored_origin else None)

    # (index, reason) of every problem; the smallest index is reported.
    problems: list[tuple[int, str]] = []

    if indices is not None:  # idx is a unique integer key: a gap exists iff first/last are off
        position = next(i for i, idx in enumerate(indices + [None]) if idx != i)
        problems.append((position, "record missing (gap in the numbering)"))
    if bad_type is not None:
        position = bad_type if indices is None else indices.index(bad_type)
        problems.append((position, "record stored with a wrong column type"))
        rows = [(h if type(h) is bytes else b"", b if b is None or type(b) is bytes else b"") for h, b in rows]

    # Hot loop kept to two list comprehensions: this is most of the verification time.
    sha = hashlib.sha256
    stored = [h for h, _ in rows]
    computed = [h if b is None else sha(b"\x00" + b).digest() for h, b in rows]
    pruned = sum(1 for _, b in rows if b is None)
    if computed != stored:
        position = next(i for i, (c, h) in enumerate(zip(computed, stored)) if c != h)
        problems.append((position, "record body does not match its leaf hash"))

    tree = MerkleTree(stored)
    latest: Checkpoint | None = None
    good_size = 0  # every leaf below this index is covered by a matching checkpoint
    for number, (size_column, note, signature) in enumerate(cps):
        try:
            checkpoint = verify_checkpoint(bytes(note), bytes(signature), public_key, origin=origin)
        except AuditVerificationError as exc:
            raise AuditVerificationError(f"checkpoint {number}: {exc.reason}") from None
        if size_column != checkpoint.size:
            raise AuditVerificationError(f"checkpoint {number}: size column differs from the signed size")
        if latest is not None and (checkpoint.size < latest.size or checkpoint.time < latest.time):
            raise AuditVerificationError(f"checkpoint {number}: goes back in size or time")
        latest = checkpoint
        if checkpoint.size > len(rows):
            problems.append((len(rows), f"log truncated below signed size {checkpoint.size}"))
            break
        if tree.root(checkpoint.size) != checkpoint.root:
            problems.append(
                (good_size, f"records in [{good_size}, {checkpoint.size}) differ from checkpoint {number}")
            )
            break
        good_size = max(good_size, checkpoint.size)

    if rows and latest is None:
        problems.append((0, "no signed checkpoint covers the log"))
    if problems:
        index, reason = min(problems)
        raise AuditVerificationError(reason, index=index)
    return VerifiedLog(size=len(rows), checkpoints=len(cps), latest=latest, pruned=pruned)
