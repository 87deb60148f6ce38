"""The ``policy`` command group run in-process through argparse: check, explain, diff (--json)."""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import datetime, timezone

import pytest

from gateway.envelope import Envelope
from gateway.ids import ParticipantId
from gateway.policy.cli import register

from .conftest import DEMO, MOVE_IN, SAMPLES, XSD, permit

SEMPACH = SAMPLES / "ech0099-v1-sempach" / "1196247040467"
RELIGION = "//{http://www.ech.ch/xmlns/eCH-0020/2}moveInPerson/{http://www.ech.ch/xmlns/eCH-0020/2}religion"
CALL_NAME = "//{http://www.ech.ch/xmlns/eCH-0020/2}moveInPerson/{http://www.ech.ch/xmlns/eCH-0020/2}callName"
NOW = "2026-03-01T12:00:00+01:00"


def run(capsys, *argv: str) -> tuple[int, dict]:
    parser = argparse.ArgumentParser(prog="drehscheibe")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["policy", *argv, "--json", "--now", NOW])
    code = args.func(args)
    return code, json.loads(capsys.readouterr().out)


def envelope_file(tmp_path, sender: str, *recipients: str, message_type: int = 20201):
    when = datetime(2026, 3, 1, 11, 0, tzinfo=timezone.utc)
    envelope = Envelope(
        message_id="policy-explain-1", message_type=message_type, message_class=0,
        sender=ParticipantId(sender), recipients=tuple(ParticipantId(r) for r in recipients),
        event_date=when, message_date=when,
    )
    path = tmp_path / "envl.xml"
    path.write_bytes(envelope.to_xml())
    return path


@pytest.fixture
def production_move_in(tmp_path):
    """The real moveIn sample with testDeliveryFlag=false (still schema-valid), as production traffic."""
    path = tmp_path / "data.xml"
    path.write_bytes(MOVE_IN.read_bytes().replace(b"<e78:testDeliveryFlag>true", b"<e78:testDeliveryFlag>false"))
    return path


def test_check_reports_findings_and_exits_1(capsys, write_policy, tmp_path):
    """``policy check`` lists findings as JSON and exits 1; the --participants list is honoured."""
    listing = tmp_path / "participants.txt"
    listing.write_text("# known\n1-1061-1\n2-LU-1\n")
    path = write_policy(permit("p", 'senders = ["1-1061-1"]\nrecipients = ["3-CH-1"]\nredact = ["//e11:religion"]'), header=False)
    path.write_text('[namespaces]\ne11 = "http://www.ech.ch/xmlns/eCH-0011/4"\n' + path.read_text())
    code, out = run(capsys, "check", str(path), "--participants", str(listing), "--schemas", str(XSD))
    assert code == 1 and out["ok"] is False
    assert sorted((f["kind"], f["rule"]) for f in out["findings"]) == [("redaction-breaks-schema", "p"), ("unknown-participant", "p")]


def test_check_of_the_demo_set_is_clean(capsys):
    """``policy check`` on the demo federation exits 0 with no findings."""
    assert run(capsys, "check", str(DEMO), "--schemas", str(XSD)) == (0, {"ok": True, "findings": []})


def test_explain_allowed_move_in_with_redaction(capsys, tmp_path, production_move_in):
    """Explain shows the permit, purpose, legal basis, receipt 100 and the religion element it removes."""
    envelope = envelope_file(tmp_path, "1-1061-1", "1-1059-1")
    code, out = run(capsys, "explain", str(envelope), str(production_move_in), "--policies", str(DEMO), "--schemas", str(XSD))
    assert code == 0
    assert out["facts"] == {"action": "1", "event": "moveIn", "test_delivery": False, "data_lock": False, "namespace": "http://www.ech.ch/xmlns/eCH-0020/2"}
    decision = out["decisions"][0]
    assert decision["allowed"] is True and decision["receipt_code"] == 100
    assert decision["rule_ids"] == ["lu-gemeinden-zuzugsmeldung"]
    assert decision["purpose"] == ["Meldung von Zu- und Wegzug an die Gemeinde des anderen Wohnsitzes"]
    assert decision["legal_basis"] == ["Registerharmonisierungsgesetz RHG (Beispiel) (SR 431.02, Art. 12 (Beispiel))"]
    assert decision["removed"] == [{"path": RELIGION, "count": 1}]


