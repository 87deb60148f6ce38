"""Decision semantics: default deny, forbid beats permit, order independence, guards."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from gateway.ids import ParticipantId, StatusCode
from gateway.policy import PayloadFacts, PolicyEngine, PolicyRequest, Stage, load_policy_set
from gateway.policy.model import PolicySet

from .conftest import DEMO, NOW, forbid, permit

RULES = (
    permit("events-to-register", """
        senders = ["gemeinden-lu"]
        recipients = ["2-LU-1"]
        message_types = [20001, 20201]
        max_payload_size = 1000
        """)
    + permit("stats", """
        senders = ["2-*-1"]
        recipients = ["3-CH-1"]
        message_types = 94
        valid_from = 2026-01-01T00:00:00+01:00
        valid_until = 2026-07-01
        """)
    + permit("move-between-gemeinden", """
        senders = ["gemeinden-lu"]
        recipients = ["gemeinden-lu"]
        message_types = [20201]
        events = ["moveIn", "moveOut"]
        actions = ["1"]
        redact = ["//e20:moveInPerson/e20:religion"]
        """)
    + permit("locked-ok", """
        senders = ["1-1061-1"]
        recipients = ["2-LU-1"]
        message_types = [20001]
        allow_locked_data = true
        """)
    + forbid("no-emmen-deaths", """
        senders = ["1-1024-1"]
        recipients = ["*"]
        events = ["death"]
        reason = "deaths from Emmen go through INFOSTAR"
        """)
    + forbid("no-gemeinden-to-bfs", """
        senders = ["gemeinden-lu"]
        recipients = ["3-CH-1"]
        """)
    + permit("kriens-to-bfs", """
        senders = ["1-1059-1"]
        recipients = ["3-CH-1"]
        message_types = [94]
        """)
    + permit("test-pair", """
        senders = ["T1-1061-1"]
        recipients = ["T2-LU-1", "2-LU-1"]
        message_types = [20001]
        """)
    + permit("class-limited", """
        senders = ["1-1059-1"]
        recipients = ["1-1024-1"]
        message_types = [20001]
        message_classes = [1]
        """)
)


def facts(event=None, action="1", test=False, lock=False) -> PayloadFacts:
    return PayloadFacts(action=action, event=event, test_delivery=test, data_lock=lock, namespace=None)


def req(sender, recipient, mtype, *, size=100, f=None, mclass=0) -> PolicyRequest:
    return PolicyRequest(ParticipantId(sender), ParticipantId(recipient), mtype, mclass, size, f)


@pytest.fixture(scope="module")
def policy_set(tmp_path_factory) -> PolicySet:
    from .conftest import HEADER

    path = tmp_path_factory.mktemp("engine") / "rules.toml"
    path.write_text(HEADER + RULES, encoding="utf-8")
    return load_policy_set([path])


LATER = datetime(2026, 8, 1, tzinfo=timezone.utc)
EARLIER = datetime(2025, 12, 31, 22, 59, tzinfo=timezone.utc)  # 23:59 in Lucerne, before valid_from

# (description, request, now, stage, allowed, status, deciding rule ids)
TRUTH_TABLE = [
    ("unknown pair is denied by default", req("3-CH-1", "1-1059-1", 20201), NOW, "origin", False, StatusCode.NOT_ALLOWED_TO_SEND, ()),
    ("a recipient nobody may send this type to gets 311", req("1-1061-1", "1-1059-1", 20001), NOW, "origin", False, StatusCode.NOT_ALLOWED_TO_RECEIVE, ()),
    ("group member sends events to the register", req("1-1059-1", "2-LU-1", 20201), NOW, "origin", True, None, ("events-to-register",)),
    ("a message type outside the list is denied", req("1-1059-1", "2-LU-1", 94), NOW, "origin", False, StatusCode.NOT_ALLOWED_TO_RECEIVE, ()),
    ("an event outside the permit is denied with 310", req("1-1059-1", "1-1024-1", 20201, f=facts("birth")), NOW, "origin", False, StatusCode.NOT_ALLOWED_TO_SEND, ()),
    ("glob pattern sender is permitted", req("2-LU-1", "3-CH-1", 94), NOW, "origin", True, None, ("stats",)),
    ("glob does not match another office number", req("2-LU-2", "3-CH-1", 94), NOW, "origin", False, StatusCode.NOT_ALLOWED_TO_SEND, ()),
    ("glob does not match a Gemeinde", req("1-1061-1", "3-CH-1", 94), NOW, "origin", False, StatusCode.NOT_ALLOWED_TO_SEND, ("no-gemeinden-to-bfs",)),
    ("forbid beats a more specific permit", req("1-1059-1", "3-CH-1", 94), NOW, "origin", False, StatusCode.NOT_ALLOWED_TO_SEND, ("no-gemeinden-to-bfs",)),
    ("rule is not valid before valid_from", req("2-LU-1", "3-CH-1", 94), EARLIER, "origin", False, StatusCode.NOT_ALLOWED_TO_SEND, ()),
    ("rule is not valid after valid_until", req("2-LU-1", "3-CH-1", 94), LATER, "origin", False, StatusCode.NOT_ALLOWED_TO_SEND, ()),
    ("payload over the limit gets 330", req("1-1059-1", "2-LU-1", 20001, size=1001), NOW, "origin", False, StatusCode.MESSAGE_TOO_LARGE, ("events-to-register",)),
    ("payload at the limit passes", req("1-1059-1", "2-LU-1", 20001, size=1000), NOW, "origin", True, None, ("events-to-register",)),
    ("a second permit without limit lets a large payload pass", req("1-1061-1", "2-LU-1", 20001, size=10**6), NOW, "origin", True, None, ("locked-ok",)),
    ("event condition permits the named event", req("1-1061-1", "1-1059-1", 20201, f=facts("moveIn")), NOW, "origin", True, None, ("move-between-gemeinden",)),
    ("event condition refuses another event", req("1-1061-1", "1-1059-1", 20201, f=facts("birth")), NOW, "origin", False, StatusCode.NOT_ALLOWED_TO_SEND, ()),
    ("action condition refuses another action", req("1-1061-1", "1-1059-1", 20201, f=facts("moveIn", action="3")), NOW, "origin", False, StatusCode.NOT_ALLOWED_TO_SEND, ()),
    ("payload conditions cannot permit at the origin without facts", req("1-1061-1", "1-1059-1", 20201), NOW, "origin", False, StatusCode.NOT_ALLOWED_TO_SEND, ()),
    ("payload forbid applies at the origin", req("1-1024-1", "2-LU-1", 20001, f=facts("death")), NOW, "origin", False, StatusCode.NOT_ALLOWED_TO_SEND, ("no-emmen-deaths",)),
    ("payload forbid does not apply to other events", req("1-1024-1", "2-LU-1", 20001, f=facts("birth")), NOW, "origin", True, None, ("events-to-register",)),
    ("a relay counts a payload-conditioned permit on its envelope part", req("1-1061-1", "1-1059-1", 20201), NOW, "relay", True, None, ("move-between-gemeinden",)),
    ("a relay ignores payload forbids it cannot check", req("1-1024-1", "2-LU-1", 20001), NOW, "relay", True, None, ("events-to-register",)),
    ("a relay still applies envelope forbids", req("1-1061-1", "3-CH-1", 94), NOW, "relay", False, StatusCode.NOT_ALLOWED_TO_SEND, ("no-gemeinden-to-bfs",)),
    ("a relay still applies size limits", req("1-1059-1", "2-LU-1", 20001, size=5000), NOW, "relay", False, StatusCode.MESSAGE_TOO_LARGE, ("events-to-register",)),
    ("the destination decides like a relay", req("1-1024-1", "2-LU-1", 20001, f=facts("death")), NOW, "destination", True, None, ("events-to-register",)),
    ("data lock needs allow_locked_data", req("1-1059-1", "2-LU-1", 20001, f=facts("birth", lock=True)), NOW, "origin", False, StatusCode.NOT_ALLOWED_TO_SEND, ("events-to-register",)),
    ("data lock passes with allow_locked_data", req("1-1061-1", "2-LU-1", 20001, f=facts("birth", lock=True)), NOW, "origin", True, None, ("locked-ok",)),
    ("test sender never reaches production despite a permit", req("T1-1061-1", "2-LU-1", 20001), NOW, "origin", False, StatusCode.NOT_ALLOWED_TO_RECEIVE, ()),
    ("test sender reaches a test recipient", req("T1-1061-1", "T2-LU-1", 20001), NOW, "origin", True, None, ("test-pair",)),
    ("testDeliveryFlag never reaches production", req("1-1061-1", "2-LU-1", 20001, f=facts("birth", test=True)), NOW, "origin", False, StatusCode.NOT_ALLOWED_TO_RECEIVE, ()),
    ("test sender is refused at a relay too", req("T1-1061-1", "2-LU-1", 20001), NOW, "relay", False, StatusCode.NOT_ALLOWED_TO_RECEIVE, ()),
    ("message class outside the list is denied", req("1-1059-1", "1-1024-1", 20001, mclass=0), NOW, "origin", False, StatusCode.NOT_ALLOWED_TO_SEND, ()),
    ("message class in the list is permitted", req("1-1059-1", "1-1024-1", 20001, mclass=1), NOW, "origin", True, None, ("class-limited",)),
    ("sender without any permit for the type gets 310", req("3-CH-1", "2-LU-1", 94), NOW, "origin", False, StatusCode.NOT_ALLOWED_TO_SEND, ()),
    ("recipient that may not receive the type gets 311", req("2-LU-1", "1-1061-1", 94), NOW, "origin", False, StatusCode.NOT_ALLOWED_TO_RECEIVE, ()),
]


@pytest.mark.parametrize(("description", "request_", "now", "stage", "allowed", "status", "rule_ids"), TRUTH_TABLE, ids=[row[0] for row in TRUTH_TABLE])
def test_truth_table(policy_set, description, request_, now, stage, allowed, status, rule_ids):
    """Each row's request gets the decision, receipt code and deciding rules listed."""
    decision = PolicyEngine(policy_set).decide(request_, now, stage)
    assert (decision.allowed, decision.status, decision.rule_ids) == (allowed, status, rule_ids), decision.reason
    assert decision.revision == policy_set.revision
    assert decision.stage is Stage(stage)


