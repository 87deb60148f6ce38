"""Replicas — throughput of one origin node run as 1, 2 or 3 replicas on PostgreSQL, against one process on SQLite.

The B1 message (~20 KB eCH-0020) goes from Stadt Luzern's node to the canton's (one
process on SQLite in every configuration). The origin runs as

* ``sqlite``: one ``drehscheibe node run`` process, the embedded SQLite store and audit log;
* ``pg-1``, ``pg-2``, ``pg-3``: one, two or three processes of the same node (same file,
  own ports: :func:`gateway.federation.add_replica`) sharing one PostgreSQL schema for the
  store, one for the audit log, and the blob directory.

Load: a closed loop with ``concurrency`` requests in flight in total, split evenly over
one load-generator process per replica (as a load balancer would spread it). Per run:
accepted messages/s (HTTP 202 over the submit window) and delivered messages/s (accepted
messages over first submit → the origin's queue empty: every message settled with its
receipt), plus the CPU each group of processes spent per message (origin replicas,
destination, PostgreSQL server, load generators).

PostgreSQL: ``DREHSCHEIBE_BENCH_PG_DSN`` or ``DREHSCHEIBE_TEST_PG_DSN`` if set (a DSN with
the password in it, as ``.ci/postgres.sh`` prints), else a throw-away server started with
``.ci/postgres.sh`` and stopped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psutil

from gateway.demo import start_node, wait_ready
from gateway.federation import NodeSpec, add_replica, build_federation

from .common import DESTINATION, KANTON, LUZERN, ORIGIN, REPO, SCHEMAS, log, query, run_loadgen, store_db, summarize
from .messages import write_message_files

DELIVERY = "retry_base_seconds = 0.5\nretry_max_seconds = 5.0"
CONFIGURATIONS = (("sqlite", 1), ("pg-1", 1), ("pg-2", 2), ("pg-3", 3))


@contextlib.contextmanager
def postgresql():
    """(DSN with password, data directory or None): a given server, or one started for the benchmark."""
    dsn = os.environ.get("DREHSCHEIBE_BENCH_PG_DSN") or os.environ.get("DREHSCHEIBE_TEST_PG_DSN")
    if dsn:
        yield dsn, os.environ.get("DREHSCHEIBE_PG_DATA")
        return
    script = REPO / ".ci" / "postgres.sh"
    started = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True)
    values = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.splitlines() if line.startswith("export "))
    data = values["DREHSCHEIBE_PG_DATA"].strip("'")
    try:
        yield values["DREHSCHEIBE_TEST_PG_DSN"].strip("'"), data
    finally:
        subprocess.run(["bash", str(script), "stop", data], capture_output=True, check=False)


def _libpq(dsn: str) -> tuple[str, dict[str, str]]:
    """A password-free DSN for the node file (the configuration refuses passwords) and PGPASSWORD."""
    parts = urlsplit(dsn)
    plain = f"host={parts.hostname} port={parts.port or 5432} dbname={parts.path.lstrip('/')} user={unquote(parts.username or '')}"
    return plain, {"PGPASSWORD": unquote(parts.password)} if parts.password else {}


def _server_processes(data: str | None) -> list[psutil.Process]:
    """The PostgreSQL postmaster of ``data`` and its children (backends, WAL writer, checkpointer)."""
    if not data:
        return []
    try:
        pid = int((Path(data) / "cluster" / "postmaster.pid").read_text().split()[0])
        main = psutil.Process(pid)
        return [main, *main.children(recursive=True)]
    except (OSError, ValueError, psutil.Error):
        return []


def _cpu(processes: list) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


class _Origin:
    """The origin node's processes in one configuration, and how to read its queue."""

    def __init__(self, federation, logs: Path, replicas: int, env: dict[str, str], pg: tuple[str, str] | None) -> None:
        self.federation, self.logs, self.replicas, self.env, self.pg = federation, logs, replicas, env, pg
        self.processes: list[subprocess.Popen] = []
        self.urls: list[str] = []

    async def start(self) -> None:
        for index in range(self.replicas):  # one after the other: the first creates the schemas
            if index == 0:
                config, api = self.federation.config_path(ORIGIN), self.federation.node(ORIGIN).api_port
            else:
                config, api = add_replica(self.federation, ORIGIN, index)
            with open(self.logs / f"origin-{index}.log", "ab") as out:
                process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "node", "run", "--config", str(config)],
                                           stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.env})  # fmt: skip
            self.processes.append(process)
            self.urls.append(f"https://127.0.0.1:{api}")
            await _wait_api(self.federation, api, process)

    def open_rows(self, prefix: str) -> tuple[int, int]:
        """(rows of this run, of which still queued or handed)."""
        args = (LUZERN, prefix + "r%")
        total = "SELECT count(*) FROM outgoing WHERE sender = {p} AND message_id LIKE {p}"
        still_open = total + " AND state IN ('queued', 'handed')"
        if self.pg is None:
            db = store_db(self.federation, ORIGIN)
            return query(db, total.format(p="?"), args)[0][0], query(db, still_open.format(p="?"), args)[0][0]
        import psycopg

        dsn, schema = self.pg
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            return conn.execute(total.format(p="%s"), args).fetchone()[0], conn.execute(still_open.format(p="%s"), args).fetchone()[0]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _wait_api(federation, port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    import ssl

    import aiohttp

    context = ssl.create_default_context(cafile=str(federation.ca_file))
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"https://127.0.0.1:{port}/api/v1/messages/x/y") as response:
                    if response.status == 401:
                        return
            if process.poll() is not None:
                raise RuntimeError(f"origin replica exited with code {process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("origin replica did not start")
            await asyncio.sleep(0.1)


async def _configuration(base: Path, name: str, replicas: int, pg: tuple[str, str | None] | None, files_catalog, *,
                         runs: int, seconds: float, concurrency: int, warmup_seconds: float) -> dict:  # fmt: skip
    directory = base / name
    shutil.rmtree(directory, ignore_errors=True)
    extra, env, where = "", {}, None
    if pg is not None:
        dsn, _ = pg
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        plain, env = _libpq(dsn)
        extra = f'[store]\nbackend = "postgresql"\ndsn = "{plain}"\nschema = "{schema}"'
        where = (dsn, schema)
    federation = build_federation(directory / "federation", [NodeSpec(ORIGIN, [LUZERN], extra_toml=extra), NodeSpec(DESTINATION, [KANTON])],
                                  schemas=SCHEMAS, delivery_toml=DELIVERY)  # fmt: skip
    files = write_message_files(directory / "messages", LUZERN, KANTON, files_catalog)
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    destination = start_node(federation, DESTINATION, logs)
    origin = _Origin(federation, logs, replicas, env, where)
    out: dict = {"replicas": replicas, "backend": "postgresql" if pg else "sqlite", "runs": []}
    try:
        await wait_ready(federation, DESTINATION, timeout=60, process=destination)
        await origin.start()
        server = _server_processes(pg[1]) if pg else []
        groups = {"origin": [psutil.Process(p.pid) for p in origin.processes], "destination": [psutil.Process(destination.pid)],
                  "postgresql": server}  # fmt: skip

        async def load(prefix: str, duration: float) -> tuple[list[dict], float]:
            share = max(1, concurrency // replicas)
            specs = [{"url": url + "/api/v1/messages", "token": federation.tokens[LUZERN], "ca": str(federation.ca_file),
                      "envelope_template": files["envelope_template"], "payload": files["payload"], "payload_name": "data.xml",
                      "id_prefix": f"{prefix}r{i}", "mode": "closed", "concurrency": share, "duration": duration}
                     for i, url in enumerate(origin.urls)]  # fmt: skip
            results = await asyncio.gather(*(asyncio.to_thread(run_loadgen, spec, directory, spec["id_prefix"]) for spec in specs))
            return list(results), sum(r["cpu_seconds"] for r in results)

        async def settled(prefix: str, expected: int, timeout: float = 300.0) -> float:
            deadline = time.monotonic() + timeout
            while True:
                total, open_ = origin.open_rows(prefix)
                if total >= expected and open_ == 0:
                    return time.time()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name}: {open_} of {total} messages still open after {timeout:.0f} s")
                await asyncio.sleep(0.1)

        log(f"replicas {name}: warm-up")
        warm, _ = await load("warm", warmup_seconds)
        await settled("warm", sum(1 for r in warm for rec in r["records"] if rec[4] == 202))
        for run in range(runs):
            prefix = f"run{run}"
            cpu0 = {group: _cpu(processes) for group, processes in groups.items()}
            results, loadgen_cpu = await load(prefix, seconds)
            records = [rec for r in results for rec in r["records"]]
            accepted = [rec for rec in records if rec[4] == 202]
            if not accepted:
                raise RuntimeError(f"{name}: no message accepted; first answers {[r.get('errors') for r in results]}")
            done = await settled(prefix, len(accepted))
            cpu1 = {group: _cpu(processes) for group, processes in groups.items()}
            for process in [destination, *origin.processes]:
                if process.poll() is not None:
                    raise RuntimeError(f"{name}: a node process exited during the run (see {logs})")
            first = min(rec[2] for rec in records)
            window = max(rec[2] + rec[3] for rec in accepted) - first
            figures = {
                "accepted": len(accepted),
                "refused": len(records) - len(accepted),
                "accepted_per_s": len(accepted) / window,
                "delivered_per_s": len(accepted) / (done - first),
                "cpu_ms_per_msg": {g: (cpu1[g] - cpu0[g]) * 1000 / len(accepted) for g in groups if groups[g]}
                | {"load generators": loadgen_cpu * 1000 / len(accepted)},
            }
            out["runs"].append(figures)
            log(f"replicas {name} run {run + 1}: {figures['accepted_per_s']:.0f} accepted/s, {figures['delivered_per_s']:.0f} delivered/s, "
                f"CPU ms/msg {({k: round(v, 1) for k, v in figures['cpu_ms_per_msg'].items()})}")  # fmt: skip
    finally:
        origin.stop()
        if destination.poll() is None:
            destination.terminate()
            try:
                destination.wait(15)
            except subprocess.TimeoutExpired:
                destination.kill()
        if where is not None:
            import psycopg

            with contextlib.suppress(Exception), psycopg.connect(where[0], autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{where[1]}" CASCADE')
                conn.execute(f'DROP SCHEMA IF EXISTS "{where[1]}_audit" CASCADE')
    out["accepted_per_s"] = summarize([r["accepted_per_s"] for r in out["runs"]])
    out["delivered_per_s"] = summarize([r["delivered_per_s"] for r in out["runs"]])
    return out


async def run_replicas(workdir: Path, *, runs: int, seconds: float, concurrency: int, catalog, warmup_seconds: float = 2.0,
                       configurations: tuple[tuple[str, int], ...] = CONFIGURATIONS) -> dict:  # fmt: skip
    """Every configuration in turn, ``runs`` runs of ``seconds`` each; see the module docstring."""
    base = workdir / "replicas"
    out: dict = {"concurrency": concurrency, "seconds": seconds, "configurations": {}}
    with postgresql() as (dsn, data):
        import psycopg

        with psycopg.connect(dsn) as conn:
            out["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
            out["synchronous_commit"] = conn.execute("SHOW synchronous_commit").fetchone()[0]
        for name, replicas in configurations:
            pg = None if name == "sqlite" else (dsn, data)
            out["configurations"][name] = await _configuration(base, name, replicas, pg, catalog, runs=runs, seconds=seconds,
                                                               concurrency=concurrency, warmup_seconds=warmup_seconds)  # fmt: skip
    return out
