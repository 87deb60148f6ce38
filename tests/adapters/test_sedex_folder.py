"""The sedex folder interface: outbox pickup, refusals as receipts, atomic inbox delivery."""

from __future__ import annotations

import asyncio
import os
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from adapters import sedex_folder
from adapters.sedex_folder import FolderInterface, FolderPaths
from gateway.envelope import Envelope, InvalidEnvelope, parse_envelope
from gateway.ids import GatewayError, ParticipantId, StatusCode
from gateway.receipt import Receipt, parse_receipt

from .conftest import SAMPLES

SEDEX_MH = SAMPLES / "sedex-message-handler"
ME = ParticipantId("1-1061-1")
SETTLE = 0.2
GRACE = 5.0


def sample_pairs() -> list[tuple[Path, Path]]:
    pairs = []
    for envelope in sorted(SAMPLES.rglob("envl_*.xml")):
        data = envelope.with_name("data_" + envelope.name[len("envl_"):])
        if data.exists():
            pairs.append((envelope, data))
    return pairs


@dataclass
class Clock:
    """Injected time: wall time for message ages and receipts, monotonic for grace periods."""

    wall: datetime = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    mono: float = 1000.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


class Crash(Exception):
    """Stands for the node process dying in the middle of a submission."""


@dataclass
class RecordingSubmit:
    """A small idempotent node: remembers accepted messages by messageId."""

    accepted: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)
    calls: list[tuple[bytes, str, bytes]] = field(default_factory=list)
    refuse: GatewayError | None = None
    crash_after_accept: bool = False
    received: asyncio.Event | None = None

    async def __call__(self, envelope_bytes: bytes, data_path: Path) -> None:
        data = data_path.read_bytes()
        self.calls.append((envelope_bytes, data_path.name, data))
        if self.refuse is not None:
            raise self.refuse
        message_id = parse_envelope(envelope_bytes, None).message_id
        known = self.accepted.get(message_id)
        if known is None:
            self.accepted[message_id] = (envelope_bytes, data)
        elif known != (envelope_bytes, data):
            raise GatewayError("duplicate message ID", status=StatusCode.DUPLICATE_MESSAGE_ID)
        if self.received is not None:
            self.received.set()
        if self.crash_after_accept:
            self.crash_after_accept = False
            raise Crash()


def make_folder(tmp_path: Path, submit, clock: Clock, catalog, participant: ParticipantId = ME, **options) -> FolderInterface:
    paths = FolderPaths.under(tmp_path / "sedex")
    paths.create()
    options.setdefault("notifications", False)
    return FolderInterface(participant, paths, submit, catalog=catalog, now=clock.now, monotonic=clock.monotonic,
                           settle=options.pop("settle", SETTLE), data_grace=options.pop("data_grace", GRACE), **options)


async def settled_scan(folder: FolderInterface, clock: Clock) -> list:
    """Scan, let the settle period pass, scan again: what a running node does."""
    first = await folder.scan_once()
    clock.advance(SETTLE)
    return first + await folder.scan_once()


def receipts(folder: FolderInterface, catalog) -> list[Receipt]:
    return [parse_receipt(p.read_bytes(), catalog) for p in sorted(folder.paths.receipts.glob("receipt_*.xml"))]


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def envelope_for(message_id: str, clock: Clock, sender: ParticipantId = ME, version: str = "2.0") -> bytes:
    return Envelope(
        message_id=message_id, message_type=20201, message_class=0, sender=sender,
        recipients=(ParticipantId("2-LU-1"),), event_date=clock.now(), message_date=clock.now(), version=version,
    ).to_xml()


def drop(folder: FolderInterface, message_id: str, envelope: bytes, data: bytes, ext: str = "xml") -> None:
    (folder.paths.outbox / f"data_{message_id}.{ext}").write_bytes(data)
    (folder.paths.outbox / f"envl_{message_id}.xml").write_bytes(envelope)


# -- real sample pairs -------------------------------------------------------------------------


@pytest.mark.parametrize("pair", sample_pairs(), ids=lambda p: p[0].parent.name)
async def test_every_sample_pair_is_submitted_with_identical_bytes(tmp_path, catalog, pair):
    """A real sedex pair dropped by its sender is submitted byte for byte and moved to processed."""
    envelope_path, data_path = pair
    envelope = parse_envelope(envelope_path.read_bytes(), catalog)
    clock = Clock(wall=envelope.message_date + timedelta(days=1))
    submit = RecordingSubmit()
    folder = make_folder(tmp_path, submit, clock, catalog, participant=envelope.sender)
    drop(folder, envelope_path.name[5:-4], envelope_path.read_bytes(), data_path.read_bytes())

    outcomes = await settled_scan(folder, clock)

    assert [o.status for o in outcomes] == [StatusCode.DELIVERED]
    assert submit.calls == [(envelope_path.read_bytes(), data_path.name, data_path.read_bytes())]
    assert names(folder.paths.processed) == sorted([envelope_path.name, data_path.name])
    assert names(folder.paths.outbox) == [] and names(folder.paths.receipts) == []


