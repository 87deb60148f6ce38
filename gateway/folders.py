"""Drives the sedex folder interface of every hosted participant that has one.

Outbox pickup submits through the same origin stages as the REST API. Delivered messages
and receipts are pumped from the store into the participant's ``inbox/`` and
``receipts/``; a delivered message is acknowledged in the store only after its files are
written, so a crash in between writes them again (the folder skips an envelope it already has).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import stat
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

from adapters.sedex_folder import FolderInterface, FolderPaths

from .audit import Actor, ActorKind
from .ids import GatewayError, ParticipantId, StatusCode
from .node import Node
from .receipt import parse_receipt

# Inbox deliveries written at once by one pump round (each its own files; see pump()).
PARALLEL_DELIVERIES = 8

log = logging.getLogger("drehscheibe.folders")

_EXTENSION = re.compile(r"[A-Za-z0-9]{1,10}")  # as adapters.sedex_folder accepts in data_<messageId>.<ext>


class ParticipantFolder:
    """Outbox pickup plus inbox and receipt delivery for one hosted participant."""

    def __init__(self, node: Node, participant: ParticipantId, base: Path) -> None:
        self.node = node
        self.participant = participant
        self.paths = FolderPaths.under(base)
        self.paths.create()
        self.interface = FolderInterface(
            participant, self.paths, self.submit, catalog=node.catalog, now=node.clock.now,
            poll_interval=max(node.config.delivery.poll_seconds, 0.05),
            max_future_skew=timedelta(seconds=node.config.delivery.message_date_tolerance_seconds),
        )  # fmt: skip
        self._receipt_cursor = self._load_cursor()

    async def submit(self, envelope_xml: bytes, data_path: Path) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            # Opened in a worker thread, read there too: the outbox is the local system's
            # file system, and nothing it does may stall the event loop (threat model F13).
            handle = await asyncio.to_thread(_open_data_file, data_path)
            try:
                while chunk := await asyncio.to_thread(handle.read, 256 * 1024):
                    yield chunk
            finally:
                handle.close()

        await self.node.submit(envelope_xml, chunks(), payload_name=data_path.name, system=None)

    async def pump(self) -> int:
        """Write delivered messages and new receipts into the folders; returns files written."""
        written = 0
        slots = asyncio.Semaphore(PARALLEL_DELIVERIES)

        async def deliver(entry) -> bool:
            # SECURITY: one message that cannot be written (a broken blob, a full disk) is
            # logged and tried again next round; it never holds up the messages beside it (F14).
            async with slots:
                try:
                    await self._deliver(entry)
                except Exception:  # noqa: BLE001 - isolated per message, retried next round
                    log.exception("folder delivery of message %s to %s failed; the next messages go on", entry.message_id, self.participant)
                    return False
                return True

        # Several at a time: each waits for its files' fsyncs and its acknowledgement's commit,
        # and deliveries in flight together share those waits.
        written += sum(await asyncio.gather(*(deliver(entry) for entry in self.node.store.inbox(str(self.participant)))))
        for row, stored in self.node.store.receipts_for(str(self.participant), self._receipt_cursor):
            await self.interface.write_receipt(parse_receipt(stored.receipt))
            self._save_cursor(row)
            written += 1
        return written

    async def _deliver(self, entry) -> None:
        verified, plaintext = self.node.open_inbox_entry(entry)
        self.node.record_fetch(entry, Actor(ActorKind.LOCAL_SYSTEM, f"sedex-folder:{self.participant}"))
        await self.interface.deliver(entry.envelope, inbox_data_name(entry.message_id, verified.payload_name), plaintext)
        self.node.store.acknowledge(entry, self.node.event("fetched", detail="sedex folder inbox"))
        await self.node.store.durable()  # the file is in the inbox: it must not be written there again

    def _cursor_file(self) -> Path:
        return self.node.config.store / f"folder-receipts-{self.participant}.cursor"

    def _load_cursor(self) -> int:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(self._cursor_file().read_text())
        return 0

    def _save_cursor(self, row: int) -> None:
        self._receipt_cursor = row
        temporary = self._cursor_file().with_suffix(".tmp")
        temporary.write_text(str(row))
        os.replace(temporary, self._cursor_file())

    async def run(self) -> None:
        pickup = asyncio.create_task(self.interface.run(), name=f"outbox-{self.participant}")
        try:
            while True:
                try:
                    await self.pump()
                except Exception:  # noqa: BLE001 - keep pumping; files stay retriable
                    log.exception("folder delivery for %s failed", self.participant)
                await asyncio.sleep(self.node.config.delivery.poll_seconds)
        finally:
            pickup.cancel()
            await asyncio.gather(pickup, return_exceptions=True)


class DataFileRefused(GatewayError):
    """The outbox data file is not a regular file this node may read (a FIFO, device, symlink or gone)."""

    status = StatusCode.INVALID_ENVELOPE


def _open_data_file(path: Path):
    """Open an outbox data file for reading; blocking, so called in a worker thread.

    SECURITY: the local system may swap the file between the scan and this open. O_NOFOLLOW
    refuses a symlink out of the outbox; O_NONBLOCK keeps a FIFO (or device) from blocking
    the open until a writer appears; fstat then admits regular files only (threat model F13).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        raise DataFileRefused("the data file cannot be opened as a regular file") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DataFileRefused("the data file is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def inbox_data_name(message_id: str, payload_name: str) -> str:
    """The sedex name of a delivered payload in ``inbox/``: ``data_<messageId>.<ext>``.

    SECURITY: the extension is the only part taken from the sender's payload name, and only
    when it fits the sedex pattern (1-10 letters or digits); anything else becomes ``bin``,
    so no name a sender chooses can stop or redirect the delivery (threat model F14).
    """
    extension = Path(payload_name).suffix[1:] if Path(payload_name).suffix else "xml"
    if not _EXTENSION.fullmatch(extension):
        extension = "bin"
    return f"data_{message_id}.{extension}"


def participant_folders(node: Node) -> list[ParticipantFolder]:
    return [ParticipantFolder(node, p.id, p.folder) for p in node.config.participants if p.folder is not None]
