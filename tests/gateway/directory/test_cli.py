"""``drehscheibe directory …`` run in-process through the argparse wiring the lead will use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.audit import Action, AuditLog, verify_log
from gateway.directory import load_source
from gateway.directory.cli import main
from gateway.pki import load_certificate

from .conftest import HUB, KANTON, KANTON_NODE, LUZERN, LUZERN_NODE, Pki

NOW = "2026-03-01T09:00:00+00:00"


class Hub:
    """Paths of one hub admin's working set."""

    def __init__(self, pki: Pki, root: Path) -> None:
        self.pki = pki
        self.source = root / "directory.toml"
        self.out = root / "www" / "directory.jws"
        self.audit = root / "audit" / "audit.db"
        self.audit.parent.mkdir()
        self.key = pki.nodes[HUB].private_key
        self.cert = pki.nodes[HUB].certificate
        self.ca = pki.ca.cert_path

    def change(self, *args: str, now: str = NOW) -> int:
        return main(["directory", *args, "--source", str(self.source), "--actor", "admin-lu",
                     "--audit-log", str(self.audit), "--audit-key", str(self.key), "--now", now])

    def publish(self, now: str = NOW, *extra: str) -> int:
        return self.change("publish", "--out", str(self.out), "--cert", str(self.cert), "--key", str(self.key),
                           "--ca", str(self.ca), *extra, now=now)

    def verify(self, *extra: str, now: str = NOW) -> int:
        return main(["directory", "verify", str(self.out), "--ca", str(self.ca), "--issuer", HUB, "--now", now, *extra])


@pytest.fixture
def hub(pki: Pki, tmp_path: Path) -> Hub:
    hub = Hub(pki, tmp_path)
    assert hub.change("init", "--issuer", HUB) == 0
    assert hub.change("set-node", "--node", LUZERN_NODE, "--url", "https://luzern.example.ch:8443") == 0
    assert hub.change("set-node", "--node", KANTON_NODE, "--url", "https://kanton.example.ch:8443") == 0
    assert hub.change("add-participant", "--id", str(LUZERN), "--node", LUZERN_NODE, "--message-type", "10301") == 0
    assert hub.change("add-participant", "--id", str(KANTON), "--node", KANTON_NODE,
                      "--message-type", "10301", "--message-type", "2011") == 0
    for participant in (LUZERN, KANTON):
        signing, encryption = pki.participants[participant]
        assert hub.change("add-certificate", "--id", str(participant), "--use", "signing", "--file", str(signing.certificate)) == 0
        assert hub.change("add-certificate", "--id", str(participant), "--use", "encryption", "--file", str(encryption.certificate)) == 0
    return hub


def audit_details(hub: Hub) -> list[dict[str, str]]:
    with AuditLog.open(hub.audit, node=HUB, signing_key=None) as log:
        return [dict(record.details) for _, _, record in log.iter_records() if record.action is Action.CONFIG_CHANGE]


def test_every_change_and_publication_is_audited(hub: Hub, capsys):
    """Each command appends a config_change record naming the operation, subject and versions, and the log verifies."""
    assert hub.publish() == 0
    assert hub.change("retire-participant", "--id", str(KANTON)) == 0
    details = audit_details(hub)
    operations = [d["operation"] for d in details]
    assert operations == ["create", "set_node", "set_node", "add_participant", "add_participant",
                          *["add_certificate"] * 4, "publish", "retire_participant"]
    assert details[-2] | {"new_digest": "x"} == {"change": "directory", "operation": "publish", "subject": HUB,
                                                  "old_version": "0", "new_version": "1", "old_digest": "-", "new_digest": "x"}
    assert (details[-1]["subject"], details[-1]["old_version"], details[-1]["new_version"]) == (str(KANTON), "1", "2")
    assert verify_log(hub.audit, load_certificate(hub.cert).public_key()).size == len(details)
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed[-1]["operation"] == "retire_participant" and printed[-1]["actor"] == {"id": "admin-lu", "kind": "admin"}


