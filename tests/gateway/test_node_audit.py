"""Every hop writes its audit record before it acts; the trail verifies and traces across nodes."""

from __future__ import annotations

import io
import re
import sqlite3

from lxml import etree

from gateway.audit import Actor, ActorKind, export_log, load_public_key, trace_message, verify_export, verify_log
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
        message_id, envelope = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
        async with client(federation, LUZERN) as api:
            status, _ = await api.submit(envelope, MOVE.payload(), "data.xml")
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
        message_id, envelope = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
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
            message_id, envelope = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
            async with client(federation, LUZERN) as api:
                status, body = await api.submit(envelope, MOVE.payload(), "data.xml")
            assert status == 503 and body["statusCode"] == 403, body
            assert luzern.store.queued() == []
        finally:
            blocker.rollback()
            blocker.close()
        async with client(federation, LUZERN) as api:
            status, _ = await api.submit(envelope, MOVE.payload(), "data.xml")
        assert status == 202, "the log recovers by itself once writable again"
