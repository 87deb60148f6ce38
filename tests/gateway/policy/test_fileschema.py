"""The published JSON Schema is enforced at load, and it agrees with the loader's own checks."""

from __future__ import annotations

import json
import tomllib

import pytest

from gateway.policy import PolicyLoadError, load_policy_set
from gateway.policy import fileschema
from gateway.policy.loader import _build

from .conftest import HEADER, REPO, forbid

BASIC = 'senders = ["1-1061-1"]\nrecipients = ["2-LU-1"]\n'
RELIGION = "//e20:moveInPerson/e20:religion"


def rule(body: str, effect: str = "forbid") -> str:
    return f'[[rule]]\nid = "r"\neffect = "{effect}"\n{body}\n'


def refs(entry: str) -> str:
    return forbid("r", f'senders = [{entry}]\nrecipients = ["2-LU-1"]')


def full_permit(extra: str) -> str:
    return rule(BASIC + 'purpose = "p"\nlegal_basis = "b"\nlegal_reference = "SRL 1"\n' + extra, "permit")


# (id, TOML text, with the shared [participants]/[groups]/[namespaces] header)
BAD = [
    ("effect-unknown", rule(BASIC).replace('"forbid"', '"allow"'), True),
    ("effect-missing", '[[rule]]\nid = "r"\n' + BASIC, True),
    ("id-missing", '[[rule]]\neffect = "forbid"\n' + BASIC, True),
    ("id-leading-dash", forbid("-r", BASIC), True),
    ("id-number", '[[rule]]\nid = 5\neffect = "forbid"\n' + BASIC, True),
    ("unknown-field", forbid("r", BASIC + "max_size = 10"), True),
    ("senders-missing", forbid("r", 'recipients = ["2-LU-1"]'), True),
    ("senders-empty", forbid("r", 'senders = []\nrecipients = ["2-LU-1"]'), True),
    ("senders-number", forbid("r", 'senders = 1061\nrecipients = ["2-LU-1"]'), True),
    ("sender-not-an-id", refs('"1-LUZERN"'), True),
    ("sender-with-blanks", refs('" 1-1061-1"'), True),
    ("sender-uri-in-capitals", refs('"SEDEX://1-1061-1"'), True),
    ("sender-id-without-glob-chars", refs('"0-ABC-1"'), True),
    ("sender-bad-glob", refs('"1-**-x"'), True),
    ("sender-glob-as-uri", refs('"sedex://1-*-1"'), True),
    ("sender-upper-case-word", refs('"LUZERN"'), True),
    ("message-types-float", forbid("r", BASIC + "message_types = [94.0]"), True),
    ("message-types-bool", forbid("r", BASIC + "message_types = true"), True),
    ("message-types-too-large", forbid("r", BASIC + "message_types = [2700000]"), True),
    ("message-types-negative", forbid("r", BASIC + "message_types = -1"), True),
    ("message-types-empty", forbid("r", BASIC + "message_types = []"), True),
    ("message-classes-text", forbid("r", BASIC + 'message_classes = ["0"]'), True),
    ("actions-unknown-code", forbid("r", BASIC + 'actions = ["2"]'), True),
    ("actions-zero-padded", forbid("r", BASIC + 'actions = ["01"]'), True),
    ("actions-bool", forbid("r", BASIC + "actions = [true]"), True),
    ("actions-float", forbid("r", BASIC + "actions = [1.0]"), True),
    ("actions-empty", forbid("r", BASIC + "actions = []"), True),
    ("events-capitalised", forbid("r", BASIC + 'events = ["MoveIn"]'), True),
    ("events-number", forbid("r", BASIC + "events = [5]"), True),
    ("events-empty", forbid("r", BASIC + "events = []"), True),
    ("size-zero", full_permit("max_payload_size = 0"), True),
    ("size-float", full_permit("max_payload_size = 1.5"), True),
    ("size-text", full_permit('max_payload_size = "1MB"'), True),
    ("valid-from-local-date-time", forbid("r", BASIC + "valid_from = 2026-01-01T00:00:00"), True),
    ("valid-from-local-time", forbid("r", BASIC + "valid_from = 07:00:00"), True),
    ("valid-from-word", forbid("r", BASIC + 'valid_from = "soon"'), True),
    ("valid-from-quoted-without-offset", forbid("r", BASIC + 'valid_from = "2026-01-01T00:00:00"'), True),
    ("valid-until-impossible-day", forbid("r", BASIC + 'valid_until = "2026-02-30"'), True),
    ("valid-until-impossible-time", forbid("r", BASIC + 'valid_until = "2026-02-01T25:00:00+01:00"'), True),
    ("valid-until-number", forbid("r", BASIC + "valid_until = 2026"), True),
    ("purpose-blank", rule(BASIC + 'purpose = "  "\nlegal_basis = "b"\nlegal_reference = "SRL 1"', "permit"), True),
    ("legal-reference-missing", rule(BASIC + 'purpose = "p"\nlegal_basis = "b"', "permit"), True),
    ("reason-blank", forbid("r", BASIC + 'reason = " "'), True),
    ("description-number", forbid("r", BASIC + "description = 5"), True),
    ("allow-locked-data-text", full_permit('allow_locked_data = "yes"'), True),
    ("forbid-with-purpose", forbid("r", BASIC + 'purpose = "p"'), True),
    ("forbid-with-allow-locked-data", forbid("r", BASIC + "allow_locked_data = false"), True),
    ("forbid-with-size", forbid("r", BASIC + "max_payload_size = 10"), True),
    ("forbid-with-redact", forbid("r", BASIC + f'redact = ["{RELIGION}"]'), True),
    ("redact-not-a-list", full_permit(f'redact = "{RELIGION}"'), True),
    ("redact-unqualified", full_permit('redact = ["//religion"]'), True),
    ("redact-predicate", full_permit('redact = ["//e20:religion[1]"]'), True),
    ("redact-attribute", full_permit('redact = ["//e20:moveInPerson/@id"]'), True),
    ("redact-function", full_permit('redact = ["//e20:religion/text()"]'), True),
    ("redact-relative", full_permit('redact = ["e20:religion"]'), True),
    ("redact-trailing-slash", full_permit('redact = ["//e20:religion/"]'), True),
    ("redact-empty-namespace", full_permit('redact = ["//{}religion"]'), True),
    ("redact-non-ascii", full_permit('redact = ["//e20:religiön"]'), True),
    ("redact-number", full_permit("redact = [5]"), True),
    ("rule-as-table", '[rule]\nid = "r"\n', True),
    ("rule-not-a-table", "rule = [5]\n", True),
    ("top-level-unknown", "[rules]\nx = 1\n", False),
    ("policy-unknown-key", '[policy]\nowner = "x"\n', False),
    ("policy-name-number", "[policy]\nname = 5\n", False),
    ("policy-not-a-table", "policy = 5\n", False),
    ("namespace-prefix-digit", '[namespaces]\n"1x" = "urn:x"\n', False),
    ("namespace-uri-empty", '[namespaces]\nx = ""\n', False),
    ("participant-not-an-id", '[participants]\n"Luzern" = "Stadt"\n', False),
    ("participant-with-blanks", '[participants]\n" 1-1061-1" = "Stadt"\n', False),
    ("participant-name-number", '[participants]\n"1-1061-1" = 5\n', False),
    ("group-name-capitals", '[groups]\nGemeinden = ["1-1061-1"]\n', False),
    ("group-name-underscore", '[groups]\ngemeinden_lu = ["1-1061-1"]\n', False),
    ("group-empty", "[groups]\nleer = []\n", False),
    ("group-not-a-list", '[groups]\nstadt = "1-1061-1"\n', False),
    ("group-member-not-an-id", '[groups]\nstadt = ["1-1061-1", "Luzern"]\n', False),
]

