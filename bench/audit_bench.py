"""Audit log throughput: durable group-commit appends, whole-log verification, export.

Run: .venv/bin/python bench/audit_bench.py [--records 100000] [--batch 500] [--runs 3]
Prints median, min and max over the runs. Targets (issue 4, 2-core machine):
append >= 5,000 records/s with synchronous=FULL; verify >= 500,000 records/s.
"verify (full)" re-hashes every body and checks every checkpoint signature and root, as
`drehscheibe audit verify` does (worker processes on a large log: one per core);
"verify (1 process)" is the same with workers=1; "tree only" is the Merkle part alone
(read the stored leaf hashes, rebuild the tree, compare the newest signed root).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from gateway.audit import (  # noqa: E402
    Action, Actor, ActorKind, AuditLog, AuditRecord, EnvelopeMeta, PolicyRecord, Role, export_log, verify_log,
)

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
NODE = "node-bench"


def record(n: int) -> AuditRecord:
    """A realistic forwarded-message record (about 700 bytes of canonical JSON)."""
    return AuditRecord(
        time=T0 + timedelta(microseconds=n * 100), node=NODE, role=Role.RELAY, action=Action.FORWARDED,
        actor=Actor(ActorKind.PEER_NODE, "node-gemeinde-1061"), message_id=f"m-{n}",
        envelope=EnvelopeMeta("1-1061-1", ("2-LU-1",), "20201", "0", "2026-03-01T08:00:00"),
        received_digest=f"{n:064x}", sent_digest=f"{n + 1:064x}",
        policy=PolicyRecord(("lu-move-in",), "Einwohnerkontrolle", "RHG Art. 2", ("religion",), "r7"),
        person_refs=(f"{n * 7:064x}", f"{n * 11:064x}"),
    )


def run_once(records: list[AuditRecord], batch: int, key: ec.EllipticCurvePrivateKey) -> tuple[float, ...]:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as folder:
        path = Path(folder) / "audit.sqlite"
        with AuditLog.open(path, node=NODE, signing_key=key) as log:
            start = time.perf_counter()
            for i in range(0, len(records), batch):
                log.append(records[i : i + batch])  # one durable transaction per batch
            log.checkpoint(T0 + timedelta(days=1))
            append_rate = len(records) / (time.perf_counter() - start)

            start = time.perf_counter()
            result = verify_log(path, key.public_key())
            verify_rate = result.size / (time.perf_counter() - start)

            start = time.perf_counter()
            verify_log(path, key.public_key(), workers=1)
            single_rate = result.size / (time.perf_counter() - start)

            # The Merkle part alone: stored leaf hashes -> roots at every checkpoint size.
            start = time.perf_counter()
            tree = log.tree()
            assert tree.root(result.latest.size) == result.latest.root
            tree_rate = result.size / (time.perf_counter() - start)

            with open(os.devnull, "w") as sink:
                start = time.perf_counter()
                export_log(log, sink, actor=Actor(ActorKind.AUDITOR, "bench"), now=T0 + timedelta(days=2))
                export_rate = len(records) / (time.perf_counter() - start)
    return append_rate, verify_rate, single_rate, tree_rate, export_rate


NAMES = ("append (durable)", "verify (full)", "verify (1 process)", "tree only", "export (jsonl+proofs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    key = ec.generate_private_key(ec.SECP256R1())
    records = [record(n) for n in range(args.records)]
    results = [run_once(records, args.batch, key) for _ in range(args.runs)]
    print(f"{args.records} records, batch {args.batch}, {args.runs} runs, synchronous=FULL, WAL")
    for name, values in zip(NAMES, zip(*results)):
        print(f"{name:24s} median {statistics.median(values):>10,.0f}/s  min {min(values):>10,.0f}/s  max {max(values):>10,.0f}/s")


if __name__ == "__main__":
    main()