def test_sample_pairs_are_found():
    """The sample corpus provides the pairs the parametrised test runs on."""
    assert len(sample_pairs()) >= 33


async def test_an_old_sample_is_refused_with_203_and_kept(tmp_path, catalog):
    """A message whose messageDate is more than 30 days old gets receipt 203 and its files go to failed."""
    envelope_path = next(SAMPLES.glob("ech0099-v1-sempach/*/envl_*.xml"))
    data_path = next(envelope_path.parent.glob("data_*.xml"))
    envelope = parse_envelope(envelope_path.read_bytes(), catalog)
    clock = Clock(wall=envelope.message_date + timedelta(days=31))
    submit = RecordingSubmit()
    folder = make_folder(tmp_path, submit, clock, catalog, participant=envelope.sender)
    drop(folder, envelope.message_id, envelope_path.read_bytes(), data_path.read_bytes())

    await settled_scan(folder, clock)

    [receipt] = receipts(folder, catalog)
    assert (receipt.status, receipt.message_id, receipt.recipient) == (StatusCode.MESSAGE_TOO_OLD, envelope.message_id, ParticipantId("3-CH-1"))
    assert submit.calls == []
    assert names(folder.paths.failed) == sorted([envelope_path.name, data_path.name])
    assert (folder.paths.failed / data_path.name).read_bytes() == data_path.read_bytes()


async def test_a_sample_dated_more_than_the_tolerated_skew_ahead_is_refused_with_200_and_kept(tmp_path, catalog):
    """A messageDate two hours ahead of the node's clock (one hour of skew is tolerated) gets receipt 200, is not submitted and goes to failed."""
    envelope_path = next(SAMPLES.glob("ech0099-v1-sempach/*/envl_*.xml"))
    data_path = next(envelope_path.parent.glob("data_*.xml"))
    envelope = parse_envelope(envelope_path.read_bytes(), catalog)
    clock = Clock(wall=envelope.message_date - timedelta(hours=2))
    submit = RecordingSubmit()
    folder = make_folder(tmp_path, submit, clock, catalog, participant=envelope.sender)
    drop(folder, envelope.message_id, envelope_path.read_bytes(), data_path.read_bytes())

    await settled_scan(folder, clock)

    [receipt] = receipts(folder, catalog)
    assert (receipt.status, receipt.message_id) == (StatusCode.INVALID_ENVELOPE, envelope.message_id)
    assert "future" in receipt.status_info
    assert submit.calls == []
    assert names(folder.paths.failed) == sorted([envelope_path.name, data_path.name])


async def test_a_sample_dated_within_the_tolerated_skew_ahead_is_submitted(tmp_path, catalog):
    """A messageDate half an hour ahead of the node's clock (a local system's clock skew) is submitted as usual."""
    envelope_path = next(SAMPLES.glob("ech0099-v1-sempach/*/envl_*.xml"))
    data_path = next(envelope_path.parent.glob("data_*.xml"))
    envelope = parse_envelope(envelope_path.read_bytes(), catalog)
    clock = Clock(wall=envelope.message_date - timedelta(minutes=30))
    submit = RecordingSubmit()
    folder = make_folder(tmp_path, submit, clock, catalog, participant=envelope.sender)
    drop(folder, envelope.message_id, envelope_path.read_bytes(), data_path.read_bytes())

    assert [o.status for o in await settled_scan(folder, clock)] == [StatusCode.DELIVERED]
    assert len(submit.calls) == 1


async def test_a_v2_envelope_with_a_zip_payload_passes_untouched(tmp_path, catalog):
    """An eCH-0090 v2 envelope with a zip payload (eUmzug style) is submitted without unpacking."""
    clock = Clock()
    submit = RecordingSubmit()
    folder = make_folder(tmp_path, submit, clock, catalog)
    archive = tmp_path / "payload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("eCH-0194.xml", b"<x/>")
        zf.writestr("../escape.txt", b"never unpacked")
    drop(folder, "eumzug-1", envelope_for("eumzug-1", clock), archive.read_bytes(), ext="zip")

    await settled_scan(folder, clock)

    assert [(name, data) for _, name, data in submit.calls] == [("data_eumzug-1.zip", archive.read_bytes())]
    assert not (tmp_path / "escape.txt").exists()


