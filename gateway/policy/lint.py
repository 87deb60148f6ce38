"""``policy check``: findings an admin must look at before a policy set goes live."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .loader import PolicyLoadError, load_policy_set
from .model import Effect, ParticipantMatcher, PolicySet, Rule
from .schemacheck import check_redaction


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # load-error, unknown-group, unknown-participant, shadowed-permit, never-matches, expired, redaction-breaks-schema, redaction-never-applies
    file: str
    rule: str | None
    message: str

    def to_json(self) -> dict:
        return {"kind": self.kind, "file": self.file, "rule": self.rule, "message": self.message}


def check_files(paths: Iterable[Path | str], known: set[str] | None, schema_dir: Path | None, now: datetime) -> list[Finding]:
    """Load the files and lint them; a load error is itself a finding."""
    try:
        policy_set = load_policy_set(list(paths))
    except PolicyLoadError as exc:
        kind = "unknown-group" if exc.problem == "unknown group" else "load-error"
        return [Finding(kind, exc.file, exc.rule, str(exc))]
    return check_policy_set(policy_set, known, schema_dir, now)


def check_policy_set(policy_set: PolicySet, known: set[str] | None, schema_dir: Path | None, now: datetime) -> list[Finding]:
    findings: list[Finding] = []
    participants = set(known or ()) | {pid for pid, _ in policy_set.participants}
    if participants:
        findings += _unknown_participants(policy_set, participants)
    for rule in policy_set.rules:
        findings += _never_matches(rule)
        if rule.valid_until is not None and rule.valid_until <= now:
            findings.append(Finding("expired", rule.source, rule.id, f"valid_until {rule.valid_until.isoformat()} is in the past"))
    permits = [r for r in policy_set.rules if r.effect is Effect.PERMIT]
    forbids = [r for r in policy_set.rules if r.effect is Effect.FORBID]
    for permit in permits:
        shadows = sorted(f.id for f in forbids if _covers(f, permit))
        if shadows:
            findings.append(Finding("shadowed-permit", permit.source, permit.id, f"every request it permits is forbidden by {', '.join(shadows)}"))
    if schema_dir is not None:
        for rule in permits:
            for path in rule.redactions:
                for problem in check_redaction(path, schema_dir):
                    kind = "redaction-never-applies" if problem.startswith("matches no element") else "redaction-breaks-schema"
                    findings.append(Finding(kind, rule.source, rule.id, f"redact {path.text!r}: {problem}"))
    return sorted(findings, key=lambda f: (f.file, f.rule or "", f.kind, f.message))


def _unknown_participants(policy_set: PolicySet, participants: set[str]) -> list[Finding]:
    out = []
    for rule in policy_set.rules:
        for field, matcher in (("senders", rule.senders), ("recipients", rule.recipients)):
            for pid in sorted(matcher.ids - participants):
                out.append(Finding("unknown-participant", rule.source, rule.id, f"{field}: participant {pid} is not in the participant list"))
            for pattern, regex in zip(matcher.patterns, matcher.regexes):
                # A pattern that matches no known participant is as silent as an unknown ID.
                if not any(regex.fullmatch(pid) for pid in participants):
                    out.append(Finding("unknown-participant", rule.source, rule.id, f"{field}: pattern {pattern} matches no participant in the participant list"))
    for name, members in policy_set.groups:
        for pid in sorted(set(members) - participants):
            out.append(Finding("unknown-participant", policy_set.sources[0], None, f"group {name}: participant {pid} is not in the participant list"))
    return out


def _may_be_test(matcher: ParticipantMatcher) -> bool:
    return any(p.startswith("T") for p in matcher.ids) or any(p[0] in "T*?" for p in matcher.patterns)


def _may_be_production(matcher: ParticipantMatcher) -> bool:
    return any(not p.startswith("T") for p in matcher.ids) or any(p[0] != "T" for p in matcher.patterns)


def _never_matches(rule: Rule) -> list[Finding]:
    out = []
    if rule.valid_from and rule.valid_until and rule.valid_until <= rule.valid_from:
        out.append(Finding("never-matches", rule.source, rule.id, "valid_until is not after valid_from"))
    if rule.effect is Effect.PERMIT and not _may_be_production(rule.senders) and not _may_be_test(rule.recipients):
        out.append(Finding("never-matches", rule.source, rule.id, "test senders to production recipients are always refused by the test/production guard"))
    if rule.senders.is_exact and rule.recipients.is_exact and rule.senders.ids == rule.recipients.ids and len(rule.senders.ids) == 1:
        out.append(Finding("never-matches", rule.source, rule.id, "sender and recipient are the same single participant"))
    return out


def _covers_participants(outer: ParticipantMatcher, inner: ParticipantMatcher) -> bool:
    if not all(outer.matches(pid) for pid in inner.ids):
        return False
    return all(p in outer.patterns or "*" in outer.patterns for p in inner.patterns)


def _covers_set(outer, inner) -> bool:
    return outer is None or (inner is not None and inner <= outer)


def _covers(forbid: Rule, permit: Rule) -> bool:
    """True when ``forbid`` applies to every request ``permit`` could allow (one forbid alone)."""
    if forbid.valid_from and (permit.valid_from is None or permit.valid_from < forbid.valid_from):
        return False
    if forbid.valid_until and (permit.valid_until is None or permit.valid_until > forbid.valid_until):
        return False
    return (
        _covers_participants(forbid.senders, permit.senders)
        and _covers_participants(forbid.recipients, permit.recipients)
        and _covers_set(forbid.message_types, permit.message_types)
        and _covers_set(forbid.message_classes, permit.message_classes)
        and _covers_set(forbid.actions, permit.actions)
        and _covers_set(forbid.events, permit.events)
    )