GOOD = [
    ("sedex-uris", forbid("r", 'senders = ["sedex://1-1061-1"]\nrecipients = "sedex://2-LU-1"')),
    ("single-values", full_permit('message_types = 94\nmessage_classes = 0\nactions = 1\nevents = "moveIn"')),
    ("globs-and-groups", forbid("r", 'senders = ["*", "T*", "1-*-1", "1-10??-1", "gemeinden-lu"]\nrecipients = ["T?-*-*"]')),
    ("test-and-sedex-ids", forbid("r", 'senders = ["T1-1061-1", "0-sedex-1", "T0-sedex-2"]\nrecipients = ["2-LU-1"]')),
    ("toml-dates", forbid("r", BASIC + "valid_from = 2026-01-01\nvalid_until = 2026-07-01T00:00:00+02:00")),
    ("quoted-dates", forbid("r", BASIC + 'valid_from = "2026-01-01"\nvalid_until = "2026-07-01 00:00:00.5Z"')),
    ("every-permit-field", full_permit(
        "message_types = [20001, 20201]\nmessage_classes = [0, 1]\nactions = [\"1\", 4]\nevents = [\"moveIn\"]\n"
        "max_payload_size = 1024\nallow_locked_data = false\ndescription = \"d\"\n"
        f'redact = ["{RELIGION}", "//{{http://www.ech.ch/xmlns/eCH-0011/4}}religion", "/e20:delivery/e20:moveIn"]')),
    ("empty-redact-list", full_permit("redact = []")),
    ("forbid-with-reason", forbid("r", BASIC + 'reason = "goes through the canton"\ndescription = "d"')),
    ("metadata-only", '[policy]\nname = "n"\ndescription = "d"\n'),
]

