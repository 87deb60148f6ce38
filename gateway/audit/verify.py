"""Whole-log verification against the node's signed checkpoints.

What a verifier MUST check, in this order:

1. every checkpoint's signature over its exact note bytes, with the node's public key,
   and that its origin is the node;
2. that the records are numbered 0..n-1 without gaps (a gap is a deleted record);
3. that each stored body hashes to its stored leaf hash (a pruned body has no bytes
   left to check, only its leaf hash);
4. that the RFC 6962 root over the first ``size`` leaf hashes equals each checkpoint's
   root, and that no checkpoint claims more records than the log holds (truncation);
5. that pruned (NULL) bodies form a prefix ``[0, p)`` and that a prune record covered
   by a verified checkpoint authorises a cut of at least ``p``; otherwise removing a
   body would pass for pruning.

Records after the newest checkpoint are not yet covered by a signature; they are
reported as the unsigned tail, and a verifier MUST NOT treat them as verified.

The log is read from its SQLite file, or from PostgreSQL through a source object
(:class:`gateway.audit.log_pg.PgLogSource`, ``log.source``) whose ``connect()`` gives a
connection that speaks the same statements; all the checks below are the same.

Speed: the bodies are re-hashed in chunks (:mod:`gateway.audit.scan`), and on a log of
more than ``2 * MIN_RECORDS_PER_WORKER`` records the ranges after the first are scanned
by worker processes (one per available core, at most ``MAX_AUTO_WORKERS``) while this
process scans the first. A worker that cannot start or fails is replaced by an
in-process scan of its range: the result never depends on the workers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from . import scan
from .checkpoint import Checkpoint, verify_checkpoint
from .errors import AuditVerificationError
from .log import PRUNE_HINT
from .merkle import EMPTY_ROOT
from .record import Action, AuditRecord

log = logging.getLogger("drehscheibe.audit.verify")

DEFAULT_CHUNK = 8192  # records hashed per batch; a power of two (ranges align to it)
MIN_RECORDS_PER_WORKER = 32_768  # below this, starting an interpreter (~30 ms) costs more than it saves
MAX_AUTO_WORKERS = 4
_PRUNE_MARK = b'"change":"audit_prune"'
_RESULT_KEYS = {"problem", "chunk_roots", "prefix_roots", "scanned", "nulls", "first_null", "first_body", "null_after_body"}


@dataclass(frozen=True, slots=True)
class VerifiedLog:
    size: int
    checkpoints: int
    latest: Checkpoint | None
    pruned: int

    @property
    def unsigned_tail(self) -> int:
        return self.size - (self.latest.size if self.latest else 0)


def _auto_workers(size: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_AUTO_WORKERS, size // MIN_RECORDS_PER_WORKER))


def _ranges(size: int, chunk: int, workers: int) -> list[tuple[int, int]]:
    """Split ``[0, size)`` into at most ``workers`` ranges of whole chunks."""
    chunks = -(-size // chunk)
    per = max(1, -(-chunks // max(1, workers)))
    return [(lo, min(size, lo + per * chunk)) for lo in range(0, max(size, 1), per * chunk)]


class _Worker:
    """A ``scan.py`` process scanning one range; :meth:`result` is ``None`` if it failed."""

    def __init__(self, path: Path, lo: int, hi: int, chunk: int, sizes: Sequence[int]) -> None:
        self.range = (lo, hi)
        job = json.dumps({"path": str(path), "lo": lo, "hi": hi, "chunk": chunk,
                          "sizes": [s for s in sizes if lo < s <= hi]})
        # -I -S: no environment, no site packages; scan.py needs the standard library only.
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-S", scan.__file__],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(job.encode("ascii"))
            self.process.stdin.close()
        except OSError:  # the worker died at once: do not leave it behind
            self.process.kill()
            self.process.wait()
            raise

    def result(self) -> dict | None:
        assert self.process.stdout is not None
        output = self.process.stdout.read()
        self.process.stdout.close()
        if self.process.wait() != 0:
            return None
        try:
            result = json.loads(output)
        except ValueError:
            return None
        return result if isinstance(result, dict) and _RESULT_KEYS <= result.keys() else None


def _start_worker(path: Path, lo: int, hi: int, chunk: int, sizes: Sequence[int]) -> _Worker | None:
    if not sys.executable:
        return None
    try:
        return _Worker(path, lo, hi, chunk, sizes)
    except OSError:
        log.warning("verification worker could not start; scanning its range in this process")
        return None


def _scan(
    conn: sqlite3.Connection, path: Path | None, ranges: Sequence[tuple[int, int]], *, chunk: int, sizes: Sequence[int],
    gapless: bool, here: bool,
) -> list[dict]:
    """Scan the first range here (if ``here``), inside the caller's read transaction, the others in workers."""
    remote = ranges[1:] if here else ranges
    # Workers open the SQLite file themselves; any other source is scanned here.
    workers = [(_start_worker(path, lo, hi, chunk, sizes) if path is not None else None, (lo, hi)) for lo, hi in remote]
    try:
        results = [scan.scan_range(conn, *ranges[0], chunk=chunk, sizes=sizes, gapless=gapless)] if here else []
        conn.execute("COMMIT")
        for worker, (lo, hi) in workers:
            result = worker.result() if worker is not None else None
            if result is None:
                if worker is not None:
                    log.warning("verification worker failed; scanning its range in this process")
                result = scan.scan_range(conn, lo, hi, chunk=chunk, sizes=sizes)
            results.append(result)
        return results
    finally:
        for worker, _ in workers:
            if worker is not None and worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _roots(results: Sequence[dict], sizes: Sequence[int], chunk: int) -> dict[int, bytes]:
    """RFC 6962 root at every size in ``sizes`` (each at most the number of records scanned).

    The first ``j`` full chunks are perfect subtrees; merged as in a compact range, then
    folded right to left onto the hash of the partial prefix ``[j * chunk, size)``.
    """
    chunk_roots = [bytes.fromhex(h) for r in results for h in r["chunk_roots"]]
    prefix = {int(s): bytes.fromhex(h) for r in results for s, h in r["prefix_roots"].items()}
    roots: dict[int, bytes] = {}
    stack: list[tuple[int, bytes]] = []  # (height in chunks, hash), leftmost first
    pushed = 0
    for size in sorted(set(sizes)):
        if size == 0:
            roots[0] = EMPTY_ROOT
            continue
        j = (size - 1) // chunk
        while pushed < j:
            height, node = 0, chunk_roots[pushed]
            while stack and stack[-1][0] == height:
                node = _node(stack.pop()[1], node)
                height += 1
            stack.append((height, node))
            pushed += 1
        root = prefix[size]
        for _, left in reversed(stack):
            root = _node(left, root)
        roots[size] = root
    return roots


