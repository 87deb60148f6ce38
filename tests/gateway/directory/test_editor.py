"""The hub's editor: source files, admin changes with their records, signed publications."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.audit import Action, Actor, ActorKind, Role
from gateway.clock import FixedClock
from gateway.directory import (
    CertificateUse,
    DirectoryEditor,
    DirectorySourceError,
    Environment,
    Operation,
    UnknownParticipant,
    load_source,
    verify_directory,
)
from gateway.ids import ParticipantId

from .conftest import HUB, KANTON, KANTON_NODE, LUZERN, LUZERN_NODE, Pki

ADMIN = Actor(ActorKind.ADMIN, "admin-lu")


@pytest.fixture
def clock(pki: Pki) -> FixedClock:
    return FixedClock(pki.now)


def filled(pki: Pki, path: Path, clock: FixedClock) -> DirectoryEditor:
    editor, _ = DirectoryEditor.create(path, issuer=HUB, actor=ADMIN, clock=clock)
    editor.set_node(HUB, "https://hub.example.ch:8443")
    editor.set_node(LUZERN_NODE, "https://luzern.example.ch:8443")
    editor.set_node(KANTON_NODE, "https://kanton.example.ch:8443")
    editor.add_participant(LUZERN, node=LUZERN_NODE, message_types=(10301,))
    editor.add_participant(KANTON, node=KANTON_NODE, message_types=(10301, 2011))
    editor.add_participant("T1-1061-1", node=LUZERN_NODE)
    for participant in (LUZERN, KANTON):
        for use in CertificateUse:
            editor.add_certificate(participant, pki.pem(participant, use), use=use)
    return editor


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_a_saved_source_reads_back_equal(pki: Pki, tmp_path: Path, clock: FixedClock, suffix: str):
    """TOML and JSON sources hold the whole directory source, certificates included."""
    editor = filled(pki, tmp_path / f"directory{suffix}", clock)
    editor.save()
    assert load_source(editor.path) == editor.source
    assert load_source(editor.path).participant(ParticipantId("T1-1061-1")).environment is Environment.TEST


def test_a_hand_written_toml_source_is_read(pki: Pki, tmp_path: Path):
    """The documented TOML shape (docs/directory.md) loads, with defaults for what is left out."""
    path = tmp_path / "directory.toml"
    pem = pki.pem(LUZERN, CertificateUse.ENCRYPTION)
    path.write_text(f'''
issuer = "node-hub"

[[nodes]]
id = "node-luzern"
url = "https://luzern.example.ch:8443"

[[participants]]
id = "1-1061-1"
node = "node-luzern"
messageTypes = [10301]

[[participants.certificates]]
use = "encryption"
notBefore = "2026-03-01T00:00:00+01:00"
pem = """
{pem}"""
''')
    source = load_source(path)
    entry = source.participant(LUZERN)
    assert source.version == 0 and entry.environment is Environment.PRODUCTION and not entry.retired
    assert entry.certificates[0].not_before.isoformat() == "2026-02-28T23:00:00+00:00"


def test_a_bad_source_names_the_file_and_the_key(tmp_path: Path):
    """A wrong value in a source file is refused with the file and the key path."""
    path = tmp_path / "directory.json"
    path.write_text(json.dumps({"issuer": "node-hub", "nodes": [{"id": "node-a", "url": "http://a.example"}]}))
    with pytest.raises(DirectorySourceError, match=r"directory.json: nodes\[0\]: node URL must be https"):
        load_source(path)


def test_a_change_describes_who_what_and_the_versions(pki: Pki, tmp_path: Path, clock: FixedClock):
    """Each change names the admin, the operation, the subject, old/new version and entry digests."""
    editor = filled(pki, tmp_path / "directory.toml", clock)
    editor.publish(editor.sign(pki.signer(), pki.trust, published=tmp_path / "out.jws"), tmp_path / "out.jws")
    before = editor.source.participant(LUZERN).digest()
    change = editor.retire_participant(LUZERN)
    assert (change.actor, change.operation, change.subject) == (ADMIN, Operation.RETIRE_PARTICIPANT, "1-1061-1")
    assert (change.old_version, change.new_version) == (1, 2)
    assert change.old_digest == before and change.new_digest == editor.source.participant(LUZERN).digest() != before

    record = change.audit_record(HUB)
    assert (record.action, record.role, record.actor, record.node) == (Action.CONFIG_CHANGE, Role.NONE, ADMIN, HUB)
    assert record.details["change"] == "directory" and record.details["operation"] == "retire_participant"
    assert (record.details["old_version"], record.details["new_version"]) == ("1", "2")


def test_publishing_bumps_the_version_and_writes_a_directory_nodes_accept(pki: Pki, tmp_path: Path, clock: FixedClock):
    """Each publication is one version higher, verifies against the CA, and updates the source."""
    editor = filled(pki, tmp_path / "directory.toml", clock)
    out = tmp_path / "published" / "directory.jws"
    first = editor.sign(pki.signer(), pki.trust, validity=timedelta(days=2), published=out)
    editor.publish(first, out)
    clock.advance(hours=1)
    second = editor.sign(pki.signer(), pki.trust, published=out)
    editor.publish(second, out)

    assert (second.change.old_version, second.change.new_version) == (1, 2)
    assert second.change.old_digest == first.directory.digest
    assert load_source(editor.path).version == 2
    verified = verify_directory(out.read_text(), trust=pki.trust, issuer=HUB, now=clock.now(), previous=first.directory)
    assert verified.version == 2 and verified.expires_at == clock.now() + timedelta(days=7)
    assert verified.lookup(KANTON, clock.now()).message_types == {10301, 2011}


def test_a_restored_source_still_publishes_above_the_served_version(pki: Pki, tmp_path: Path, clock: FixedClock):
    """The next version is above both the source's and the published file's, so nodes never see a rollback."""
    editor = filled(pki, tmp_path / "directory.toml", clock)
    out = tmp_path / "directory.jws"
    for _ in range(3):
        editor.publish(editor.sign(pki.signer(), pki.trust, published=out), out)
    stale_source = filled(pki, tmp_path / "restored.toml", clock)  # version 0, as from an old backup
    assert stale_source.sign(pki.signer(), pki.trust, published=out).directory.version == 4


def test_a_certificate_outside_the_federation_is_not_published(pki: Pki, tmp_path: Path, clock: FixedClock):
    """Publication verifies the result as a node would, so a certificate from another CA stops it."""
    editor = filled(pki, tmp_path / "directory.toml", clock)
    editor.add_certificate(LUZERN, pki.rogue_luzern[1].certificate.read_text(), use=CertificateUse.ENCRYPTION)
    with pytest.raises(DirectorySourceError, match="would be refused by nodes.*bad-certificate"):
        editor.sign(pki.signer(), pki.trust)


def test_only_the_issuer_can_sign(pki: Pki, tmp_path: Path, clock: FixedClock):
    """Signing with another node's identity than the source's issuer is refused."""
    editor = filled(pki, tmp_path / "directory.toml", clock)
    with pytest.raises(ValueError, match="issuer"):
        editor.sign(pki.signer(LUZERN_NODE), pki.trust)


def test_a_certificate_must_name_the_participant_and_fit_its_use(pki: Pki, tmp_path: Path, clock: FixedClock):
    """add-certificate refuses another participant's certificate and a key usage that does not fit."""
    editor = filled(pki, tmp_path / "directory.toml", clock)
    with pytest.raises(DirectorySourceError, match="names '2-LU-1'"):
        editor.add_certificate(LUZERN, pki.pem(KANTON, CertificateUse.SIGNING), use=CertificateUse.SIGNING)
    with pytest.raises(DirectorySourceError, match="does not allow key_agreement"):
        editor.add_certificate(LUZERN, pki.luzern_next[0].certificate.read_text(), use=CertificateUse.ENCRYPTION)
    with pytest.raises(DirectorySourceError, match="already listed"):
        editor.add_certificate(LUZERN, pki.pem(LUZERN, CertificateUse.SIGNING), use=CertificateUse.SIGNING)


