"""Value types of the policy engine: rules, the loaded set, requests and decisions.

Everything here is frozen: a policy set is parsed once, and a decision cannot be
altered after the engine made it (it goes to the audit log as is).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime

from ..ids import ParticipantId, StatusCode


class Effect(enum.Enum):
    PERMIT = "permit"
    FORBID = "forbid"


class Stage(enum.Enum):
    """Where in a message's journey the decision is taken (see docs/policies.md)."""

    ORIGIN = "origin"
    RELAY = "relay"
    DESTINATION = "destination"

    @property
    def reads_payload(self) -> bool:
        # SECURITY: only the origin sees the payload in clear; relays and the policy stage
        # of the destination (which runs before the payload is opened) decide on the envelope.
        return self is Stage.ORIGIN


@dataclass(frozen=True, slots=True)
class ParticipantMatcher:
    """Who a rule is about: exact IDs (groups already expanded) and glob patterns."""

    ids: frozenset[str]
    patterns: tuple[str, ...]  # the globs as written, for display and lint
    regexes: tuple[re.Pattern[str], ...] = field(compare=False, repr=False)
    sources: tuple[str, ...] = ()  # the entries as written in the file (IDs, globs, groups)

    def matches(self, participant: str) -> bool:
        if participant in self.ids:
            return True
        return any(r.fullmatch(participant) for r in self.regexes)

    @property
    def is_exact(self) -> bool:
        return not self.patterns


@dataclass(frozen=True, slots=True)
class RedactionPath:
    """A namespaced element path (``//e20:moveInPerson/e20:religion``) in Clark form."""

    text: str  # as written in the policy file
    steps: tuple[tuple[str, str], ...]  # (axis "/" or "//", Clark name "{ns}local")

    @property
    def clark(self) -> str:
        return "".join(axis + name for axis, name in self.steps)


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    effect: Effect
    source: str  # file the rule came from
    senders: ParticipantMatcher
    recipients: ParticipantMatcher
    message_types: frozenset[int] | None  # None: any
    message_classes: frozenset[int] | None
    actions: frozenset[str] | None
    events: frozenset[str] | None
    max_payload_size: int | None
    valid_from: datetime | None
    valid_until: datetime | None
    purpose: str | None
    legal_basis: str | None
    legal_reference: str | None
    allow_locked_data: bool
    redactions: tuple[RedactionPath, ...]
    reason: str | None  # forbids: the text an admin sees on denial

    @property
    def has_payload_conditions(self) -> bool:
        return self.actions is not None or self.events is not None

    def valid_at(self, now: datetime) -> bool:
        if self.valid_from is not None and now < self.valid_from:
            return False
        return self.valid_until is None or now < self.valid_until


@dataclass(frozen=True, slots=True)
class PolicySet:
    """A loaded, checked policy set; ``revision`` is the sha256 of its canonical form."""

    rules: tuple[Rule, ...]
    groups: tuple[tuple[str, tuple[str, ...]], ...]
    participants: tuple[tuple[str, str], ...]  # (id, display name)
    namespaces: tuple[tuple[str, str], ...]  # (prefix, uri)
    revision: str
    sources: tuple[str, ...]

    def rule(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)


@dataclass(frozen=True, slots=True)
class PayloadFacts:
    """What the origin reads from an eCH payload for policy decisions (no personal data)."""

    action: str | None = None
    event: str | None = None
    test_delivery: bool = False
    data_lock: bool = False
    namespace: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    sender: ParticipantId
    recipient: ParticipantId
    message_type: int
    message_class: int
    payload_size: int
    facts: PayloadFacts | None = None


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """The engine's answer for one recipient; goes to the audit record unchanged."""

    allowed: bool
    status: StatusCode | None  # None when allowed; the sedex receipt code otherwise
    reason: str  # statusInfo an admin can act on; never personal data
    rule_ids: tuple[str, ...]  # the rules that decided (permits when allowed, else forbids)
    purpose: tuple[str, ...]
    legal_basis: tuple[str, ...]
    redactions: tuple[str, ...]  # Clark paths to remove at the origin
    revision: str
    stage: Stage = Stage.ORIGIN

    def to_json(self) -> dict:
        return {
            "allowed": self.allowed,
            "status": int(self.status) if self.status is not None else None,
            "receipt_code": int(self.status) if self.status is not None else int(StatusCode.DELIVERED),
            "reason": self.reason,
            "rule_ids": list(self.rule_ids),
            "purpose": list(self.purpose),
            "legal_basis": list(self.legal_basis),
            "redactions": list(self.redactions),
            "revision": self.revision,
            "stage": self.stage.value,
        }
