"""Three replica processes of one node on one PostgreSQL: every message delivered once, every receipt back, one audit log.

The origin node ``node-luzern`` runs as three ``drehscheibe node run`` processes with the
same configuration (its own listen and API ports each), sharing one PostgreSQL schema for
the message store, one for the audit log, and the blob directory. A local system submits
a few hundred real eCH-0020 messages to the canton (``node-kanton``, one process on
SQLite), spread over the replicas as a load balancer would; one replica is SIGKILLed
while it holds leases on messages in transfer. Its leases run out (5 s) and the survivors
deliver what it held.

Runs only with ``DREHSCHEIBE_TEST_PG_DSN``; with ``CI=true`` and no server it fails (conftest.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp
import psycopg

from gateway.audit import Action, Role, load_public_key, verify_log
from gateway.audit.log_pg import PgAuditLog, audit_schema
from gateway.client import LocalApiClient
from gateway.demo import start_node, wait_ready
from gateway.federation import Federation, NodeSpec, add_replica, build_federation
from gateway.pki import load_private_key
from gateway.samples import discover

from ...chaos.ledger import inbox_rows, store_db, verify_audit
from ...conftest import SAMPLES, XSD
from ..nodes import sample_envelope

LUZERN, KANTON = "1-1061-1", "2-LU-1"
ORIGIN, DESTINATION = "node-luzern", "node-kanton"
MESSAGES = 300
REPLICAS = 3
DOOMED = 1  # the replica killed mid-transfer (replica 0 keeps the ports the canton's peer entry names)
DEADLINE = 90.0  # seconds for the whole transfer; it takes ~25 s here


def libpq_settings(dsn: str) -> tuple[str, dict[str, str]]:
    """The test DSN split into a password-free DSN for the node file and PGPASSWORD for the environment."""
    parts = urlsplit(dsn)
    password = unquote(parts.password or "")
    plain = f"host={parts.hostname} port={parts.port or 5432} dbname={parts.path.lstrip('/')} user={unquote(parts.username or '')}"
    return plain, ({"PGPASSWORD": password} if password else {})


def replica_config(federation: Federation, index: int) -> tuple[Path, int]:
    """Replica 0 uses the node's file; the others a copy beside it with their own ports."""
    if index == 0:
        return federation.config_path(ORIGIN), federation.node(ORIGIN).api_port
    return add_replica(federation, ORIGIN, index)


async def api_ready(ca: Path, api_port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"https://127.0.0.1:{api_port}/api/v1/messages/x/y") as response:
                    if response.status == 401:
                        return
            assert process.poll() is None, f"replica exited with code {process.returncode} (see its log)"
            assert time.monotonic() < deadline, "replica did not start"
            await asyncio.sleep(0.1)


def leases_of(conn: psycopg.Connection, pid: int) -> int:
    """Queued rows leased right now by the replica process ``pid`` (default replica ids carry the pid)."""
    return conn.execute(
        "SELECT count(*) FROM outgoing WHERE state = 'queued' AND lease_owner LIKE %s AND lease_until > extract(epoch FROM now())",
        (f"%-{pid}-%",),
    ).fetchone()[0]