# The schema cannot see across files or into other tables: the loader alone refuses these.
# (The first file has the shared header, the others do not.)
SEMANTIC = [
    ("unknown-group", [refs('"gemeinden-zh"')]),
    ("undeclared-prefix", [full_permit('redact = ["//x:religion"]')]),
    ("duplicate-rule-id", [forbid("r", BASIC), forbid("r", BASIC)]),
    ("group-in-two-files", ["", '[groups]\ngemeinden-lu = ["1-1061-1"]\n']),
    ("prefix-bound-twice", ["", '[namespaces]\ne20 = "http://www.ech.ch/xmlns/eCH-0020/3"\n']),
]


def document(text: str, header: bool = True) -> dict:
    return tomllib.loads((HEADER if header else "") + text)


def schema_accepts(doc: dict) -> bool:
    return fileschema.first_violation(doc) is None


def loader_accepts(*docs: dict) -> bool:
    """The loader's own checks alone (without the schema), as a second, independent line."""
    try:
        _build([(f"f{i}.toml", doc) for i, doc in enumerate(docs)])
    except PolicyLoadError:
        return False
    return True


@pytest.mark.parametrize(("name", "text", "header"), BAD, ids=[b[0] for b in BAD])
def test_schema_and_loader_both_refuse(name, text, header):
    """Each bad snippet is refused by the published schema and, independently, by the loader's own checks."""
    doc = document(text, header)
    assert not schema_accepts(doc), "the schema accepts it"
    assert not loader_accepts(doc), "the loader's own checks accept it"


@pytest.mark.parametrize(("name", "text"), GOOD, ids=[g[0] for g in GOOD])
def test_schema_and_loader_both_accept(name, text):
    """Each good snippet passes the schema and the loader's own checks."""
    doc = document(text)
    assert schema_accepts(doc), fileschema.first_violation(doc)
    assert loader_accepts(doc)


@pytest.mark.parametrize(("name", "texts"), SEMANTIC, ids=[s[0] for s in SEMANTIC])
def test_what_only_the_loader_can_see(name, texts):
    """Cross-file and cross-table mistakes pass the schema file by file and are refused by the loader."""
    docs = [document(texts[0])] + [document(text, header=False) for text in texts[1:]]
    assert all(schema_accepts(doc) for doc in docs)
    assert not loader_accepts(*docs)


POLICY_FILES = sorted((REPO / "policies").rglob("*.toml"))


def test_the_repository_has_policy_files():
    """The walk below finds the demo set, so the next tests check real files."""
    assert {p.name for p in POLICY_FILES} >= {"participants.toml", "einwohnerregister.toml", "statistik.toml"}


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_policy_file_in_the_repository_validates(path):
    """Every TOML file under policies/ (recursively) is valid against the published schema."""
    assert fileschema.first_violation(tomllib.loads(path.read_text(encoding="utf-8"))) is None


@pytest.mark.parametrize("folder", sorted({p.parent for p in POLICY_FILES}), ids=lambda p: str(p.relative_to(REPO)))
def test_every_policy_folder_in_the_repository_loads(folder):
    """Every folder of policy files under policies/ loads as one set."""
    assert load_policy_set([folder]).rules