def test_explain_test_delivery_to_production_is_refused(capsys, tmp_path):
    """The unmodified sample (testDeliveryFlag=true) to a production Gemeinde gets receipt 311."""
    envelope = envelope_file(tmp_path, "1-1061-1", "1-1059-1")
    code, out = run(capsys, "explain", str(envelope), str(MOVE_IN), "--policies", str(DEMO), "--schemas", str(XSD))
    assert code == 1
    assert (out["decisions"][0]["allowed"], out["decisions"][0]["receipt_code"]) == (False, 311)


def test_explain_partial_multi_recipient_message(capsys, tmp_path, production_move_in):
    """To Kriens and BFS at once: Kriens passes, BFS is refused with 313 by the demo forbid."""
    envelope = envelope_file(tmp_path, "1-1061-1", "1-1059-1", "3-CH-1")
    code, out = run(capsys, "explain", str(envelope), str(production_move_in), "--policies", str(DEMO), "--schemas", str(XSD))
    kriens, bfs = out["decisions"]
    assert code == 1 and kriens["allowed"] is True
    assert (bfs["recipient"], bfs["receipt_code"], bfs["matched_forbids"]) == ("3-CH-1", 313, ["lu-keine-direktlieferung-an-bfs"])
    assert bfs["reason"].startswith("Lucerne Gemeinden deliver statistics through the cantonal register")


def test_explain_real_sempach_statistics_delivery(capsys):
    """The real Sempach eCH-0099 delivery to BFS is refused by default deny (310): Sempach has no permit."""
    code, out = run(capsys, "explain", str(SEMPACH / "envl_1196247040467.xml"), str(SEMPACH / "data_1196247040467.xml"),
                    "--policies", str(DEMO), "--schemas", str(XSD))
    decision = out["decisions"][0]
    assert code == 1 and out["message_type"] == 94 and out["sender"] == "1-1102-1"
    assert (decision["receipt_code"], decision["rule_ids"], decision["matched_permits"]) == (310, [], [])
    assert "default deny" in decision["reason"]


def test_explain_at_a_relay_without_payload(capsys, tmp_path):
    """At a relay the envelope alone decides; no payload facts and no redactions are reported."""
    envelope = envelope_file(tmp_path, "1-1061-1", "1-1059-1")
    code, out = run(capsys, "explain", str(envelope), "--policies", str(DEMO), "--schemas", str(XSD), "--stage", "relay")
    assert code == 0 and out["facts"] is None
    assert out["decisions"][0]["redactions"] == [] and out["decisions"][0]["stage"] == "relay"


def test_diff_reports_gained_lost_and_changed_redactions(capsys, tmp_path):
    """Diff lists who gains and loses access per type/event and which redactions change."""
    new = tmp_path / "new"
    shutil.copytree(DEMO, new)
    register_file = new / "einwohnerregister.toml"
    text = register_file.read_text(encoding="utf-8")
    text = text.replace("message_types = [20001, 20201]", "message_types = [20201]")  # register loses 20001
    text = text.replace('redact = ["//e20:moveInPerson/e20:religion"]', 'redact = ["//e20:moveInPerson/e20:religion", "//e20:moveInPerson/e20:callName"]')
    register_file.write_text(text, encoding="utf-8")
    stats = new / "statistik.toml"
    stats.write_text(stats.read_text(encoding="utf-8").replace('senders = ["2-LU-1"]', 'senders = ["2-LU-1", "1-1059-1"]').replace(
        'senders = ["gemeinden-lu"]\nrecipients = ["3-CH-1"]', 'senders = ["1-1061-1", "1-1024-1"]\nrecipients = ["3-CH-1"]'), encoding="utf-8")
    code, out = run(capsys, "diff", str(DEMO), str(new))
    assert code == 0
    assert out["rules"]["changed"] == ["lu-gemeinden-an-kantonsregister", "lu-gemeinden-zuzugsmeldung", "lu-kantonsregister-an-bfs", "lu-keine-direktlieferung-an-bfs"]
    access = out["access"]
    gained = [(a["sender"], a["recipient"], a["message_type"], a["event"]) for a in access if a["change"] == "gained"]
    lost = sorted((a["sender"], a["recipient"], a["message_type"], a["event"]) for a in access if a["change"] == "lost")
    assert gained == [("1-1059-1", "3-CH-1", 94, "*")]
    assert lost == [(g, "2-LU-1", 20001, "*") for g in ("1-1024-1", "1-1059-1", "1-1061-1")]
    redactions = [a for a in access if a["change"] == "redactions"]
    assert {(a["sender"], a["recipient"], a["event"]) for a in redactions} >= {("1-1061-1", "1-1059-1", "moveIn")}
    assert {(a["event"], a["action"]) for a in redactions} == {
        (e, a) for e in ("moveIn", "moveOut", "changeResidenceType") for a in ("1", "4")
    }
    assert len(redactions) == 6 * 6  # six ordered pairs of the three Gemeinden, six event/action combinations
    assert all(a["redactions_before"] == [RELIGION] and a["redactions_after"] == sorted([RELIGION, CALL_NAME]) for a in redactions)


