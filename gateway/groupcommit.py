"""Group commit: many messages share one fsync, and none is acknowledged before its fsync.

A node acknowledges a message (202 to a local system, receipt 100 or hand-over 601 to a
peer) only once everything it wrote about that message is on disk. Waiting for one fsync
per write on the event loop's thread made the disk the pace of the whole node: while one
message waited for its commit, no other message moved (``docs/benchmarks.md``). Here the
waiting moves to worker threads and is shared:

* :class:`GroupSync` — fsync a fixed set of files (the SQLite WAL of the message store,
  the blob directory) in rounds. Writers note each write with :meth:`GroupSync.written`
  and ``await`` :meth:`GroupSync.durable` before they acknowledge; one round covers every
  write noted before it started, so N concurrent messages cost one or two fsyncs, not N.
* :class:`AuditWriter` — concurrent audit appends are collected while the previous batch
  is being written and go into the log together: one transaction, one fsync.

Both fail closed: if a round fails, every waiter gets the error and acknowledges nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from .audit import AuditLog, AuditRecord, AuditUnavailable

log = logging.getLogger(__name__)


class DurabilityError(OSError):
    """An fsync failed: what was written since the last good round may not be on disk."""


def fsync_path(path: Path) -> None:
    """fsync a file or directory by name (a missing file has nothing to make durable)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class GroupSync:
    """Shared fsync rounds over ``paths``, in the order given.

    Only the event loop's thread calls :meth:`written` and :meth:`durable`: a round takes
    the count of writes noted so far *before* it hands the fsyncs to its thread, so every
    write it reports as durable was already in the kernel when the fsync began.
    """

    def __init__(self, paths: Sequence[Path], *, name: str) -> None:
        self.paths = tuple(paths)
        self.name = name
        self._written = 0
        self._synced = 0
        self._round: asyncio.Future | None = None
        self.rounds = 0  # fsync rounds run (a figure for tests, metrics and benchmarks)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"sync-{name}")

    def written(self) -> None:
        """Note one write that must be durable before it is acknowledged."""
        self._written += 1

    @property
    def pending(self) -> int:
        return self._written - self._synced

    async def durable(self) -> None:
        """Return once every write noted before this call is on disk; raise DurabilityError if not."""
        target = self._written
        while self._synced < target:
            if self._round is None:
                self._round = asyncio.ensure_future(self._run_round())
            await asyncio.shield(self._round)

    async def _run_round(self) -> None:
        covers = self._written
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._fsync_all)
            self._synced = max(self._synced, covers)
            self.rounds += 1
        finally:
            self._round = None

    def _fsync_all(self) -> None:
        try:
            for path in self.paths:
                fsync_path(path)
        except OSError as error:
            # SECURITY/DURABILITY: after a failed fsync the kernel may have dropped the dirty
            # pages; nothing written since the last good round may be acknowledged.
            log.critical("fsync of the %s failed: %s", self.name, error.strerror or error)
            raise DurabilityError(error.errno, f"fsync of the {self.name} failed") from error

    def close(self) -> None:
        self._executor.shutdown(wait=True)


class AuditWriter:
    """Batches concurrent :meth:`append` calls into one audit transaction (one fsync).

    The batch is written by a handle of its own (:meth:`AuditLog.reopen`) in a thread of
    its own, so the event loop goes on while the disk works; handles on one log file
    coordinate through the database, so the node's other appends (configuration,
    reloads) stay correct beside it. A record is durable when :meth:`append` returns.
    """

    def __init__(self, audit: AuditLog, now: Callable[[], datetime]) -> None:
        self._source = audit
        self._now = now
        self._handle: AuditLog | None = None
        self._pending: list[tuple[Sequence[AuditRecord], asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="audit-writer")
        self._lock = threading.Lock()
        self.batches = 0  # transactions written (a figure for tests and benchmarks)

    async def append(self, records: Sequence[AuditRecord]) -> list[int]:
        """Append durably; raise AuditUnavailable (sedex 403) if the batch could not be written."""
        if not records:
            return []
        future = asyncio.get_running_loop().create_future()
        self._pending.append((records, future))
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                records = [record for records, _ in batch for record in records]
                try:
                    indices = await loop.run_in_executor(self._executor, self._write, records, self._now())
                except BaseException as error:  # noqa: BLE001 - every waiter must learn the batch failed
                    failure = error if isinstance(error, AuditUnavailable) else AuditUnavailable("audit log cannot write durably")
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(failure)
                    if not isinstance(error, Exception):
                        raise
                    continue
                self.batches += 1
                start = 0
                for records_of_one, future in batch:
                    if not future.done():
                        future.set_result(indices[start:start + len(records_of_one)])
                    start += len(records_of_one)
        finally:
            self._flusher = None

    def _write(self, records: list[AuditRecord], now: datetime) -> list[int]:
        # Runs in the writer's only thread. A failed append closes the handle's connection
        # itself; the next batch then starts from a fresh one.
        with self._lock:
            if self._handle is None:
                reopen = getattr(self._source, "reopen", None)
                # A log without reopen() (a server database) is shared by both threads.
                self._handle = reopen() if reopen is not None else self._source
            return self._handle.append(records, now=now)

    def close(self) -> None:
        # The handle's SQLite connection belongs to the writer's thread: close it there.
        self._executor.submit(self._close_handle).result()
        self._executor.shutdown(wait=True)

    def _close_handle(self) -> None:
        with self._lock:
            if self._handle is not None and self._handle is not self._source:
                self._handle.close()
            self._handle = None
