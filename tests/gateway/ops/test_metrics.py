"""/metrics of a real node: what it holds is read at scrape time, what flows through it is counted."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.directory.cache import DirectoryState, DirectoryStatus
from gateway.federation import NodeSpec, build_federation
from gateway.ids import StatusCode
from gateway.metrics import NodeMetrics, RetryReason, Stage, StageOutcome
from gateway.node import Refused
from gateway.policy.model import PolicyDecision
from gateway.samples import discover

from ...conftest import KANTON, LUZERN, SAMPLES, XSD
from ..nodes import client, running, sample_envelope
from .helpers import get, ops_listener, samples, value, wired

MOVE = next(s for s in discover(SAMPLES) if s.name.startswith("openech-ech0020-v2.2/div-movetest"))


async def submit(federation, clock, recipient=KANTON):
    message_id, envelope, payload = sample_envelope(MOVE, LUZERN, recipient, clock.now())
    async with client(federation, LUZERN) as api:
        status, body = await api.submit(envelope, payload, "data.xml")
    return message_id, status, body


async def scrape(base: str) -> dict:
    status, _, text = await get(base + "/metrics")
    assert status == 200
    return samples(text)


async def test_the_exposition_is_prometheus_text_and_every_name_has_the_drehscheibe_prefix(federation, clock):
    """/metrics answers the text format 0.0.4, and every family it lists is named drehscheibe_*."""
    async with running(federation, clock) as nodes, ops_listener(nodes["node-luzern"]) as base:
        status, content_type, text = await get(base + "/metrics")
    assert status == 200 and content_type.startswith("text/plain") and "version=0.0.4" in content_type
    families = list(text_string_to_metric_families(text))
    assert len(families) > 10
    assert all(f.name.startswith("drehscheibe_") for f in families), [f.name for f in families if not f.name.startswith("drehscheibe_")]
    assert not [f.name for f in families if f.name.endswith("_scrape_error") and f.samples]


async def test_a_submitted_message_shows_in_its_peers_queue_and_leaves_it_once_delivered(federation, clock):
    """Queue depth and oldest messageDate per next hop, the audit log's growth, and the destination's inbox follow the message."""
    async with running(federation, clock) as nodes:
        luzern, kanton = nodes["node-luzern"], nodes["node-kanton"]
        async with ops_listener(luzern) as origin, ops_listener(kanton) as destination:
            before = await scrape(origin)
            assert value(before, "drehscheibe_queue_messages", peer="node-kanton", state="queued") == 0
            assert value(before, "drehscheibe_queue_oldest_message_timestamp_seconds", peer="node-kanton") is None
            assert value(await scrape(destination), "drehscheibe_inbox_messages", participant=KANTON) == 0

            _, status, body = await submit(federation, clock)
            assert status == 202, body
            queued = await scrape(origin)
            assert value(queued, "drehscheibe_queue_messages", peer="node-kanton", state="queued") == 1
            oldest = value(queued, "drehscheibe_queue_oldest_message_timestamp_seconds", peer="node-kanton")
            assert oldest == pytest.approx(clock.now().timestamp(), abs=1)
            assert value(queued, "drehscheibe_audit_records") > value(before, "drehscheibe_audit_records")

            assert await luzern.forward_due() == 1
            delivered = await scrape(origin)
            assert value(delivered, "drehscheibe_queue_messages", peer="node-kanton", state="queued") == 0
            assert value(delivered, "drehscheibe_queue_oldest_message_timestamp_seconds", peer="node-kanton") is None
            assert value(await scrape(destination), "drehscheibe_inbox_messages", participant=KANTON) == 1


async def test_certificate_expiry_breaker_state_and_audit_checkpoint_are_exported(federation, clock):
    """The node's certificate end, the peer's breaker (closed, then open after failures) and the last checkpoint time are scraped."""
    async with running(federation, clock) as nodes:
        luzern = nodes["node-luzern"]
        async with ops_listener(luzern) as base:
            scraped = await scrape(base)
            expected = luzern.node_signer.certificate.not_valid_after_utc.timestamp()
            assert value(scraped, "drehscheibe_certificate_expiry_timestamp_seconds", purpose="node", subject="node-luzern") == expected
            assert value(scraped, "drehscheibe_certificate_expiry_timestamp_seconds", purpose="signing", subject=LUZERN) is not None
            assert value(scraped, "drehscheibe_certificate_expiry_timestamp_seconds", purpose="recipient_encryption", subject=KANTON) is not None
            assert value(scraped, "drehscheibe_circuit_breaker_state", peer="node-kanton", state="closed") == 1

            breaker = luzern.breakers["node-kanton"]
            for _ in range(breaker.threshold):
                breaker.failed(clock.timestamp())
            luzern.audit.checkpoint(clock.now())
            scraped = await scrape(base)
            assert value(scraped, "drehscheibe_circuit_breaker_state", peer="node-kanton", state="open") == 1
            assert value(scraped, "drehscheibe_circuit_breaker_state", peer="node-kanton", state="closed") == 0
            assert value(scraped, "drehscheibe_circuit_breaker_failures", peer="node-kanton") == breaker.threshold
            assert value(scraped, "drehscheibe_audit_last_checkpoint_timestamp_seconds") == clock.now().timestamp()
            assert value(scraped, "drehscheibe_audit_checkpointed_records") == value(scraped, "drehscheibe_audit_records")
            assert value(scraped, "drehscheibe_audit_log_bytes") > 0

            clock.advance(seconds=breaker.period + 1)
            assert value(await scrape(base), "drehscheibe_circuit_breaker_state", peer="node-kanton", state="half_open") == 1


async def test_files_waiting_in_a_participants_sedex_outbox_are_its_folder_backlog(tmp_path, clock):
    """Files dropped into the outbox and not yet picked up are counted per participant and folder."""
    federation = build_federation(tmp_path / "folders", [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-kanton", [KANTON])],
                                  schemas=XSD, folders=True)  # fmt: skip
    async with running(federation, clock, "node-luzern") as nodes:
        luzern = nodes["node-luzern"]
        outbox = luzern.config.hosted(luzern.config.participants[0].id).folder / "outbox"
        outbox.mkdir(parents=True, exist_ok=True)
        async with ops_listener(luzern) as base:
            assert value(await scrape(base), "drehscheibe_folder_files", participant=LUZERN, folder="outbox") == 0
            (outbox / "envl_abc.xml").write_bytes(b"<envelope/>")
            (outbox / "data_abc.xml").write_bytes(b"<data/>")
            scraped = await scrape(base)
    assert value(scraped, "drehscheibe_folder_files", participant=LUZERN, folder="outbox") == 2
    assert value(scraped, "drehscheibe_folder_files", participant=LUZERN, folder="failed") == 0


async def test_the_federation_directory_state_and_version_are_exported_when_configured(federation, clock):
    """A node with a directory exports its state as a one-hot gauge, its version and its expiry."""
    expires = datetime(2030, 1, 1, tzinfo=timezone.utc)
    status = DirectoryStatus(DirectoryState.STALE, 7, expires, expires + timedelta(hours=24), None, None)
    async with running(federation, clock, "node-luzern") as nodes:
        luzern = nodes["node-luzern"]
        luzern.directory = SimpleNamespace(status=status)
        async with ops_listener(luzern) as base:
            scraped = await scrape(base)
    assert value(scraped, "drehscheibe_directory_state", state="stale") == 1
    assert value(scraped, "drehscheibe_directory_state", state="current") == 0
    assert value(scraped, "drehscheibe_directory_version") == 7
    assert value(scraped, "drehscheibe_directory_expiry_timestamp_seconds") == expires.timestamp()


async def test_a_source_that_cannot_be_read_is_reported_and_the_rest_is_still_scraped(federation, clock):
    """With the store closed, the scrape answers 200, flags the queue and inbox sources, and still shows certificates."""
    async with running(federation, clock, "node-luzern") as nodes:
        luzern = nodes["node-luzern"]
        async with ops_listener(luzern) as base:
            luzern.store.db.close()
            scraped = await scrape(base)
    assert value(scraped, "drehscheibe_scrape_error", source="queue") == 1
    assert value(scraped, "drehscheibe_scrape_error", source="inbox") == 1
    assert value(scraped, "drehscheibe_certificate_expiry_timestamp_seconds", purpose="node", subject="node-luzern") is not None


async def test_a_stage_is_counted_by_outcome_and_sedex_code_and_timed(federation, clock):
    """timed() counts a pass, a refusal with the error's sedex code, and an unexpected failure, and observes each duration."""
    async with running(federation, clock, "node-luzern") as nodes:
        metrics = NodeMetrics(nodes["node-luzern"])
        with metrics.timed(Stage.CHECK_PARTICIPANTS):
            pass
        with pytest.raises(Refused), metrics.timed(Stage.CHECK_PARTICIPANTS):
            raise Refused("no route to recipient", status=StatusCode.UNKNOWN_RECIPIENT)
        with pytest.raises(RuntimeError), metrics.timed(Stage.SEAL):
            raise RuntimeError("unexpected")
        with metrics.timed(Stage.RECEIVE) as stage:
            stage.refused(312)
        metrics.observe_stage(Stage.FORWARD, StageOutcome.RETRIED, 0.5)
        scraped = samples(metrics.exposition().decode())
    assert value(scraped, "drehscheibe_messages_total", stage="check_participants", outcome="passed", code="") == 1
    assert value(scraped, "drehscheibe_messages_total", stage="check_participants", outcome="refused", code="301") == 1
    assert value(scraped, "drehscheibe_messages_total", stage="seal", outcome="failed", code="") == 1
    assert value(scraped, "drehscheibe_messages_total", stage="receive", outcome="refused", code="312") == 1
    assert value(scraped, "drehscheibe_messages_total", stage="forward", outcome="retried", code="") == 1
    assert value(scraped, "drehscheibe_stage_duration_seconds_count", stage="check_participants") == 2
    assert value(scraped, "drehscheibe_stage_duration_seconds_sum", stage="forward") == 0.5


