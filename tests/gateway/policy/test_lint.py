"""``policy check`` findings: each lint case is caught, a clean set has none."""

from __future__ import annotations

from gateway.policy.lint import check_files

from .conftest import DEMO, NOW, XSD, forbid, permit

BASIC = 'senders = ["1-1061-1"]\nrecipients = ["2-LU-1"]\n'


def kinds(findings):
    return sorted((f.kind, f.rule) for f in findings)


def test_demo_policies_are_clean():
    """The demo federation's policies pass every check against the real XSDs."""
    assert check_files([DEMO], None, XSD, NOW) == []


def test_unknown_participant_is_reported(write_policy):
    """A participant ID missing from the participant list is a finding naming the rule and the ID."""
    findings = check_files([write_policy(permit("p", 'senders = ["1-9999-1"]\nrecipients = ["2-LU-1"]'))], None, XSD, NOW)
    assert kinds(findings) == [("unknown-participant", "p")]
    assert "1-9999-1" in findings[0].message


def test_participant_list_from_the_command_line_is_used(write_policy):
    """With an explicit participant list, IDs outside it are reported even without [participants]."""
    path = write_policy(permit("p", BASIC), header=False)
    assert kinds(check_files([path], {"1-1061-1"}, XSD, NOW)) == [("unknown-participant", "p")]
    assert check_files([path], {"1-1061-1", "2-LU-1"}, XSD, NOW) == []


def test_unknown_group_is_reported(write_policy):
    """A misspelt group is a finding (and the set cannot load)."""
    findings = check_files([write_policy(permit("p", 'senders = ["gemeinde-lu"]\nrecipients = ["2-LU-1"]'))], None, XSD, NOW)
    assert kinds(findings) == [("unknown-group", "p")]
    assert "gemeinde-lu" in findings[0].message


def test_permit_shadowed_by_a_forbid_is_reported(write_policy):
    """A permit whose every request a single forbid refuses is reported with the forbid's id."""
    path = write_policy(
        permit("p", 'senders = ["1-1061-1"]\nrecipients = ["3-CH-1"]\nmessage_types = [94]')
        + forbid("f", 'senders = ["gemeinden-lu"]\nrecipients = ["3-CH-1"]')
        + permit("not-shadowed", 'senders = ["1-*-1"]\nrecipients = ["3-CH-1"]')
    )
    findings = check_files([path], None, XSD, NOW)
    assert kinds(findings) == [("shadowed-permit", "p")]
    assert "forbidden by f" in findings[0].message


def test_forbid_limited_to_an_event_does_not_shadow_a_broader_permit(write_policy):
    """A forbid on one event leaves the rest of a permit usable, so it is not reported."""
    path = write_policy(
        permit("p", BASIC) + forbid("f", 'senders = ["1-1061-1"]\nrecipients = ["2-LU-1"]\nevents = ["death"]')
    )
    assert check_files([path], None, XSD, NOW) == []


def test_rules_that_can_never_match_are_reported(write_policy):
    """Inverted validity, test-to-production permits and self-addressed rules can never match."""
    path = write_policy(
        permit("inverted", BASIC + "valid_from = 2026-05-01\nvalid_until = 2026-04-01")
        + permit("test-to-prod", 'senders = ["T1-1061-1"]\nrecipients = ["2-LU-1"]')
        + permit("self", 'senders = ["2-LU-1"]\nrecipients = ["2-LU-1"]')
    )
    found = kinds(check_files([path], {"1-1061-1", "2-LU-1", "T1-1061-1"}, XSD, NOW))
    assert found == [("never-matches", "inverted"), ("never-matches", "self"), ("never-matches", "test-to-prod")]


def test_expired_rule_is_reported(write_policy):
    """A rule whose valid_until lies before the injected time is reported as expired."""
    path = write_policy(permit("old", BASIC + "valid_until = 2026-02-28"))
    assert kinds(check_files([path], None, XSD, NOW)) == [("expired", "old")]


def test_redaction_of_a_mandatory_element_is_reported(write_policy):
    """Removing a mandatory element (eCH-0011 religion, moveInPerson nationality) breaks the XSD and is reported."""
    path = write_policy(
        permit("mandatory", BASIC + 'redact = ["//e11:religion", "//e20:moveInPerson/e20:nationality"]')
        + permit("optional", BASIC + 'redact = ["//e20:moveInPerson/e20:religion"]')
    )
    findings = check_files([path], None, XSD, NOW)
    assert kinds(findings) == [("redaction-breaks-schema", "mandatory"), ("redaction-breaks-schema", "mandatory")]
    assert any("moveInPersonType" in f.message for f in findings)


def test_redaction_that_matches_every_religion_is_reported(write_policy):
    """``//e20:religion`` also hits eventChangeReligion, where religion is mandatory."""
    findings = check_files([write_policy(permit("all", BASIC + 'redact = ["//e20:religion"]'))], None, XSD, NOW)
    assert {f.kind for f in findings} == {"redaction-breaks-schema"}
    assert any("eventChangeReligion" in f.message for f in findings)


def test_redaction_matching_no_declared_element_is_reported(write_policy):
    """A path through elements the schema does not declare can never remove anything."""
    findings = check_files([write_policy(permit("typo", BASIC + 'redact = ["//e20:moveInPerson/e20:religon"]'))], None, XSD, NOW)
    assert kinds(findings) == [("redaction-never-applies", "typo")]


def test_a_pattern_matching_no_known_participant_is_reported(write_policy):
    """A glob that matches nobody in the participant list (a typo such as 1-106?-2) is reported like an unknown ID."""
    path = write_policy(
        forbid("typo", 'senders = ["1-106?-2"]\nrecipients = ["3-CH-1"]')
        + forbid("fine", 'senders = ["1-10??-1"]\nrecipients = ["*"]')
    )
    findings = check_files([path], None, XSD, NOW)
    assert kinds(findings) == [("unknown-participant", "typo")]
    assert "pattern 1-106?-2 matches no participant" in findings[0].message