async def test_a_sender_other_than_the_participant_is_refused_with_300(tmp_path, catalog):
    """An envelope whose senderId is not this folder's participant gets receipt 300."""
    clock = Clock()
    submit = RecordingSubmit()
    folder = make_folder(tmp_path, submit, clock, catalog)
    drop(folder, "m1", envelope_for("m1", clock, sender=ParticipantId("1-1059-1")), b"<data/>")

    await settled_scan(folder, clock)

    assert [r.status for r in receipts(folder, catalog)] == [StatusCode.UNKNOWN_SENDER]
    assert submit.calls == [] and names(folder.paths.failed) == ["data_m1.xml", "envl_m1.xml"]


@pytest.mark.parametrize("status", [StatusCode.UNKNOWN_RECIPIENT, StatusCode.INVALID_MESSAGE_TYPE,
                                    StatusCode.INVALID_MESSAGE_CLASS, StatusCode.NOT_ALLOWED_TO_SEND])
async def test_a_refusal_by_the_node_becomes_a_receipt_with_its_code(tmp_path, catalog, status):
    """A permanent refusal from submit is written as a receipt with its code and info; the files go to failed."""
    clock = Clock()
    submit = RecordingSubmit(refuse=GatewayError("refused by node policy", status=status))
    folder = make_folder(tmp_path, submit, clock, catalog)
    drop(folder, "m2", envelope_for("m2", clock), b"<data/>")

    await settled_scan(folder, clock)

    [receipt] = receipts(folder, catalog)
    assert (receipt.status, receipt.status_info, receipt.message_id) == (status, "refused by node policy", "m2")
    assert names(folder.paths.failed) == ["data_m2.xml", "envl_m2.xml"]


async def test_a_temporary_failure_keeps_the_files_for_the_next_scan(tmp_path, catalog):
    """A temporary error (403) writes no receipt and leaves the pair in the outbox until it succeeds."""
    clock = Clock()
    submit = RecordingSubmit(refuse=GatewayError("logging down", status=StatusCode.LOGGING_NOT_REACHABLE))
    folder = make_folder(tmp_path, submit, clock, catalog)
    drop(folder, "m3", envelope_for("m3", clock), b"<data/>")

    await settled_scan(folder, clock)
    assert names(folder.paths.outbox) == ["data_m3.xml", "envl_m3.xml"] and names(folder.paths.receipts) == []

    submit.refuse = None
    await settled_scan(folder, clock)
    assert list(submit.accepted) == ["m3"] and names(folder.paths.processed) == ["data_m3.xml", "envl_m3.xml"]


# -- broken and hostile input ----------------------------------------------------------------


@pytest.mark.parametrize("sample, expected_id", [
    ("envl-94b073dd-41a9-444a-86ae-f02673b10d33/envl_94b073dd-41a9-444a-86ae-f02673b10d33.xml",
     "94b073dd-41a9-444a-86ae-f02673b10d33"),  # 'xlmns' typo: no namespace
    ("envl-95b29548-8482-48d7-801d-1901fa8bf209/envl_95b29548-8482-48d7-801d-1901fa8bf209.xml",
     "95b29548-8482-48d7-801d-1901fa8bf209"),  # two-digit participant prefix
    ("envl-test-xxe/envl_Test_XXE.xml", "0"),  # DOCTYPE / XXE attempt
])
async def test_a_broken_or_hostile_envelope_gets_200_and_is_kept(tmp_path, catalog, sample, expected_id):
    """A broken or hostile envelope gets receipt 200 naming the file; envelope and data are moved to failed intact."""
    clock = Clock()
    submit = RecordingSubmit()
    folder = make_folder(tmp_path, submit, clock, catalog)
    source = SEDEX_MH / sample
    file_id = source.name[len("envl_"):-len(".xml")]
    drop(folder, file_id, source.read_bytes(), b"<payload/>")

    await settled_scan(folder, clock)

    [receipt] = receipts(folder, catalog)
    assert (receipt.status, receipt.message_id) == (StatusCode.INVALID_ENVELOPE, expected_id)
    assert source.name in receipt.status_info
    assert submit.calls == []
    assert (folder.paths.failed / source.name).read_bytes() == source.read_bytes()
    assert (folder.paths.failed / f"data_{file_id}.xml").read_bytes() == b"<payload/>"
    assert names(folder.paths.outbox) == []


