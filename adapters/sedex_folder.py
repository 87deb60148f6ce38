"""The sedex-compatible folder interface of one hosted participant.

Register software that already speaks sedex keeps doing so: it writes ``data_<id>.<ext>``
first and ``envl_<id>.xml`` last into ``outbox/``; the envelope's appearance is the
trigger. The interface checks what it can check on its own (envelope syntax and schema,
sender, age, file names), hands the message to the node (``submit``) and moves the files to
``processed/`` — or, when the message is refused, writes an eCH-0090 v2 receipt into
``receipts/`` and moves the originals to ``failed/`` so an operator can fix and resend.
Delivered messages are written into ``inbox/`` atomically, data first, envelope last.

Rules that keep "nothing lost, nothing submitted twice":

* files are only ever moved, never deleted; a refused message's files end in ``failed/``;
* a message is submitted only when its envelope and data file have not changed for
  ``settle`` seconds (a writer that is still writing changes size or mtime);
* on acceptance the envelope is moved first, so a crash before the data file moves leaves
  no trigger behind; the orphaned data file is moved on the next scan;
* a crash between acceptance and the move makes the next scan submit again, which the
  node's idempotent ``submit`` answers without a duplicate.

One :class:`FolderInterface` drives one participant's folders; two processes must not
drive the same folders (the node elects one replica per participant folder).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from gateway.envelope import Envelope, InvalidEnvelope, parse_envelope, read_message_id
from gateway.ids import GatewayError, InvalidIdentifier, ParticipantId, StatusCode, check_message_id
from gateway.receipt import Receipt
from gateway.schemas import SchemaCatalog

log = logging.getLogger(__name__)

# sedex file names; the id part must also be a valid eCH-0090 messageId.
_ENVELOPE_NAME = re.compile(r"envl_([a-zA-Z0-9-]{1,36})\.xml")
_DATA_NAME = re.compile(r"data_([a-zA-Z0-9-]{1,36})\.([A-Za-z0-9]{1,10})")
_TEMPORARY = re.compile(r"(^\.|^~|\.tmp$|\.part$|\.partial$|\.swp$|~$)", re.IGNORECASE)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")

MAX_ENVELOPE_BYTES = 1024 * 1024
MAX_MESSAGE_AGE = timedelta(days=30)
# Clock skew a local system may have; a messageDate further ahead is refused (200), since a
# forged future date would postpone the message's expiry indefinitely (threat model F9).
MAX_FUTURE_SKEW = timedelta(hours=1)


class Submit(Protocol):
    """The node's submission, as the folder interface calls it.

    Returns when the message is durably accepted; raises a :class:`GatewayError` (with
    ``.status`` and ``.info``) when refused. Idempotent: the same envelope and data again
    return normally; a different message with a used messageId raises status 201.
    SECURITY: the node must open ``data_path`` without following symlinks (O_NOFOLLOW).
    """

    def __call__(self, envelope_bytes: bytes, data_path: Path) -> Awaitable[None]: ...


@dataclass(frozen=True, slots=True)
class FolderPaths:
    """The five folders of one participant; all distinct."""

    outbox: Path
    inbox: Path
    receipts: Path
    processed: Path
    failed: Path

    def __post_init__(self) -> None:
        folders = [Path(p) for p in (self.outbox, self.inbox, self.receipts, self.processed, self.failed)]
        if len({p.resolve() for p in folders}) != len(folders):
            raise ValueError("sedex folders must be five distinct directories")

    @classmethod
    def under(cls, base: Path) -> FolderPaths:
        """The sedex layout ``base/{outbox,inbox,receipts,processed,failed}``."""
        base = Path(base)
        return cls(base / "outbox", base / "inbox", base / "receipts", base / "processed", base / "failed")

    def create(self) -> None:
        for folder in (self.outbox, self.inbox, self.receipts, self.processed, self.failed):
            folder.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one scan did with one outbox entry (for logs, metrics and tests)."""

    name: str
    message_id: str
    status: StatusCode