def test_diff_of_identical_sets_is_empty(capsys):
    """Comparing a set with itself reports no access change and the same revision."""
    code, out = run(capsys, "diff", str(DEMO), str(DEMO))
    assert code == 0 and out["access"] == [] and out["old_revision"] == out["new_revision"]


def run_text(capsys, *argv: str) -> tuple[int, list[str]]:
    parser = argparse.ArgumentParser(prog="drehscheibe")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["policy", *argv, "--now", NOW])
    code = args.func(args)
    return code, capsys.readouterr().out.splitlines()


def test_explain_text_names_rules_receipt_purpose_basis_and_removals(capsys, tmp_path, production_move_in):
    """The admin's text view of a move-in to Kriens and BFS: verdicts, receipts, matched rules, purpose, basis, removals."""
    envelope = envelope_file(tmp_path, "1-1061-1", "1-1059-1", "3-CH-1")
    code, lines = run_text(capsys, "explain", str(envelope), str(production_move_in), "--policies", str(DEMO), "--schemas", str(XSD))
    assert code == 1
    assert lines[0].startswith("policy revision sha256:")
    assert lines[1:] == [
        "1-1061-1 -> 1-1059-1 type 20201: ALLOWED, receipt 100 (permitted)",
        "  deciding rules: lu-gemeinden-zuzugsmeldung",
        "  matched permits: lu-gemeinden-zuzugsmeldung; matched forbids: -",
        "  purpose: Meldung von Zu- und Wegzug an die Gemeinde des anderen Wohnsitzes",
        "  legal basis: Registerharmonisierungsgesetz RHG (Beispiel) (SR 431.02, Art. 12 (Beispiel))",
        f"  removes: {RELIGION} (1 removed)",
        "1-1061-1 -> 3-CH-1 type 20201: DENIED, receipt 313 (Lucerne Gemeinden deliver statistics through the cantonal "
        "register 2-LU-1, not directly to the BFS (forbid lu-keine-direktlieferung-an-bfs))",
        "  deciding rules: lu-keine-direktlieferung-an-bfs",
        "  matched permits: -; matched forbids: lu-keine-direktlieferung-an-bfs",
        "  purpose: -",
        "  legal basis: -",
    ]


def test_diff_text_lists_rule_and_access_changes(capsys, tmp_path):
    """The text diff of the register losing type 20001 names the changed rule and the three Gemeinden that lose access."""
    new = tmp_path / "new"
    shutil.copytree(DEMO, new)
    register_file = new / "einwohnerregister.toml"
    register_file.write_text(register_file.read_text(encoding="utf-8").replace("message_types = [20001, 20201]", "message_types = [20201]"), encoding="utf-8")
    code, lines = run_text(capsys, "diff", str(DEMO), str(new))
    assert code == 0
    assert lines[0].endswith(": rules 0 added, 0 removed, 1 changed")
    assert lines[1:] == [
        "  rules changed: lu-gemeinden-an-kantonsregister",
        "access: 0 gained, 3 lost, 0 with other redactions",
        *(f"  lost {g} -> 2-LU-1 type 20001 class * event * action * data lock *" for g in ("1-1024-1", "1-1059-1", "1-1061-1")),
    ]