async def test_an_envelope_without_data_gets_202_after_the_grace_period(tmp_path, catalog):
    """A valid envelope without a data file waits for the grace period, then gets receipt 202."""
    source = SEDEX_MH / "envl-test8/envl_Test8.xml"
    envelope = parse_envelope(source.read_bytes(), catalog)
    clock = Clock(wall=envelope.message_date + timedelta(hours=1))
    submit = RecordingSubmit()
    folder = make_folder(tmp_path, submit, clock, catalog, participant=envelope.sender)
    (folder.paths.outbox / source.name).write_bytes(source.read_bytes())

    await settled_scan(folder, clock)
    clock.advance(GRACE - 2 * SETTLE)
    await folder.scan_once()
    assert names(folder.paths.receipts) == [] and names(folder.paths.outbox) == [source.name]

    clock.advance(2 * SETTLE)
    await folder.scan_once()
    statuses = sorted((r.status, r.recipient) for r in receipts(folder, catalog))
    assert statuses == sorted((StatusCode.NO_PAYLOAD, r) for r in envelope.recipients)
    assert names(folder.paths.failed) == [source.name]


async def test_a_symlink_in_the_outbox_is_moved_aside_and_never_followed(tmp_path, catalog):
    """A data file that is a symlink is refused with 200, moved as a link, and its target is never read or touched."""
    clock = Clock()
    submit = RecordingSubmit()
    folder = make_folder(tmp_path, submit, clock, catalog)
    secret = tmp_path / "secret.key"
    secret.write_bytes(b"private")
    os.symlink(secret, folder.paths.outbox / "data_m4.xml")
    (folder.paths.outbox / "envl_m4.xml").write_bytes(envelope_for("m4", clock))

    await settled_scan(folder, clock)

    assert submit.calls == []
    assert (folder.paths.failed / "data_m4.xml").is_symlink()
    assert secret.read_bytes() == b"private" and not secret.is_symlink()
    assert {r.status for r in receipts(folder, catalog)} == {StatusCode.INVALID_ENVELOPE}
    assert all("secret" not in r.status_info for r in receipts(folder, catalog))


async def test_temporary_files_are_ignored_and_odd_names_are_moved_aside(tmp_path, catalog):
    """Writer temporary files stay untouched; a file with a non-sedex name goes to failed with an anonymous 200 receipt."""
    clock = Clock()
    submit = RecordingSubmit()
    folder = make_folder(tmp_path, submit, clock, catalog)
    for name in (".envl_m5.xml.tmp", "data_m5.xml.part", "~envl_m5.xml"):
        (folder.paths.outbox / name).write_bytes(b"partial")
    (folder.paths.outbox / "Muster_Hans.pdf").write_bytes(b"%PDF")

    await settled_scan(folder, clock)

    assert names(folder.paths.outbox) == sorted([".envl_m5.xml.tmp", "data_m5.xml.part", "~envl_m5.xml"])
    assert names(folder.paths.failed) == ["Muster_Hans.pdf"]
    [receipt] = receipts(folder, catalog)
    assert receipt.status == StatusCode.INVALID_ENVELOPE and "Muster" not in receipt.status_info
    assert submit.calls == []


# -- races ------------------------------------------------------------------------------------


async def test_an_envelope_before_its_data_is_complete_waits_for_the_whole_file(tmp_path, catalog):
    """A data file still growing after its envelope appeared is submitted only once complete, exactly once."""
    clock = Clock()
    submit = RecordingSubmit()
    folder = make_folder(tmp_path, submit, clock, catalog)
    payload = b"<delivery>" + b"x" * 100_000 + b"</delivery>"
    data = folder.paths.outbox / "data_m6.xml"
    data.write_bytes(payload[:1000])
    (folder.paths.outbox / "envl_m6.xml").write_bytes(envelope_for("m6", clock))

    await folder.scan_once()
    clock.advance(SETTLE / 2)
    await folder.scan_once()
    with data.open("ab") as handle:
        handle.write(payload[1000:])
    clock.advance(SETTLE / 2)
    await folder.scan_once()
    assert submit.calls == []

    clock.advance(SETTLE)
    await folder.scan_once()
    await folder.scan_once()
    assert [d for _, _, d in submit.calls] == [payload]


async def test_a_data_file_written_under_a_temporary_name_is_submitted_after_its_rename(tmp_path, catalog):
    """A partially written data file under a temporary name is ignored until it gets its final name."""
    clock = Clock()
    submit = RecordingSubmit()
    folder = make_folder(tmp_path, submit, clock, catalog)
    partial = folder.paths.outbox / "data_m7.xml.part"
    partial.write_bytes(b"<half")

    await settled_scan(folder, clock)
    assert submit.calls == [] and names(folder.paths.outbox) == ["data_m7.xml.part"]

    partial.write_bytes(b"<whole/>")
    partial.rename(folder.paths.outbox / "data_m7.xml")
    (folder.paths.outbox / "envl_m7.xml").write_bytes(envelope_for("m7", clock))
    await settled_scan(folder, clock)
    assert [d for _, _, d in submit.calls] == [b"<whole/>"]


