"""The policy holder: reloads are audited and a bad reload keeps the previous set."""

from __future__ import annotations

import json
import shutil

import pytest

from gateway.ids import ParticipantId
from gateway.policy import PolicyRequest, PolicyStore, load_policy_set
from gateway.policy import store as store_module
from gateway.policy.store import MAX_DETAIL, MAX_EXAMPLES, MAX_RULE_IDS, _files_digest

from .conftest import DEMO, MOVE_IN, NOW, XSD, permit

BASIC = 'senders = ["1-1061-1"]\nrecipients = ["2-LU-1"]\n'


def test_bad_reload_keeps_the_previous_set_and_reports_the_error(write_policy):
    """A reload with a bad file keeps deciding on the old set and returns the error for the audit."""
    good = write_policy(permit("good", BASIC))
    store = PolicyStore(load_policy_set([good]), clock=lambda: NOW)
    before = store.revision
    bad = write_policy(permit("broken", BASIC + "max_payload_size = 0"))
    result = store.reload([bad], actor="admin:anna")
    assert not result.accepted
    assert (result.actor, result.at, result.old_revision, result.new_revision) == ("admin:anna", NOW, before, None)
    assert "rule 'broken'" in result.error and "max_payload_size" in result.error
    assert store.revision == before
    request = PolicyRequest(ParticipantId("1-1061-1"), ParticipantId("2-LU-1"), 1, 0, 1)
    assert store.engine.decide(request, NOW, "origin").rule_ids == ("good",)


def test_good_reload_swaps_the_set_and_summarises_the_change(write_policy):
    """A good reload returns who, when, both revisions and which rules were added, removed or changed."""
    store = PolicyStore(load_policy_set([write_policy(permit("kept", BASIC) + permit("gone", BASIC))]), clock=lambda: NOW)
    old = store.revision
    new_file = write_policy(permit("kept", BASIC + "message_types = [94]") + permit("new", BASIC))
    result = store.reload([new_file], actor="admin:beat")
    assert result.accepted and result.old_revision == old and result.new_revision == store.revision != old
    assert (result.changes.added, result.changes.removed, result.changes.changed) == (("new",), ("gone",), ("kept",))
    assert result.to_json()["changes"]["summary"] == "1 added, 1 removed, 1 changed"


def test_store_without_policies_refuses_to_decide():
    """A node without a loaded policy set has no engine, so nothing is allowed by accident."""
    with pytest.raises(LookupError):
        PolicyStore().engine


def demo_copy(tmp_path, name: str = "new"):
    folder = tmp_path / name
    shutil.copytree(DEMO, folder)
    return folder


def test_reload_result_carries_what_the_audit_record_needs(tmp_path):
    """Who, when, both revisions, the files' digest, rule changes and the access gained and lost."""
    store = PolicyStore(load_policy_set([DEMO]), clock=lambda: NOW)
    old = store.revision
    new = demo_copy(tmp_path)
    register = new / "einwohnerregister.toml"
    register.write_text(register.read_text(encoding="utf-8").replace("message_types = [20001, 20201]", "message_types = [20201]"), encoding="utf-8")
    result = store.reload([new], actor="admin:anna")
    assert result.accepted and (result.actor, result.at, result.old_revision) == ("admin:anna", NOW, old)
    assert result.new_revision == store.revision != old
    assert result.files_digest.startswith("sha256:") and result.files_digest != _files_digest([DEMO])
    assert result.changes.changed == ("lu-gemeinden-an-kantonsregister",)
    assert (result.access.gained, result.access.lost, result.access.redactions) == (0, 3, 0)
    assert result.access.examples == tuple(
        f"lost {g} -> 2-LU-1 type 20001 class * event * action * data lock *" for g in ("1-1024-1", "1-1059-1", "1-1061-1")
    )
    assert result.access.summary == "0 gained, 3 lost, 0 with other redactions"
    assert result.audit_details()["access"] == result.access.summary


def test_reload_result_to_json_for_the_admin_api(tmp_path):
    """to_json() is plain JSON with revisions, rule changes, access summary and no error."""
    store = PolicyStore(load_policy_set([DEMO]), clock=lambda: NOW)
    result = store.reload([DEMO], actor="admin:beat")
    data = json.loads(json.dumps(result.to_json()))
    assert data == {
        "accepted": True, "actor": "admin:beat", "at": "2026-03-01T12:00:00+00:00",
        "old_revision": store.revision, "new_revision": store.revision, "files_digest": _files_digest([DEMO]),
        "changes": {"added": [], "removed": [], "changed": [], "truncated": False, "summary": "0 added, 0 removed, 0 changed"},
        "access": {"gained": 0, "lost": 0, "redactions": 0, "examples": [], "truncated": False, "skipped": None,
                   "summary": "0 gained, 0 lost, 0 with other redactions"},
        "error": None, "failure": None,
    }


def test_the_files_digest_depends_on_content_not_on_the_folder(tmp_path):
    """The same files in another folder give the same digest; one changed byte gives another."""
    copy = demo_copy(tmp_path, "copy")
    assert _files_digest([copy]) == _files_digest([DEMO])
    stats = copy / "statistik.toml"
    stats.write_bytes(stats.read_bytes() + b"\n")
    assert _files_digest([copy]) != _files_digest([DEMO])