def test_a_published_directory_verifies_and_shows(hub: Hub, capsys):
    """verify exits 0 and summarises; show prints the verified entries."""
    assert hub.publish() == 0
    capsys.readouterr()
    assert hub.verify() == 0
    assert capsys.readouterr().out.startswith("valid: version 1 by node-hub")
    assert main(["directory", "show", str(hub.out), "--ca", str(hub.ca), "--issuer", HUB, "--now", NOW]) == 0
    shown = capsys.readouterr().out
    assert "participant 2-LU-1 on node-kanton, production, message types 2011,10301" in shown
    assert "encryption" in shown and "[retired]" not in shown


def test_verify_refuses_expired_tampered_and_wrong_issuer(hub: Hub, capsys):
    """verify exits 1 and names why: expired, bad signature, wrong signer."""
    assert hub.publish(NOW, "--validity-hours", "1") == 0
    capsys.readouterr()
    assert hub.verify(now="2026-03-01T10:00:01+00:00") == 1
    assert "INVALID (expired)" in capsys.readouterr().err
    assert main(["directory", "verify", str(hub.out), "--ca", str(hub.ca), "--issuer", LUZERN_NODE, "--now", NOW]) == 1
    assert "INVALID (wrong-signer)" in capsys.readouterr().err
    header, payload, signature = hub.out.read_text().split(".")
    hub.out.write_text(".".join([header, payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB"), signature]))
    assert hub.verify() == 1
    assert "INVALID (bad-signature)" in capsys.readouterr().err


def test_verify_refuses_a_rollback_below_a_given_version(hub: Hub, capsys):
    """verify --min-version refuses an older directory."""
    assert hub.publish() == 0
    assert hub.verify("--min-version", "2") == 1
    assert "INVALID (rollback)" in capsys.readouterr().err


def test_retire_certificate_by_fingerprint_then_publish(hub: Hub, capsys):
    """A retired certificate is published as retired and shown so."""
    fingerprint = next(c.fingerprint for c in load_source(hub.source).participant(LUZERN).certificates if c.use.value == "encryption")
    assert hub.change("retire-certificate", "--id", str(LUZERN), "--fingerprint", fingerprint[:20]) == 0
    assert hub.publish() == 0
    capsys.readouterr()
    assert main(["directory", "show", str(hub.out), "--ca", str(hub.ca), "--issuer", HUB, "--now", NOW]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if fingerprint in line)
    assert line.strip().startswith("encryption") and line.endswith("[retired]")


def test_nothing_changes_when_the_audit_log_cannot_record(hub: Hub, tmp_path: Path, capsys):
    """Without a working audit key the change is refused with exit 3 and the source stays as it was."""
    before = hub.source.read_bytes()
    code = main(["directory", "retire-participant", "--source", str(hub.source), "--id", str(LUZERN), "--actor", "admin-lu",
                 "--audit-log", str(hub.audit), "--audit-key", str(tmp_path / "missing-key.pem"), "--now", NOW])
    assert code == 3 and "audit log unavailable" in capsys.readouterr().err
    assert hub.source.read_bytes() == before


def test_an_unaudited_change_must_be_asked_for_and_prints_its_record(hub: Hub, capsys):
    """--no-audit writes the change and prints its record as JSON; giving neither option is a usage error."""
    capsys.readouterr()
    assert main(["directory", "retire-participant", "--source", str(hub.source), "--id", str(LUZERN), "--actor", "admin-lu",
                 "--no-audit", "--now", NOW]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["operation"], record["subject"], record["oldVersion"], record["newVersion"]) == ("retire_participant", "1-1061-1", 0, 1)
    assert load_source(hub.source).participant(LUZERN).retired
    with pytest.raises(SystemExit):
        main(["directory", "retire-participant", "--source", str(hub.source), "--id", str(KANTON), "--actor", "admin-lu"])


def test_a_bad_change_exits_2_with_the_reason(hub: Hub, capsys):
    """An invalid change is refused with exit 2 and a message naming the problem."""
    assert hub.change("add-participant", "--id", "1-1024-1", "--node", "node-emmen") == 2
    assert "set-node first" in capsys.readouterr().err
    assert hub.change("set-node", "--node", "node-emmen", "--url", "http://emmen.example.ch") == 2
    assert "https" in capsys.readouterr().err
