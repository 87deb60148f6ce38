"""The figures of a chaos campaign: printed in the test output and written into docs/reliability.md."""

from __future__ import annotations

import collections
import hashlib
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .ledger import AuditFigures, Books
from .proxy import Fault
from .settings import HUB, NODES, Settings


@dataclass
class Figures:
    """Everything a campaign counted; :attr:`problems` is empty when nothing went wrong."""

    seed: int
    settings: Settings
    flows: dict[str, int] = field(default_factory=dict)
    accepted: int = 0
    duplicate_answers: int = 0  # 202 "duplicate": the first attempt was stored, its answer lost
    submit_retries: int = 0
    refused: list[str] = field(default_factory=list)
    kills: collections.Counter = field(default_factory=collections.Counter)  # node → SIGKILLs by the campaign
    armed_starts: collections.Counter = field(default_factory=collections.Counter)
    fault_point_kills: collections.Counter = field(default_factory=collections.Counter)  # died at kill-after-deliver
    unexpected_exits: dict[str, list[int]] = field(default_factory=lambda: collections.defaultdict(list))
    faults: collections.Counter = field(default_factory=collections.Counter)  # kind → connections
    faults_by_link: dict[str, collections.Counter] = field(default_factory=dict)
    connections: int = 0
    target_down: int = 0  # connections reset by a proxy because its node was down
    live_drops: int = 0  # open connections reset on command (part of the drop count)
    retries: dict[str, int] = field(default_factory=dict)  # node → retry events in its store
    harness_errors: list[str] = field(default_factory=list)  # a node that would not start, a task that failed
    payloads_read: int = 0  # delivered payloads fetched back through the recipients' APIs
    payload_mismatches: list[str] = field(default_factory=list)
    books: Books | None = None
    audits: list[AuditFigures] = field(default_factory=list)
    chaos_seconds: float = 0.0
    settle_seconds: float | None = None  # None: did not settle within the timeout
    last_receipt: dict[str, float] = field(default_factory=dict)  # origin node → its last receipt, seconds after faults off
    total_seconds: float = 0.0

    @property
    def problems(self) -> list[str]:
        found = []
        if self.accepted != self.settings.messages:
            found.append(f"only {self.accepted} of {self.settings.messages} messages were accepted")
        found += [f"submission refused: {r}" for r in self.refused]
        found += [f"{node} exited on its own with {codes}" for node, codes in self.unexpected_exits.items() if codes]
        found += [f"harness: {e}" for e in self.harness_errors]
        if self.settle_seconds is None:
            found.append(f"not settled within {self.settings.settle_timeout:.0f} s after the faults were turned off")
        found += [f"payload differs: {m}" for m in self.payload_mismatches[:5]]
        found += self.books.problems if self.books else ["books not closed"]
        found += [f"{a.node}: audit log does not verify: {a.error or 'unsigned tail'}" for a in self.audits if not a.valid]
        return found

    @property
    def lost(self) -> int:
        return len(self.books.lost) if self.books else -1

    @property
    def duplicated(self) -> int:
        return len(self.books.duplicated) + len(self.books.phantoms) if self.books else -1

    def text(self) -> str:
        s = self.settings
        books = self.books
        lines = [
            f"chaos campaign, seed {self.seed}: {s.messages} messages over ≥{s.seconds:.0f}s, "
            f"a SIGKILL every {s.kill_every[0]:g}–{s.kill_every[1]:g}s",
            "  messages:   " + ", ".join(f"{n} {label}" for label, n in self.flows.items()),
            f"  accepted:   {self.accepted} (202), {self.duplicate_answers} answered 'duplicate' after a lost 202, "
            f"{self.submit_retries} submit attempts retried, {len(self.refused)} refused",
            "  SIGKILLs:   " + ", ".join(f"{n} {self.kills[n]}" for n in NODES) + f" (total {sum(self.kills.values())}); "
            f"armed restarts {sum(self.armed_starts.values())}, died at kill-after-deliver: "
            + (", ".join(f"{n} {c}" for n, c in sorted(self.fault_point_kills.items())) or "0"),
            "  faults:     " + ", ".join(f"{k.value} {self.faults[k]}" for k in Fault if k is not Fault.PASS)
            + f" ({self.live_drops} of the drops: open connections reset on command); {self.connections} connections, "
            f"{self.faults[Fault.PASS]} passed, {self.target_down} reset because the node was down",
            "  retries:    " + ", ".join(f"{n} {c}" for n, c in self.retries.items()) + " (transfer attempts the nodes had to repeat)",
            f"  time:       chaos {self.chaos_seconds:.1f} s, settled {self._settled()} after faults off ({self._tails()}), whole run {self.total_seconds:.1f} s",
        ]
        if books is not None:
            lines.append(f"  result:     {books.delivered_once} delivered exactly once, lost {self.lost}, duplicated {self.duplicated}, still in flight {len(books.stuck)}, "
                         f"without receipt at the origin {len(books.without_receipt)}, returns left at the hub {books.returns_left.get(HUB, 0)}, "
                         f"payloads read back differing {len(self.payload_mismatches)} of {self.payloads_read}")  # fmt: skip
        for audit in self.audits:
            state = "verifies" if audit.valid else f"DOES NOT VERIFY ({audit.error})"
            lines.append(f"  audit log:  {audit.node} {state}: {audit.records} records, {audit.checkpoints} checkpoints signed by the node, "
                         f"unsigned tail {audit.unsigned_tail} (covered by the closing checkpoint), "
                         f"deliveries audited twice: {audit.delivered_twice}")  # fmt: skip
        problems = self.problems
        lines.append("  verdict:    " + ("clean" if not problems else "PROBLEMS: " + "; ".join(problems)))
        return "\n".join(lines)

    def _settled(self) -> str:
        return f"{self.settle_seconds:.1f} s" if self.settle_seconds is not None else f"NOT within {self.settings.settle_timeout:.0f} s"

    def _tails(self) -> str:
        return "last receipt home: " + ", ".join(f"{n} {t:+.1f} s" for n, t in self.last_receipt.items())

    def markdown(self, command: str, revision: str) -> str:
        s, books = self.settings, self.books
        when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        rows = [
            ("date", when),
            ("code", revision),
            ("command", f"`{command}`"),
            ("seed", str(self.seed)),
            ("messages", f"{s.messages:,}: " + "; ".join(f"{n:,} {label}" for label, n in self.flows.items())),
            ("load", f"{s.submitters} submissions in flight, spread over ≥ {s.seconds:.0f} s; {self.duplicate_answers} answered `duplicate` "
                     f"(the first attempt was stored, its 202 lost in a kill); {self.submit_retries:,} submit attempts retried"),
            ("SIGKILLs by the harness", ", ".join(f"{n} {self.kills[n]}" for n in NODES) + f" — {sum(self.kills.values())} in all, "
                                        f"one every {s.kill_every[0]:g}–{s.kill_every[1]:g} s, down {s.downtime[0]:g}–{s.downtime[1]:g} s"),
            ("kills at `kill-after-deliver`", f"{sum(self.fault_point_kills.values())} "
                                              f"({', '.join(f'{n} {c}' for n, c in sorted(self.fault_point_kills.items())) or 'none'}) "
                                              f"of {sum(self.armed_starts.values())} armed restarts"),
            ("faults injected", ", ".join(f"{k.value} {self.faults[k]:,}" for k in Fault if k is not Fault.PASS)
                                + f" — on {self.connections:,} node-to-node connections, {self.faults[Fault.PASS]:,} of them passed untouched; "
                                  f"{self.live_drops:,} of the drops reset open connections on command"),
            ("connections reset because the peer was down", f"{self.target_down:,}"),
            ("transfer and return attempts repeated by the nodes", ", ".join(f"{n} {c:,}" for n, c in self.retries.items())),
            ("lost", str(self.lost)),
            ("still in flight after the settle timeout", str(len(books.stuck)) if books else "—"),
            ("duplicated", str(self.duplicated)),
            ("delivered exactly once", f"{books.delivered_once:,} of {s.messages:,}" if books else "—"),
            ("receipt 100 back at the sender", f"{s.messages - len(books.without_receipt):,} of {s.messages:,}" if books else "—"),
            ("receipts still owed by the hub", str(books.returns_left.get(HUB, 0)) if books else "—"),
            ("payloads read back identical", f"{self.payloads_read - len(self.payload_mismatches):,} of {self.payloads_read:,} delivered"),
            ("audit logs", "; ".join(f"{a.node} {'verifies' if a.valid else 'DOES NOT VERIFY'} ({a.records:,} records, "
                                     f"{a.checkpoints} own checkpoints, deliveries audited twice: {a.delivered_twice})" for a in self.audits)),
            ("time", f"chaos {self.chaos_seconds:.0f} s, settled {self._settled()} after faults off ({self._tails()}), whole run {self.total_seconds:.0f} s"),
            ("verdict", "clean" if not self.problems else "**" + "; ".join(self.problems) + "**"),
        ]  # fmt: skip
        link_rows = [
            f"| {link} | " + " | ".join(str(counter[k]) for k in Fault) + " |"
            for link, counter in self.faults_by_link.items() if sum(counter.values())
        ]  # fmt: skip
        return "\n".join(
            ["| figure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), "",
             "Connections per link and what each got:", "",
             "| link | " + " | ".join(k.value for k in Fault) + " |", "|---|" + "---:|" * len(Fault), *link_rows]
        )  # fmt: skip