def test_decisions_do_not_depend_on_rule_order(policy_set):
    """Shuffling the rules (and so the index lists) changes no decision."""
    from dataclasses import replace

    reference = PolicyEngine(policy_set)
    rng = random.Random(1234)
    for _ in range(5):
        rules = list(policy_set.rules)
        rng.shuffle(rules)
        shuffled = PolicyEngine(replace(policy_set, rules=tuple(rules)))
        for _, request_, now, stage, *_ in TRUTH_TABLE:
            assert shuffled.decide(request_, now, stage) == reference.decide(request_, now, stage)


def test_allowed_decision_names_purpose_legal_basis_and_redactions(policy_set):
    """An allowed decision at the origin carries purpose, legal basis and the Clark paths to remove."""
    decision = PolicyEngine(policy_set).decide(req("1-1061-1", "1-1059-1", 20201, f=facts("moveIn")), NOW, "origin")
    assert decision.purpose == ("test purpose",)
    assert decision.legal_basis == ("test law (SRL 25, Art. 8)",)
    assert decision.redactions == ("//{http://www.ech.ch/xmlns/eCH-0020/2}moveInPerson/{http://www.ech.ch/xmlns/eCH-0020/2}religion",)


def test_relay_decision_has_no_redactions(policy_set):
    """A relay cannot touch the payload, so its decision lists no redactions."""
    decision = PolicyEngine(policy_set).decide(req("1-1061-1", "1-1059-1", 20201), NOW, "relay")
    assert decision.allowed and decision.redactions == ()


