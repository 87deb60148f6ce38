"""Every hop writes its audit record before it acts; the trail verifies and traces across nodes."""

from __future__ import annotations

import io
import json
import re
import sqlite3

import pytest
from lxml import etree

from gateway.audit import Action, Actor, ActorKind, export_log, load_public_key, trace_message, verify_export, verify_log
from gateway.client import ApiError
from gateway.samples import discover

from ..conftest import KANTON, LUZERN, SAMPLES
from .nodes import client, running, sample_envelope

MOVE = next(s for s in discover(SAMPLES) if s.name.startswith("openech-ech0020-v2.2/div-movetest"))


def public_key(federation, node_id):
    from gateway.config import load_config

    return load_public_key(load_config(federation.config_path(node_id)).tls.certificate.read_bytes())


async def test_a_delivered_message_is_traced_from_both_nodes_exports(federation, clock):
    """Origin and destination logs verify, and trace links what Luzern sent to what the canton received."""
    async with running(federation, clock) as nodes:
        message_id, envelope, payload = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
        async with client(federation, LUZERN) as api:
            status, _ = await api.submit(envelope, payload, "data.xml")
        assert status == 202
        assert await nodes["node-luzern"].forward_due() == 1
        exports = []
        auditor = Actor(ActorKind.AUDITOR, "dsb-luzern")
        for node_id, node in nodes.items():
            node.audit.checkpoint(clock.now())
            verified = verify_log(node.config.audit_log, public_key(federation, node_id))
            assert verified.size >= 2
            out = io.StringIO()
            export_log(node.audit, out, actor=auditor, now=clock.now())
            exports.append(verify_export(out.getvalue(), public_key(federation, node_id)))
        trace = trace_message(message_id, exports)
        assert [hop.node for hop in trace.hops] == ["node-luzern", "node-kanton"]


async def test_the_audit_logs_hold_no_personal_data_from_the_payload(federation, clock):
    """Names, AHV numbers and birth dates of the real sample never appear in either node's audit file."""
    payload = MOVE.payload()
    root = etree.fromstring(payload)
    secrets = {e.text.strip() for e in root.iter() if isinstance(e.tag, str) and e.text and e.text.strip()
               and etree.QName(e).localname in ("vn", "officialName", "firstName", "yearMonthDay", "street")}  # fmt: skip
    assert any(re.fullmatch(r"756\d{10}", s) for s in secrets)
    async with running(federation, clock) as nodes:
        message_id, envelope, payload = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
        async with client(federation, LUZERN) as api:
            assert (await api.submit(envelope, payload, "data.xml"))[0] == 202
        await nodes["node-luzern"].forward_due()
        for node in nodes.values():
            node.audit.checkpoint(clock.now())
            raw = b"".join(p.read_bytes() for p in node.config.audit_log.parent.iterdir())
            for secret in secrets:
                assert secret.encode() not in raw, f"personal data in {node.id}'s audit log"


async def test_no_audit_record_means_no_acceptance(federation, clock):
    """While the audit log is locked by another writer, a submission is refused with 403 and nothing is queued."""
    async with running(federation, clock) as nodes:
        luzern = nodes["node-luzern"]
        blocker = sqlite3.connect(luzern.config.audit_log, timeout=0.1)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            message_id, envelope, payload = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
            async with client(federation, LUZERN) as api:
                status, body = await api.submit(envelope, payload, "data.xml")
            assert status == 503 and body["statusCode"] == 403, body
            assert luzern.store.queued() == []
        finally:
            blocker.rollback()
            blocker.close()
        async with client(federation, LUZERN) as api:
            status, _ = await api.submit(envelope, payload, "data.xml")
        assert status == 202, "the log recovers by itself once writable again"


async def test_fetching_a_delivered_message_is_audited_at_the_destination(federation, clock):
    """The recipient's system taking the payload is a record (actor: that system), written before the first byte."""
    async with running(federation, clock) as nodes:
        message_id, envelope, payload = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
        async with client(federation, LUZERN) as api:
            assert (await api.submit(envelope, payload, "data.xml"))[0] == 202
        await nodes["node-luzern"].forward_due()
        async with client(federation, KANTON) as api:
            assert await api.payload(KANTON, LUZERN, message_id) == payload
        fetched = [r for _, _, r in nodes["node-kanton"].audit.iter_records() if r.action is Action.FETCHED]
        assert [(r.message_id, r.actor.kind, r.actor.id) for r in fetched] == [(message_id, ActorKind.LOCAL_SYSTEM, f"register-{KANTON}")]


async def test_a_fetch_is_refused_while_the_audit_log_cannot_record_it(federation, clock):
    async with running(federation, clock) as nodes:
        message_id, envelope, payload = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
        async with client(federation, LUZERN) as api:
            assert (await api.submit(envelope, payload, "data.xml"))[0] == 202
        await nodes["node-luzern"].forward_due()
        blocker = sqlite3.connect(nodes["node-kanton"].config.audit_log, timeout=0.1)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            async with client(federation, KANTON) as api:
                with pytest.raises(ApiError) as refused:
                    await api.payload(KANTON, LUZERN, message_id)
            assert refused.value.http_status == 503 and json.loads(refused.value.body)["statusCode"] == 403
        finally:
            blocker.rollback()
            blocker.close()


def test_each_start_records_the_configuration_digests_and_a_change_shows(federation, clock):
    """Participants, routes, keys, tokens and policy revision are recorded by digest at every start."""
    from gateway.config import load_config
    from gateway.node import Node

    config = load_config(federation.config_path("node-luzern"))
    node = Node(config, clock=clock)
    node.record_configuration()
    first = [r for _, _, r in node.audit.iter_records() if r.action is Action.CONFIG_CHANGE]
    node.store.close()
    node.audit.close()
    text = config.source.read_text()
    config.source.write_text(text.replace('payload = "schema-valid"', 'payload = "well-formed"', 1))
    node = Node(load_config(config.source), clock=clock)
    node.record_configuration()
    records = [r for _, _, r in node.audit.iter_records() if r.action is Action.CONFIG_CHANGE]
    node.store.close()
    node.audit.close()
    assert len(first) == 1 and len(records) == 2
    before, after = records[0].details, records[1].details
    assert before["change"] == after["change"] == "node_start"
    assert {k for k in before if before[k] != after[k]} == {"routes"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", before[k]) for k in ("participants", "routes", "keys", "local_systems"))


def test_retention_prunes_records_older_than_the_configured_days_and_the_log_still_verifies(federation, clock):
    from gateway.config import load_config
    from gateway.node import Node

    node = Node(load_config(federation.config_path("node-luzern")), clock=clock)
    try:
        node.record_configuration()
        assert node.apply_retention() == 0, "nothing is a year old yet"
        clock.advance(days=367)
        node.record_configuration()
        assert node.apply_retention() == 1
        node.audit.checkpoint(clock.now())
        verified = verify_log(node.config.audit_log, public_key(federation, "node-luzern"))
        assert verified.pruned == 1 and verified.size == 3  # two starts and the prune record; the first start is pruned
    finally:
        node.store.close()
        node.audit.close()
