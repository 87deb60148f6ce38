"""Node processes (``drehscheibe node run``): crash safety with SIGKILL, and a 200 MB payload in bounded memory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sqlite3
import subprocess

import pytest

from gateway.demo import start_node, wait_ready
from gateway.federation import NodeSpec, build_federation
from gateway.samples import discover

from ..conftest import KANTON, LUZERN, SAMPLES, XSD
from .nodes import client, sample_envelope

MOVE = next(s for s in discover(SAMPLES) if s.name.startswith("openech-ech0020-v2.2/div-movetest"))


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


async def launch(federation, node_id, processes, env=None):
    process = start_node(federation, node_id, federation.directory / "logs", env)
    processes.append(process)
    await wait_ready(federation, node_id, process=process)
    return process


def inbox_count(federation, node_id, sender, message_id) -> int:
    db = sqlite3.connect(federation.config_path(node_id).parent / "store" / "messages.db")
    try:
        return db.execute("SELECT COUNT(*) FROM inbox WHERE sender=? AND message_id=?", (sender, message_id)).fetchone()[0]
    finally:
        db.close()


async def wait_delivered(federation, sender, message_id, timeout=30.0):
    async with client(federation, sender) as api:
        for _ in range(int(timeout / 0.1)):
            status = await api.status(sender, message_id)
            if status["recipients"] and status["recipients"][0]["state"] == "delivered":
                return status
            await asyncio.sleep(0.1)
    raise AssertionError(f"{message_id} was not delivered")


async def test_a_sender_killed_right_after_202_delivers_every_message_exactly_once(federation, processes, clock):
    """Messages acknowledged with 202 survive SIGKILL of the sending node and arrive once each."""
    luzern = await launch(federation, "node-luzern", processes)  # the canton's node is still down
    ids = []
    async with client(federation, LUZERN) as api:
        for _ in range(5):
            message_id, envelope, payload = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
            status, _ = await api.submit(envelope, payload, "data.xml")
            assert status == 202
            ids.append(message_id)
    luzern.send_signal(signal.SIGKILL)
    luzern.wait()
    await launch(federation, "node-kanton", processes)
    await launch(federation, "node-luzern", processes)
    for message_id in ids:
        status = await wait_delivered(federation, LUZERN, message_id)
        assert [r["statusCode"] for r in status["receipts"]] == [100]
        assert inbox_count(federation, "node-kanton", LUZERN, message_id) == 1


async def test_a_receiver_killed_right_after_storing_delivers_once_after_restart(federation, processes, clock):
    """The destination dies after its commit but before answering; the retry gets the same receipt, no second copy."""
    kanton = await launch(federation, "node-kanton", processes, env={"DREHSCHEIBE_FAULT": "kill-after-deliver"})
    await launch(federation, "node-luzern", processes)
    async with client(federation, LUZERN) as api:
        message_id, envelope, payload = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
        status, _ = await api.submit(envelope, payload, "data.xml")
        assert status == 202
    for _ in range(300):
        if kanton.poll() is not None:
            break
        await asyncio.sleep(0.1)
    assert kanton.returncode == -signal.SIGKILL, "the fault point was reached"
    assert inbox_count(federation, "node-kanton", LUZERN, message_id) == 1
    await launch(federation, "node-kanton", processes)
    status = await wait_delivered(federation, LUZERN, message_id)
    assert [r["statusCode"] for r in status["receipts"]] == [100]
    assert inbox_count(federation, "node-kanton", LUZERN, message_id) == 1
    async with client(federation, KANTON) as api:
        assert [m["messageId"] for m in await api.inbox(KANTON)] == [message_id]


def peak_rss_mb(process: subprocess.Popen) -> float:
    with open(f"/proc/{process.pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
async def test_a_200_mb_payload_crosses_two_nodes_with_peak_rss_under_200_mb(tmp_path, processes, clock):
    """A 200 MB payload is streamed end to end; each node's peak RSS (VmHWM) stays under 200 MB."""
    federation = build_federation(
        tmp_path / "large", [NodeSpec("node-luzern", [LUZERN]), NodeSpec("node-kanton", [KANTON])],
        schemas=XSD, route_payload={KANTON: "any"}, delivery_toml="poll_seconds = 0.05",
    )  # fmt: skip
    nodes = [await launch(federation, n, processes) for n in ("node-luzern", "node-kanton")]
    source = tmp_path / "payload.bin"
    digest = hashlib.sha256()
    with open(source, "wb") as handle:
        block = os.urandom(1024 * 1024)
        for i in range(200):
            chunk = block[i:] + block[:i]
            digest.update(chunk)
            handle.write(chunk)
    message_id, envelope, payload = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
    async with client(federation, LUZERN) as api:
        with open(source, "rb") as payload:
            status, body = await api.submit(envelope, payload, "data.bin")
    assert status == 202, body
    await wait_delivered(federation, LUZERN, message_id, timeout=240)
    received = hashlib.sha256()

    class Sink:
        def write(self, chunk):
            received.update(chunk)

    async with client(federation, KANTON) as api:
        await api.payload(KANTON, LUZERN, message_id, sink=Sink())
    assert received.hexdigest() == digest.hexdigest()
    peaks = {name: peak_rss_mb(p) for name, p in zip(("node-luzern", "node-kanton"), nodes)}
    print(f"peak RSS with a 200 MB payload: {peaks}")
    assert all(peak < 200 for peak in peaks.values()), peaks


async def test_node_processes_under_ocsp_require_fetch_answers_at_start_and_learn_a_revocation_in_the_background(federation, processes, clock):
    """`node run` fetches OCSP answers before it listens, delivers, and its refresh task turns a later revocation into 312."""
    from datetime import timedelta

    from gateway.ocsp_responder import DevelopmentOcspResponder, serving
    from gateway.pki import DevelopmentCA, load_certificate

    ca = DevelopmentCA(federation.directory / "pki")
    responder = DevelopmentOcspResponder(ca, responder=ca.issue_ocsp_responder(), validity=timedelta(seconds=30))
    async with serving(responder) as url:
        for node in federation.nodes:
            path = federation.config_path(node.id)
            path.write_text(path.read_text().replace(
                "trust_anchors = [", f'ocsp = "require"\nocsp_responder = "{url}"\nocsp_refresh_seconds = 0.2\ntrust_anchors = [', 1))  # fmt: skip
        await launch(federation, "node-kanton", processes)
        await launch(federation, "node-luzern", processes)
        async with client(federation, LUZERN) as api:
            message_id, envelope, payload = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
            status, body = await api.submit(envelope, payload, "data.xml")
            assert status == 202, body
            assert [r["statusCode"] for r in (await wait_delivered(federation, LUZERN, message_id))["receipts"]] == [100]
            ca.revoke(load_certificate(federation.directory / "pki" / "participants" / LUZERN / "signing.pem"))
            for _ in range(100):
                _, envelope, payload = sample_envelope(MOVE, LUZERN, KANTON, clock.now())
                status, body = await api.submit(envelope, payload, "data.xml")
                if status != 202:
                    break
                await asyncio.sleep(0.1)
            assert (status, body["statusCode"]) == (403, 312) and "revoked (OCSP)" in body["statusInfo"], body