def test_redaction_is_dropped_when_another_permit_grants_the_data(write_policy):
    """Data is removed only if no applicable permit grants it (permits are alternatives)."""
    path = write_policy(
        permit("a", 'senders=["1-1061-1"]\nrecipients=["2-LU-1"]\nredact=["//e20:moveInPerson/e20:religion", "//e20:moveInPerson/e20:callName"]')
        + permit("b", 'senders=["1-1061-1"]\nrecipients=["2-LU-1"]\nredact=["//e20:moveInPerson/e20:callName"]')
    )
    decision = PolicyEngine(load_policy_set([path])).decide(req("1-1061-1", "2-LU-1", 1), NOW, "origin")
    assert decision.rule_ids == ("a", "b")
    assert decision.redactions == ("//{http://www.ech.ch/xmlns/eCH-0020/2}moveInPerson/{http://www.ech.ch/xmlns/eCH-0020/2}callName",)


def test_partial_multi_recipient_denials_get_313(policy_set):
    """In a message to several recipients, the refused ones get 313 while the others pass."""
    decisions = PolicyEngine(policy_set).decide_all(
        [req("1-1059-1", "2-LU-1", 20001), req("1-1059-1", "3-CH-1", 20001)], NOW, "origin"
    )
    assert [d.allowed for d in decisions] == [True, False]
    assert decisions[1].status is StatusCode.RECIPIENT_NOT_ALLOWED


