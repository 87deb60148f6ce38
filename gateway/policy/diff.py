"""``policy diff``: which sender → recipient → message type/event combinations change.

The two sets are compared by deciding every combination of the participants, message
types, classes, events and actions that either set names, with and without a data lock,
so the diff shows effective access, not text changes (a moved group member shows up even
though no rule text changed). Where a rule leaves the type or class open, one more value
that no rule names stands for "any other" and is shown as ``*``. Glob patterns are
evaluated only against the participants the sets name, and payload size is not varied.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import product

from ..ids import ParticipantId
from .engine import PolicyEngine
from .loader import canonical
from .model import PayloadFacts, PolicyRequest, PolicySet, Stage

# Stands for a message type or class that no rule names (the loader refuses negative numbers).
_OTHER = -1
ANY = "*"
_LOCK_LABELS = {False: "unlocked", True: "locked"}


@dataclass(frozen=True, slots=True)
class RuleChanges:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]

    @property
    def summary(self) -> str:
        return f"{len(self.added)} added, {len(self.removed)} removed, {len(self.changed)} changed"

    def to_json(self) -> dict:
        return {"added": list(self.added), "removed": list(self.removed), "changed": list(self.changed), "summary": self.summary}


def rule_changes(old: PolicySet | None, new: PolicySet) -> RuleChanges:
    """Rule ids added, removed and changed (compared in canonical form, so order never counts)."""
    before = {r.id: canonical(r) for r in old.rules} if old else {}
    after = {r.id: canonical(r) for r in new.rules}
    return RuleChanges(
        added=tuple(sorted(after.keys() - before.keys())),
        removed=tuple(sorted(before.keys() - after.keys())),
        changed=tuple(sorted(k for k in before.keys() & after.keys() if before[k] != after[k])),
    )


@dataclass(frozen=True, slots=True)
class AccessChange:
    sender: str
    recipient: str
    message_type: int | str  # "*": any type no rule names
    message_class: int | str  # "*": any class no rule names
    event: str  # "*" when the change holds for every event and action
    action: str  # eCH-0058 action code, "(none)" or "*"
    change: str  # "gained", "lost" or "redactions"
    redactions_before: tuple[str, ...] = ()
    redactions_after: tuple[str, ...] = ()
    data_lock: str = ANY  # "locked", "unlocked", or "*" when the change holds for both

    def to_json(self) -> dict:
        out = {
            "sender": self.sender, "recipient": self.recipient, "message_type": self.message_type,
            "message_class": self.message_class, "event": self.event, "action": self.action,
            "data_lock": self.data_lock, "change": self.change,
        }
        if self.change == "redactions":
            out["redactions_before"] = list(self.redactions_before)
            out["redactions_after"] = list(self.redactions_after)
        return out

    def line(self) -> str:
        """One line for a terminal or an audit summary (IDs and paths only)."""
        text = (f"{self.change} {self.sender} -> {self.recipient} type {self.message_type} class {self.message_class} "
                f"event {self.event} action {self.action} data lock {self.data_lock}")
        if self.change == "redactions":
            text += f": {list(self.redactions_before)} -> {list(self.redactions_after)}"
        return text


@dataclass(frozen=True, slots=True)
class PolicyDiff:
    old_revision: str
    new_revision: str
    rules: RuleChanges
    access: tuple[AccessChange, ...]

    def counts(self) -> dict[str, int]:
        return {kind: sum(1 for a in self.access if a.change == kind) for kind in ("gained", "lost", "redactions")}

    def to_json(self) -> dict:
        return {
            "old_revision": self.old_revision,
            "new_revision": self.new_revision,
            "rules": self.rules.to_json(),
            "access": [a.to_json() for a in self.access],
        }


@dataclass(frozen=True, slots=True)
class _Universe:
    participants: list[str]
    types: list[int]
    classes: list[int]
    events: list[str]
    actions: list[str]

    @property
    def size(self) -> int:
        """How many requests the diff decides, per set."""
        n = len(self.participants)
        options = (len(self.events) + 1) * (len(self.actions) + 1) * len(_LOCK_LABELS)
        return n * (n - 1) * len(self.types) * len(self.classes) * options


def _universe(*sets: PolicySet) -> _Universe:
    participants: set[str] = set()
    types: set[int] = set()
    classes: set[int] = set()
    events: set[str] = set()
    actions: set[str] = set()
    open_type = open_class = False
    for policy_set in sets:
        participants |= {pid for pid, _ in policy_set.participants}
        participants |= {m for _, members in policy_set.groups for m in members}
        for rule in policy_set.rules:
            participants |= rule.senders.ids | rule.recipients.ids
            types |= rule.message_types or set()
            classes |= rule.message_classes or set()
            events |= rule.events or set()
            actions |= rule.actions or set()
            open_type |= rule.message_types is None
            open_class |= rule.message_classes is None
    # A rule open to any type (or class) is compared on the named values and on one that no
    # rule names, so restricting an open rule to a list shows as lost access for the rest.
    return _Universe(
        sorted(participants),
        sorted(types) + ([_OTHER] if open_type or not types else []),
        sorted(classes) + ([_OTHER] if open_class or not classes else []),
        sorted(events),
        sorted(actions, key=int),
    )


def comparison_size(old: PolicySet, new: PolicySet) -> int:
    """How many requests :func:`diff_policy_sets` decides on each set (to bound its cost)."""
    return _universe(old, new).size


def _shown(value: int) -> int | str:
    return ANY if value == _OTHER else value


def diff_policy_sets(old: PolicySet, new: PolicySet, now: datetime) -> PolicyDiff:
    before, after = PolicyEngine(old), PolicyEngine(new)
    universe = _universe(old, new)
    options = list(product([None, *universe.events], [None, *universe.actions]))
    changes: list[AccessChange] = []
    for sender, recipient, mtype, mclass in product(universe.participants, universe.participants, universe.types, universe.classes):
        if sender == recipient:
            continue
        per_lock: dict[bool, list[tuple]] = {}
        for lock in _LOCK_LABELS:
            per_option: dict[tuple[str | None, str | None], tuple | None] = {}
            for event, action in options:
                facts = PayloadFacts(action=action, event=event, data_lock=lock)
                request = PolicyRequest(ParticipantId(sender), ParticipantId(recipient), mtype, mclass, 0, facts)
                a, b = before.decide(request, now, Stage.ORIGIN), after.decide(request, now, Stage.ORIGIN)
                change = None
                if a.allowed != b.allowed:
                    change = "gained" if b.allowed else "lost"
                elif a.allowed and a.redactions != b.redactions:
                    change = "redactions"
                per_option[(event, action)] = (change, a.redactions, b.redactions) if change else None
            kinds = set(per_option.values())
            if len(kinds) == 1 and None not in kinds:
                # The same change for every event and action: report it once.
                per_lock[lock] = [(ANY, ANY, *kinds.pop())]
            else:
                per_lock[lock] = [(e or "(none)", a or "(none)", *c) for (e, a), c in per_option.items() if c]
        if per_lock[False] == per_lock[True]:
            # The same with and without a data lock: report it once.
            labelled = [(found, ANY) for found in per_lock[False]]
        else:
            labelled = [(found, _LOCK_LABELS[lock]) for lock in _LOCK_LABELS for found in per_lock[lock]]
        for (event, action, change, redactions_before, redactions_after), lock_label in labelled:
            changes.append(AccessChange(sender, recipient, _shown(mtype), _shown(mclass), event, action, change,
                                        redactions_before, redactions_after, lock_label))
    return PolicyDiff(old.revision, new.revision, rule_changes(old, new), tuple(changes))
