"""The decision engine: default deny, a forbid beats any permit, order never matters.

Rules are indexed by (sender, recipient) and message type, so a decision looks at the
handful of rules that can concern the pair rather than scanning the whole set.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from ..ids import StatusCode
from .model import Effect, PolicyDecision, PolicyRequest, PolicySet, Rule, Stage

# Rules naming more (sender, recipient) pairs than this go to the per-sender index instead.
_MAX_PAIRS_PER_RULE = 4096
# The candidate cache is bounded so hostile traffic with random IDs cannot grow memory.
_CACHE_LIMIT = 200_000


class PolicyEngine:
    """Decides requests against one immutable :class:`PolicySet`."""

    def __init__(self, policy_set: PolicySet) -> None:
        self.policy_set = policy_set
        self.revision = policy_set.revision
        self._pairs: dict[tuple[str, str], list[Rule]] = {}
        self._by_sender: dict[str, list[Rule]] = {}
        self._by_recipient: dict[str, list[Rule]] = {}
        self._wild: list[Rule] = []
        # Per message type (None: any type): who may send / receive it under some permit,
        # so the 310-or-311 choice on a denial needs no scan of the whole set.
        self._roles_by_type: dict[int | None, tuple[set[str], set, set[str], set]] = {}
        for rule in policy_set.rules:
            self._index(rule)
            if rule.effect is Effect.PERMIT:
                for mtype in rule.message_types or (None,):
                    senders, sender_res, recipients, recipient_res = self._roles_by_type.setdefault(mtype, (set(), set(), set(), set()))
                    senders |= rule.senders.ids
                    sender_res.update(rule.senders.regexes)
                    recipients |= rule.recipients.ids
                    recipient_res.update(rule.recipients.regexes)
        self._candidates: dict[tuple[str, str, int], tuple[Rule, ...]] = {}
        self._roles: dict[tuple[str, str, int], StatusCode] = {}

    def _index(self, rule: Rule) -> None:
        senders, recipients = rule.senders, rule.recipients
        if senders.is_exact and recipients.is_exact and len(senders.ids) * len(recipients.ids) <= _MAX_PAIRS_PER_RULE:
            for s in senders.ids:
                for r in recipients.ids:
                    self._pairs.setdefault((s, r), []).append(rule)
        elif senders.is_exact:
            for s in senders.ids:
                self._by_sender.setdefault(s, []).append(rule)
        elif recipients.is_exact:
            for r in recipients.ids:
                self._by_recipient.setdefault(r, []).append(rule)
        else:
            self._wild.append(rule)

    def candidates(self, sender: str, recipient: str, message_type: int) -> tuple[Rule, ...]:
        """Rules whose sender, recipient and message type match (other conditions unchecked)."""
        key = (sender, recipient, message_type)
        found = self._candidates.get(key)
        if found is None:
            pool = (
                self._pairs.get((sender, recipient), [])
                + self._by_sender.get(sender, [])
                + self._by_recipient.get(recipient, [])
                + self._wild
            )
            found = tuple(
                rule
                for rule in pool
                if (rule.message_types is None or message_type in rule.message_types)
                and rule.senders.matches(sender)
                and rule.recipients.matches(recipient)
            )
            if len(self._candidates) >= _CACHE_LIMIT:
                self._candidates.clear()
            self._candidates[key] = found
        return found

    def matching(self, request: PolicyRequest, now: datetime, stage: Stage) -> tuple[list[Rule], list[Rule]]:
        """(forbids, permits) that apply to the request at this stage and time."""
        facts = request.facts if stage.reads_payload else None
        forbids: list[Rule] = []
        permits: list[Rule] = []
        mclass = request.message_class
        for rule in self.candidates(request.sender.value, request.recipient.value, request.message_type):
            if rule.message_classes is not None and mclass not in rule.message_classes:
                continue
            if (rule.valid_from is not None or rule.valid_until is not None) and not rule.valid_at(now):
                continue
            if rule.actions is not None or rule.events is not None:
                if stage.reads_payload:
                    # At the origin a payload condition must hold; without readable facts it cannot.
                    if facts is None:
                        continue
                    if rule.actions is not None and facts.action not in rule.actions:
                        continue
                    if rule.events is not None and facts.event not in rule.events:
                        continue
                elif rule.effect is Effect.FORBID:
                    # The origin enforced payload forbids; a relay cannot see what they are about.
                    continue
                # A permit with payload conditions counts at a relay on its envelope part:
                # the origin already checked the payload part, and the seal proves the origin.
            (forbids if rule.effect is Effect.FORBID else permits).append(rule)
        return forbids, permits

    def decide(self, request: PolicyRequest, now: datetime, stage: Stage | str = Stage.ORIGIN) -> PolicyDecision:
        """Decide one sender → recipient request; ``now`` must be timezone-aware."""
        if not isinstance(stage, Stage):
            stage = Stage(stage)
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        facts = request.facts if stage.reads_payload else None
        # SECURITY: hard-coded guard, not a rule: test traffic never reaches production,
        # whatever the policy files say.
        if (request.sender.is_test or (facts is not None and facts.test_delivery)) and not request.recipient.is_test:
            return self._deny(StatusCode.NOT_ALLOWED_TO_RECEIVE, "test traffic (test sender or testDeliveryFlag) never reaches a production participant", (), stage)
        forbids, permits = self.matching(request, now, stage)
        if forbids:
            ids = tuple(sorted(r.id for r in forbids))
            reasons = sorted({r.reason for r in forbids if r.reason})
            text = "; ".join(reasons) if reasons else "forbidden by policy"
            return self._deny(StatusCode.NOT_ALLOWED_TO_SEND, f"{text} (forbid {', '.join(ids)})", ids, stage)
        if not permits:
            return self._deny(self._default_code(request), self._default_reason(request), (), stage)
        size = request.payload_size
        fitting = [p for p in permits if p.max_payload_size is None or size <= p.max_payload_size]
        if not fitting:
            limit = max(p.max_payload_size or 0 for p in permits)
            ids = tuple(sorted(p.id for p in permits))
            return self._deny(StatusCode.MESSAGE_TOO_LARGE, f"payload of {size} bytes exceeds the limit of {limit} bytes (permit {', '.join(ids)})", ids, stage)
        if facts is not None and facts.data_lock:
            # SECURITY: a data lock (eCH-0021 dataLock/paperLock) restricts disclosure to
            # recipients with an explicit legal basis for locked data.
            unlocked = [p for p in fitting if p.allow_locked_data]
            if not unlocked:
                ids = tuple(sorted(p.id for p in fitting))
                return self._deny(StatusCode.NOT_ALLOWED_TO_SEND, f"the person has an active data lock and no permit allows locked data (permit {', '.join(ids)} does not)", ids, stage)
            fitting = unlocked
        fitting.sort(key=lambda p: p.id)
        redactions: tuple[str, ...] = ()
        if stage.reads_payload:
            # Permits are alternatives: data is removed only if no applicable permit grants it.
            common = set(p.clark for p in fitting[0].redactions)
            for p in fitting[1:]:
                common &= {x.clark for x in p.redactions}
            redactions = tuple(sorted(common))
        return PolicyDecision(
            allowed=True,
            status=None,
            reason="permitted",
            rule_ids=tuple(p.id for p in fitting),
            purpose=tuple(p.purpose or "" for p in fitting),
            legal_basis=tuple(f"{p.legal_basis} ({p.legal_reference})" for p in fitting),
            redactions=redactions,
            revision=self.revision,
            stage=stage,
        )

    def decide_all(self, requests: list[PolicyRequest], now: datetime, stage: Stage | str = Stage.ORIGIN) -> tuple[PolicyDecision, ...]:
        """Decide a multi-recipient message; denied recipients of a partly allowed one get 313."""
        decisions = tuple(self.decide(r, now, stage) for r in requests)
        if any(d.allowed for d in decisions) and not all(d.allowed for d in decisions):
            decisions = tuple(
                d if d.allowed else replace(d, status=StatusCode.RECIPIENT_NOT_ALLOWED) for d in decisions
            )
        return decisions

    def _deny(self, status: StatusCode, reason: str, ids: tuple[str, ...], stage: Stage) -> PolicyDecision:
        return PolicyDecision(False, status, reason, ids, (), (), (), self.revision, stage)

    def _default_code(self, request: PolicyRequest) -> StatusCode:
        # sedex semantics: 311 when the sender may send this type but the recipient may not
        # receive it from anyone; 310 otherwise (the sender is not authorised).
        key = (request.sender.value, request.recipient.value, request.message_type)
        code = self._roles.get(key)
        if code is None:
            buckets = [b for b in (self._roles_by_type.get(key[2]), self._roles_by_type.get(None)) if b]
            sender_may = any(key[0] in b[0] or any(x.fullmatch(key[0]) for x in b[1]) for b in buckets)
            recipient_may = any(key[1] in b[2] or any(x.fullmatch(key[1]) for x in b[3]) for b in buckets)
            code = StatusCode.NOT_ALLOWED_TO_RECEIVE if sender_may and not recipient_may else StatusCode.NOT_ALLOWED_TO_SEND
            if len(self._roles) >= _CACHE_LIMIT:
                self._roles.clear()
            self._roles[key] = code
        return code

    @staticmethod
    def _default_reason(request: PolicyRequest) -> str:
        return (
            f"no permit for message type {request.message_type} from {request.sender} to "
            f"{request.recipient} (default deny)"
        )
