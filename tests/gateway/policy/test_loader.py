"""Loading policy files: every refusal names file, rule, field and value."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from gateway.policy import PolicyLoadError, load_policy_set
from gateway.policy.loader import _RULE_FIELDS

from .conftest import DEMO, REPO, XSD, forbid, permit

BASIC = 'senders = ["1-1061-1"]\nrecipients = ["2-LU-1"]\n'

# (description, TOML text, rule id in the message, field, value as quoted)
BAD_FILES = [
    ("unknown effect", '[[rule]]\nid = "r1"\neffect = "allow"\n' + BASIC, "r1", "effect", "'allow'"),
    ("bad participant ID", permit("r2", 'senders = ["1-LUZERN"]\nrecipients = ["2-LU-1"]'), "r2", "senders", "'1-LUZERN'"),
    ("unknown group", permit("r3", 'senders = ["gemeinden-zh"]\nrecipients = ["2-LU-1"]'), "r3", "senders", "'gemeinden-zh'"),
    ("bad glob", permit("r4", 'senders = ["1-**-x"]\nrecipients = ["2-LU-1"]'), "r4", "senders", "'1-**-x'"),
    ("missing recipients", permit("r5", 'senders = ["1-1061-1"]'), "r5", "recipients", "None"),
    ("permit without legal basis", '[[rule]]\nid = "r6"\neffect = "permit"\npurpose = "p"\n' + BASIC, "r6", "legal_basis", "None"),
    ("message type out of range", permit("r7", BASIC + "message_types = [99999999]"), "r7", "message_types", "99999999"),
    ("unknown action code", permit("r8", BASIC + 'actions = ["2"]'), "r8", "actions", "'2'"),
    ("event name not an element name", permit("r9", BASIC + 'events = ["Move In"]'), "r9", "events", "'Move In'"),
    ("negative size limit", permit("r10", BASIC + "max_payload_size = -5"), "r10", "max_payload_size", "-5"),
    ("naive valid_from", permit("r11", BASIC + "valid_from = 2026-01-01T00:00:00"), "r11", "valid_from", "'2026-01-01T00:00:00'"),
    ("valid_until is text", permit("r12", BASIC + 'valid_until = "soon"'), "r12", "valid_until", "'soon'"),
    ("unknown field (typo)", permit("r13", BASIC + "max_size = 10"), "r13", "max_size", "10"),
    ("redaction with undeclared prefix", permit("r14", BASIC + 'redact = ["//x:religion"]'), "r14", "redact", "'//x:religion'"),
    ("redaction without namespace", permit("r15", BASIC + 'redact = ["//religion"]'), "r15", "redact", "'//religion'"),
    ("redaction with an XPath predicate", permit("r16", BASIC + 'redact = ["//e20:religion[1]"]'), "r16", "redact", "'//e20:religion[1]'"),
    ("redaction on a forbid", forbid("r17", BASIC + 'redact = ["//e20:religion"]'), "r17", "redact", "['//e20:religion']"),
    ("allow_locked_data not boolean", permit("r18", BASIC + 'allow_locked_data = "yes"'), "r18", "allow_locked_data", "'yes'"),
]


@pytest.mark.parametrize(("description", "text", "rule", "field", "value"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_rule_is_refused_naming_file_rule_field_and_value(write_policy, description, text, rule, field, value):
    """A bad rule is refused at load time with file, rule id, field and the bad value in the message."""
    path = write_policy(text)
    with pytest.raises(PolicyLoadError) as info:
        load_policy_set([path])
    message = str(info.value)
    assert str(path) in message
    assert f"rule '{rule}'" in message
    assert f"field '{field}'" in message
    assert message.endswith(value)
    assert (info.value.rule, info.value.field) == (rule, field)


def test_duplicate_rule_id_across_files_names_both_files(write_policy):
    """The same rule id in two files is refused, naming both files."""
    first = write_policy(permit("same", BASIC))
    second = write_policy(permit("same", BASIC), header=False)
    with pytest.raises(PolicyLoadError) as info:
        load_policy_set([first, second])
    assert str(first) in str(info.value) and str(second) in str(info.value)
    assert info.value.field == "id"


def test_invalid_toml_is_refused_naming_the_file(write_policy):
    """A file that is not TOML is refused with its name."""
    path = write_policy("[[rule]\nid=", header=False)
    with pytest.raises(PolicyLoadError, match="not valid TOML") as info:
        load_policy_set([path])
    assert str(path) in str(info.value)


def test_empty_folder_is_refused(tmp_path):
    """Loading a folder without policy files fails instead of yielding an empty deny-all set."""
    with pytest.raises(PolicyLoadError, match="no policy files"):
        load_policy_set([tmp_path])


def test_revision_ignores_rule_order_whitespace_and_file_split(write_policy, tmp_path):
    """The revision hashes the canonical set: reordering rules or splitting files keeps it."""
    a, b = permit("a", BASIC), permit("b", BASIC + "message_types = [94, 20001]")
    one = write_policy(a + b)
    folder = tmp_path / "split"
    folder.mkdir()
    (folder / "x.toml").write_text(one.read_text().split("[[rule]]")[0] + b.replace("[94, 20001]", "[20001,   94]"))
    (folder / "y.toml").write_text("\n\n" + a)
    assert load_policy_set([one]).revision == load_policy_set([folder]).revision
    changed = write_policy(a + b.replace("94", "95"))
    assert load_policy_set([changed]).revision != load_policy_set([one]).revision


def test_loaded_set_is_frozen():
    """A loaded set cannot be changed after loading."""
    policy_set = load_policy_set([DEMO])
    with pytest.raises(AttributeError):
        policy_set.rules[0].purpose = "anything"  # type: ignore[misc]


def test_plain_dates_mean_midnight_in_lucerne(write_policy):
    """A plain TOML date in valid_from means 00:00 Europe/Zurich."""
    policy_set = load_policy_set([write_policy(permit("d", BASIC + "valid_from = 2026-01-01"))])
    assert policy_set.rules[0].valid_from == datetime(2025, 12, 31, 23, 0, tzinfo=timezone.utc)


def test_json_schema_lists_exactly_the_rule_fields_the_loader_accepts():
    """schemas/policy.schema.json documents the same rule fields the loader accepts."""
    schema = json.loads((REPO / "schemas" / "policy.schema.json").read_text(encoding="utf-8"))
    rule_schema = schema["$defs"]["rule"]
    assert set(rule_schema["properties"]) == _RULE_FIELDS
    assert rule_schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"policy", "namespaces", "participants", "groups", "rule"}


@pytest.mark.parametrize(("text", "field", "value"), [
    ('[policy]\nowner = "x"\n', "policy.owner", "'x'"),
    ('[rules]\nx = 1\n', "rules", "'rules'"),
    ('[groups]\nGemeinden = ["1-1061-1"]\n', "groups.Gemeinden", "'Gemeinden'"),
    ('[groups]\nleer = []\n', "groups.leer", "[]"),
    ('[participants]\n"Luzern" = "Stadt"\n', "participants.Luzern", "'Luzern'"),
], ids=["policy-key", "top-level-table", "group-name", "empty-group", "participant-id"])
def test_bad_set_level_table_is_refused_naming_file_field_and_value(write_policy, text, field, value):
    """Errors outside rules name the file, the table key and the bad value."""
    path = write_policy(text, header=False)
    with pytest.raises(PolicyLoadError) as info:
        load_policy_set([path])
    assert str(path) in str(info.value) and f"field '{field}'" in str(info.value)
    assert str(info.value).endswith(value) and info.value.rule is None


def test_conflicting_namespace_prefix_is_refused(write_policy):
    """The same prefix bound to two URIs in two files is refused, naming the earlier file."""
    first = write_policy('[namespaces]\ne20 = "http://www.ech.ch/xmlns/eCH-0020/2"\n', header=False)
    second = write_policy('[namespaces]\ne20 = "http://www.ech.ch/xmlns/eCH-0020/3"\n', header=False)
    with pytest.raises(PolicyLoadError) as info:
        load_policy_set([first, second])
    assert str(first) in str(info.value) and str(second) in str(info.value)


def test_redaction_that_breaks_the_xsd_is_refused_at_load_when_schemas_are_given(write_policy):
    """With the official XSDs, a redaction of a mandatory element is refused at load, naming rule, field and path."""
    path = write_policy(permit("mandatory", BASIC + 'redact = ["//e20:moveInPerson/e20:nationality"]'))
    assert load_policy_set([path]).rule("mandatory")  # without the XSDs only the syntax is checked
    with pytest.raises(PolicyLoadError) as info:
        load_policy_set([path], schemas=XSD)
    assert (info.value.file, info.value.rule, info.value.field) == (str(path), "mandatory", "redact")
    assert "mandatory" in info.value.problem and str(info.value).endswith("'//e20:moveInPerson/e20:nationality'")


def test_redaction_that_can_never_apply_is_refused_at_load_when_schemas_are_given(write_policy):
    """A misspelt redaction path would let the data through, so with the XSDs it is refused at load."""
    path = write_policy(permit("typo", BASIC + 'redact = ["//e20:moveInPerson/e20:religon"]'))
    with pytest.raises(PolicyLoadError, match="can never remove anything") as info:
        load_policy_set([path], schemas=XSD)
    assert (info.value.rule, info.value.field) == ("typo", "redact")


def test_the_demo_set_loads_with_the_xsd_proof():
    """The demo federation's redactions pass the XSD proof at load."""
    assert load_policy_set([DEMO], schemas=XSD).revision == load_policy_set([DEMO]).revision


def test_participant_table_ids_are_normalised_like_rule_ids(write_policy):
    """A sedex:// key in [participants] is stored as the bare ID, the form rules use."""
    path = write_policy('[participants]\n"sedex://1-1061-1" = "Stadt Luzern"\n', header=False)
    assert load_policy_set([path]).participants == (("1-1061-1", "Stadt Luzern"),)