async def test_two_data_files_for_one_message_id_are_refused_together(tmp_path, catalog):
    """Two data files with the same messageId make the pair ambiguous: receipt 200, all three files kept in failed."""
    clock = Clock()
    submit = RecordingSubmit()
    folder = make_folder(tmp_path, submit, clock, catalog)
    (folder.paths.outbox / "data_m8.zip").write_bytes(b"PK")
    drop(folder, "m8", envelope_for("m8", clock), b"<data/>")

    await settled_scan(folder, clock)

    assert submit.calls == []
    assert names(folder.paths.failed) == ["data_m8.xml", "data_m8.zip", "envl_m8.xml"]
    assert [r.status for r in receipts(folder, catalog)] == [StatusCode.INVALID_ENVELOPE]


async def test_a_second_message_with_a_used_message_id_gets_201(tmp_path, catalog):
    """A different message reusing an accepted messageId gets receipt 201; the first one stays the only accepted."""
    clock = Clock()
    submit = RecordingSubmit()
    folder = make_folder(tmp_path, submit, clock, catalog)
    first_envelope = envelope_for("m9", clock)
    drop(folder, "m9", first_envelope, b"<first/>")
    await settled_scan(folder, clock)

    drop(folder, "m9", first_envelope, b"<second/>")
    await settled_scan(folder, clock)

    assert submit.accepted == {"m9": (first_envelope, b"<first/>")}
    assert [r.status for r in receipts(folder, catalog)] == [StatusCode.DUPLICATE_MESSAGE_ID]
    assert (folder.paths.failed / "data_m9.xml").read_bytes() == b"<second/>"
    assert (folder.paths.processed / "data_m9.xml").read_bytes() == b"<first/>"


async def test_a_crash_between_acceptance_and_the_move_submits_once(tmp_path, catalog):
    """After a crash between acceptance and the move, the restarted scan resubmits and the idempotent node keeps one message."""
    clock = Clock()
    submit = RecordingSubmit(crash_after_accept=True)
    folder = make_folder(tmp_path, submit, clock, catalog)
    drop(folder, "m10", envelope_for("m10", clock), b"<data/>")

    with pytest.raises(Crash):
        await settled_scan(folder, clock)
    assert names(folder.paths.outbox) == ["data_m10.xml", "envl_m10.xml"]

    restarted = make_folder(tmp_path, submit, clock, catalog)
    await settled_scan(restarted, clock)

    assert len(submit.calls) == 2 and list(submit.accepted) == ["m10"]
    assert names(restarted.paths.processed) == ["data_m10.xml", "envl_m10.xml"]
    assert names(restarted.paths.receipts) == [] and names(restarted.paths.outbox) == []


async def test_a_data_file_left_behind_after_the_envelope_moved_is_finished_without_resubmission(tmp_path, catalog):
    """A crash between the two moves leaves only the data file; the next scan moves it to processed without submitting."""
    clock = Clock()
    submit = RecordingSubmit()
    folder = make_folder(tmp_path, submit, clock, catalog)
    drop(folder, "m11", envelope_for("m11", clock), b"<data/>")
    os.rename(folder.paths.outbox / "envl_m11.xml", folder.paths.processed / "envl_m11.xml")

    await settled_scan(folder, clock)

    assert submit.calls == [] and names(folder.paths.receipts) == []
    assert names(folder.paths.processed) == ["data_m11.xml", "envl_m11.xml"]


async def test_an_envelope_whose_data_file_appears_later_is_submitted_once_without_202(tmp_path, catalog):
    """An envelope that arrives before its data file waits (no 202 within the grace period) and is submitted once the data is there."""
    clock = Clock()
    submit = RecordingSubmit()
    folder = make_folder(tmp_path, submit, clock, catalog)
    (folder.paths.outbox / "envl_m12.xml").write_bytes(envelope_for("m12", clock))

    await settled_scan(folder, clock)
    clock.advance(GRACE / 2)
    await folder.scan_once()
    assert submit.calls == [] and names(folder.paths.receipts) == []

    (folder.paths.outbox / "data_m12.xml").write_bytes(b"<late/>")
    await settled_scan(folder, clock)
    clock.advance(GRACE)
    await settled_scan(folder, clock)

    assert [d for _, _, d in submit.calls] == [b"<late/>"]
    assert names(folder.paths.receipts) == [] and names(folder.paths.processed) == ["data_m12.xml", "envl_m12.xml"]