@dataclass(slots=True)
class _Seen:
    signature: tuple
    since: float


class FolderInterface:
    """Outbox pickup, inbox delivery and receipts for one hosted participant.

    ``now`` gives the time for the 30-day age check and receipt dates; ``monotonic``
    measures the grace periods (``settle`` for files still being written, ``data_grace``
    for an envelope whose data file is missing before it is refused with 202).
    """

    def __init__(
        self,
        participant: ParticipantId,
        paths: FolderPaths,
        submit: Callable[[bytes, Path], Awaitable[None]],
        *,
        catalog: SchemaCatalog,
        now: Callable[[], datetime],
        poll_interval: float = 0.5,
        settle: float = 0.2,
        data_grace: float = 60.0,
        max_message_age: timedelta = MAX_MESSAGE_AGE,
        max_future_skew: timedelta = MAX_FUTURE_SKEW,
        notifications: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if poll_interval <= 0 or settle < 0 or data_grace < settle:
            raise ValueError("poll_interval > 0, settle >= 0 and data_grace >= settle are required")
        self.participant = participant
        self.paths = paths
        self._submit = submit
        self._catalog = catalog
        self._now = now
        self._poll_interval = poll_interval
        self._settle = settle
        self._data_grace = data_grace
        self._max_age = max_message_age
        self._max_skew = max_future_skew
        self._notifications = notifications
        self._monotonic = monotonic
        self._seen: dict[str, _Seen] = {}
        self._lock = asyncio.Lock()
        self.notifications_active = False

    # -- pickup ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Pick up outbox messages until cancelled: notifications where available, polling always."""
        self.paths.create()
        wake = asyncio.Event()
        watcher = asyncio.create_task(self._watch(wake), name=f"sedex-watch-{self.participant}") if self._notifications else None
        try:
            while True:
                wake.clear()
                try:
                    await self.scan_once()
                except Exception:  # noqa: BLE001 - the loop must outlive one bad scan
                    # Files stay where they are, so the next scan retries; no content is logged.
                    log.exception("sedex outbox scan failed")
                try:
                    await asyncio.wait_for(wake.wait(), self._next_wakeup())
                except TimeoutError:
                    pass
        finally:
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)

    async def _watch(self, wake: asyncio.Event) -> None:
        try:
            import watchfiles
        except ImportError:  # polling alone still works
            log.warning("watchfiles not installed; sedex outbox is polled only")
            return
        try:
            self.notifications_active = True
            # A short debounce: sedex writers finish with one rename or close of the envelope.
            async for _changes in watchfiles.awatch(self.paths.outbox, debounce=20, step=10, recursive=False):
                wake.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any watcher failure falls back to polling
            log.warning("sedex outbox notifications unavailable, polling only: %s", type(exc).__name__)
        finally:
            self.notifications_active = False

    def _next_wakeup(self) -> float:
        # Wake early when a file waits for its settle period to end.
        if not self._seen:
            return self._poll_interval
        now = self._monotonic()
        soonest = min(seen.since + self._settle - now for seen in self._seen.values())
        return max(0.01, min(self._poll_interval, soonest + 0.01))

    async def scan_once(self) -> list[Outcome]:
        """Handle every complete message in the outbox once; return what was done."""
        async with self._lock:
            return await self._scan()

    async def _scan(self) -> list[Outcome]:
        outcomes: list[Outcome] = []
        try:
            entries = sorted(os.scandir(self.paths.outbox), key=lambda e: e.name)
        except FileNotFoundError:
            return outcomes
        envelopes: dict[str, os.DirEntry] = {}
        data: dict[str, list[os.DirEntry]] = {}
        present: set[str] = set()
        odd_envelopes: list[os.DirEntry] = []
        odd_data: list[os.DirEntry] = []
        for entry in entries:
            name = entry.name
            present.add(name)
            if _TEMPORARY.search(name):
                continue  # a writer's temporary file; it becomes visible under its final name
            if entry.is_symlink():
                # SECURITY: a symlink could point anywhere on the node; never follow it.
                outcomes.append(await self._refuse_file(entry, "symbolic link in outbox refused"))
                continue
            if not entry.is_file(follow_symlinks=False):
                continue  # directories and special files are not messages
            if (match := _ENVELOPE_NAME.fullmatch(name)) is not None:
                envelopes[match.group(1)] = entry
            elif (match := _DATA_NAME.fullmatch(name)) is not None:
                data.setdefault(match.group(1), []).append(entry)
            elif name.startswith("envl_") and name.endswith(".xml"):
                odd_envelopes.append(entry)
            elif name.startswith("data_"):
                odd_data.append(entry)  # can never pair with a valid envelope
            else:
                outcomes.append(await self._refuse_file(entry, "file name is not a sedex message name"))
        for entry in odd_envelopes:
            # SECURITY: an envelope whose id is no messageId is refused, not guessed at; its
            # data file (same odd id) goes with it so the operator finds the pair together.
            prefix = "data_" + entry.name[len("envl_"):-len(".xml")] + "."
            partners = [d for d in odd_data if d.name.startswith(prefix)]
            outcomes.append(await self._refuse_unreadable(entry, partners, "envelope file name is not envl_<messageId>.xml"))
        # Forget files that disappeared (moved by us or by the writer).
        for name in list(self._seen):
            if name not in present:
                del self._seen[name]
        # One pair after the other, in name order: of two pairs whose envelopes carry one
        # messageId, the first is taken and the second answered as a duplicate, always.
        for message_id, envelope_entry in envelopes.items():
            outcome = await self._handle(message_id, envelope_entry, data.pop(message_id, []))
            if outcome is not None:
                outcomes.append(outcome)
        for message_id, orphans in data.items():
            await self._finish_orphans(message_id, orphans)
        return outcomes

    def _stable(self, entries: list[os.DirEntry]) -> bool:
        """True when none of ``entries`` changed for ``settle`` seconds."""
        now = self._monotonic()
        stable = True
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            signature = (st.st_size, st.st_mtime_ns, st.st_ino)
            seen = self._seen.get(entry.name)
            if seen is None or seen.signature != signature:
                self._seen[entry.name] = _Seen(signature, now)
                stable = stable and self._settle == 0
            elif now - seen.since < self._settle:
                stable = False
        return stable

    async def _handle(self, message_id: str, envelope_entry: os.DirEntry, data_entries: list[os.DirEntry]) -> Outcome | None:
        if not self._stable([envelope_entry, *data_entries]):
            return None
        envelope_path = Path(envelope_entry.path)
        try:
            envelope_bytes = await asyncio.to_thread(_read_nofollow, envelope_path, MAX_ENVELOPE_BYTES)
        except OSError:
            # Gone, replaced by a symlink, or too large: refuse unless it vanished.
            if not envelope_path.exists():
                return None
            return await self._refuse_unreadable(envelope_entry, data_entries, "envelope cannot be read")
        try:
            envelope = parse_envelope(envelope_bytes, self._catalog)
        except InvalidEnvelope:
            return await self._refuse_unreadable(envelope_entry, data_entries, "invalid envelope", envelope_bytes)
        if not data_entries:
            waited = self._monotonic() - self._seen[envelope_entry.name].since
            if waited < self._data_grace:
                return None  # the data file may still be on its way
            return await self._refuse(envelope, [envelope_entry], StatusCode.NO_PAYLOAD,
                                      f"no data file for {envelope_entry.name} after {self._data_grace:g} s")
        if len(data_entries) > 1:
            return await self._refuse(envelope, [envelope_entry, *data_entries], StatusCode.INVALID_ENVELOPE,
                                      f"more than one data file for {envelope_entry.name}")
        files = [envelope_entry, data_entries[0]]
        if envelope.sender != self.participant:
            return await self._refuse(envelope, files, StatusCode.UNKNOWN_SENDER,
                                      f"senderId {envelope.sender} is not this folder's participant {self.participant}")
        if envelope.message_date < self._now() - self._max_age:
            return await self._refuse(envelope, files, StatusCode.MESSAGE_TOO_OLD,
                                      f"messageDate older than {self._max_age.days} days")
        if envelope.message_date > self._now() + self._max_skew:
            return await self._refuse(envelope, files, StatusCode.INVALID_ENVELOPE,
                                      f"messageDate more than {self._max_skew.total_seconds():g} seconds in the future")
        try:
            await self._submit(envelope_bytes, Path(data_entries[0].path))
        except GatewayError as exc:
            if exc.status.is_temporary_failure:
                # Temporary (4xx/5xx): the files stay and the next scan tries again.
                log.warning("sedex submit failed temporarily", extra={"message_id": envelope.message_id, "status": int(exc.status)})
                self._seen.pop(envelope_entry.name, None)
                return Outcome(envelope_entry.name, envelope.message_id, exc.status)
            return await self._refuse(envelope, files, exc.status, exc.info)
        # Envelope first: without its trigger, a half-finished move is never resubmitted.
        await asyncio.to_thread(_move_aside, envelope_path, self.paths.processed)
        await asyncio.to_thread(_move_aside, Path(data_entries[0].path), self.paths.processed)
        log.info("sedex message accepted", extra={"message_id": envelope.message_id})
        return Outcome(envelope_entry.name, envelope.message_id, StatusCode.DELIVERED)

    async def _finish_orphans(self, message_id: str, orphans: list[os.DirEntry]) -> None:
        # A crash between the two moves of an accepted message leaves the data file behind.
        if (self.paths.processed / f"envl_{message_id}.xml").exists():
            for entry in orphans:
                await asyncio.to_thread(_move_aside, Path(entry.path), self.paths.processed)

    # -- refusals -------------------------------------------------------------------------

    async def _refuse(self, envelope: Envelope, entries: list[os.DirEntry], status: StatusCode, info: str) -> Outcome:
        now = self._now()
        for recipient in envelope.recipients:
            await self.write_receipt(Receipt.for_envelope(envelope, recipient, status, info, now))
        await self._move_to_failed(entries)
        log.info("sedex message refused", extra={"message_id": envelope.message_id, "status": int(status)})
        return Outcome(entries[0].name, envelope.message_id, status)

    async def _refuse_unreadable(self, envelope_entry: os.DirEntry, data_entries: list[os.DirEntry],
                                 reason: str, envelope_bytes: bytes | None = None) -> Outcome:
        message_id = read_message_id(envelope_bytes) if envelope_bytes else "0"
        return await self._refuse_anonymous([envelope_entry, *data_entries], message_id,
                                            f"{reason}: {_safe(envelope_entry.name)}")

    async def _refuse_file(self, entry: os.DirEntry, reason: str) -> Outcome:
        # The name of an arbitrary file may itself be personal data; it is not quoted.
        return await self._refuse_anonymous([entry], "0", reason)

    async def _refuse_anonymous(self, entries: list[os.DirEntry], message_id: str, info: str) -> Outcome:
        """Status 200 for what has no readable envelope: the receipt speaks for this participant."""
        receipt = Receipt(
            status=StatusCode.INVALID_ENVELOPE,
            status_info=info[:255],
            message_id=message_id,
            message_type=0,
            message_class=0,
            sender=self.participant,
            recipient=self.participant,
            event_date=self._now(),
        )
        await self.write_receipt(receipt)
        await self._move_to_failed(entries)
        log.info("sedex file refused", extra={"message_id": message_id, "status": 200})
        return Outcome(entries[0].name, message_id, StatusCode.INVALID_ENVELOPE)

    async def _move_to_failed(self, entries: list[os.DirEntry]) -> None:
        for entry in entries:
            self._seen.pop(entry.name, None)
            try:
                await asyncio.to_thread(_move_aside, Path(entry.path), self.paths.failed)
            except FileNotFoundError:
                pass  # the writer removed it meanwhile; nothing of ours is lost

    # -- receipts and delivery ------------------------------------------------------------

    async def write_receipt(self, receipt: Receipt) -> Path:
        """Write ``receipt`` atomically into ``receipts/`` as ``receipt_<messageId>.xml``."""
        name = f"receipt_{_id_or_zero(receipt.message_id)}.xml"
        return await asyncio.to_thread(_write_atomic, self.paths.receipts, name, [receipt.to_xml()], False)

    async def deliver(self, envelope_bytes: bytes, data_name: str, chunks: AsyncIterator[bytes]) -> None:
        """Write a delivered message into ``inbox/``: data first, envelope last, each atomically.

        A message whose envelope is already in the inbox is not written again (the node
        delivers once; this guards a retry after a crash).
        """
        envelope = parse_envelope(envelope_bytes, self._catalog)
        match = _DATA_NAME.fullmatch(data_name)
        # SECURITY: the data name becomes a path; only data_<messageId>.<ext> of this message.
        if match is None or match.group(1) != envelope.message_id:
            raise InvalidEnvelope("data file name must be data_<messageId>.<ext> of the delivered envelope")
        envelope_name = f"envl_{envelope.message_id}.xml"
        inbox = self.paths.inbox
        if (inbox / envelope_name).exists():
            return
        temporary = inbox / f".{data_name}.{uuid.uuid4().hex}.tmp"
        handle = await asyncio.to_thread(_open_exclusive, temporary)
        try:
            async for chunk in chunks:
                await asyncio.to_thread(handle.write, chunk)
            await asyncio.to_thread(_fsync_close, handle)
        except BaseException:
            handle.close()
            temporary.unlink(missing_ok=True)
            raise
        await asyncio.to_thread(_publish, temporary, inbox / data_name)
        await asyncio.to_thread(_write_atomic, inbox, envelope_name, [envelope_bytes], True)


