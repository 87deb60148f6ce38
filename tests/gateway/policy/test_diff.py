"""``diff_policy_sets``: effective access gained or lost, asserted on concrete changes."""

from __future__ import annotations

from gateway.policy import load_policy_set
from gateway.policy.diff import comparison_size, diff_policy_sets, rule_changes

from .conftest import DEMO, NOW, permit

PAIR = 'senders = ["1-1061-1"]\nrecipients = ["2-LU-1"]\n'
RELIGION = "{http://www.ech.ch/xmlns/eCH-0020/2}religion"


def access(write_policy, old: str, new: str) -> list[tuple]:
    before, after = load_policy_set([write_policy(old)]), load_policy_set([write_policy(new)])
    diff = diff_policy_sets(before, after, NOW)
    return [(a.change, a.sender, a.recipient, a.message_type, a.message_class, a.event, a.action, a.data_lock) for a in diff.access]


def test_restricting_an_open_rule_to_one_type_loses_every_other_type(write_policy):
    """A permit for any type narrowed to type 94 shows lost access for "*" (any type no rule names), locked or not."""
    locked = PAIR + "allow_locked_data = true\n"
    changes = access(write_policy, permit("p", locked), permit("p", locked + "message_types = [94]"))
    assert changes == [("lost", "1-1061-1", "2-LU-1", "*", "*", "*", "*", "*")]


def test_restricting_an_open_rule_to_one_class_loses_every_other_class(write_policy):
    """A permit for any class narrowed to class 1 shows lost access for class "*" (unlocked data: locked never passed)."""
    changes = access(write_policy, permit("p", PAIR), permit("p", PAIR + "message_classes = [1]"))
    assert changes == [("lost", "1-1061-1", "2-LU-1", "*", "*", "*", "*", "unlocked")]


def test_withdrawing_locked_data_is_a_loss_for_locked_persons_only(write_policy):
    """Removing allow_locked_data loses access only for messages about persons with a data lock."""
    changes = access(write_policy, permit("p", PAIR + "allow_locked_data = true"), permit("p", PAIR))
    assert changes == [("lost", "1-1061-1", "2-LU-1", "*", "*", "*", "*", "locked")]


def test_an_event_condition_loses_the_other_events(write_policy):
    """A permit narrowed to moveIn loses access for messages without that event, and keeps moveIn."""
    old = permit("p", PAIR + "message_types = [20201]") + permit("q", 'senders = ["2-LU-1"]\nrecipients = ["1-1061-1"]\nevents = ["moveIn", "death"]')
    new = permit("p", PAIR + 'message_types = [20201]\nevents = ["moveIn"]') + permit("q", 'senders = ["2-LU-1"]\nrecipients = ["1-1061-1"]\nevents = ["moveIn", "death"]')
    lost = [c for c in access(write_policy, old, new) if c[1] == "1-1061-1"]
    assert lost == [("lost", "1-1061-1", "2-LU-1", 20201, "*", event, "(none)", "unlocked") for event in ("(none)", "death")]


def test_an_added_redaction_is_reported_with_before_and_after(write_policy):
    """Where access stays but a field is removed now, the change lists the paths before and after."""
    before = load_policy_set([write_policy(permit("p", PAIR))])
    after = load_policy_set([write_policy(permit("p", PAIR + 'redact = ["//e20:moveInPerson/e20:religion"]'))])
    [change] = diff_policy_sets(before, after, NOW).access
    assert (change.change, change.redactions_before, change.redactions_after[0].endswith(RELIGION)) == ("redactions", (), True)
    assert change.to_json()["redactions_after"] == list(change.redactions_after)


def test_a_moved_group_member_shows_although_no_rule_text_changed(write_policy):
    """Moving Emmen out of the group changes no rule text, yet Emmen loses access to the register."""
    rule = permit("p", 'senders = ["gemeinden-lu"]\nrecipients = ["2-LU-1"]')
    old = write_policy(rule)
    new = write_policy(rule)
    new.write_text(new.read_text().replace('gemeinden-lu = ["1-1061-1", "1-1059-1", "1-1024-1"]', 'gemeinden-lu = ["1-1061-1", "1-1059-1"]'))
    diff = diff_policy_sets(load_policy_set([old]), load_policy_set([new]), NOW)
    assert [(a.change, a.sender, a.recipient) for a in diff.access] == [("lost", "1-1024-1", "2-LU-1")]


def test_validity_is_judged_at_the_given_time(write_policy):
    """A rule that starts later is no change today and a gain once it is valid."""
    before = load_policy_set([write_policy(permit("p", PAIR + "message_types = [94]"))])
    after = load_policy_set([write_policy(permit("p", PAIR + "message_types = [94]") + permit("q", PAIR + "message_types = [20001]\nvalid_from = 2027-01-01"))])
    assert diff_policy_sets(before, after, NOW).access == ()
    from datetime import datetime, timezone

    later = diff_policy_sets(before, after, datetime(2027, 6, 1, tzinfo=timezone.utc))
    assert [(a.change, a.message_type) for a in later.access] == [("gained", 20001)]


def test_rule_changes_ignore_order_and_spelling_of_the_same_rule(write_policy):
    """Reordered lists and sedex:// spellings are the same rule; a new type is a change."""
    old = load_policy_set([write_policy(permit("p", 'senders = ["1-1061-1", "1-1059-1"]\nrecipients = ["2-LU-1"]\nmessage_types = [94, 20001]'))])
    same = load_policy_set([write_policy(permit("p", 'senders = ["sedex://1-1059-1", "1-1061-1"]\nrecipients = "2-LU-1"\nmessage_types = [20001, 94]'))])
    other = load_policy_set([write_policy(permit("p", 'senders = ["1-1061-1", "1-1059-1"]\nrecipients = ["2-LU-1"]\nmessage_types = [94]'))])
    assert rule_changes(old, same).changed == ()
    assert rule_changes(old, other).changed == ("p",)


def test_comparison_size_counts_the_requests_decided_per_set():
    """The demo set compares 5 participants (20 ordered pairs), 4 types, 1 class, 4 × 3 event/action options, 2 lock states."""
    demo = load_policy_set([DEMO])
    assert comparison_size(demo, demo) == 20 * 4 * 1 * 12 * 2
