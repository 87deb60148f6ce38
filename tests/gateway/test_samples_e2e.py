"""Every real sample under ../shared/ech/samples crosses two nodes (mTLS on loopback), or is refused with its code."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from gateway.samples import discover

from ..conftest import KANTON, LUZERN, SAMPLES
from .nodes import client, running, sample_envelope

ALL = discover(SAMPLES)
VALID = [s for s in ALL if s.namespace in ("http://www.ech.ch/xmlns/eCH-0020/2", "http://www.ech.ch/xmlns/eCH-0045/6", "http://www.ech.ch/xmlns/eCH-0099/1")]
NO_SCHEMA = [s for s in ALL if s.namespace in ("http://www.ech.ch/xmlns/eCH-0020/1", "http://www.ech.ch/xmlns/eCH-0087/1")]
BROKEN_ENVELOPES = sorted((SAMPLES / "sedex-message-handler").glob("envl-94b073dd*/*.xml")) + sorted(
    (SAMPLES / "sedex-message-handler").glob("envl-test-xxe/*.xml")
) + sorted((SAMPLES / "sedex-message-handler").glob("envl-95b29548*/*.xml"))


@contextlib.asynccontextmanager
async def forwarding(nodes):
    tasks = [asyncio.create_task(n.run_forwarder()) for n in nodes.values()]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def wait_settled(node, sender, message_id, timeout=20.0):
    for _ in range(int(timeout / 0.05)):
        rows = node.store.outgoing_for(sender, message_id)
        if rows and all(r.state.value != "queued" for r in rows):
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"{message_id} not settled")


def test_the_sample_set_is_what_the_suite_expects():
    """The shared samples hold the valid, schema-less and broken sets this suite relies on."""
    assert len(VALID) >= 28 and len(NO_SCHEMA) >= 30 and len(BROKEN_ENVELOPES) == 3


async def test_every_valid_sample_arrives_byte_identical_in_both_directions(federation, clock):
    """Each schema-valid sample goes Luzern → canton, and canton → Luzern, and arrives unchanged with receipt 100."""
    async with running(federation, clock) as nodes, forwarding(nodes):
        sent = []
        for index, sample in enumerate(VALID):
            sender, recipient = (LUZERN, KANTON) if index % 2 == 0 else (KANTON, LUZERN)
            message_id, envelope, payload = sample_envelope(sample, sender, recipient, clock.now())
            async with client(federation, sender) as api:
                status, body = await api.submit(envelope, payload, sample.data.name)
            assert status == 202, (sample.name, body)
            sent.append((sender, recipient, message_id, sample, payload))
        for sender, recipient, message_id, sample, payload in sent:
            rows = await wait_settled(nodes[federation.node_of(sender).id], sender, message_id)
            assert [r.receipt_status for r in rows] == [100], sample.name
            async with client(federation, recipient) as api:
                assert await api.payload(recipient, sender, message_id) == payload, sample.name
                assert await api.acknowledge(recipient, sender, message_id) == 204
        assert {s for s, _, _, _, _ in sent} == {LUZERN, KANTON}


async def test_payloads_without_a_public_schema_are_refused_with_200(federation, clock):
    """eCH-0020 v1 and eCH-0087 samples have no XSD here: a schema-valid route refuses each with receipt 200."""
    async with running(federation, clock) as nodes:
        async with client(federation, LUZERN) as api:
            for sample in NO_SCHEMA:
                message_id, envelope, payload = sample_envelope(sample, LUZERN, KANTON, clock.now())
                status, body = await api.submit(envelope, payload, sample.data.name)
                assert (status, body["statusCode"]) == (422, 200), sample.name
                receipts = [r for r in await api.receipts(LUZERN) if r["messageId"] == message_id]
                assert [r["statusCode"] for r in receipts] == [200]
        assert nodes["node-luzern"].store.queued() == []


async def test_a_well_formed_route_carries_ech0020_v1_samples(tmp_path, clock):
    """With the route configured for well-formed payloads, the eCH-0020 v1 samples are delivered."""
    from gateway.federation import NodeSpec, build_federation

    from ..conftest import XSD

    federation = build_federation(
        tmp_path / "wf", [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-kanton", [KANTON])],
        schemas=XSD, route_payload={KANTON: "well-formed"}, delivery_toml="poll_seconds = 0.05",
    )  # fmt: skip
    v1 = [s for s in NO_SCHEMA if s.namespace.endswith("eCH-0020/1")][:5]
    async with running(federation, clock) as nodes, forwarding(nodes):
        for sample in v1:
            message_id, envelope, payload = sample_envelope(sample, LUZERN, KANTON, clock.now())
            async with client(federation, LUZERN) as api:
                status, _ = await api.submit(envelope, payload, sample.data.name)
            assert status == 202
            rows = await wait_settled(nodes["node-luzern"], LUZERN, message_id)
            assert rows[0].receipt_status == 100
            async with client(federation, KANTON) as api:
                assert await api.payload(KANTON, LUZERN, message_id) == payload


@pytest.mark.parametrize("path", BROKEN_ENVELOPES, ids=lambda p: p.parent.name)
async def test_broken_and_hostile_sample_envelopes_are_refused_with_200(federation, clock, path):
    """The sedex Message Handler's negative envelopes (no namespace, XXE, bad participant IDs) get receipt 200."""
    sample = VALID[0]
    async with running(federation, clock) as nodes:
        async with client(federation, LUZERN) as api:
            status, body = await api.submit(path.read_bytes(), sample.payload(), "data.xml")
        assert (status, body["statusCode"]) == (422, 200)
        assert nodes["node-luzern"].store.queued() == []
