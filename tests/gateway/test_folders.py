"""The sedex folder interface, driven by real nodes: outbox pair in, identical inbox pair out, receipts back."""

from __future__ import annotations

import asyncio
import os

import pytest

from gateway.audit import Action
from gateway.federation import NodeSpec, build_federation
from gateway.folders import DataFileRefused, ParticipantFolder, inbox_data_name
from gateway.ids import ParticipantId, StatusCode
from gateway.samples import discover
from gateway.receipt import parse_receipt

from ..conftest import KANTON, LUZERN, SAMPLES, XSD
from .nodes import new_message_id, running, sample_envelope

ALL = discover(SAMPLES)
PAIRS = [s for s in ALL if s.envelope is not None]
SCHEMA_PAIRS = [s for s in PAIRS if s.namespace == "http://www.ech.ch/xmlns/eCH-0099/1"]
V1_PAIRS = [s for s in PAIRS if s.namespace == "http://www.ech.ch/xmlns/eCH-0020/1"]
LONE = [s for s in ALL if s.envelope is None and s.namespace and s.namespace.endswith(("eCH-0020/2", "eCH-0045/6"))]


@pytest.fixture
def foldered(tmp_path):
    return build_federation(
        tmp_path / "folders", [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-kanton", [KANTON])],
        schemas=XSD, folders=True, delivery_toml="poll_seconds = 0.05",
    )  # fmt: skip


def drop(folder: ParticipantFolder, sample, clock, recipient=KANTON) -> tuple[str, bytes, bytes]:
    message_id = new_message_id()
    _, envelope, payload = sample_envelope(sample, LUZERN, recipient, clock.now(), message_id)
    suffix = sample.data.suffix
    (folder.paths.outbox / f"data_{message_id}{suffix}").write_bytes(payload)
    (folder.paths.outbox / f"envl_{message_id}.xml").write_bytes(envelope)
    return message_id, envelope, payload


async def settle(folder: ParticipantFolder, clock):
    folder.interface._settle = 0  # files written in full by the test; no writer is still busy
    return await folder.interface.scan_once()


async def test_every_sample_dropped_into_the_outbox_arrives_as_an_identical_pair(foldered, clock):
    """Pairs and lone eCH documents go outbox → inbox byte-identical, with receipt 100 in the sender's receipts/."""
    async with running(foldered, clock) as nodes:
        luzern = ParticipantFolder(nodes["node-luzern"], ParticipantId(LUZERN), foldered.folder(LUZERN))
        kanton = ParticipantFolder(nodes["node-kanton"], ParticipantId(KANTON), foldered.folder(KANTON))
        sent = [(drop(luzern, s, clock), s) for s in SCHEMA_PAIRS + LONE]
        outcomes = await settle(luzern, clock)
        assert len(outcomes) == len(sent) and all(o.status is None or int(o.status) == 100 for o in outcomes), outcomes
        assert sorted(p.name for p in luzern.paths.outbox.iterdir()) == []
        await nodes["node-luzern"].forward_due()
        assert await kanton.pump() == len(sent)
        for (message_id, envelope, payload), sample in sent:
            assert (kanton.paths.inbox / f"data_{message_id}{sample.data.suffix}").read_bytes() == payload
            assert (kanton.paths.inbox / f"envl_{message_id}.xml").read_bytes() == envelope
        await luzern.pump()
        receipts = [parse_receipt(p.read_bytes()) for p in luzern.paths.receipts.iterdir()]
        assert sorted(r.message_id for r in receipts) == sorted(m for (m, _, _), _ in sent)
        assert {int(r.status) for r in receipts} == {100}
        assert nodes["node-kanton"].store.inbox(KANTON) == [], "folder delivery acknowledges the inbox"


async def test_a_refused_pair_gets_its_receipt_and_the_originals_are_kept(foldered, clock):
    """An eCH-0020 v1 pair on a schema-valid route: receipt 200 in receipts/, both files moved to failed/."""
    async with running(foldered, clock) as nodes:
        luzern = ParticipantFolder(nodes["node-luzern"], ParticipantId(LUZERN), foldered.folder(LUZERN))
        message_id, _, _ = drop(luzern, V1_PAIRS[0], clock)
        await settle(luzern, clock)
        receipts = [parse_receipt(p.read_bytes()) for p in luzern.paths.receipts.iterdir()]
        assert [(r.message_id, int(r.status)) for r in receipts] == [(message_id, 200)]
        assert sorted(p.name for p in luzern.paths.failed.iterdir()) == sorted([f"data_{message_id}.xml", f"envl_{message_id}.xml"])
        assert nodes["node-luzern"].store.queued() == []


async def test_a_pair_picked_up_twice_after_a_crash_is_sent_once(foldered, clock):
    """If the node dies between acceptance and the move, the re-scan's submission is idempotent."""
    async with running(foldered, clock) as nodes:
        luzern = ParticipantFolder(nodes["node-luzern"], ParticipantId(LUZERN), foldered.folder(LUZERN))
        message_id, envelope, _ = drop(luzern, SCHEMA_PAIRS[0], clock)
        data = luzern.paths.outbox / f"data_{message_id}.xml"
        await luzern.submit(envelope, data)  # accepted, but the files were never moved
        await settle(luzern, clock)
        assert len(nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)) == 1
        await nodes["node-luzern"].forward_due()
        assert len(nodes["node-kanton"].store.inbox(KANTON)) == 1


@pytest.mark.parametrize(("payload_name", "inbox_name"), [
    ("data_x.xml", "data_{id}.xml"),
    ("Bericht.ZIP", "data_{id}.ZIP"),
    ("archive.tar.gz", "data_{id}.gz"),
    ("no-extension", "data_{id}.xml"),
    ("report.x_y", "data_{id}.bin"),
    ("../../etc/passwd.x-y", "data_{id}.bin"),
    ("a.verylongextension", "data_{id}.bin"),
    ("x.xml/../../.ssh", "data_{id}.xml"),
])  # fmt: skip
def test_the_inbox_name_of_a_payload_keeps_only_a_sedex_shaped_extension(payload_name, inbox_name):
    """The sender's payload name contributes at most a 1-10 letter-or-digit extension; anything else becomes .bin."""
    message_id = new_message_id()
    assert inbox_data_name(message_id, payload_name) == inbox_name.format(id=message_id)


async def test_a_fifo_in_place_of_the_data_file_is_refused_with_200_and_audited(foldered, clock):
    """Submitting a data path that is a FIFO (no writer) is refused at once with 200, audited, and nothing is queued."""
    async with running(foldered, clock) as nodes:
        luzern = ParticipantFolder(nodes["node-luzern"], ParticipantId(LUZERN), foldered.folder(LUZERN))
        message_id, envelope, _ = sample_envelope(SCHEMA_PAIRS[0], LUZERN, KANTON, clock.now(), new_message_id())
        fifo = luzern.paths.outbox / f"data_{message_id}.xml"
        os.mkfifo(fifo)
        with pytest.raises(DataFileRefused) as refused:
            await asyncio.wait_for(luzern.submit(envelope, fifo), timeout=5)
        assert refused.value.status is StatusCode.INVALID_ENVELOPE
        assert [(r.action, r.receipt_code) for _, _, r in nodes["node-luzern"].audit.iter_records()
                if r.message_id == message_id] == [(Action.REFUSED, 200)]  # fmt: skip
        assert nodes["node-luzern"].store.queued() == []