def test_a_refused_reload_says_which_file_rule_and_field(write_policy):
    """A bad set leaves the old one live; the result names file, rule and field, in to_json() and the audit details."""
    good = write_policy(permit("good", BASIC))
    store = PolicyStore(load_policy_set([good]), clock=lambda: NOW)
    before = store.revision
    bad = write_policy(permit("good", BASIC) + permit("broken", 'senders = ["1-1061-1"]\nrecipients = ["gemeinden-zh"]'))
    result = store.reload([bad], actor="admin:anna")
    assert not result.accepted and store.revision == before
    assert (result.failure.file, result.failure.rule, result.failure.field, result.failure.problem) == (str(bad), "broken", "recipients", "unknown group")
    assert result.to_json()["failure"] == {"file": str(bad), "rule": "broken", "field": "recipients", "problem": "unknown group", "message": result.error}
    assert result.to_json()["error"] == result.error and "rule 'broken'" in result.error
    assert (result.to_json()["new_revision"], result.to_json()["changes"], result.to_json()["access"]) == (None, None, None)
    details = result.audit_details()
    assert (details["accepted"], details["error_file"], details["error_rule"], details["error_field"]) == ("false", str(bad), "broken", "recipients")
    assert details["old_revision"] == before and details["new_revision"] == "-"


def test_a_reload_pointed_at_a_payload_quotes_none_of_it(tmp_path):
    """Reloading from an eCH message by mistake is refused, and the error quotes no personal data."""
    store = PolicyStore(load_policy_set([DEMO]), clock=lambda: NOW)
    wrong = tmp_path / "data.toml"
    wrong.write_bytes(MOVE_IN.read_bytes())
    result = store.reload([wrong], actor="admin:anna")
    assert not result.accepted and result.failure.field == "file"
    text = json.dumps(result.to_json(), ensure_ascii=False) + json.dumps(result.audit_details(), ensure_ascii=False)
    for personal in ("Meier", "Dirk", "7565706688248", "religion"):
        assert personal not in text


def test_a_reload_with_the_xsds_refuses_a_redaction_that_breaks_payloads(write_policy):
    """A store that knows the XSDs keeps the old set when a new redaction would remove a mandatory element."""
    store = PolicyStore(load_policy_set([write_policy(permit("good", BASIC))]), clock=lambda: NOW, schemas=XSD)
    before = store.revision
    bad = write_policy(permit("good", BASIC + 'redact = ["//e20:moveInPerson/e20:nationality"]'))
    result = store.reload([bad], actor="admin:anna")
    assert not result.accepted and store.revision == before
    assert (result.failure.rule, result.failure.field) == ("good", "redact")


def test_audit_details_are_text_and_bounded(write_policy):
    """Every audit detail is a string of at most MAX_DETAIL characters, however large the change."""
    store = PolicyStore(load_policy_set([write_policy(permit("seed", BASIC + "message_types = [999]"))]), clock=lambda: NOW)
    many = "".join(permit(f"rule-number-{i:03d}", f'senders = ["1-1061-1"]\nrecipients = ["2-LU-1"]\nmessage_types = [{i}]') for i in range(120))
    result = store.reload([write_policy(many)], actor="admin:anna")
    assert result.accepted and len(result.changes.added) == 120
    details = result.audit_details()
    assert all(isinstance(v, str) and len(v) <= MAX_DETAIL for v in details.values())
    assert details["rules"] == "120 added, 1 removed, 0 changed" and details["rules_added"].endswith("…")
    assert details["access"] == "120 gained, 1 lost, 0 with other redactions"
    assert details["access_examples"].startswith("gained 1-1061-1 -> 2-LU-1 type 0 class * event * action * data lock unlocked; ")
    assert len(details["access_examples"]) == MAX_DETAIL and details["access_examples"].endswith("…")
    data = result.to_json()
    assert len(data["changes"]["added"]) == MAX_RULE_IDS and data["changes"]["truncated"] is True
    assert len(data["access"]["examples"]) == MAX_EXAMPLES and data["access"]["truncated"] is True


def test_a_comparison_too_large_is_skipped_with_the_reason(write_policy, monkeypatch):
    """Above the comparison limit a reload reports the rule changes and says why access was not compared."""
    monkeypatch.setattr(store_module, "MAX_COMPARISON", 10)
    store = PolicyStore(load_policy_set([write_policy(permit("a", BASIC))]), clock=lambda: NOW)
    result = store.reload([write_policy(permit("b", BASIC))], actor="admin:anna")
    assert result.accepted and result.changes.added == ("b",)
    assert result.access.skipped.endswith("exceed the limit of 10; run policy diff")
    assert result.audit_details()["access"].startswith("not compared:")


def test_the_first_load_has_no_previous_set_to_compare(write_policy):
    """Loading into an empty store is accepted, with no old revision and no access comparison."""
    store = PolicyStore(clock=lambda: NOW)
    result = store.reload([write_policy(permit("a", BASIC))], actor="node")
    assert result.accepted and result.old_revision is None and store.revision == result.new_revision
    assert result.changes.added == ("a",) and result.access.skipped == "no previous policy set"