def test_all_refused_recipients_keep_their_own_code(policy_set):
    """When every recipient is refused, each keeps its own code rather than 313."""
    decisions = PolicyEngine(policy_set).decide_all([req("1-1061-1", "3-CH-1", 94)], NOW, "origin")
    assert decisions[0].status is StatusCode.NOT_ALLOWED_TO_SEND


def test_naive_time_is_refused(policy_set):
    """A decision needs a timezone-aware time, so validity dates are never misread."""
    with pytest.raises(ValueError):
        PolicyEngine(policy_set).decide(req("2-LU-1", "3-CH-1", 94), datetime(2026, 3, 1), "origin")


def test_denial_reason_contains_no_payload_values(policy_set):
    """A denial's reason names rules, IDs and sizes only, never payload facts."""
    decision = PolicyEngine(policy_set).decide(req("1-1024-1", "2-LU-1", 20001, f=facts("death")), NOW, "origin")
    assert decision.reason == "deaths from Emmen go through INFOSTAR (forbid no-emmen-deaths)"


def test_demo_set_denies_gemeinden_to_bfs_and_redacts_religion_between_gemeinden():
    """The demo federation forbids Gemeinde → BFS and removes religion on Gemeinde → Gemeinde moves."""
    engine = PolicyEngine(load_policy_set([DEMO]))
    denied = engine.decide(req("1-1061-1", "3-CH-1", 94), NOW, "origin")
    assert (denied.allowed, denied.rule_ids) == (False, ("lu-keine-direktlieferung-an-bfs",))
    moved = engine.decide(req("1-1024-1", "1-1059-1", 20201, f=facts("moveIn")), NOW, "origin")
    assert moved.allowed and moved.redactions and moved.redactions[0].endswith("}religion")
    register = engine.decide(req("1-1024-1", "2-LU-1", 20201, f=facts("moveIn", lock=True)), NOW, "origin")
    assert register.allowed and register.redactions == ()


def test_validity_boundary_is_exclusive_at_valid_until(policy_set):
    """A rule stops applying at the exact valid_until instant (midnight in Lucerne for a date)."""
    engine = PolicyEngine(policy_set)
    until = datetime(2026, 6, 30, 22, 0, tzinfo=timezone.utc)  # 2026-07-01 00:00 Europe/Zurich
    assert engine.decide(req("2-LU-1", "3-CH-1", 94), until - timedelta(seconds=1), "origin").allowed
    assert not engine.decide(req("2-LU-1", "3-CH-1", 94), until, "origin").allowed


class _LinearEngine(PolicyEngine):
    """Reference: the same semantics without the index, scanning every rule."""

    def candidates(self, sender, recipient, message_type):
        return tuple(
            r for r in self.policy_set.rules
            if (r.message_types is None or message_type in r.message_types)
            and r.senders.matches(sender) and r.recipients.matches(recipient)
        )


def test_indexed_engine_agrees_with_a_linear_scan(write_policy):
    """The index changes speed only: random requests get the same decisions as a full scan."""
    rng = random.Random(7)
    ids = ["1-1061-1", "1-1059-1", "1-1024-1", "2-LU-1", "3-CH-1", "T1-1061-1", "T2-LU-1"]
    refs = ids + ["gemeinden-lu", "1-*-1", "2-*-1", "*", "T*"]
    text = ""
    for i in range(300):
        body = f'senders = ["{rng.choice(refs)}", "{rng.choice(refs)}"]\nrecipients = ["{rng.choice(refs)}"]\n'
        if rng.random() < 0.6:
            body += f"message_types = [{rng.choice([94, 20001, 20201])}]\n"
        if rng.random() < 0.3:
            body += f'events = ["{rng.choice(["moveIn", "death"])}"]\n'
        if rng.random() < 0.2:
            body += "valid_until = 2026-02-01\n"
        narrow = f'senders = ["{rng.choice(ids)}"]\nrecipients = ["{rng.choice(refs)}"]\nevents = ["{rng.choice(["moveIn", "death"])}"]\n'
        text += forbid(f"f{i}", narrow) if rng.random() < 0.1 else permit(f"p{i}", body + ("max_payload_size = 500\n" if rng.random() < 0.8 else ""))
    policy_set = load_policy_set([write_policy(text)])
    fast, slow = PolicyEngine(policy_set), _LinearEngine(policy_set)
    outcomes = set()
    for _ in range(3000):
        request = req(rng.choice(ids), rng.choice(ids), rng.choice([94, 20001, 20201]), size=rng.choice([100, 1000]),
                      f=facts(rng.choice(["moveIn", "death", "birth"]), lock=rng.random() < 0.2))
        stage = rng.choice(["origin", "relay"])
        decision = fast.decide(request, NOW, stage)
        assert decision == slow.decide(request, NOW, stage)
        outcomes.add(decision.status)
    # The random set must exercise permits, forbids, size limits and the guard, or the test proves little.
    assert outcomes >= {None, StatusCode.NOT_ALLOWED_TO_SEND, StatusCode.NOT_ALLOWED_TO_RECEIVE, StatusCode.MESSAGE_TOO_LARGE}


