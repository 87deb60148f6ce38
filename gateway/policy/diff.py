"""``policy diff``: which sender → recipient → message type/event combinations change.

The two sets are compared by deciding every combination of the participants, message
types, classes and events that either set names, so the diff shows effective access,
not text changes (a moved group member shows up even though no rule text changed).
Glob patterns are evaluated only against the participants the sets name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import product

from ..ids import ParticipantId
from .engine import PolicyEngine
from .model import PayloadFacts, PolicyRequest, PolicySet, Stage
from .store import RuleChanges, rule_changes


@dataclass(frozen=True, slots=True)
class AccessChange:
    sender: str
    recipient: str
    message_type: int
    message_class: int
    event: str  # "*" when the change holds for every event and action
    action: str  # eCH-0058 action code, "(none)" or "*"
    change: str  # "gained", "lost" or "redactions"
    redactions_before: tuple[str, ...] = ()
    redactions_after: tuple[str, ...] = ()

    def to_json(self) -> dict:
        out = {
            "sender": self.sender, "recipient": self.recipient, "message_type": self.message_type,
            "message_class": self.message_class, "event": self.event, "action": self.action, "change": self.change,
        }
        if self.change == "redactions":
            out["redactions_before"] = list(self.redactions_before)
            out["redactions_after"] = list(self.redactions_after)
        return out


@dataclass(frozen=True, slots=True)
class PolicyDiff:
    old_revision: str
    new_revision: str
    rules: RuleChanges
    access: tuple[AccessChange, ...]

    def to_json(self) -> dict:
        return {
            "old_revision": self.old_revision,
            "new_revision": self.new_revision,
            "rules": self.rules.to_json(),
            "access": [a.to_json() for a in self.access],
        }


def _universe(*sets: PolicySet):
    participants: set[str] = set()
    types: set[int] = set()
    classes: set[int] = set()
    events: set[str] = set()
    actions: set[str] = set()
    for policy_set in sets:
        participants |= {pid for pid, _ in policy_set.participants}
        participants |= {m for _, members in policy_set.groups for m in members}
        for rule in policy_set.rules:
            participants |= rule.senders.ids | rule.recipients.ids
            types |= rule.message_types or set()
            classes |= rule.message_classes or set()
            events |= rule.events or set()
            actions |= rule.actions or set()
    return sorted(participants), sorted(types), sorted(classes) or [0], sorted(events), sorted(actions, key=int)


def diff_policy_sets(old: PolicySet, new: PolicySet, now: datetime) -> PolicyDiff:
    before, after = PolicyEngine(old), PolicyEngine(new)
    participants, types, classes, events, actions = _universe(old, new)
    options = list(product([None, *events], [None, *actions]))
    changes: list[AccessChange] = []
    for sender, recipient, mtype, mclass in product(participants, participants, types, classes):
        if sender == recipient:
            continue
        per_option: dict[tuple[str | None, str | None], AccessChange | None] = {}
        for event, action in options:
            facts = PayloadFacts(action=action, event=event)
            request = PolicyRequest(ParticipantId(sender), ParticipantId(recipient), mtype, mclass, 0, facts)
            a, b = before.decide(request, now, Stage.ORIGIN), after.decide(request, now, Stage.ORIGIN)
            change = None
            if a.allowed != b.allowed:
                change = "gained" if b.allowed else "lost"
            elif a.allowed and a.redactions != b.redactions:
                change = "redactions"
            per_option[(event, action)] = (
                AccessChange(sender, recipient, mtype, mclass, event or "(none)", action or "(none)", change, a.redactions, b.redactions)
                if change else None
            )
        kinds = {(c.change, c.redactions_before, c.redactions_after) if c else None for c in per_option.values()}
        if len(kinds) == 1 and None not in kinds:
            # The same change for every event and action: report it once.
            first = per_option[(None, None)]
            changes.append(AccessChange(sender, recipient, mtype, mclass, "*", "*", first.change, first.redactions_before, first.redactions_after))
        else:
            changes.extend(c for c in per_option.values() if c is not None)
    return PolicyDiff(old.revision, new.revision, rule_changes(old, new), tuple(changes))
