"""Nodes learn participants, their nodes and keys from the hub's signed directory, and fail closed without one."""

from __future__ import annotations

from gateway.directory import DirectoryState
from gateway.federation import NodeSpec, build_federation
from gateway.samples import discover
from gateway.store import OutgoingState

from ..conftest import KANTON, LUZERN, SAMPLES, XSD
from .nodes import client, running, sample_envelope

KRIENS = "1-1059-1"
MOVE = next(s for s in discover(SAMPLES) if s.name.startswith("openech-ech0020-v2.2/div-movetest"))


def federation_with_directory(tmp_path, nodes, **options):
    return build_federation(tmp_path / "dir", nodes, schemas=XSD, directory_hub="node-hub", known_participants=False, **options)


async def submit(federation, clock, recipient):
    message_id, envelope, payload = sample_envelope(MOVE, LUZERN, recipient, clock.now())
    async with client(federation, LUZERN) as api:
        status, body = await api.submit(envelope, payload, "data.xml")
    return message_id, status, body, payload


async def test_without_known_participants_in_its_file_a_node_seals_for_the_key_the_directory_names(tmp_path, clock):
    federation = federation_with_directory(
        tmp_path, [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-hub", [KANTON]), NodeSpec("node-kriens", [KRIENS])],
        via={"node-luzern": {KRIENS: "node-hub"}},
    )  # fmt: skip
    assert "known_participants" not in federation.config_path("node-luzern").read_text()
    async with running(federation, clock) as nodes:
        for node in nodes.values():
            status = await node.directory.refresh()
            assert status.state is DirectoryState.CURRENT, status
        message_id, status, body, payload = await submit(federation, clock, KRIENS)
        assert status == 202, body
        for _ in range(4):
            for node in nodes.values():
                await node.forward_due()
        (row,) = nodes["node-luzern"].store.outgoing_for(LUZERN, message_id)
        assert row.state is OutgoingState.DELIVERED and row.receipt_status == 100
        async with client(federation, KRIENS) as api:
            assert await api.payload(KRIENS, LUZERN, message_id) == payload


async def test_a_participant_the_directory_does_not_list_is_refused_with_301(tmp_path, clock):
    federation = federation_with_directory(tmp_path, [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-hub", [KANTON])])
    async with running(federation, clock) as nodes:
        await nodes["node-luzern"].directory.refresh()
        _, status, body, _ = await submit(federation, clock, "1-9999-1")
        assert (status, body["statusCode"]) == (422, 301), body


async def test_a_hub_outage_within_the_grace_period_does_not_stop_direct_traffic_and_beyond_it_nothing_is_sent(tmp_path, clock):
    """Luzern → register goes direct; the hub only publishes the directory. Its outage: stale copy within grace, then 402."""
    federation = federation_with_directory(
        tmp_path, [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-register", [KANTON]), NodeSpec("node-hub", [KRIENS])],
    )  # fmt: skip
    async with running(federation, clock, "node-hub"):
        async with running(federation, clock, "node-luzern", "node-register") as nodes:
            assert (await nodes["node-luzern"].directory.refresh()).state is DirectoryState.CURRENT
    async with running(federation, clock, "node-luzern", "node-register") as nodes:  # the hub is down from here on
        luzern = nodes["node-luzern"]
        expires = luzern.directory.current().expires_at
        clock.advance(seconds=(expires - clock.now()).total_seconds() + 3600)  # an hour past expiry: within 24 h grace
        status = await luzern.directory.refresh()
        assert status.state is DirectoryState.STALE and status.last_error is not None
        message_id, code, body, _ = await submit(federation, clock, KANTON)
        assert code == 202, body
        await luzern.forward_due()
        (row,) = luzern.store.outgoing_for(LUZERN, message_id)
        assert row.receipt_status == 100
        clock.advance(hours=24)
        assert (await luzern.directory.refresh()).state is DirectoryState.UNUSABLE
        _, code, body, _ = await submit(federation, clock, KANTON)
        assert (code, body["statusCode"]) == (503, 402), body
