"""Node-to-node transport: modern TLS only, a peer hands over only what it forwards itself, slow senders are cut."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from gateway.api import SlowSender, guarded
from gateway.config import Limits, load_config
from gateway.samples import discover
from gateway.transport import TransferHeader, client_context, server_context

from ..conftest import KANTON, LUZERN, SAMPLES
from .nodes import client, running, sample_envelope

MOVE = next(s for s in discover(SAMPLES) if s.name.startswith("openech-ech0020-v2.2/div-movetest"))


async def queued(federation, clock, nodes):
    message_id, envelope, payload = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
    async with client(federation, LUZERN) as api:
        assert (await api.submit(envelope, payload, "data.xml"))[0] == 202
    (item,) = nodes["node-luzern"].store.queued()
    return item


async def body(item):
    yield item.blob.read_bytes()


async def test_a_transfer_without_the_peers_own_hop_entry_is_refused_with_302(federation, clock):
    async with running(federation, clock) as nodes:
        item = await queued(federation, clock, nodes)
        header = TransferHeader(item.sender, item.recipient, item.message_id, item.envelope, item.seal, ())
        receipt = await nodes["node-kanton"].receive(header, body(item), peer="node-luzern")
        assert receipt.status == 302 and nodes["node-kanton"].store.inbox(KANTON) == []


async def test_a_peer_replaying_another_nodes_transfer_is_refused_with_302(tmp_path, clock):
    """node-other got hold of Luzern's transfer (hop entry by node-luzern) and sends it itself."""
    from gateway.federation import NodeSpec, build_federation

    from ..conftest import XSD

    federation = build_federation(
        tmp_path / "three", [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-kanton", [KANTON]), NodeSpec("node-other", ["1-1024-1"])],
        schemas=XSD,
    )  # fmt: skip
    async with running(federation, clock) as nodes:
        item = await queued(federation, clock, nodes)
        header = TransferHeader(item.sender, item.recipient, item.message_id, item.envelope, item.seal, item.hops)
        receipt = await nodes["node-kanton"].receive(header, body(item), peer="node-other")
        assert receipt.status == 302


async def test_a_hop_entry_from_too_long_ago_is_refused(federation, clock):
    async with running(federation, clock) as nodes:
        item = await queued(federation, clock, nodes)
        clock.advance(days=32)
        header = TransferHeader(item.sender, item.recipient, item.message_id, item.envelope, item.seal, item.hops)
        receipt = await nodes["node-kanton"].receive(header, body(item), peer="node-luzern")
        assert receipt.status == 200 and b"time window" in receipt.receipt


async def test_a_sender_that_stalls_or_trickles_is_cut():
    limits = Limits(read_timeout_seconds=0.05)

    async def stalls():
        await asyncio.sleep(1)
        return b"x"

    with pytest.raises(SlowSender, match="nothing received"):
        async for _ in guarded(stalls, limits):
            pass


def test_only_tls_1_2_and_later_with_forward_secret_aead_suites(federation):
    config = load_config(federation.config_path("node-luzern"))
    for context in (server_context(config, require_client_cert=True), client_context(config)):
        assert context.minimum_version is ssl.TLSVersion.TLSv1_2
        suites = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
        assert suites and all(("ECDHE" in name) and ("GCM" in name or "CHACHA20" in name) for name in suites), suites
