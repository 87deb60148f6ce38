"""The ``audit`` command group, run in-process through the argparse wiring the lead will use."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.audit import Action, AuditLog, person_refs
from gateway.audit.cli import main
from gateway.safexml import parse_xml

from .conftest import NODE, SAMPLES, SECRET, T0, message_record, test_key
from .test_export import HOPS, hop_records

BIRTH = SAMPLES / "openech-ech0020-v2.2" / "birthtest-7561829871378" / "BirthTest_7561829871378.xml"


@pytest.fixture
def filled(log_path: Path) -> Path:
    refs = person_refs(parse_xml(BIRTH.read_bytes()), SECRET)
    with AuditLog.open(log_path, node=NODE, signing_key=test_key(), checkpoint_every=1) as log:
        log.append([message_record(0, person_refs=refs), message_record(1), message_record(2, person_refs=refs)])
    return log_path


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    return path


def test_verify_exits_zero_on_a_valid_log(filled: Path, public_pem: Path, capsys):
    """audit verify prints a summary and exits 0 for an intact log."""
    assert main(["audit", "verify", "--log", str(filled), "--key", str(public_pem)]) == 0
    assert "valid: 3 records" in capsys.readouterr().out


def test_verify_exits_one_and_names_the_first_bad_index(filled: Path, public_pem: Path, capsys):
    """audit verify exits 1 and reports the index of a record edited in the file."""
    conn = sqlite3.connect(filled)
    conn.execute("UPDATE records SET body = replace(body, '\"ok\"', '\"error\"') WHERE idx = 1")
    conn.commit()
    conn.close()
    assert main(["audit", "verify", "--log", str(filled), "--key", str(public_pem)]) == 1
    assert "at index 1" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_then_verify_export(filled: Path, private_pem: Path, public_pem: Path, tmp_path: Path, fmt: str, capsys):
    """An export written by audit export verifies with audit verify-export, and a tampered copy does not."""
    out = tmp_path / f"export.{fmt}"
    assert main(["audit", "export", "--log", str(filled), "--signing-key", str(private_pem), "--actor", "dpo",
                 "--from", "2026-03-01T00:00:00Z", "--to", "2026-03-02T00:00:00Z", "--format", fmt,
                 "--output", str(out)]) == 0
    assert main(["audit", "verify-export", str(out), "--key", str(public_pem)]) == 0
    assert "valid: 3 records" in capsys.readouterr().out
    out.write_text(out.read_text().replace("einwohnerregister", "einwohnerregistex", 1))
    assert main(["audit", "verify-export", str(out), "--key", str(public_pem)]) == 1


def test_export_of_one_message(filled: Path, private_pem: Path, public_pem: Path, tmp_path: Path, capsys):
    """audit export --message-id writes only that message's records, verifiable, and records the filter."""
    out = tmp_path / "msg-2.jsonl"
    assert main(["audit", "export", "--log", str(filled), "--signing-key", str(private_pem), "--actor", "dpo",
                 "--message-id", "msg-2", "--output", str(out)]) == 0
    assert main(["audit", "verify-export", str(out), "--key", str(public_pem)]) == 0
    assert "valid: 1 records" in capsys.readouterr().out
    with AuditLog.open(filled, node=NODE, signing_key=None) as log:
        assert list(log.iter_records())[-1][2].details == {"format": "jsonl", "message_id": "msg-2"}
    with pytest.raises(SystemExit):
        main(["audit", "export", "--log", str(filled), "--signing-key", str(private_pem), "--actor", "dpo",
              "--message-id", "not a message id"])


def test_query_by_person_uses_the_secret_file_and_is_audited(filled: Path, private_pem: Path, secret_file: Path, capsys, monkeypatch):
    """audit query --person finds the records about that person, with the secret from a file or the environment."""
    args = ["audit", "query", "--log", str(filled), "--signing-key", str(private_pem), "--actor", "dpo",
            "--person", "756.1829.8713.78"]
    assert main(args + ["--secret-file", str(secret_file)]) == 0
    found = [json.loads(line.split("\t", 1)[1])["message_id"] for line in capsys.readouterr().out.splitlines()]
    assert found == ["msg-0", "msg-2"]
    monkeypatch.setenv("DREHSCHEIBE_AUDIT_SECRET_FILE", str(secret_file))
    assert main(args) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    with AuditLog.open(filled, node=NODE, signing_key=None) as log:
        reads = [r for _, _, r in log.iter_records() if r.action is Action.AUDIT_READ]
    assert [r.actor.id for r in reads] == ["dpo", "dpo"]


