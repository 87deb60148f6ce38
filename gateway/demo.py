"""``make demo``: two nodes on localhost exchange real eCH messages over mutual TLS.

Stadt Luzern (1-1061-1) runs its own node; the cantonal register office (2-LU-1) runs
the canton's node. Real samples travel from Luzern to the canton through the REST API,
one answer travels back, and every message's timeline and receipt is printed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from .client import LocalApiClient
from .federation import Federation, NodeSpec, build_federation
from .ids import ParticipantId
from .samples import Sample, discover, envelope_for

LUZERN = "1-1061-1"
KANTON = "2-LU-1"


def start_node(federation: Federation, node_id: str, log_dir: Path, env: dict | None = None) -> subprocess.Popen:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"{node_id}.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "node", "run", "--config", str(federation.config_path(node_id))],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )


async def wait_ready(federation: Federation, node_id: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    """Wait until the node's local API answers (401 without a token means: up)."""
    import aiohttp
    import ssl

    context = ssl.create_default_context(cafile=str(federation.ca_file))
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        while True:
            try:
                async with session.get(federation.api_url(node_id) + "/api/v1/messages/x/y") as response:
                    if response.status == 401:
                        return
            except (aiohttp.ClientError, OSError):
                pass
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"node {node_id} exited with code {process.returncode} (see its log)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {node_id} did not start within {timeout}s")
            await asyncio.sleep(0.1)


def demo_samples(samples_dir: Path) -> list[Sample]:
    """A representative set: the Sempach eCH-0099 pair, eCH-0020 v2 events, an eCH-0045 delivery."""
    if not samples_dir.is_dir():
        return []
    chosen, per_namespace = [], {}
    for sample in discover(samples_dir):
        if sample.namespace in (None, "http://www.ech.ch/xmlns/eCH-0020/1", "http://www.ech.ch/xmlns/eCH-0087/1"):
            continue
        if per_namespace.get(sample.namespace, 0) < 4:
            per_namespace[sample.namespace] = per_namespace.get(sample.namespace, 0) + 1
            chosen.append(sample)
    return chosen


async def run_demo(directory: Path, *, samples: Path, schemas: Path) -> int:
    if directory.exists():
        shutil.rmtree(directory)
    federation = build_federation(
        directory, [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-kanton", [KANTON])], schemas=schemas
    )
    print(f"demo federation in {directory}: CA, 2 nodes, 2 participants (see federation.json)")
    processes = [start_node(federation, n.id, directory / "logs") for n in federation.nodes]
    try:
        for node, process in zip(federation.nodes, processes):
            await wait_ready(federation, node.id, process=process)
        print("nodes up: node-luzern (Stadt Luzern 1-1061-1), node-kanton (Kantonales Register 2-LU-1)")
        messages = demo_samples(samples)
        if not messages:
            from .generated import generated_ech0020_v3

            messages = [generated_ech0020_v3(directory)]
            print("no samples folder: sending a generated eCH-0020 3.0 message")
        sent = []
        now = datetime.now(timezone.utc)
        async with LocalApiClient(federation.api_url("node-luzern"), federation.tokens[LUZERN], federation.ca_file) as luzern, \
                LocalApiClient(federation.api_url("node-kanton"), federation.tokens[KANTON], federation.ca_file) as kanton:  # fmt: skip
            for sample in messages:
                message_id = uuid.uuid4().hex[:20]
                envelope = envelope_for(sample, ParticipantId(LUZERN), ParticipantId(KANTON), message_id, now)
                status, body = await luzern.submit(envelope, sample.payload(), sample.data.name)
                print(f"  sent {sample.name} as {message_id}: HTTP {status}")
                if status == 202:
                    sent.append((LUZERN, KANTON, luzern, kanton, message_id, sample))
            # One answer travels back: the canton acknowledges with the Sempach statistics payload.
            back = messages[0]
            message_id = uuid.uuid4().hex[:20]
            status, _ = await kanton.submit(envelope_for(back, ParticipantId(KANTON), ParticipantId(LUZERN), message_id, now), back.payload(), back.data.name)
            print(f"  sent {back.name} back from {KANTON} to {LUZERN} as {message_id}: HTTP {status}")
            if status == 202:
                sent.append((KANTON, LUZERN, kanton, luzern, message_id, back))
            delivered = receipts_100 = 0
            for sender, recipient, sender_api, recipient_api, message_id, sample in sent:
                state = await _wait_settled(sender_api, sender, message_id)
                payload = await recipient_api.payload(recipient, sender, message_id)
                identical = payload == sample.payload()
                if state.get("state") == "delivered" and identical:
                    delivered += 1
                    await recipient_api.acknowledge(recipient, sender, message_id)
                status = await sender_api.status(sender, message_id)
                receipt = status["receipts"][-1] if status["receipts"] else {}
                if receipt.get("statusCode") == 100:
                    receipts_100 += 1
                print(f"\nmessage {message_id} ({sample.name}) {sender} → {recipient}: {state.get('state')}, payload identical: {identical}")
                for event in status["events"]:
                    extra = f" [{event['status']}]" if "status" in event else ""
                    print(f"  {event['time']}  {event['node']:<12} {event['kind']}{extra}  {event.get('detail', '')}")
                print(f"  receipt {receipt.get('statusCode')} {receipt.get('statusInfo')}")
        print(f"\ndemo: {len(sent)} sent, {delivered} delivered, receipts 100: {receipts_100}")
        ok = len(sent) == len(messages) + 1 and delivered == len(sent) and receipts_100 == len(sent)
        return 0 if ok else 1
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


async def _wait_settled(api: LocalApiClient, sender: str, message_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = await api.status(sender, message_id)
        recipient = status["recipients"][0] if status["recipients"] else {}
        if recipient.get("state") in ("delivered", "failed", "expired") or time.monotonic() > deadline:
            return recipient
        await asyncio.sleep(0.1)