# -- file helpers (blocking; called through asyncio.to_thread) ---------------------------------


def _safe(name: str) -> str:
    return _SAFE_NAME.sub("?", name)[:80]


def _id_or_zero(message_id: str) -> str:
    try:
        return check_message_id(message_id)
    except InvalidIdentifier:
        return "0"


def _read_nofollow(path: Path, limit: int) -> bytes:
    # SECURITY: O_NOFOLLOW so a file swapped for a symlink after the scan is not followed.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError("not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OSError("envelope too large")
    return data


def _open_exclusive(path: Path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    return os.fdopen(fd, "wb")


def _fsync_close(handle) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(temporary: Path, final: Path) -> None:
    """Give a complete, fsynced file its final name (atomic within one file system)."""
    os.replace(temporary, final)
    _fsync_dir(final.parent)


def _free_name(directory: Path, name: str) -> Path:
    candidate = directory / name
    stem, dot, suffix = name.partition(".")
    number = 1
    while candidate.exists() or candidate.is_symlink():
        candidate = directory / f"{stem}.{number}{dot}{suffix}"
        number += 1
    return candidate


def _write_atomic(directory: Path, name: str, parts: list[bytes], replace: bool) -> Path:
    final = directory / name if replace else _free_name(directory, name)
    temporary = directory / f".{name}.{uuid.uuid4().hex}.tmp"
    handle = _open_exclusive(temporary)
    try:
        for part in parts:
            handle.write(part)
        _fsync_close(handle)
    except BaseException:
        handle.close()
        temporary.unlink(missing_ok=True)
        raise
    _publish(temporary, final)
    return final


def _move_aside(source: Path, directory: Path) -> Path:
    """Move (never copy, never delete) ``source`` into ``directory`` under a free name.

    ``os.rename`` moves a symlink itself, not its target.
    """
    target = _free_name(directory, source.name)
    os.rename(source, target)
    _fsync_dir(directory)
    return target