def open_rows(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM outgoing WHERE state IN ('queued', 'handed')").fetchone()[0]


async def test_replicas_deliver_every_message_once_when_one_is_killed_mid_transfer(pg_schemas, tmp_path: Path):
    """Three replicas on one PostgreSQL deliver 300 messages exactly once with every receipt, one SIGKILLed mid-transfer, and keep one verifiable audit log."""
    schema = pg_schemas.new()
    pg_schemas.names.append(audit_schema(schema))  # dropped afterwards with the store schema
    dsn, secret_env = libpq_settings(pg_schemas.dsn)
    store_toml = f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\nschema = "{schema}"\nlease_seconds = 5'
    federation = build_federation(
        tmp_path / "federation", [NodeSpec(ORIGIN, [LUZERN], extra_toml=store_toml), NodeSpec(DESTINATION, [KANTON])],
        schemas=XSD, delivery_toml="retry_base_seconds = 0.2\nretry_max_seconds = 1.0\npoll_seconds = 0.05",
    )  # fmt: skip
    logs = tmp_path / "logs"
    logs.mkdir()
    sample = next(s for s in discover(SAMPLES) if s.name.startswith("openech-ech0020-v2.2/div-movetest"))
    now = datetime.now(timezone.utc)
    messages = [sample_envelope(sample, LUZERN, KANTON, now) for _ in range(MESSAGES)]

    processes: list[subprocess.Popen] = []
    try:
        destination = start_node(federation, DESTINATION, logs)
        processes.append(destination)
        await wait_ready(federation, DESTINATION, process=destination)
        replicas: list[tuple[subprocess.Popen, int]] = []
        for index in range(REPLICAS):  # one after the other: the first creates the schemas
            config, api_port = replica_config(federation, index)
            with open(logs / f"replica-{index}.log", "ab") as log:
                process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "node", "run", "--config", str(config)],
                                           stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **secret_env})  # fmt: skip
            processes.append(process)
            replicas.append((process, api_port))
            await api_ready(federation.ca_file, api_port, process)
        clients = [LocalApiClient(f"https://127.0.0.1:{port}", federation.tokens[LUZERN], federation.ca_file) for _, port in replicas]
        accepted_by = collections.Counter()

        async def submit(number: int) -> None:
            message_id, envelope, payload = messages[number]
            for attempt in range(60):  # a load balancer: the next replica when one does not answer
                index = (number + attempt) % REPLICAS
                if replicas[index][0].poll() is not None:
                    continue
                try:
                    status, body = await clients[index].submit(envelope, payload, "data.xml")
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError):
                    await asyncio.sleep(0.1)
                    continue
                assert status == 202, (status, body)
                accepted_by[index] += 1
                return
            raise AssertionError(f"message {number} was never accepted")

        async def submit_all() -> None:
            queue = collections.deque(range(MESSAGES))

            async def worker() -> None:
                while queue:
                    await submit(queue.popleft())

            await asyncio.gather(*(worker() for _ in range(6)))

        async def kill_mid_transfer() -> int:
            """SIGKILL the doomed replica once deliveries run and it holds leases on messages in transfer."""
            doomed = replicas[DOOMED][0]
            with psycopg.connect(pg_schemas.dsn, autocommit=True) as conn:
                conn.execute(f'SET search_path TO "{schema}"')
                while True:
                    delivered = len(inbox_rows({DESTINATION: store_db(tmp_path / "federation" / "nodes" / DESTINATION)}))
                    held = leases_of(conn, doomed.pid)
                    if delivered >= MESSAGES // 5 and held:
                        doomed.send_signal(signal.SIGKILL)
                        doomed.wait(10)
                        return held
                    assert delivered < MESSAGES, "every message was delivered before the kill"
                    await asyncio.sleep(0.01)

        started = time.monotonic()
        held, _ = await asyncio.gather(kill_mid_transfer(), submit_all())
        with psycopg.connect(pg_schemas.dsn, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            while open_rows(conn) and time.monotonic() - started < DEADLINE:
                await asyncio.sleep(0.2)
            assert open_rows(conn) == 0, "messages left in the queue"
        elapsed = time.monotonic() - started

        # Exactly once at the destination: one inbox row per message, none extra.
        inbox = inbox_rows({DESTINATION: store_db(tmp_path / "federation" / "nodes" / DESTINATION)})
        assert inbox == collections.Counter({(LUZERN, m[0], KANTON): 1 for m in messages})
        # Every receipt reaches the sender, once, through any surviving replica.
        receipts, after = [], 0
        while page := await clients[0].receipts(LUZERN, after):
            receipts += page
            after = page[-1]["id"]
        assert collections.Counter(r["messageId"] for r in receipts) == collections.Counter(m[0] for m in messages)
        assert {r["statusCode"] for r in receipts} == {100}
        assert accepted_by[DOOMED] and held >= 1, (accepted_by, held)
        for client in clients:
            await client.close()
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(15)
            if process.poll() is None:
                process.kill()
                process.wait()

    # One audit log for the node, whichever replica wrote: it verifies as left and after a closing checkpoint.
    certificate = federation.directory / "pki" / "nodes" / f"{ORIGIN}.pem"
    private_key = next((federation.directory / "pki" / "nodes").glob(f"{ORIGIN}*key*"))
    public_key = load_public_key(certificate.read_bytes())
    with PgAuditLog.open(pg_schemas.dsn, schema=audit_schema(schema), node=ORIGIN, signing_key=load_private_key(private_key)) as log:
        as_left = verify_log(log.source, public_key, origin=ORIGIN)
        log.checkpoint(datetime.now(timezone.utc))
        closed = verify_log(log.source, public_key, origin=ORIGIN)
        delivered = collections.Counter(r.message_id for _, _, r in log.iter_records()
                                        if r.role is Role.ORIGIN and r.action is Action.DELIVERED)  # fmt: skip
    assert (closed.size, closed.unsigned_tail) == (as_left.size, 0) and as_left.checkpoints >= 1
    assert set(delivered) == {m[0] for m in messages}
    # The destination recorded each message's delivery once.
    figures = verify_audit(DESTINATION, federation.directory / "nodes" / DESTINATION / "audit" / "audit.db",
                           certificate.with_name(f"{DESTINATION}.pem"), private_key.with_name(private_key.name.replace(ORIGIN, DESTINATION)))  # fmt: skip
    assert (figures.valid, figures.delivered_twice) == (True, 0), figures
    print(f"\n{MESSAGES} messages through {REPLICAS} replicas, replica {DOOMED} killed holding {held} lease(s):"
          f" {elapsed:.1f} s; accepted per replica {dict(accepted_by)}")  # fmt: skip
