"""Holds the live policy set; a reload that fails keeps the previous good set.

The node audits every reload with the :class:`ReloadResult` (who, when, which revisions,
what changed). Swapping is one reference assignment, so a decision in flight finishes on
the set it started with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .engine import PolicyEngine
from .loader import PolicyLoadError, canonical, load_policy_set
from .model import PolicySet


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
    before = {r.id: canonical(r) for r in old.rules} if old else {}
    after = {r.id: canonical(r) for r in new.rules}
    return RuleChanges(
        added=tuple(sorted(after.keys() - before.keys())),
        removed=tuple(sorted(before.keys() - after.keys())),
        changed=tuple(sorted(k for k in before.keys() & after.keys() if before[k] != after[k])),
    )


@dataclass(frozen=True, slots=True)
class ReloadResult:
    accepted: bool
    actor: str
    at: datetime
    old_revision: str | None
    new_revision: str | None  # None when the new files were refused
    changes: RuleChanges | None
    error: str | None  # the PolicyLoadError text (names file, rule, field, value)

    def to_json(self) -> dict:
        return {
            "accepted": self.accepted,
            "actor": self.actor,
            "at": self.at.isoformat(),
            "old_revision": self.old_revision,
            "new_revision": self.new_revision,
            "changes": self.changes.to_json() if self.changes else None,
            "error": self.error,
        }


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class PolicyStore:
    """The node's current policy engine, replaced only by a set that loaded cleanly."""

    def __init__(self, initial: PolicySet | None = None, clock: Callable[[], datetime] = _utcnow) -> None:
        self._clock = clock
        self._engine = PolicyEngine(initial) if initial is not None else None

    @property
    def engine(self) -> PolicyEngine:
        if self._engine is None:
            # SECURITY: no policy loaded means nothing is allowed, not everything.
            raise LookupError("no policy set loaded")
        return self._engine

    @property
    def revision(self) -> str | None:
        return self._engine.revision if self._engine else None

    def reload(self, paths: Iterable[Path | str], actor: str) -> ReloadResult:
        old = self._engine.policy_set if self._engine else None
        at = self._clock()
        try:
            new = load_policy_set(list(paths))
        except PolicyLoadError as exc:
            return ReloadResult(False, actor, at, self.revision, None, None, str(exc))
        self._engine = PolicyEngine(new)
        return ReloadResult(True, actor, at, old.revision if old else None, new.revision, rule_changes(old, new), None)
