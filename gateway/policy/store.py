"""Holds the live policy set; a reload that fails keeps the previous good set.

The node audits every reload with the :class:`ReloadResult`: who, when, the old and new
revision, a digest of the files tried, which rules were added, removed or changed, who
gains or loses access (from :mod:`.diff`, bounded in size), and, for a refused set, the
file, rule and field at fault. Swapping is one reference assignment, so a decision in
flight finishes on the set it started with.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .diff import RuleChanges, comparison_size, diff_policy_sets, rule_changes
from .engine import PolicyEngine
from .loader import PolicyLoadError, load_policy_set, policy_files
from .model import PolicySet

__all__ = ["AccessSummary", "LoadFailure", "PolicyStore", "ReloadResult", "RuleChanges", "rule_changes"]

# A reload compares the sets by deciding every combination they name; above this many
# requests per set it reports only the rule changes, so an admin call stays fast.
MAX_COMPARISON = 100_000
# Bounds of what a reload result carries, so an audit record stays small.
MAX_EXAMPLES = 10
MAX_RULE_IDS = 50
MAX_DETAIL = 500


@dataclass(frozen=True, slots=True)
class AccessSummary:
    """Who gains or loses access through a reload: counts and the first few changes."""

    gained: int
    lost: int
    redactions: int  # combinations that stay allowed but with other redactions
    examples: tuple[str, ...]  # one line per change (participant IDs, types, paths; no payload data)
    truncated: bool  # there are more changes than examples
    skipped: str | None = None  # why the access comparison was not made

    @property
    def summary(self) -> str:
        if self.skipped:
            return f"not compared: {self.skipped}"
        return f"{self.gained} gained, {self.lost} lost, {self.redactions} with other redactions"

    def to_json(self) -> dict:
        return {
            "gained": self.gained, "lost": self.lost, "redactions": self.redactions,
            "examples": list(self.examples), "truncated": self.truncated, "skipped": self.skipped,
            "summary": self.summary,
        }


@dataclass(frozen=True, slots=True)
class LoadFailure:
    """Why a new set was refused: where (file, rule, field) and what (problem, full message)."""

    file: str
    rule: str | None
    field: str
    problem: str
    message: str

    def to_json(self) -> dict:
        return {"file": self.file, "rule": self.rule, "field": self.field, "problem": self.problem, "message": self.message}


@dataclass(frozen=True, slots=True)
class ReloadResult:
    accepted: bool
    actor: str
    at: datetime
    old_revision: str | None
    new_revision: str | None  # None when the new files were refused
    changes: RuleChanges | None
    error: str | None  # the PolicyLoadError text (names file, rule, field, value)
    failure: LoadFailure | None = None
    access: AccessSummary | None = None
    files_digest: str | None = None  # sha256 of the files tried, to match what an admin reviewed

    def to_json(self) -> dict:
        """The result for the admin API: every list bounded, nothing but IDs, paths and revisions."""
        changes = None
        if self.changes is not None:
            changes = {
                "added": list(self.changes.added[:MAX_RULE_IDS]),
                "removed": list(self.changes.removed[:MAX_RULE_IDS]),
                "changed": list(self.changes.changed[:MAX_RULE_IDS]),
                "truncated": max(len(self.changes.added), len(self.changes.removed), len(self.changes.changed)) > MAX_RULE_IDS,
                "summary": self.changes.summary,
            }
        return {
            "accepted": self.accepted,
            "actor": self.actor,
            "at": self.at.isoformat(),
            "old_revision": self.old_revision,
            "new_revision": self.new_revision,
            "files_digest": self.files_digest,
            "changes": changes,
            "access": self.access.to_json() if self.access else None,
            "error": self.error,
            "failure": self.failure.to_json() if self.failure else None,
        }

    def audit_details(self) -> dict[str, str]:
        """Text-only details for an audit record of the reload, each value at most MAX_DETAIL characters."""
        details = {
            "accepted": "true" if self.accepted else "false",
            "old_revision": self.old_revision or "-",
            "new_revision": self.new_revision or "-",
            "files_digest": self.files_digest or "-",
        }
        if self.changes is not None:
            details["rules"] = self.changes.summary
            for kind in ("added", "removed", "changed"):
                ids = getattr(self.changes, kind)
                if ids:
                    details[f"rules_{kind}"] = ", ".join(ids)
        if self.access is not None:
            details["access"] = self.access.summary
            if self.access.examples:
                details["access_examples"] = "; ".join(self.access.examples) + (" (more)" if self.access.truncated else "")
        if self.failure is not None:
            details.update(error_file=self.failure.file, error_rule=self.failure.rule or "-",
                           error_field=self.failure.field, error=self.failure.message)
        return {key: _bounded(value) for key, value in details.items()}


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _files_digest(paths: list[Path | str]) -> str | None:
    """sha256 over the names and bytes of the policy files, in name order (None if unreadable)."""
    try:
        files = policy_files(paths)
        digest = hashlib.sha256()
        for file in sorted(files, key=lambda f: (f.name, str(f))):
            data = file.read_bytes()
            digest.update(f"{file.name}\0{len(data)}\0".encode())
            digest.update(data)
    except (PolicyLoadError, OSError):
        return None
    return "sha256:" + digest.hexdigest()


def _access_summary(old: PolicySet | None, new: PolicySet, at: datetime) -> AccessSummary:
    if old is None:
        return AccessSummary(0, 0, 0, (), False, "no previous policy set")
    if old.revision == new.revision:
        return AccessSummary(0, 0, 0, (), False)
    size = comparison_size(old, new)
    if size > MAX_COMPARISON:
        return AccessSummary(0, 0, 0, (), False, f"{size} combinations exceed the limit of {MAX_COMPARISON}; run policy diff")
    diff = diff_policy_sets(old, new, at)
    counts = diff.counts()
    examples = tuple(change.line() for change in diff.access[:MAX_EXAMPLES])
    return AccessSummary(counts["gained"], counts["lost"], counts["redactions"], examples, len(diff.access) > MAX_EXAMPLES)


class PolicyStore:
    """The node's current policy engine, replaced only by a set that loaded cleanly.

    With ``schemas`` (the official eCH XSDs), a reload also proves every redaction
    against them and refuses a set whose redaction would break payloads.
    """

    def __init__(
        self, initial: PolicySet | None = None, clock: Callable[[], datetime] = _utcnow,
        *, schemas: Path | str | None = None,
    ) -> None:
        self._clock = clock
        self._schemas = schemas
        self._engine = PolicyEngine(initial) if initial is not None else None
        self._reloading = threading.Lock()

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
        """Load ``paths``; make them live only if they load cleanly. Never raises for a bad set."""
        paths = list(paths)
        with self._reloading:  # two reloads at once would report the wrong old revision
            old = self._engine.policy_set if self._engine else None
            at = self._clock()
            digest = _files_digest(paths)
            try:
                new = load_policy_set(paths, schemas=self._schemas)
            except PolicyLoadError as exc:
                failure = LoadFailure(exc.file, exc.rule, exc.field, exc.problem, str(exc))
                return ReloadResult(False, actor, at, self.revision, None, None, str(exc), failure, None, digest)
            access = _access_summary(old, new, at)
            self._engine = PolicyEngine(new)
            return ReloadResult(True, actor, at, old.revision if old else None, new.revision,
                                rule_changes(old, new), None, None, access, digest)
