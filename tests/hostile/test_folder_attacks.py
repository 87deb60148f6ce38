"""The sedex folder interface under attack, driven by real nodes: symlinks, odd names, huge and special files, hostile names."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from gateway.federation import NodeSpec, build_federation
from gateway.folders import ParticipantFolder
from gateway.ids import ParticipantId
from gateway.receipt import parse_receipt

from ..conftest import XSD
from ..gateway.nodes import ciphertexts, running
from .hostile import DELIVERY, KANTON, LUZERN, assert_nothing_stored, message, new_message_id, pair_federation, store_bytes, submit


@pytest.fixture
def foldered(tmp_path):
    return pair_federation(tmp_path / "folders", folders=True, route_payload={KANTON: "well-formed"})


def folder_of(nodes, federation, participant=LUZERN) -> ParticipantFolder:
    node = nodes[federation.node_of(participant).id]
    folder = ParticipantFolder(node, ParticipantId(participant), federation.folder(participant))
    folder.interface._settle = 0  # the test writes whole files; no writer is still busy
    return folder


def receipts(folder: ParticipantFolder) -> list:
    return [parse_receipt(p.read_bytes()) for p in sorted(folder.paths.receipts.iterdir())]


def names(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------------------------------ symlinks


@pytest.mark.parametrize("which", ["envelope", "data", "both"])
async def test_a_symlink_to_a_secret_in_the_outbox_is_refused_and_never_followed(foldered, clock, tmp_path, which):
    """An outbox entry that is a symlink (here to the node's own TLS private key) is refused with 200 and moved to failed/
    as the link itself (its genuine partner file, if any, waits in outbox/); the secret is never read, sealed or sent."""
    async with running(foldered, clock) as nodes:
        folder = folder_of(nodes, foldered)
        secret = nodes["node-luzern"].config.tls.private_key
        message_id, envelope, payload = message(clock)
        data_path, envelope_path = folder.paths.outbox / f"data_{message_id}.xml", folder.paths.outbox / f"envl_{message_id}.xml"
        data_path.symlink_to(secret) if which in ("data", "both") else data_path.write_bytes(payload)
        envelope_path.symlink_to(secret) if which in ("envelope", "both") else envelope_path.write_bytes(envelope)
        outcomes = await folder.interface.scan_once()
        assert outcomes and all(int(o.status) == 200 for o in outcomes), outcomes
        failed = list(folder.paths.failed.iterdir())
        assert failed and all(p.is_symlink() for p in failed), "only the links are moved aside, as links"
        assert not any(p.is_symlink() for p in folder.paths.outbox.iterdir())
        assert all(r.status == 200 for r in receipts(folder))
        await nodes["node-luzern"].forward_due()
        assert_nothing_stored(*nodes.values())
        assert secret.read_bytes()[40:80] not in store_bytes(nodes["node-luzern"])


# ------------------------------------------------------------------------------------------ odd names

ODD_NAMES = {
    # name: expected ("refused": receipt 200, moved to failed/; "ignored": left where it is, no receipt)
    "envl_ä.xml": "refused",
    "envl_a b.xml": "refused",
    "envl_" + "a" * 37 + ".xml": "refused",
    "envl_x\nid.xml": "refused",
    "envl_x.xml.exe": "refused",
    "ENVL_X.XML": "refused",
    "envl_..xml": "refused",
    "readme.txt": "refused",
    "envl_x;rm -rf ~.xml": "refused",
    ".envl_x.xml": "ignored",
    "~envl_x.xml": "ignored",
    "envl_x.xml.part": "ignored",
    "envl_x.xml.tmp": "ignored",
}


@pytest.mark.parametrize("name", list(ODD_NAMES))
async def test_an_odd_file_name_in_the_outbox_is_refused_or_ignored_never_submitted(foldered, clock, name):
    """Names outside the sedex pattern never reach the node: they get a 200 receipt (the name itself is not quoted, it may be
    personal data) and move to failed/, or, if they are a writer's temporary file, they are left alone."""
    async with running(foldered, clock) as nodes:
        folder = folder_of(nodes, foldered)
        _, envelope, _ = message(clock)
        (folder.paths.outbox / name).write_bytes(envelope)
        await folder.interface.scan_once()
        if ODD_NAMES[name] == "refused":
            assert names(folder.paths.outbox) == [] and names(folder.paths.failed) == [name]
            (receipt,) = receipts(folder)
            assert receipt.status == 200 and receipt.status_info.isascii() and "\n" not in receipt.status_info
        else:
            assert names(folder.paths.outbox) == [name] and receipts(folder) == []
        assert_nothing_stored(*nodes.values())


async def test_a_directory_or_a_fifo_named_like_a_message_neither_blocks_nor_is_submitted(foldered, clock):
    """A FIFO named data_<id>.xml (a read would block for ever) and a directory named envl_<id>.xml are not messages."""
    async with running(foldered, clock) as nodes:
        folder = folder_of(nodes, foldered)
        message_id, envelope, _ = message(clock)
        os.mkfifo(folder.paths.outbox / f"data_{message_id}.xml")
        (folder.paths.outbox / f"envl_{message_id}.xml").write_bytes(envelope)
        (folder.paths.outbox / f"envl_{new_message_id()}.xml").mkdir()
        started = time.monotonic()
        await asyncio.wait_for(folder.interface.scan_once(), timeout=5)
        assert time.monotonic() - started < 2
        assert_nothing_stored(*nodes.values())


# ------------------------------------------------------------------------------------------ huge files


async def test_an_envelope_file_above_one_mib_is_refused_without_being_read_whole(foldered, clock):
    """A 4 MiB envelope file is refused with 200 ("envelope cannot be read"); nothing is submitted."""
    async with running(foldered, clock) as nodes:
        folder = folder_of(nodes, foldered)
        message_id, envelope, payload = message(clock)
        (folder.paths.outbox / f"data_{message_id}.xml").write_bytes(payload)
        (folder.paths.outbox / f"envl_{message_id}.xml").write_bytes(envelope.replace(b"</eCH", b"<!--" + b"x" * 4 * 2**20 + b"--></eCH", 1))
        (outcome,) = await folder.interface.scan_once()
        assert int(outcome.status) == 200
        assert_nothing_stored(*nodes.values())


async def test_a_sparse_data_file_above_the_payload_limit_is_refused_with_330(tmp_path, clock):
    """A data file (sparse: 64 MiB of apparent size) above max_payload_bytes is refused with 330; no blob is left."""
    limits = "[limits]\nmax_payload_bytes = 1048576\nin_memory_payload_bytes = 65536"
    federation = build_federation(tmp_path / "limited", [NodeSpec("node-luzern", [LUZERN], extra_toml=limits), NodeSpec("node-kanton", [KANTON])],
                                  schemas=XSD, route_payload={KANTON: "any"}, delivery_toml=DELIVERY, folders={LUZERN})  # fmt: skip
    async with running(federation, clock) as nodes:
        folder = folder_of(nodes, federation)
        message_id, envelope, _ = message(clock)
        with open(folder.paths.outbox / f"data_{message_id}.bin", "wb") as handle:
            handle.truncate(64 * 2**20)
        (folder.paths.outbox / f"envl_{message_id}.xml").write_bytes(envelope)
        (outcome,) = await folder.interface.scan_once()
        assert int(outcome.status) == 330
        assert sorted(names(folder.paths.failed)) == sorted([f"data_{message_id}.bin", f"envl_{message_id}.xml"])
        assert nodes["node-luzern"].store.queued() == [] and ciphertexts(nodes["node-luzern"].store) == []


# ----------------------------------------------------------------------------- races and hostile names


# Regression (F13, fixed): gateway/folders.py _open_data_file opens with O_NONBLOCK | O_NOFOLLOW in a worker thread
# and admits regular files only.
async def test_a_data_file_swapped_for_a_fifo_after_the_scan_does_not_block_the_node(foldered, clock):
    """Submitting a data path that became a FIFO is refused without stalling the node's event loop."""
    async with running(foldered, clock) as nodes:
        folder = folder_of(nodes, foldered)
        _, envelope, _ = message(clock)
        fifo = folder.paths.outbox / f"data_{new_message_id()}.xml"
        os.mkfifo(fifo)

        def late_writer():  # unblocks the test after 1.5 s whatever happens
            time.sleep(1.5)
            with open(fifo, "wb"):
                pass

        threading.Thread(target=late_writer, daemon=True).start()
        beats, stop = [], asyncio.Event()

        async def heartbeat():
            while not stop.is_set():
                beats.append(time.monotonic())
                await asyncio.sleep(0.05)

        ticker = asyncio.create_task(heartbeat())
        await asyncio.sleep(0.1)
        try:
            await asyncio.wait_for(folder.submit(envelope, fifo), timeout=5)
        except Exception:  # noqa: BLE001 - a refusal is the right outcome; the stall is what is measured
            pass
        await asyncio.sleep(0)  # the heartbeat takes its turn as soon as the loop is free again
        beats.append(time.monotonic())
        stop.set()
        await ticker
        longest = max(b - a for a, b in zip(beats, beats[1:]))
        print(f"longest event-loop stall while submitting a FIFO: {longest:.2f} s over {len(beats)} beats")
        assert longest < 0.5, f"the event loop stood still for {longest:.1f} s"


# Regression (F14, fixed): gateway/folders.py inbox_data_name keeps only a sedex-shaped extension, and pump delivers
# each message on its own.
async def test_a_hostile_payload_name_from_another_node_cannot_block_the_recipients_folder_inbox(foldered, clock):
    """A payload named 'report.x_y' by the sender is still written to the recipient's inbox/ under a sedex name, and the
    messages after it are delivered too."""
    async with running(foldered, clock) as nodes:
        kanton = folder_of(nodes, foldered, KANTON)
        sent = []
        for name in ("report.x_y", "data.xml"):
            message_id, envelope, payload = message(clock)
            assert (await submit(foldered, LUZERN, envelope, payload, name=name))[0] == 202
            sent.append(message_id)
            clock.advance(seconds=1)
        await nodes["node-luzern"].forward_due()
        try:
            await kanton.pump()
        except Exception:  # noqa: BLE001 - what matters is what reached inbox/
            pass
        delivered = {n.split("_", 1)[1].split(".")[0] for n in names(kanton.paths.inbox) if n.startswith("envl_")}
        assert delivered == set(sent), names(kanton.paths.inbox)
