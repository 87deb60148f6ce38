"""A forwarder replica in its own process, for the multi-replica tests and the settle benchmark.

    python -m tests.gateway.storage.replica drain DSN DIRECTORY SCHEMA REPLICA [--limit N] [--lease S] [--clock-offset S] [--stop-when-idle]
        lease due rows and settle each one (receipt 100) until nothing is queued (or, with
        --stop-when-idle, nothing is due for this replica); prints JSON
        {"leased": [...], "settled": [...], "seconds": ...}
    python -m tests.gateway.storage.replica lease DSN DIRECTORY SCHEMA REPLICA [--limit N] [--lease S]
        lease one batch, print {"leased": [...]} and wait to be killed (a replica dying mid-lease)
    python -m tests.gateway.storage.replica bench DSN [--rows N] [--replicas 1,2]
        settle throughput with 1, 2, … replicas sharing one schema (docs/postgresql.md)

Each process is what a node's forwarder does with the store: ``due(now, limit)`` and then
``settle`` per row; it stands in for the network with nothing, so the figures are the
store's own cost.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from gateway.store import OutgoingState, Store
from gateway.store_pg import PgStore

from .rows import NOW, SENDER, event, outgoing

REPO = Path(__file__).resolve().parents[3]


def fill(store, rows: int, *, per_message: int = 100) -> None:
    """Queue ``rows`` outgoing rows (messages of ``per_message`` recipients each, one commit per message)."""
    path = None
    now = time.time() - 1  # due at once for replicas on the wall clock
    for first in range(0, rows, per_message):
        message_id = f"bulk-{first // per_message:06d}"
        count = min(per_message, rows - first)
        if path is None:
            path = outgoing(store, message_id, "9-ZZ-1")["blob"]
        batch = [outgoing(store, message_id, f"9-ZZ-{first + j + 1}", path=path, now=now) for j in range(count)]
        store.submit(sender=SENDER, message_id=message_id, content_sha256=message_id, rows=batch,
                     events=[(None, event("accepted"))], now=NOW)  # fmt: skip


def drain(store, limit: int, clock=time.time, *, stop_when_idle: bool = False) -> dict:
    """Lease and settle until nothing is queued, or (``stop_when_idle``) nothing is due for this replica."""
    leased: list[int] = []
    settled: list[int] = []
    started = time.perf_counter()
    while True:
        batch = store.due(clock(), limit)
        if not batch:
            if stop_when_idle or store.next_due_time() is None:
                break
            time.sleep(0.005)  # another replica still holds rows; they come back if it dies
            continue
        for item in batch:
            leased.append(item.row)
            done = store.settle(item, OutgoingState.DELIVERED, receipt_status=100, receipt=b"<receipt status='100'/>",
                                receipt_signature="sig", events=[event("receipt", status=100)], now=NOW)  # fmt: skip
            if done:
                settled.append(item.row)
    return {"leased": leased, "settled": settled, "seconds": time.perf_counter() - started}


def spawn(mode: str, dsn: str, directory: Path, schema: str, replica: str, *options: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.gateway.storage.replica", mode, dsn, str(directory), schema, replica, *options],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def bench(dsn: str, rows: int, replicas: list[int]) -> list[dict]:
    import psycopg

    results = []
    with tempfile.TemporaryDirectory() as directory:
        store = Store(Path(directory))
        fill(store, rows)
        outcome = drain(store, 200)
        assert len(outcome["settled"]) == rows
        results.append({"backend": "sqlite", "replicas": 1, "rows": rows, "rows_per_second": round(rows / outcome["seconds"])})
        store.close()
    for count in replicas:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        with tempfile.TemporaryDirectory() as directory:
            store = PgStore(dsn, Path(directory), schema=schema, replica="filler")
            fill(store, rows)
            started = time.perf_counter()
            processes = [spawn("drain", dsn, Path(directory), schema, f"r{i}", "--limit", "200") for i in range(count)]
            outputs = [json.loads(p.communicate()[0]) for p in processes]
            elapsed = time.perf_counter() - started
            settled = sum(len(o["settled"]) for o in outputs)
            assert settled == rows, f"{settled} of {rows} settled"
            busiest = max(o["seconds"] for o in outputs)
            results.append({"backend": "postgresql", "replicas": count, "rows": rows, "rows_per_second": round(rows / busiest),
                            "wall_seconds_with_start": round(elapsed, 2)})  # fmt: skip
            store.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="replica")
    parser.add_argument("mode", choices=["drain", "lease", "bench"])
    parser.add_argument("dsn")
    parser.add_argument("directory", nargs="?")
    parser.add_argument("schema", nargs="?")
    parser.add_argument("replica", nargs="?")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--lease", type=float, default=60.0)
    parser.add_argument("--clock-offset", type=float, default=0.0)
    parser.add_argument("--stop-when-idle", action="store_true")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--replicas", default="1,2")
    args = parser.parse_args(argv)
    if args.mode == "bench":
        for result in bench(args.dsn, args.rows, [int(n) for n in args.replicas.split(",")]):
            print(json.dumps(result), flush=True)
        return

    def clock() -> float:
        return time.time() + args.clock_offset

    store = PgStore(args.dsn, Path(args.directory), schema=args.schema, replica=args.replica, lease_seconds=args.lease, clock=clock)
    if args.mode == "drain":
        print(json.dumps(drain(store, args.limit, clock, stop_when_idle=args.stop_when_idle)), flush=True)
    else:
        print(json.dumps({"leased": [item.row for item in store.due(clock(), args.limit)]}), flush=True)
        time.sleep(3600)  # killed by the test while it holds the lease


if __name__ == "__main__":
    main()
