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
from collections.abc import AsyncIterator
from pathlib import Path

from adapters.sedex_folder import FolderInterface, FolderPaths

from .audit import Actor, ActorKind
from .ids import ParticipantId
from .node import Node
from .receipt import parse_receipt

log = logging.getLogger("drehscheibe.folders")


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
        )  # fmt: skip
        self._receipt_cursor = self._load_cursor()

    async def submit(self, envelope_xml: bytes, data_path: Path) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            # SECURITY: the outbox belongs to the local system; never follow a symlink out of it.
            fd = os.open(data_path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as handle:
                while chunk := handle.read(256 * 1024):
                    yield chunk
                    await asyncio.sleep(0)

        await self.node.submit(envelope_xml, chunks(), payload_name=data_path.name, system=None)

    async def pump(self) -> int:
        """Write delivered messages and new receipts into the folders; returns files written."""
        written = 0
        for entry in self.node.store.inbox(str(self.participant)):
            verified, plaintext = self.node.open_inbox_entry(entry)
            self.node.record_fetch(entry, Actor(ActorKind.LOCAL_SYSTEM, f"sedex-folder:{self.participant}"))
            suffix = Path(verified.payload_name).suffix or ".xml"
            await self.interface.deliver(entry.envelope, f"data_{entry.message_id}{suffix}", plaintext)
            self.node.store.acknowledge(entry, self.node.event("fetched", detail="sedex folder inbox"))
            written += 1
        for row, stored in self.node.store.receipts_for(str(self.participant), self._receipt_cursor):
            await self.interface.write_receipt(parse_receipt(stored.receipt))
            self._save_cursor(row)
            written += 1
        return written

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


def participant_folders(node: Node) -> list[ParticipantFolder]:
    return [ParticipantFolder(node, p.id, p.folder) for p in node.config.participants if p.folder is not None]