def test_query_by_action_and_participant(filled: Path, private_pem: Path, capsys):
    """audit query combines filters given on the command line."""
    assert main(["audit", "query", "--log", str(filled), "--signing-key", str(private_pem), "--actor", "dpo",
                 "--participant", "2-LU-1", "--action", "forwarded", "--message-id", "msg-1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_report_prints_text_and_json(filled: Path, private_pem: Path, secret_file: Path, capsys):
    """audit report --person prints the access report as text or JSON, without the AHV number."""
    base = ["audit", "report", "--log", str(filled), "--signing-key", str(private_pem), "--actor", "dpo",
            "--person", "7561829871378", "--secret-file", str(secret_file)]
    assert main(base) == 0
    text = capsys.readouterr().out
    assert "2 message(s)" in text and "7561829871378" not in text
    assert main(base + ["--format", "json"]) == 0
    assert [m["message_id"] for m in json.loads(capsys.readouterr().out)["messages"]] == ["msg-0", "msg-2"]


def test_trace_prints_the_timeline_and_fails_on_a_broken_chain(tmp_path: Path, private_pem: Path, public_pem: Path, capsys):
    """audit trace exits 0 with the hop timeline for a complete chain and 1 when a digest does not match."""
    def run(digests: list[tuple[str, str | None]], sub: str) -> int:
        folder = tmp_path / sub
        folder.mkdir()
        exports = []
        for number, ((node, role), (received, sent)) in enumerate(zip(HOPS, digests)):
            db = folder / f"{node}.sqlite"
            with AuditLog.open(db, node=node, signing_key=test_key()) as log:
                log.append(hop_records(node, role, received, sent, minute=number))
            out = folder / f"{node}.jsonl"
            assert main(["audit", "export", "--log", str(db), "--signing-key", str(private_pem),
                         "--actor", "dpo", "--output", str(out)]) == 0
            exports.append(str(out))
        keys = [arg for node, _ in HOPS for arg in ("--key", f"{node}={public_pem}")]
        return main(["audit", "trace", "move-in-42", *exports, *keys])

    a, b, c = "a" * 64, "b" * 64, "c" * 64
    assert run([(a, b), (b, c), (c, None)], "good") == 0
    out = capsys.readouterr().out
    assert out.index("node-gemeinde") < out.index("node-hub") < out.index("node-kanton")
    assert run([(a, b), (b, a), (c, None)], "bad") == 1
    assert "BROKEN" in capsys.readouterr().err


def test_commands_that_write_fail_closed_with_exit_three(filled: Path, tmp_path: Path, capsys):
    """When the checkpoint key cannot be loaded, audit query refuses with exit code 3."""
    missing = tmp_path / "no-such-key.pem"
    assert main(["audit", "query", "--log", str(filled), "--signing-key", str(missing), "--actor", "dpo"]) == 3
    assert "unavailable" in capsys.readouterr().err


def test_the_window_excludes_records_outside_it(filled: Path, private_pem: Path, public_pem: Path, tmp_path: Path):
    """audit export --from after every record exports only the export's own audit record."""
    out = tmp_path / "late.jsonl"
    later = (T0 + timedelta(days=1)).isoformat()
    assert main(["audit", "export", "--log", str(filled), "--signing-key", str(private_pem), "--actor", "dpo",
                 "--from", later, "--output", str(out)]) == 0
    bodies = [json.loads(json.loads(line)["body"]) for line in out.read_text().splitlines()[1:]]
    assert [b["action"] for b in bodies] == ["audit_export"]


def test_an_unreadable_key_or_log_is_a_failed_verification(filled: Path, tmp_path: Path, public_pem: Path, capsys):
    """audit verify exits 1 with a message, not a traceback, for a broken key file or a missing log."""
    bad_key = tmp_path / "bad.pem"
    bad_key.write_text("not a key")
    with pytest.raises(SystemExit) as caught:
        main(["audit", "verify", "--log", str(filled), "--key", str(bad_key)])
    assert "cannot load verification key" in str(caught.value.code)
    assert main(["audit", "verify", "--log", str(tmp_path / "missing.sqlite"), "--key", str(public_pem)]) == 1


def test_a_log_in_postgresql_is_verified_and_queried_by_schema(pg_schemas, private_pem: Path, public_pem: Path, capsys,
                                                               monkeypatch: pytest.MonkeyPatch):
    """audit verify and audit query take --pg-schema (password from PGPASSWORD) and act on the log in PostgreSQL."""
    from urllib.parse import urlsplit

    from .conftest import PgLog

    where = PgLog(pg_schemas.dsn, pg_schemas.new())
    with where.open(signing_key=test_key(), checkpoint_every=1) as log:
        log.append([message_record(0), message_record(1)])
    parts = urlsplit(pg_schemas.dsn)
    dsn = f"host={parts.hostname} port={parts.port} dbname={parts.path.lstrip('/')} user={parts.username}"
    monkeypatch.setenv("PGPASSWORD", parts.password or "")
    location = ["--pg-schema", where.schema, "--pg-dsn", dsn]
    assert main(["audit", "verify", *location, "--key", str(public_pem)]) == 0
    assert "valid: 2 records" in capsys.readouterr().out
    assert main(["audit", "query", *location, "--signing-key", str(private_pem), "--actor", "dpo", "--message-id", "msg-1"]) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == ["1"]
    conn = where.connect()
    conn.execute("UPDATE records SET body = ? WHERE idx = 0", (message_record(0).canonical_bytes().replace(b'"ok"', b'"error"'),))
    conn.close()
    assert main(["audit", "verify", *location, "--key", str(public_pem)]) == 1
    assert "at index 0" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="password"):
        main(["audit", "verify", "--pg-schema", where.schema, "--pg-dsn", pg_schemas.dsn, "--key", str(public_pem)])