async def test_receipts_retries_and_policy_decisions_are_counted_by_their_labels(federation, clock):
    """receipt(), retry() and policy_decision() count by code, by peer and reason, and once per deciding rule."""
    async with running(federation, clock, "node-luzern") as nodes:
        metrics = NodeMetrics(nodes["node-luzern"])
        metrics.receipt(100)
        metrics.receipt(StatusCode.MESSAGE_EXPIRED)
        metrics.retry("node-kanton", RetryReason.NETWORK)
        metrics.retry("node-kanton", RetryReason.NETWORK)
        allowed = PolicyDecision(True, None, "allowed", ("lu-a", "lu-b"), ("purpose",), ("basis",), (), "rev1")
        denied = PolicyDecision(False, StatusCode.NOT_ALLOWED_TO_SEND, "no rule permits", (), (), (), (), "rev1")
        metrics.policy_decision("origin", allowed)
        metrics.policy_decision("origin", denied)
        scraped = samples(metrics.exposition().decode())
    assert value(scraped, "drehscheibe_receipts_total", code="100") == 1
    assert value(scraped, "drehscheibe_receipts_total", code="204") == 1
    assert value(scraped, "drehscheibe_transfer_retries_total", peer="node-kanton", reason="network") == 2
    assert value(scraped, "drehscheibe_policy_decisions_total", direction="origin", rule="lu-a", outcome="allow") == 1
    assert value(scraped, "drehscheibe_policy_decisions_total", direction="origin", rule="lu-b", outcome="allow") == 1
    assert value(scraped, "drehscheibe_policy_decisions_total", direction="origin", rule="(default)", outcome="deny") == 1