@dataclass(frozen=True)
class Revision:
    """The code the nodes run: the commit, and a fingerprint of ``gateway/`` and ``adapters/`` as checked out."""

    label: str  # "`abc1234`", with "+ uncommitted changes (…)" when tracked files differ from the commit
    code: str  # digest of the two trees at HEAD plus any uncommitted change to them


def source_revision(root: Path) -> Revision:
    """Taken at the start and at the end of a campaign: every node restart loads the working tree as it is then."""

    def git(*args: str) -> bytes:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=True).stdout

    try:
        head = git("rev-parse", "--short", "HEAD").decode().strip()
        trees = git("rev-parse", "HEAD:gateway", "HEAD:adapters")
        diff = git("diff", "HEAD", "--", "gateway", "adapters")
    except (OSError, subprocess.CalledProcessError):
        return Revision("unknown (not a git checkout)", "unknown")
    changes = f" + uncommitted changes (diff sha256 {hashlib.sha256(diff).hexdigest()[:12]})" if diff else ""
    return Revision(f"`{head}`{changes}", hashlib.sha256(trees + diff).hexdigest())


def describe_revisions(at_start: Revision, at_end: Revision) -> str:
    if at_start.code != at_end.code:
        return (f"{at_start.label} at the start, **{at_end.label} at the end: gateway/ or adapters/ changed while the "
                f"campaign ran** (restarted nodes load the tree as it is)")  # fmt: skip
    if at_start.label != at_end.label:
        return f"{at_start.label} (HEAD moved to {at_end.label} during the run; gateway/ and adapters/ unchanged)"
    return at_start.label


def update_report(path: Path, section: str) -> None:
    """Replace the text between the campaign markers in ``path`` (the figures of the last long run)."""
    begin, end = "<!-- chaos-campaign:begin -->", "<!-- chaos-campaign:end -->"
    text = path.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        raise ValueError(f"{path}: markers {begin} … {end} not found")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{section}\n{end}{tail}", encoding="utf-8")