def test_a_certificate_is_retired_by_a_unique_fingerprint_prefix(pki: Pki, tmp_path: Path, clock: FixedClock):
    """retire-certificate takes 16+ hex digits of the fingerprint and marks exactly that certificate."""
    editor = filled(pki, tmp_path / "directory.toml", clock)
    target = next(c for c in editor.source.participant(LUZERN).certificates if c.use is CertificateUse.ENCRYPTION)
    with pytest.raises(DirectorySourceError, match="at least 16"):
        editor.retire_certificate(LUZERN, target.fingerprint[:8])
    change = editor.retire_certificate(LUZERN, target.fingerprint[:16].upper())
    assert change.certificate == target.fingerprint
    assert [c.retired for c in editor.source.participant(LUZERN).certificates if c.use is CertificateUse.ENCRYPTION] == [True]
    with pytest.raises(DirectorySourceError, match="already retired"):
        editor.retire_certificate(LUZERN, target.fingerprint)


def test_a_retired_participant_is_published_but_not_resolved(pki: Pki, tmp_path: Path, clock: FixedClock):
    """Retiring keeps the entry in the signed directory, and nodes refuse to resolve it."""
    editor = filled(pki, tmp_path / "directory.toml", clock)
    editor.retire_participant(KANTON)
    publication = editor.sign(pki.signer(), pki.trust)
    assert publication.directory.entry(KANTON).retired
    with pytest.raises(UnknownParticipant):
        publication.directory.lookup(KANTON, clock.now())
    with pytest.raises(DirectorySourceError, match="retired"):
        editor.add_certificate(KANTON, pki.luzern_next[1].certificate.read_text(), use=CertificateUse.ENCRYPTION)


def test_changes_refer_to_listed_nodes_and_participants(pki: Pki, tmp_path: Path, clock: FixedClock):
    """Adding a participant on an unknown node, twice, or changing an unknown one is refused."""
    editor = filled(pki, tmp_path / "directory.toml", clock)
    with pytest.raises(DirectorySourceError, match="set-node first"):
        editor.add_participant("1-1024-1", node="node-emmen")
    with pytest.raises(DirectorySourceError, match="already in the directory"):
        editor.add_participant(LUZERN, node=LUZERN_NODE)
    with pytest.raises(DirectorySourceError, match="not in the directory"):
        editor.retire_participant("1-1024-1")
    with pytest.raises(DirectorySourceError, match="sedex participant ID"):
        editor.retire_participant("Luzern")


def test_create_refuses_to_overwrite_a_source(pki: Pki, tmp_path: Path, clock: FixedClock):
    """init never replaces an existing source file."""
    filled(pki, tmp_path / "directory.toml", clock).save()
    with pytest.raises(DirectorySourceError, match="already exists"):
        DirectoryEditor.create(tmp_path / "directory.toml", issuer=HUB, actor=ADMIN)
