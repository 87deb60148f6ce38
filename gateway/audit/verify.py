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
from operator import itemgetter
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


def _first_bad_body(rows: list[tuple[bytes, bytes | None]], indices: list[int]) -> tuple[int, str] | None:
    """(index, reason) of the first record whose body does not hash to its leaf hash."""
    sha = hashlib.sha256
    try:
        # The hot loop, kept to one comprehension: most of the verification time is here.
        computed = [h if b is None else sha(b"\x00" + b).digest() for h, b in rows]
    except TypeError:
        computed = []  # a TEXT body; the slow path below names it
    if computed == list(map(itemgetter(0), rows)):
        return None
    for idx, (h, b) in zip(indices, rows):
        # The node writes BLOBs only; SQL edits such as replace() turn them into TEXT.
        if type(h) is not bytes or (b is not None and type(b) is not bytes):
            return idx, "record stored with a wrong column type"
        if b is not None and sha(b"\x00" + b).digest() != h:
            return idx, "record body does not match its leaf hash"
    raise AssertionError("unreachable: a mismatch exists")


def verify_log(path: Path | str, public_key: ec.EllipticCurvePublicKey, *, origin: str | None = None) -> VerifiedLog:
    """Verify the whole log file; raise :class:`AuditVerificationError` at the first bad index."""
    try:
        conn = connect(Path(path), read_only=True)
        try:
            # One transaction, so the three reads see the same state of the file.
            conn.execute("BEGIN")
            rows = conn.execute("SELECT leaf_hash, body FROM records ORDER BY idx").fetchall()
            first_idx, last_idx = conn.execute("SELECT MIN(idx), MAX(idx) FROM records").fetchone()
            gapless = not rows or (first_idx == 0 and last_idx == len(rows) - 1)  # idx is a unique integer
            indices = range(len(rows)) if gapless else [r[0] for r in conn.execute("SELECT idx FROM records ORDER BY idx")]
            cps = conn.execute("SELECT size, note, signature FROM checkpoints ORDER BY id").fetchall()
            stored_origin = conn.execute("SELECT value FROM meta WHERE key='node'").fetchone()
            conn.execute("COMMIT")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise AuditVerificationError(f"audit log unreadable: {exc}") from None
    origin = origin or (stored_origin[0] if stored_origin else None)

    # (index, reason) of every problem; the smallest index is reported.
    problems: list[tuple[int, str]] = []
    if not gapless:
        position = next(i for i, idx in enumerate([*indices, None]) if idx != i)
        problems.append((position, "record missing (gap in the numbering)"))
    bad_body = _first_bad_body(rows, list(indices))
    if bad_body is not None:
        problems.append(bad_body)
    stored = [h if type(h) is bytes else b"" for h, _ in rows] if bad_body else [h for h, _ in rows]
    pruned = sum(1 for _, b in rows if b is None)
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
        if checkpoint.size > len(stored):
            problems.append((len(stored), f"log truncated below signed size {checkpoint.size}"))
            break
        if tree.root(checkpoint.size) != checkpoint.root:
            problems.append(
                (good_size, f"records in [{good_size}, {checkpoint.size}) differ from checkpoint {number}")
            )
            break
        good_size = max(good_size, checkpoint.size)

    if stored and latest is None:
        problems.append((0, "no signed checkpoint covers the log"))
    if problems:
        index, reason = min(problems)
        raise AuditVerificationError(reason, index=index)
    return VerifiedLog(size=len(stored), checkpoints=len(cps), latest=latest, pruned=pruned)