def _shuffle_lists(block: str, rng: random.Random) -> str:
    """Shuffle the entries of every one-line TOML list in ``block`` (senders, types, events, …)."""
    lines = []
    for line in block.splitlines():
        key, sep, value = line.partition(" = [")
        if sep and value.endswith("]"):
            entries = [e.strip() for e in value[:-1].split(",")]
            rng.shuffle(entries)
            line = f"{key.strip()} = [{', '.join(entries)}]"
        lines.append(line)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("seed", range(6))
def test_truth_table_holds_for_shuffled_rule_files(policy_set, tmp_path, seed):
    """Rules shuffled across one to three files, every list shuffled too: same revision, every row's decision."""
    from .conftest import HEADER

    rng = random.Random(seed)
    blocks = ["[[rule]]" + b for b in RULES.split("[[rule]]")[1:]]
    assert len(blocks) == len(policy_set.rules)
    blocks = [_shuffle_lists(b, rng) for b in blocks]
    rng.shuffle(blocks)
    files = [[] for _ in range(1 + seed % 3)]
    for i, block in enumerate(blocks):
        files[i % len(files)].append(block)
    files[rng.randrange(len(files))].insert(0, _shuffle_lists(HEADER, rng))
    names = rng.sample(["a.toml", "m.toml", "z.toml"], len(files))
    for name, content in zip(names, files):
        (tmp_path / name).write_text("\n".join(content), encoding="utf-8")
    shuffled = load_policy_set([tmp_path])
    assert shuffled.revision == policy_set.revision
    engine = PolicyEngine(shuffled)
    for description, request_, now, stage, allowed, status, rule_ids in TRUTH_TABLE:
        decision = engine.decide(request_, now, stage)
        assert (decision.allowed, decision.status, decision.rule_ids) == (allowed, status, rule_ids), description


def test_a_real_move_in_with_a_data_lock_goes_only_where_locked_data_is_allowed():
    """The real moveIn sample with an active data lock reaches the cantonal register (allow_locked_data), not a Gemeinde."""
    from gateway.policy import payload_facts
    from gateway.safexml import parse_xml

    from .conftest import MOVE_IN

    production = MOVE_IN.read_bytes().replace(b"<e78:testDeliveryFlag>true", b"<e78:testDeliveryFlag>false")
    assert b"<e78:dataLock>0</e78:dataLock>" in production
    locked = payload_facts(parse_xml(production.replace(b"<e78:dataLock>0</e78:dataLock>", b"<e78:dataLock>1</e78:dataLock>")))
    unlocked = payload_facts(parse_xml(production))
    assert (locked.data_lock, locked.event, unlocked.data_lock) == (True, "moveIn", False)
    engine = PolicyEngine(load_policy_set([DEMO]))
    size = len(production)
    to_kriens = req("1-1061-1", "1-1059-1", 20201, size=size, f=locked)
    to_register = req("1-1061-1", "2-LU-1", 20201, size=size, f=locked)
    kriens, register = engine.decide_all([to_kriens, to_register], NOW, "origin")
    assert (register.allowed, register.rule_ids) == (True, ("lu-gemeinden-an-kantonsregister",))
    assert (kriens.allowed, kriens.status) == (False, StatusCode.RECIPIENT_NOT_ALLOWED)
    alone = engine.decide(to_kriens, NOW, "origin")
    assert (alone.status, alone.rule_ids) == (StatusCode.NOT_ALLOWED_TO_SEND, ("lu-gemeinden-zuzugsmeldung",))
    assert "data lock" in alone.reason
    # The same message without the lock goes to Kriens: the lock alone made the difference.
    assert engine.decide(req("1-1061-1", "1-1059-1", 20201, size=size, f=unlocked), NOW, "origin").allowed
