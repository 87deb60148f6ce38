"""Prometheus metrics of one node: what flowed through it, and what it holds right now.

Two kinds, kept apart on purpose:

* **Events** the node reports as they happen (counters and histograms): a stage passed or
  refused a message and how long it took, a final receipt was recorded, a transfer is
  retried, a policy decided. The node calls :class:`NodeMetrics` methods at those points.
* **State** read at scrape time by a custom collector (gauges): queue depth per next hop and
  the oldest queued message, inbox backlog, circuit breakers, audit log size and last
  checkpoint, certificate expiry, federation directory, sedex folder backlog. Nothing has to
  keep these up to date, so they cannot drift from the store.

Every node has its own :class:`~prometheus_client.CollectorRegistry` (never the global
one): two nodes in one test process do not share counters. Label values are identifiers
from the configuration and sedex codes only (peers, hosted participants, rule IDs, stage
names); never message IDs or anything from a payload, which also keeps cardinality bounded.

Times are exported as Unix timestamps (``*_timestamp_seconds``), not ages, following the
Prometheus convention: the age is ``time() - metric`` in the query, and it stays right
between scrapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from .ids import GatewayError
from .logs import bound

if TYPE_CHECKING:
    from .node import Node

PREFIX = "drehscheibe"

# No ``*_created`` series beside every counter and histogram: they double the series count
# and nothing in the dashboard or alerts needs them (process-wide; this process is one node).
disable_created_metrics()

# Seconds. Most stages take milliseconds; sealing or storing a multi-GiB payload takes minutes.
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

# The folders of a participant's sedex interface that hold work someone still has to do:
# outbox (not yet picked up), inbox and receipts (not yet taken by the local system),
# failed (refused files an operator has to look at). processed/ only grows and is left out.
BACKLOG_FOLDERS = ("outbox", "inbox", "receipts", "failed")

# Proposed Store.queue_stats(): per next hop and state, how many rows and the oldest messageDate.
QUEUE_STATS_SQL = (
    "SELECT via, state, COUNT(*), MIN(message_date) FROM outgoing"
    " WHERE state IN ('queued', 'handed') GROUP BY via, state"
)
# Proposed Store.inbox_backlog(): per hosted recipient, delivered messages not yet acknowledged.
INBOX_BACKLOG_SQL = "SELECT recipient, COUNT(*) FROM inbox WHERE state='delivered' GROUP BY recipient"


class Stage(str, enum.Enum):
    """The stages a node times and counts. The hop-level ones (submit, receive, forward)
    count every message once; the others say where inside the hop it was refused."""

    # origin hop (a local system or the sedex folder submits)
    SUBMIT = "submit"
    PARSE_ENVELOPE = "parse_envelope"
    CHECK_PARTICIPANTS = "check_participants"
    CHECK_MESSAGE_DATE = "check_message_date"
    SEAL = "seal"  # header, format, egress policy, payload check, encryption
    PERSIST = "persist"  # audit records, blobs, outgoing rows
    # destination or relay hop (a peer transfers)
    RECEIVE = "receive"
    # forwarder: one transfer attempt to the next hop (or the local inbox)
    FORWARD = "forward"


class StageOutcome(str, enum.Enum):
    PASSED = "passed"  # the stage let the message through (or delivered it)
    REFUSED = "refused"  # the stage refused it with a sedex code (the ``code`` label)
    FAILED = "failed"  # an unexpected exception; the message was not refused by a rule
    RETRIED = "retried"  # forward only: not settled this time, queued again
    DUPLICATE = "duplicate"  # the identical message had already been accepted


class RetryReason(str, enum.Enum):
    NETWORK = "network"  # connection error, timeout, HTTP 5xx/408/429, no receipt in the answer
    TEMPORARY_CODE = "temporary_code"  # the next hop answered with a temporary sedex code (4xx/5xx)
    RECEIPT_REJECTED = "receipt_rejected"  # the answer did not verify or was about another message
    AUDIT_UNAVAILABLE = "audit_unavailable"  # our own audit log could not record the receipt
    RETURN_FAILED = "return_failed"  # a relay could not return a final receipt upstream


@dataclass
class StageTimer:
    """What :meth:`NodeMetrics.timed` yields: set the outcome when the stage returns a refusal
    (instead of raising one), or when it ended otherwise than "passed"."""

    outcome: StageOutcome | None = StageOutcome.PASSED
    code: int | None = None

    def refused(self, code: int) -> None:
        self.outcome, self.code = StageOutcome.REFUSED, int(code)


class NodeMetrics:
    """The metrics of one node, in their own registry. Create one per :class:`~gateway.node.Node`."""

    def __init__(self, node: Node, *, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.messages = Counter(
            f"{PREFIX}_messages", "Messages by stage, outcome and sedex code (code is empty when the stage passed them).",
            ["stage", "outcome", "code"], registry=self.registry,
        )  # fmt: skip
        self.stage_seconds = Histogram(
            f"{PREFIX}_stage_duration_seconds", "Time a message spent in one stage.",
            ["stage"], buckets=STAGE_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.receipts = Counter(
            f"{PREFIX}_receipts", "Final receipts recorded for messages this node sent or relayed, by sedex code.",
            ["code"], registry=self.registry,
        )  # fmt: skip
        self.retries = Counter(
            f"{PREFIX}_transfer_retries", "Transfers to a next hop that will be tried again, by peer and reason.",
            ["peer", "reason"], registry=self.registry,
        )  # fmt: skip
        self.policy = Counter(
            f"{PREFIX}_policy_decisions", "Policy decisions by direction (origin, destination, relay), deciding rule and outcome.",
            ["direction", "rule", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.registry.register(NodeStateCollector(node))

    # -- what the node calls ---------------------------------------------------------

    def observe_stage(self, stage: Stage | str, outcome: StageOutcome | str, seconds: float, code: int | None = None) -> None:
        """One message went through ``stage`` in ``seconds`` with ``outcome`` (and a sedex code)."""
        name = _value(stage)
        self.messages.labels(name, _value(outcome), "" if code is None else str(int(code))).inc()
        self.stage_seconds.labels(name).observe(max(seconds, 0.0))

    @contextlib.contextmanager
    def timed(self, stage: Stage | str) -> Iterator[StageTimer]:
        """Time and count the block as ``stage``; also binds the stage to every log line inside it.

        A :class:`~gateway.ids.GatewayError` leaving the block counts as refused with its
        status code, any other exception as failed (both propagate unchanged).
        """
        timer = StageTimer()
        started = time.perf_counter()
        try:
            with bound(stage=_value(stage)):
                yield timer
        except GatewayError as error:
            timer.refused(int(error.status))
            raise
        except (asyncio.CancelledError, GeneratorExit):
            timer.outcome = None  # shutdown cut it: neither passed nor failed, not counted
            raise
        except BaseException:
            timer.outcome, timer.code = StageOutcome.FAILED, None
            raise
        finally:
            if timer.outcome is not None:
                self.observe_stage(stage, timer.outcome, time.perf_counter() - started, timer.code)

    def receipt(self, code: int) -> None:
        """A final receipt (100, a refusal, 204 expired) was recorded for a message sent or relayed here."""
        self.receipts.labels(str(int(code))).inc()

    def retry(self, peer: str, reason: RetryReason | str) -> None:
        """A transfer to ``peer`` (``local`` for this node's own inbox) was rescheduled."""
        self.retries.labels(peer, _value(reason)).inc()

    def policy_decision(self, direction: str, decision) -> None:
        """One decision of the policy engine (a ``PolicyDecision``): counted once per deciding rule.

        ``direction`` is ``origin``, ``destination`` or ``relay``. A decision no rule made
        (default deny) counts under rule ``(default)``.
        """
        outcome = "allow" if decision.allowed else "deny"
        for rule in tuple(decision.rule_ids) or ("(default)",):
            self.policy.labels(_value(direction), rule, outcome).inc()

    # -- exposition ------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The text exposition format (what ``/metrics`` answers)."""
        return generate_latest(self.registry)


def metrics_handler(metrics: NodeMetrics | Callable[[], NodeMetrics]):
    """An aiohttp handler for ``GET /metrics`` serving ``metrics`` (or what the callable returns)."""

    async def handle(request: web.Request) -> web.Response:
        source = metrics() if callable(metrics) and not isinstance(metrics, NodeMetrics) else metrics
        # Collected in the event loop's thread: the store and audit connections belong to it.
        body = source.exposition()
        # Text format 0.0.4: what every Prometheus (2.x and 3.x) and Grafana Agent reads; the
        # names here are plain snake_case, so nothing needs the escaping of format 1.0.0.
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    return handle


class NodeStateCollector(Collector):
    """Gauges computed at scrape time from the node's store, breakers, audit log, certificates,
    directory and sedex folders. A source that fails is skipped and reported in
    ``drehscheibe_scrape_error{source}``; a scrape never fails as a whole."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.started = time.time()

    def describe(self) -> list:
        return []  # families are only known at scrape time; avoids a scrape at registration

    def collect(self) -> Iterator:
        errors = GaugeMetricFamily(f"{PREFIX}_scrape_error", "1 for each source that could not be read in this scrape.", labels=["source"])
        for source, produce in (
            ("node", self._node_info),
            ("queue", self._queue),
            ("inbox", self._inbox),
            ("breakers", self._breakers),
            ("audit", self._audit),
            ("certificates", self._certificates),
            ("directory", self._directory),
            ("folders", self._folders),
        ):
            try:
                families = list(produce())
            except Exception:  # noqa: BLE001 - one unreadable source must not hide the others
                errors.add_metric([source], 1)
                continue
            yield from families
        yield errors

    # -- sources ---------------------------------------------------------------------

    def _node_info(self) -> Iterable:
        node = self.node
        info = InfoMetricFamily(f"{PREFIX}_node", "The node this process runs, and its active policy revision.")
        revision = (node.policies.revision or "") if node.policies is not None else ""
        info.add_metric([], {"node": node.id, "version": _version(), "policy_revision": revision})
        yield info
        start = GaugeMetricFamily(f"{PREFIX}_start_time_seconds", "When this node's metrics started (Unix time).")
        start.add_metric([], self.started)
        yield start

    def _queue(self) -> Iterable:
        depth = GaugeMetricFamily(
            f"{PREFIX}_queue_messages",
            "Outgoing messages per next hop: queued (waiting to be sent) or handed (a relay took them over, final receipt pending).",
            labels=["peer", "state"],
        )  # fmt: skip
        oldest = GaugeMetricFamily(
            f"{PREFIX}_queue_oldest_message_timestamp_seconds",
            "messageDate of the oldest queued message per next hop (Unix time); expiry counts from it.",
            labels=["peer"],
        )  # fmt: skip
        for via, state, count, first in queue_stats(self.node.store):
            depth.add_metric([via, state], count)
            if state == "queued" and first is not None:
                oldest.add_metric([via], first)
        # Configured peers with nothing queued show 0, so a dashboard line does not vanish.
        listed = {(s.labels["peer"], s.labels["state"]) for s in depth.samples}
        for peer in (*(p.id for p in self.node.config.peers), "local"):
            for state in ("queued", "handed"):
                if (peer, state) not in listed:
                    depth.add_metric([peer, state], 0)
        yield depth
        yield oldest

    def _inbox(self) -> Iterable:
        inbox = GaugeMetricFamily(
            f"{PREFIX}_inbox_messages", "Delivered messages not yet acknowledged by the recipient's local system.", labels=["participant"]
        )
        counts = dict(inbox_backlog(self.node.store))
        for participant in self.node.hosted:
            inbox.add_metric([str(participant)], counts.get(str(participant), 0))
        yield inbox

    def _breakers(self) -> Iterable:
        state = GaugeMetricFamily(
            f"{PREFIX}_circuit_breaker_state", "1 for the state each peer's circuit breaker is in (closed, open, half_open).", labels=["peer", "state"]
        )
        failures = GaugeMetricFamily(f"{PREFIX}_circuit_breaker_failures", "Consecutive failed transfers to the peer.", labels=["peer"])
        now = self.node.clock.timestamp()
        for peer, breaker in sorted(self.node.breakers.items()):
            current = breaker_state(breaker, now)
            for name in ("closed", "open", "half_open"):
                state.add_metric([peer, name], 1 if name == current else 0)
            failures.add_metric([peer], breaker.failures)
        yield state
        yield failures

    def _audit(self) -> Iterable:
        audit = self.node.audit
        records = GaugeMetricFamily(f"{PREFIX}_audit_records", "Records in this node's audit log (pruned bodies included).")
        records.add_metric([], audit.size)
        yield records
        size = GaugeMetricFamily(f"{PREFIX}_audit_log_bytes", "Size of the audit log files on disk (database and write-ahead log).")
        size.add_metric([], audit.disk_bytes())
        yield size
        latest = audit.latest_checkpoint()
        if latest is not None:
            when = GaugeMetricFamily(f"{PREFIX}_audit_last_checkpoint_timestamp_seconds", "Time of the newest signed checkpoint (Unix time).")
            when.add_metric([], latest.checkpoint.time.timestamp())
            yield when
            covered = GaugeMetricFamily(f"{PREFIX}_audit_checkpointed_records", "Records covered by the newest signed checkpoint.")
            covered.add_metric([], latest.checkpoint.size)
            yield covered

    def _certificates(self) -> Iterable:
        expiry = GaugeMetricFamily(
            f"{PREFIX}_certificate_expiry_timestamp_seconds",
            "notAfter of each certificate the node holds (Unix time), by purpose and owner.",
            labels=["purpose", "subject"],
        )  # fmt: skip
        for purpose, subject, not_after in certificate_expiries(self.node):
            expiry.add_metric([purpose, subject], not_after.timestamp())
        yield expiry

    def _directory(self) -> Iterable:
        directory = self.node.directory
        if directory is None:
            return
        status = directory.status
        state = GaugeMetricFamily(f"{PREFIX}_directory_state", "1 for the federation directory's state (current, stale, unusable).", labels=["state"])
        for name in ("current", "stale", "unusable"):
            state.add_metric([name], 1 if status.state.value == name else 0)
        yield state
        if status.version is not None:
            version = GaugeMetricFamily(f"{PREFIX}_directory_version", "Version of the directory copy in use.")
            version.add_metric([], status.version)
            yield version
        for name, value, text in (
            ("expiry", status.expires_at, "expiresAt of the directory copy in use (Unix time)."),
            ("usable_until", status.usable_until, "expiresAt plus the grace period: after it, lookups fail closed (Unix time)."),
            ("last_refresh", status.last_refresh, "Last successful refresh from the hub (Unix time)."),
        ):
            if value is not None:
                family = GaugeMetricFamily(f"{PREFIX}_directory_{name}_timestamp_seconds", text)
                family.add_metric([], value.timestamp())
                yield family

    def _folders(self) -> Iterable:
        files = GaugeMetricFamily(
            f"{PREFIX}_folder_files", "Files waiting in a participant's sedex folder interface, by folder.", labels=["participant", "folder"]
        )
        for participant in self.node.config.participants:
            if participant.folder is None:
                continue
            for folder in BACKLOG_FOLDERS:
                files.add_metric([str(participant.id), folder], _count_files(Path(participant.folder) / folder))
        yield files


# -- small reads, shared with the health checks and tests --------------------------------


def queue_stats(store) -> list[tuple[str, str, int, float | None]]:
    """(next hop, state, rows, oldest messageDate) for queued and handed outgoing rows.

    Uses ``store.queue_stats()`` when the store offers it (every backend should); until
    then the SQLite store is read directly with :data:`QUEUE_STATS_SQL`.
    """
    method = getattr(store, "queue_stats", None)
    rows = method() if method is not None else store.db.execute(QUEUE_STATS_SQL).fetchall()
    return [(str(via), str(state), int(count), first) for via, state, count, first in rows]


def inbox_backlog(store) -> list[tuple[str, int]]:
    """(recipient, delivered but not acknowledged) per hosted recipient that has any."""
    method = getattr(store, "inbox_backlog", None)
    rows = method() if method is not None else store.db.execute(INBOX_BACKLOG_SQL).fetchall()
    return [(str(recipient), int(count)) for recipient, count in rows]


def breaker_state(breaker, now: float) -> str:
    """closed, open (holding the queue) or half_open (the next transfer is a probe)."""
    if breaker.state == "closed":
        return "closed"
    return "half_open" if breaker.allows(now) else "open"


def certificate_expiries(node: Node) -> list[tuple[str, str, datetime]]:
    """(purpose, subject, notAfter): the node's own list, plus the known participants'
    encryption certificates (messages to them fail once those expire)."""
    own = getattr(node, "certificate_expiries", None)
    if own is not None:
        found = [(str(purpose), str(subject), not_after) for purpose, subject, not_after in own()]
    else:
        found = [("node", node.id, node.node_signer.certificate.not_valid_after_utc)]
        for keys in node.hosted.values():
            found.append(("signing", str(keys.participant), keys.signer.certificate.not_valid_after_utc))
    hosted = {str(p) for p in node.hosted}
    for participant, key in sorted(node.recipient_keys.items()):
        certificate = getattr(key, "certificate", None)
        if certificate is None:
            continue
        purpose = "encryption" if str(participant) in hosted else "recipient_encryption"
        if not any(p == purpose and s == str(participant) for p, s, _ in found):
            found.append((purpose, str(participant), certificate.not_valid_after_utc))
    return found


def _count_files(folder: Path) -> int:
    try:
        with os.scandir(folder) as entries:
            return sum(1 for entry in entries if entry.is_file(follow_symlinks=False) and not entry.name.startswith("."))
    except FileNotFoundError:
        return 0


def _value(item) -> str:
    return item.value if isinstance(item, enum.Enum) else str(item)


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("drehscheibe")
    except PackageNotFoundError:
        return "unknown"
