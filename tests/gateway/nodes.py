"""Helpers for tests that run real nodes in the test's event loop (real mTLS on loopback)."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gateway.client import LocalApiClient
from gateway.config import load_config
from gateway.envelope import parse_envelope
from gateway.federation import Federation
from gateway.ids import ParticipantId
from gateway.node import Node
from gateway.samples import Sample, envelope_for, payload_for
from gateway.server import start_listeners


@dataclass
class RunningNode:
    node: Node
    runners: list

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()
        await self.node.close()


@contextlib.asynccontextmanager
async def running(federation: Federation, clock, *node_ids: str):
    """Start the given nodes in-process (listeners only; tests drive the forwarder)."""
    started: dict[str, RunningNode] = {}
    try:
        for node_id in node_ids or [n.id for n in federation.nodes]:
            node = Node(load_config(federation.config_path(node_id)), clock=clock)
            started[node_id] = RunningNode(node, await start_listeners(node))
        yield {k: v.node for k, v in started.items()}
    finally:
        for item in started.values():
            await item.stop()


def client(federation: Federation, participant: str) -> LocalApiClient:
    node = federation.node_of(participant)
    return LocalApiClient(federation.api_url(node.id), federation.tokens[participant], federation.ca_file)


def new_message_id() -> str:
    return uuid.uuid4().hex[:24]


def sample_envelope(
    sample: Sample, sender: str, recipient: str, now: datetime, message_id: str | None = None, message_type: int | None = None
) -> tuple[str, bytes, bytes]:
    """A fresh messageId, the sample's envelope and its payload, both speaking for sender → recipient."""
    message_id = message_id or new_message_id()
    sender_id, recipient_id = ParticipantId(sender), ParticipantId(recipient)
    envelope = envelope_for(sample, sender_id, recipient_id, message_id, now, message_type)
    payload = payload_for(sample, sender_id, recipient_id, parse_envelope(envelope, None).message_type)
    return message_id, envelope, payload


def ciphertexts(store) -> list[Path]:
    """The blob files that hold a ciphertext; the blob pool's empty spares hold nothing (gateway/store.py BlobPool)."""
    return sorted(p for p in store.blobs.iterdir() if p.stat().st_size > 0)