def test_two_nodes_in_one_process_do_not_share_counters():
    """Each NodeMetrics has its own registry: counting on one leaves the other at zero."""
    fake = SimpleNamespace()
    first, second = NodeMetrics(fake), NodeMetrics(fake)
    first.receipt(100)
    assert "drehscheibe_receipts_total{code=\"100\"} 1.0" in first.exposition().decode()
    assert "drehscheibe_receipts_total{code=" not in second.exposition().decode()


async def test_messages_flowing_through_wired_nodes_change_the_counters(federation, clock):
    """Once the node feeds node.metrics: a delivered message counts at submit, receive and forward, with receipt 100; a refusal counts its code."""
    async with running(federation, clock) as nodes:
        luzern, kanton = nodes["node-luzern"], nodes["node-kanton"]
        if not wired(luzern):
            pytest.skip("gateway/node.py does not create and feed node.metrics yet")
        async with ops_listener(luzern) as origin, ops_listener(kanton) as destination:
            _, status, _ = await submit(federation, clock)
            assert status == 202
            _, status, _ = await submit(federation, clock, recipient="1-9999-1")
            assert status == 422
            assert await luzern.forward_due() == 1
            sent, received = await scrape(origin), await scrape(destination)
    assert value(sent, "drehscheibe_messages_total", stage="submit", outcome="passed", code="") == 1
    assert value(sent, "drehscheibe_messages_total", stage="submit", outcome="refused", code="301") == 1
    assert value(sent, "drehscheibe_messages_total", stage="check_participants", outcome="refused", code="301") == 1
    assert value(sent, "drehscheibe_messages_total", stage="forward", outcome="passed", code="") == 1
    assert value(sent, "drehscheibe_receipts_total", code="100") == 1
    assert value(sent, "drehscheibe_stage_duration_seconds_count", stage="seal") == 1
    assert value(received, "drehscheibe_messages_total", stage="receive", outcome="passed", code="") == 1


async def test_metric_names_follow_the_prometheus_conventions(federation, clock):
    """snake_case with the drehscheibe_ prefix; counters expose _total; histograms and times are in seconds."""
    async with running(federation, clock, "node-luzern") as nodes:
        metrics = NodeMetrics(nodes["node-luzern"])
        metrics.receipt(100)
        metrics.observe_stage(Stage.SUBMIT, StageOutcome.PASSED, 0.1)
        text = metrics.exposition().decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    assert len(types) > 15, text
    for name, kind in types.items():
        assert re.fullmatch(r"drehscheibe_[a-z0-9_]+", name), name
        if kind == "counter":
            assert name.endswith("_total"), name
        if kind == "histogram" or "timestamp" in name or "duration" in name:
            assert name.endswith("_seconds"), name
        if kind == "gauge":
            assert not name.endswith("_total"), name