def _pruned_prefix(results: Sequence[dict]) -> tuple[int, tuple[int, str] | None]:
    """(number of pruned bodies, problem if they are not exactly the prefix ``[0, p)``)."""
    nulls = sum(r["nulls"] for r in results)
    seen_body = False
    for r in results:
        if r["null_after_body"] is not None:
            return nulls, (r["null_after_body"], "record body removed (only a prefix may be pruned)")
        if seen_body and r["first_null"] is not None:
            return nulls, (r["first_null"], "record body removed (only a prefix may be pruned)")
        seen_body = seen_body or r["first_body"] is not None
    return nulls, None


def _authorised_cut(conn: sqlite3.Connection, needed: int, hint: int | None, covered: int, origin: str | None) -> int:
    """The largest cut that a prune record inside the verified part ``[0, covered)`` authorises.

    The meta table names where the newest prune record is; it is not signed, so it is
    only a hint: the record there is parsed and checked like any other candidate, and
    if it does not authorise ``needed`` records, every prune record is searched.
    """
    cut = 0
    if hint is not None:
        row = conn.execute("SELECT idx, body FROM records WHERE idx = ?", (hint,)).fetchone()
        cut = _cut_of(row, covered, origin) if row else 0
    if cut < needed:
        rows = conn.execute(
            "SELECT idx, body FROM records WHERE idx < ? AND body IS NOT NULL AND instr(body, ?) > 0",
            (covered, _PRUNE_MARK),
        )
        cut = max([cut, *(_cut_of(row, covered, origin) for row in rows)])
    return cut


def _cut_of(candidate: tuple[int, bytes], covered: int, origin: str | None) -> int:
    idx, body = candidate
    if type(body) is not bytes or idx >= covered:
        return 0
    try:
        record = AuditRecord.from_bytes(body)
        cut = int(record.details.get("cut_index", ""))
    except (ValueError, KeyError, TypeError):
        return 0
    if record.action is not Action.CONFIG_CHANGE or record.details.get("change") != "audit_prune":
        return 0
    if origin is not None and record.node != origin:
        return 0
    return cut if 0 <= cut <= idx else 0


def _open(source: Path | str | object) -> tuple[sqlite3.Connection, Path | None, tuple[type[BaseException], ...]]:
    """(connection, file path or None, errors the database raises) for a log file or a source object."""
    is_file = isinstance(source, (str, Path))
    errors = (sqlite3.Error,) if is_file else (sqlite3.Error, *source.errors)  # type: ignore[attr-defined]
    try:
        if is_file:
            return scan.connect_read_only(str(source)), Path(source), errors
        return source.connect(), None, errors  # type: ignore[attr-defined]
    except errors as exc:
        raise AuditVerificationError(f"audit log unreadable: {exc}") from None