def test_the_loader_enforces_the_published_file(write_policy, monkeypatch, tmp_path):
    """A constraint added to schemas/policy.schema.json is enforced at load without a code change."""
    path = write_policy(full_permit('description = "%s"' % ("x" * 30)))
    assert load_policy_set([path])
    schema = json.loads(fileschema.SCHEMA_PATH.read_text(encoding="utf-8"))
    schema["$defs"]["rule"]["properties"]["description"]["maxLength"] = 20
    stricter = tmp_path / "stricter.schema.json"
    stricter.write_text(json.dumps(schema), encoding="utf-8")
    monkeypatch.setattr(fileschema, "SCHEMA_PATH", stricter)
    fileschema.validator.cache_clear()
    try:
        with pytest.raises(PolicyLoadError) as info:
            load_policy_set([path])
        assert (info.value.rule, info.value.field) == ("r", "description")
    finally:
        monkeypatch.undo()
        fileschema.validator.cache_clear()


def test_a_missing_schema_refuses_every_file(write_policy, monkeypatch, tmp_path):
    """Without the published schema nothing loads (fail closed), and the error names the schema file."""
    path = write_policy(forbid("r", BASIC))
    monkeypatch.setattr(fileschema, "SCHEMA_PATH", tmp_path / "gone.schema.json")
    fileschema.validator.cache_clear()
    try:
        with pytest.raises(PolicyLoadError) as info:
            load_policy_set([path])
        assert info.value.field == "schema"
    finally:
        monkeypatch.undo()
        fileschema.validator.cache_clear()


def refusal(write_policy, text: str, header: bool = True) -> PolicyLoadError:
    with pytest.raises(PolicyLoadError) as info:
        load_policy_set([write_policy(text, header=header)])
    return info.value


def test_an_unknown_field_is_reported_before_the_missing_field_it_misspells(write_policy):
    """A typo (recipient for recipients) is named as the unknown field, not as a missing one."""
    error = refusal(write_policy, forbid("r", 'senders = ["*"]\nrecipient = ["*"]'))
    assert (error.rule, error.field, error.problem, error.value) == ("r", "recipient", "unknown field", ["*"])


def test_the_first_bad_rule_in_the_file_is_reported(write_policy):
    """With two bad rules, the error names the first in file order and the entry at fault."""
    error = refusal(write_policy, forbid("first", 'senders = ["*", "X"]\nrecipients = ["*"]') + forbid("second", "senders = 5"))
    assert (error.rule, error.field, error.value) == ("first", "senders", "X")


def test_a_rule_without_id_is_named_by_its_position(write_policy):
    """A rule without an id is named '#n' after its position among the file's rules."""
    error = refusal(write_policy, forbid("ok", BASIC) + '[[rule]]\neffect = "forbid"\n' + BASIC)
    assert (error.rule, error.field) == ("#2", "id")
    assert "rule '#2'" in str(error)


def test_a_set_level_entry_is_named_by_table_and_key(write_policy):
    """A bad group member names the group, not a rule, and quotes the member."""
    error = refusal(write_policy, '[groups]\nstadt = ["1-1061-1", "Luzern"]\n', header=False)
    assert (error.rule, error.field, error.problem, error.value) == (None, "groups.stadt", "not a sedex participant ID", "Luzern")


def test_a_long_value_is_quoted_shortened(write_policy):
    """A long bad value is cut in the message, so one mistake cannot flood a log line."""
    error = refusal(write_policy, forbid("r", BASIC + 'reason = "ok"\nevents = ["%s"]' % ("x" * 1000)))
    assert error.field == "events" and len(str(error)) < 500 and str(error).endswith("…")


def test_a_quoted_date_means_the_same_as_a_toml_date(write_policy):
    """valid_from = "2026-01-01" and valid_from = 2026-01-01 give the same rule and revision."""
    quoted = load_policy_set([write_policy(forbid("r", BASIC + 'valid_from = "2026-01-01"'))])
    native = load_policy_set([write_policy(forbid("r", BASIC + "valid_from = 2026-01-01"))])
    assert quoted.revision == native.revision


def test_the_validator_means_exactly_the_published_schema():
    """The loader's validator (references written out for speed) gives the published schema's verdict on every snippet."""
    published = json.loads(fileschema.SCHEMA_PATH.read_text(encoding="utf-8"))
    plain = fileschema.PolicyFileValidator(published, format_checker=fileschema._FORMATS)
    snippets = [(text, header) for _, text, header in BAD] + [(text, True) for _, text in GOOD]
    verdicts = []
    for text, header in snippets:
        doc = fileschema.json_form(document(text, header))
        verdicts.append(plain.is_valid(doc))
        assert verdicts[-1] == fileschema.validator().is_valid(doc), text
    assert verdicts.count(True) == len(GOOD)