async def test_an_envelope_still_being_written_is_not_refused_as_invalid(tmp_path, catalog):
    """A half-written envelope (not yet well-formed) is left alone until it is complete and settled, then submitted."""
    clock = Clock()
    submit = RecordingSubmit()
    folder = make_folder(tmp_path, submit, clock, catalog)
    envelope = envelope_for("m13", clock)
    (folder.paths.outbox / "data_m13.xml").write_bytes(b"<data/>")
    path = folder.paths.outbox / "envl_m13.xml"
    path.write_bytes(envelope[: len(envelope) // 2])

    await folder.scan_once()
    clock.advance(SETTLE / 2)
    with path.open("ab") as handle:
        handle.write(envelope[len(envelope) // 2:])
    await folder.scan_once()
    clock.advance(SETTLE / 2)
    await folder.scan_once()
    assert names(folder.paths.receipts) == [] and submit.calls == []

    await settled_scan(folder, clock)
    assert [e for e, _, _ in submit.calls] == [envelope] and names(folder.paths.failed) == []


async def test_two_pairs_with_one_message_id_are_taken_once(tmp_path, catalog):
    """Two pairs under different file names but with the same envelope messageId: the first is accepted, the other gets 201 and is kept."""
    clock = Clock()
    submit = RecordingSubmit()
    folder = make_folder(tmp_path, submit, clock, catalog)
    envelope = envelope_for("m14", clock)
    drop(folder, "a-m14", envelope, b"<first/>")
    drop(folder, "b-m14", envelope, b"<second/>")

    outcomes = await settled_scan(folder, clock)

    assert submit.accepted == {"m14": (envelope, b"<first/>")}
    assert [(o.name, o.status) for o in outcomes] == [("envl_a-m14.xml", StatusCode.DELIVERED),
                                                      ("envl_b-m14.xml", StatusCode.DUPLICATE_MESSAGE_ID)]
    assert [(r.status, r.message_id) for r in receipts(folder, catalog)] == [(StatusCode.DUPLICATE_MESSAGE_ID, "m14")]
    assert names(folder.paths.processed) == ["data_a-m14.xml", "envl_a-m14.xml"]
    assert names(folder.paths.failed) == ["data_b-m14.xml", "envl_b-m14.xml"]
    assert (folder.paths.failed / "data_b-m14.xml").read_bytes() == b"<second/>"


async def test_the_same_message_dropped_twice_under_two_names_is_accepted_once(tmp_path, catalog):
    """An identical pair dropped again under another file name is answered by the idempotent node: one message, no receipt."""
    clock = Clock()
    submit = RecordingSubmit()
    folder = make_folder(tmp_path, submit, clock, catalog)
    envelope = envelope_for("m15", clock)
    drop(folder, "a-m15", envelope, b"<same/>")
    drop(folder, "b-m15", envelope, b"<same/>")

    await settled_scan(folder, clock)

    assert list(submit.accepted) == ["m15"] and names(folder.paths.receipts) == []
    assert names(folder.paths.outbox) == [] and len(names(folder.paths.processed)) == 4


# -- restarts -----------------------------------------------------------------------------------


async def test_files_dropped_while_the_interface_is_down_are_picked_up_at_start(tmp_path, catalog):
    """Pairs written while no interface runs are submitted as soon as it starts, without waiting for a notification or a poll."""
    submit = RecordingSubmit()
    wall = Clock(wall=datetime.now(timezone.utc))
    folder = FolderInterface(ME, FolderPaths.under(tmp_path / "sedex"), submit, catalog=catalog, now=wall.now,
                             poll_interval=30.0, settle=0.0, notifications=True)
    folder.paths.create()
    drop(folder, "down1", envelope_for("down1", wall), b"<one/>")
    drop(folder, "down2", envelope_for("down2", wall), b"<two/>")

    task = asyncio.create_task(folder.run())
    try:
        async with asyncio.timeout(2.0):
            while names(folder.paths.processed) != ["data_down1.xml", "data_down2.xml", "envl_down1.xml", "envl_down2.xml"]:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    assert sorted(submit.accepted) == ["down1", "down2"] and len(submit.calls) == 2
    assert names(folder.paths.outbox) == []


async def test_a_restarted_interface_waits_for_a_file_the_old_one_saw_half_written(tmp_path, catalog):
    """A restart forgets nothing it must not: the new interface settles the files itself and submits the complete data once."""
    clock = Clock()
    submit = RecordingSubmit()
    old = make_folder(tmp_path, submit, clock, catalog)
    data = old.paths.outbox / "data_m16.xml"
    data.write_bytes(b"<partial")
    (old.paths.outbox / "envl_m16.xml").write_bytes(envelope_for("m16", clock))
    await old.scan_once()
    clock.advance(SETTLE / 2)

    # The node restarts while the writer finishes the data file.
    data.write_bytes(b"<complete/>")
    new = make_folder(tmp_path, submit, clock, catalog)
    clock.advance(SETTLE)
    await new.scan_once()
    assert submit.calls == []

    await settled_scan(new, clock)
    assert [d for _, _, d in submit.calls] == [b"<complete/>"]


async def test_a_shutdown_during_submission_loses_nothing_and_sends_nothing_twice(tmp_path, catalog):
    """Cancelling the interface while submit is in flight leaves the pair in the outbox; the restarted one resubmits and the node keeps one message."""
    clock = Clock()
    submit = RecordingSubmit()
    entered = asyncio.Event()

    async def stalls_after_accepting(envelope_bytes: bytes, data_path: Path) -> None:
        await submit(envelope_bytes, data_path)
        entered.set()
        await asyncio.Event().wait()  # e.g. waiting for a replica's acknowledgement at shutdown

    old = make_folder(tmp_path, stalls_after_accepting, clock, catalog)
    drop(old, "m17", envelope_for("m17", clock), b"<data/>")
    await old.scan_once()
    clock.advance(SETTLE)
    scan = asyncio.create_task(old.scan_once())
    await asyncio.wait_for(entered.wait(), 1.0)
    scan.cancel()
    await asyncio.gather(scan, return_exceptions=True)
    assert names(old.paths.outbox) == ["data_m17.xml", "envl_m17.xml"] and names(old.paths.receipts) == []

    restarted = make_folder(tmp_path, submit, clock, catalog)
    await settled_scan(restarted, clock)

    assert len(submit.calls) == 2 and list(submit.accepted) == ["m17"]
    assert names(restarted.paths.processed) == ["data_m17.xml", "envl_m17.xml"]
    assert names(restarted.paths.outbox) == [] and names(restarted.paths.receipts) == []


# -- delivery and receipts ----------------------------------------------------------------------


async def test_deliver_never_shows_a_partial_file_under_its_final_name(tmp_path, catalog, monkeypatch):
    """deliver writes data then envelope, each under a temporary name first; final names appear only complete."""
    clock = Clock()
    folder = make_folder(tmp_path, RecordingSubmit(), clock, catalog)
    envelope = envelope_for("d1", clock)
    published: list[str] = []
    real_publish = sedex_folder._publish

    def recording_publish(temporary: Path, final: Path) -> None:
        assert not final.exists()
        published.append(final.name)
        real_publish(temporary, final)

    monkeypatch.setattr(sedex_folder, "_publish", recording_publish)
    seen_during_stream: list[list[str]] = []

    async def chunks():
        for index in range(5):
            seen_during_stream.append([n for n in names(folder.paths.inbox) if not n.startswith(".")])
            yield bytes([65 + index]) * 1000
            await asyncio.sleep(0)

    await folder.deliver(envelope, "data_d1.xml", chunks())

    assert seen_during_stream == [[]] * 5
    assert published == ["data_d1.xml", "envl_d1.xml"]
    assert (folder.paths.inbox / "data_d1.xml").read_bytes() == b"".join(bytes([65 + i]) * 1000 for i in range(5))
    assert (folder.paths.inbox / "envl_d1.xml").read_bytes() == envelope
    assert names(folder.paths.inbox) == ["data_d1.xml", "envl_d1.xml"]


async def test_deliver_leaves_no_file_when_the_stream_fails(tmp_path, catalog):
    """A delivery whose stream breaks leaves neither a temporary nor a final file in the inbox."""
    clock = Clock()
    folder = make_folder(tmp_path, RecordingSubmit(), clock, catalog)

    async def broken():
        yield b"part"
        raise ConnectionError("peer went away")

    with pytest.raises(ConnectionError):
        await folder.deliver(envelope_for("d2", clock), "data_d2.xml", broken())
    assert names(folder.paths.inbox) == []


@pytest.mark.parametrize("data_name", ["../data_d3.xml", "data_other.xml", "data_d3", "envl_d3.xml", "data_d3.x/y"])
async def test_deliver_refuses_a_data_name_outside_the_sedex_pattern(tmp_path, catalog, data_name):
    """deliver only writes data_<messageId>.<ext> of the delivered envelope, nothing else."""
    clock = Clock()
    folder = make_folder(tmp_path, RecordingSubmit(), clock, catalog)

    async def chunks():
        yield b"x"

    with pytest.raises(InvalidEnvelope):
        await folder.deliver(envelope_for("d3", clock), data_name, chunks())
    assert names(folder.paths.inbox) == [] and not (tmp_path / "sedex" / "data_d3.xml").exists()


async def test_write_receipt_writes_schema_valid_receipts_without_overwriting(tmp_path, catalog):
    """write_receipt stores eCH-0090 v2 receipts named receipt_<messageId>.xml and never overwrites one."""
    clock = Clock()
    folder = make_folder(tmp_path, RecordingSubmit(), clock, catalog)
    envelope = parse_envelope(envelope_for("r1", clock), catalog)
    for status in (StatusCode.HANDED_OVER, StatusCode.DELIVERED):
        await folder.write_receipt(Receipt.for_envelope(envelope, envelope.recipients[0], status, None, clock.now()))

    assert names(folder.paths.receipts) == ["receipt_r1.1.xml", "receipt_r1.xml"]
    assert sorted(r.status for r in receipts(folder, catalog)) == [StatusCode.DELIVERED, StatusCode.HANDED_OVER]


# -- running ------------------------------------------------------------------------------------


@pytest.mark.parametrize("notifications", [True, False], ids=["notifications", "polling"])
async def test_run_picks_up_a_new_envelope_well_under_a_second(tmp_path, catalog, notifications):
    """A running interface submits a newly dropped pair in well under one second, by notification or by polling."""
    submit = RecordingSubmit(received=asyncio.Event())
    paths = FolderPaths.under(tmp_path / "sedex")
    folder = FolderInterface(ME, paths, submit, catalog=catalog, now=lambda: datetime.now(timezone.utc),
                             poll_interval=0.25 if not notifications else 5.0, settle=0.05,
                             notifications=notifications)
    task = asyncio.create_task(folder.run())
    try:
        await asyncio.sleep(0.2)  # let the watcher start; the drop below is what is timed
        started = time.monotonic()
        drop(folder, "live1", envelope_for("live1", Clock(wall=datetime.now(timezone.utc))), b"<data/>")
        await asyncio.wait_for(submit.received.wait(), timeout=1.0)
        elapsed = time.monotonic() - started
        assert folder.notifications_active is notifications
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert elapsed < 0.8
    assert list(submit.accepted) == ["live1"]


@pytest.mark.parametrize("failure", ["watcher-error", "not-installed"])
async def test_polling_still_picks_up_when_notifications_are_unavailable(tmp_path, catalog, monkeypatch, failure):
    """When the file-system watcher fails or watchfiles is missing, polling alone still submits a new pair."""
    import sys

    import watchfiles

    if failure == "watcher-error":
        def broken_awatch(*args, **kwargs):
            raise OSError("inotify watch limit reached")
        monkeypatch.setattr(watchfiles, "awatch", broken_awatch)
    else:
        monkeypatch.setitem(sys.modules, "watchfiles", None)  # makes "import watchfiles" fail
    submit = RecordingSubmit(received=asyncio.Event())
    folder = FolderInterface(ME, FolderPaths.under(tmp_path / "sedex"), submit, catalog=catalog,
                             now=lambda: datetime.now(timezone.utc), poll_interval=0.05, settle=0.0, notifications=True)
    task = asyncio.create_task(folder.run())
    try:
        await asyncio.sleep(0.1)
        drop(folder, "poll1", envelope_for("poll1", Clock(wall=datetime.now(timezone.utc))), b"<data/>")
        await asyncio.wait_for(submit.received.wait(), timeout=2.0)
        assert folder.notifications_active is False
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert list(submit.accepted) == ["poll1"]


@pytest.mark.parametrize("version", ["1.0", "2.0"])
async def test_a_zip_payload_travels_from_outbox_to_inbox_byte_for_byte(tmp_path, catalog, version):
    """A zip payload (eUmzug, eCH-0194) with an eCH-0090 v1 or v2 envelope is submitted and delivered unchanged, never unpacked."""
    clock = Clock()
    submit = RecordingSubmit()
    sender = make_folder(tmp_path / "sender", submit, clock, catalog)
    archive = tmp_path / "payload.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("eCH-0194.xml", b"<delivery/>")
        zf.writestr("attachments/scan.pdf", b"%PDF-1.4" + bytes(range(256)))
    envelope = envelope_for("zip-1", clock, version=version)
    drop(sender, "zip-1", envelope, archive.read_bytes(), ext="zip")
    await settled_scan(sender, clock)
    [(submitted_envelope, data_name, data)] = submit.calls

    recipient = make_folder(tmp_path / "recipient", RecordingSubmit(), clock, catalog, participant=ParticipantId("2-LU-1"))

    async def chunks():
        yield data[:100]
        yield data[100:]

    await recipient.deliver(submitted_envelope, data_name, chunks())

    assert (recipient.paths.inbox / "data_zip-1.zip").read_bytes() == archive.read_bytes()
    assert (recipient.paths.inbox / "envl_zip-1.xml").read_bytes() == envelope
    assert names(recipient.paths.inbox) == ["data_zip-1.zip", "envl_zip-1.xml"]


def test_folder_paths_must_be_distinct(tmp_path):
    """FolderPaths refuses a layout in which two roles share one directory."""
    with pytest.raises(ValueError):
        FolderPaths(tmp_path / "a", tmp_path / "a", tmp_path / "r", tmp_path / "p", tmp_path / "f")