def verify_log(
    path: Path | str | object,
    public_key: ec.EllipticCurvePublicKey,
    *,
    origin: str | None = None,
    workers: int | None = None,
    chunk: int = DEFAULT_CHUNK,
    scan_here: bool = True,
) -> VerifiedLog:
    """Verify the whole log (a SQLite file or ``log.source``); raise :class:`AuditVerificationError` at the first bad index.

    ``workers`` is the number of ranges scanned in parallel (``None``: one per core for a
    large log, else 1); ``chunk`` the records hashed per batch (a power of two). With
    ``scan_here=False`` every range goes to a worker process, so a caller inside a busy
    process (the node's auditor API) does not hold its GIL for the hashing.
    """
    if chunk < 1 or chunk & (chunk - 1):
        raise ValueError("chunk must be a power of two")
    source = path
    conn, path, db_errors = _open(source)
    try:
        try:
            # One transaction, so the reads of this process see one state of the file.
            # Records never change once written (only a prune empties old bodies), so
            # the workers' own snapshots of their ranges agree with it.
            conn.execute("BEGIN")
            count, first_idx, last_idx = conn.execute("SELECT COUNT(*), MIN(idx), MAX(idx) FROM records").fetchone()
            gapless = count == 0 or (first_idx == 0 and last_idx == count - 1)  # idx is a unique integer
            cps = conn.execute("SELECT size, note, signature FROM checkpoints ORDER BY id").fetchall()
            meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('node', ?)", (PRUNE_HINT,)).fetchall())
            sizes = sorted({s for s, _, _ in cps if type(s) is int and 0 <= s <= count})
            gap = None
            if not gapless:
                indices = [row[0] for row in conn.execute("SELECT idx FROM records ORDER BY idx")]
                gap = next(i for i, idx in enumerate([*indices, None]) if idx != i)
            parallel = gapless and path is not None
            ranges = _ranges(count, chunk, (workers or _auto_workers(count)) if parallel else 1)
            # A log with holes is scanned here: the workers select their rows by index.
            results = _scan(conn, path, ranges, chunk=chunk, sizes=sizes, gapless=gapless,
                            here=scan_here or not parallel)  # fmt: skip
        finally:
            conn.close()
    except db_errors as exc:
        raise AuditVerificationError(f"audit log unreadable: {exc}") from None
    origin = origin or meta.get("node")

    # (index, reason) of every problem; the smallest index is reported.
    problems: list[tuple[int, str]] = []
    if gap is not None:
        problems.append((gap, "record missing (gap in the numbering)"))
    size = count
    for (lo, hi), result in zip(ranges, results):
        if result["problem"] is not None:
            problems.append(tuple(result["problem"]))
        if result["scanned"] != hi - lo:  # rows vanished after they were counted
            size = min(size, lo + result["scanned"])
            problems.append((lo + result["scanned"], "record missing (removed during verification)"))
    pruned, bad_prune = _pruned_prefix(results)
    if bad_prune is not None:
        problems.append(bad_prune)
    roots = _roots(results, [s for s in sizes if s <= size], chunk)

    latest: Checkpoint | None = None
    good_size = 0  # every leaf below this index is covered by a matching checkpoint
    for number, (size_column, note, signature) in enumerate(cps):
        try:
            checkpoint = verify_checkpoint(bytes(note), bytes(signature), public_key, origin=origin)
        except (AuditVerificationError, TypeError) as exc:
            reason = exc.reason if isinstance(exc, AuditVerificationError) else "malformed checkpoint row"
            raise AuditVerificationError(f"checkpoint {number}: {reason}") from None
        if size_column != checkpoint.size:
            raise AuditVerificationError(f"checkpoint {number}: size column differs from the signed size")
        if latest is not None and (checkpoint.size < latest.size or checkpoint.time < latest.time):
            raise AuditVerificationError(f"checkpoint {number}: goes back in size or time")
        latest = checkpoint
        if checkpoint.size > size:
            problems.append((size, f"log truncated below signed size {checkpoint.size}"))
            break
        if roots.get(checkpoint.size) != checkpoint.root:
            problems.append(
                (good_size, f"records in [{good_size}, {checkpoint.size}) differ from checkpoint {number}")
            )
            break
        good_size = max(good_size, checkpoint.size)

    if size and latest is None:
        problems.append((0, "no signed checkpoint covers the log"))
    if pruned and not problems:
        hint = meta.get(PRUNE_HINT)
        try:
            conn, _, _ = _open(source)
            try:
                hinted = int(hint) if hint and hint.isdigit() else None
                cut = _authorised_cut(conn, pruned, hinted, good_size, origin)
            finally:
                conn.close()
        except db_errors as exc:
            raise AuditVerificationError(f"audit log unreadable: {exc}") from None
        if cut < pruned:
            problems.append((cut, "record bodies removed beyond what a signed prune record allows"))
    if problems:
        index, reason = min(problems)
        raise AuditVerificationError(reason, index=index)
    return VerifiedLog(size=size, checkpoints=len(cps), latest=latest, pruned=pruned)
