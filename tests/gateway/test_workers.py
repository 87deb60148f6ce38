"""A node run as several processes (``[node] workers = 2``): real node processes on loopback,
real mTLS, one SQLite store and audit log shared by the processes of the node."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import time

import aiohttp
import psutil
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.demo import start_node, wait_ready
from gateway.federation import Federation, NodeSpec, build_federation, free_port
from gateway.samples import discover

from ..conftest import KANTON, LUZERN, SAMPLES, XSD
from .nodes import client, sample_envelope

MOVE = next(s for s in discover(SAMPLES) if s.name.startswith("openech-ech0020-v2.2/div-movetest"))
ORIGIN, DESTINATION = "node-luzern", "node-kanton"


def with_workers(federation: Federation, node_id: str, workers: int) -> int:
    """Give ``node_id`` ``workers`` processes and an ops listener; returns the ops port."""
    path = federation.config_path(node_id)
    ops = free_port()
    text = path.read_text().replace("[node]\n", f'[node]\nworkers = {workers}\nops = {{ host = "127.0.0.1", port = {ops} }}\n', 1)
    path.write_text(text)
    return ops


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """Origin with two workers (its forwarder would poll only every 5 minutes), destination with one.

    Started once for the module (a node start takes seconds); the tests run in file order,
    the last one stops the origin.
    """
    federation = build_federation(tmp_path_factory.mktemp("workers") / "federation", [NodeSpec(ORIGIN, [LUZERN]), NodeSpec(DESTINATION, [KANTON])],
                                  schemas=XSD, delivery_toml="poll_seconds = 30")  # fmt: skip
    ops = with_workers(federation, ORIGIN, 2)
    processes: dict[str, subprocess.Popen] = {}

    async def launch() -> None:
        for node_id in (DESTINATION, ORIGIN):
            processes[node_id] = start_node(federation, node_id, federation.directory / "logs")
        for node_id in (DESTINATION, ORIGIN):
            await wait_ready(federation, node_id, timeout=60, process=processes[node_id])
        # The local API answers as soon as the worker listens; the primary says when every process does.
        await until(lambda: f"node {ORIGIN} ready" in origin_log(federation), 60, "the primary ready")

    try:
        asyncio.run(launch())
        yield federation, processes, ops
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def origin_log(federation: Federation) -> str:
    return (federation.directory / "logs" / f"{ORIGIN}.log").read_text()


def worker_pids(primary: subprocess.Popen) -> list[int]:
    return [child.pid for child in psutil.Process(primary.pid).children() if child.status() != psutil.STATUS_ZOMBIE]


def accepted_by_process(federation: Federation, node_id: str) -> dict[int, float]:
    """Submissions each process accepted, read from its own metric file (the pid is in the name)."""
    directory = federation.config_path(node_id).parent / "store" / "metrics-processes"
    counts = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.removeprefix("counter_"))
        counts[pid] = sum(sample.value for metric in MultiProcessCollector.merge([str(path)]) for sample in metric.samples
                          if sample.name == "drehscheibe_messages_total"
                          and sample.labels.get("stage") == "submit" and sample.labels.get("outcome") == "passed")  # fmt: skip
    return counts


async def submit(federation: Federation, message_id: str | None = None, *, attempts: int = 50) -> str:
    """Submit one message on a fresh connection; a refused or reset connection is tried again."""
    from datetime import datetime, timezone

    message_id, envelope, payload = sample_envelope(MOVE, LUZERN, KANTON, datetime.now(timezone.utc), message_id)
    for _ in range(attempts):
        try:
            async with client(federation, LUZERN) as api:
                status, _ = await api.submit(envelope, payload)
            if status in (200, 202):
                return message_id
        except (aiohttp.ClientError, OSError):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{message_id} was not accepted")


def delivered(federation: Federation) -> dict[str, int]:
    """messageId → inbox rows at the destination."""
    db = sqlite3.connect(federation.config_path(DESTINATION).parent / "store" / "messages.db")
    try:
        return dict(db.execute("SELECT message_id, COUNT(*) FROM inbox WHERE sender=? GROUP BY message_id", (LUZERN,)).fetchall())
    finally:
        db.close()


async def until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)


async def scrape(ops: int) -> dict[tuple[str, frozenset], float]:
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{ops}/metrics") as response:
        text = await response.text()
    return {(s.name, frozenset(s.labels.items())): s.value for family in text_string_to_metric_families(text) for s in family.samples}


def submissions(metrics: dict) -> float:
    return metrics.get(("drehscheibe_messages_total", frozenset({"stage": "submit", "outcome": "passed", "code": ""}.items())), 0.0)


def receipts_100(metrics: dict) -> float:
    return metrics.get(("drehscheibe_receipts_total", frozenset({"code": "100"}.items())), 0.0)


async def test_both_processes_take_submissions_and_each_message_is_delivered_once(started):
    """A burst over many connections is shared by the primary and its worker; every message arrives once and /metrics counts all of them."""
    federation, processes, ops = started
    before = await scrape(ops)
    ids = await asyncio.gather(*(submit(federation) for _ in range(30)))
    per_process = accepted_by_process(federation, ORIGIN)
    assert set(per_process) == {processes[ORIGIN].pid, *worker_pids(processes[ORIGIN])}
    assert all(count > 0 for count in per_process.values()), per_process
    assert sum(per_process.values()) == 30
    await until(lambda: all(delivered(federation).get(i) for i in ids), 20, "all 30 delivered")
    assert {i: delivered(federation)[i] for i in ids} == {i: 1 for i in ids}
    after = await scrape(ops)
    assert submissions(after) - submissions(before) == 30
    assert receipts_100(after) - receipts_100(before) == 30
    assert after[("drehscheibe_queue_messages", frozenset({"peer": DESTINATION, "state": "queued"}.items()))] == 0


async def test_a_message_a_worker_accepts_wakes_the_primarys_forwarder(started):
    """A message accepted by the worker is forwarded at once, although the forwarder would next poll in minutes."""
    federation, processes, _ = started
    worker = worker_pids(processes[ORIGIN])[0]
    for _ in range(40):
        await asyncio.sleep(1.0)  # the forwarder's round for earlier messages is over: it waits idle
        before = accepted_by_process(federation, ORIGIN).get(worker, 0)
        message_id = await submit(federation)
        if accepted_by_process(federation, ORIGIN).get(worker, 0) > before:
            break
        await until(lambda: delivered(federation).get(message_id) == 1, 10, "the primary's message delivered")
    else:
        raise AssertionError("the worker accepted none of 40 connections")
    await until(lambda: delivered(federation).get(message_id) == 1, 10, "the worker's message delivered")  # idle wait: 300 s


async def test_a_killed_worker_is_restarted_and_nothing_accepted_is_lost(started):
    """SIGKILL of a worker under load: the primary starts a new one, and every accepted message is delivered exactly once."""
    federation, processes, ops = started
    primary = processes[ORIGIN]
    killed = worker_pids(primary)[0]
    load = [asyncio.create_task(submit(federation)) for _ in range(20)]
    await asyncio.sleep(0.2)
    os.kill(killed, signal.SIGKILL)
    ids = await asyncio.gather(*load)
    await until(lambda: origin_log(federation).count("worker 1 ready") == 2, 60, "a new worker ready")
    replacement = worker_pids(primary)[0]
    assert replacement != killed
    ids += await asyncio.gather(*(submit(federation) for _ in range(10)))
    await until(lambda: all(delivered(federation).get(i) for i in ids), 30, "all 30 delivered")
    assert {i: delivered(federation)[i] for i in ids} == {i: 1 for i in ids}
    assert primary.poll() is None
    assert "exited with code -9; restarting it" in origin_log(federation)
    metrics = await scrape(ops)
    assert metrics[("drehscheibe_worker_restarts_total", frozenset())] == 1
    assert metrics[("drehscheibe_worker_processes", frozenset({"state": "running"}.items()))] == 1


async def test_an_admin_reload_answered_by_one_process_reloads_the_others(started):
    """A routes reload through the admin API is passed on: the process that did not answer it reloads too, once."""
    import ssl

    federation, _, _ = started
    before = origin_log(federation).count("routes reload on SIGHUP: accepted")
    context = ssl.create_default_context(cafile=str(federation.ca_file))
    headers = {"Authorization": f"Bearer {federation.operator_tokens[ORIGIN]['admin']}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        async with session.post(federation.api_url(ORIGIN) + "/admin/v1/routes/reload", headers=headers) as response:
            assert response.status == 200, await response.text()
    await until(lambda: origin_log(federation).count("routes reload on SIGHUP: accepted") > before, 10, "the other process reloads")
    await asyncio.sleep(1.0)
    assert origin_log(federation).count("routes reload on SIGHUP: accepted") == before + 1  # not the one that answered again


async def test_sighup_reloads_every_process_and_sigterm_stops_them_all(started):
    """SIGHUP to the primary reloads it and its worker (each says so); SIGTERM ends both and frees the ports."""
    federation, processes, _ = started
    primary = processes[ORIGIN]
    worker = worker_pids(primary)[0]
    await asyncio.sleep(1.0)  # reloads passed on by the previous test are done
    before = origin_log(federation).count("routes reload on SIGHUP: accepted")
    primary.send_signal(signal.SIGHUP)
    await until(lambda: origin_log(federation).count("routes reload on SIGHUP: accepted") >= before + 2, 10, "two reloads")
    primary.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(primary.wait, 30) == 0
    assert not psutil.pid_exists(worker) or psutil.Process(worker).status() == psutil.STATUS_ZOMBIE
    node = federation.node(ORIGIN)
    for port in (node.listen_port, node.api_port):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # closed connections may linger; a listener may not
            sock.bind(("127.0.0.1", port))
            sock.listen()


async def test_the_workers_of_a_killed_primary_stop_by_themselves(started):
    """SIGKILL of the primary: its worker sees the primary's pipe close and exits, so no orphan keeps the ports."""
    federation, processes, _ = started
    processes[ORIGIN] = primary = start_node(federation, ORIGIN, federation.directory / "logs")
    await until(lambda: origin_log(federation).count(f"node {ORIGIN} ready") == 2, 60, "the origin started again")
    worker = psutil.Process(worker_pids(primary)[0])
    primary.kill()
    primary.wait()
    await asyncio.to_thread(worker.wait, 20)
    node = federation.node(ORIGIN)
    for port in (node.listen_port, node.api_port):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen()
