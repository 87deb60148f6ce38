"""Both cores, before and after in one run: B1 with ``[node] workers = 1`` and ``workers = 2``.

Two federations (origin → destination, as in B1) differ only in ``[node] workers`` on both
nodes. Both are started once; the runs alternate between them (1, 2, 1, 2 …) so that other
load on the machine falls on both alike. Each run measures, like B1:

* **origin hop alone**: the destination's processes are paused (SIGSTOP), so the origin only
  takes submissions (parse, validate, seal, audit, store); closed loop for ``origin_seconds``,
  then the destination is resumed and the backlog drains before the next phase;
* **full load end to end**: closed loop for ``seconds``, then the wait until every accepted
  message has its receipt at the origin.

With ``workers = 2`` every node runs as two processes sharing its ports (gateway/workers.py);
CPU per message counts all of a node's processes.
"""

from __future__ import annotations

import re
from pathlib import Path

from .b1_small import DELIVERY, _accepted, _spec, drained, timeline
from .common import DESTINATION, KANTON, LUZERN, ORIGIN, NodeSet, latency_stats, log, run_loadgen, wait_until
from .messages import write_message_files

WORKERS = (1, 2)


def _federation(directory: Path, workers: int):
    import shutil

    from gateway.federation import NodeSpec, build_federation

    from .common import SCHEMAS

    if directory.exists():
        shutil.rmtree(directory)
    federation = build_federation(directory, [NodeSpec(ORIGIN, [LUZERN]), NodeSpec(DESTINATION, [KANTON])],
                                  schemas=SCHEMAS, delivery_toml=DELIVERY)  # fmt: skip
    for node in federation.nodes:
        path = federation.config_path(node.id)
        path.write_text(re.sub(r"^\[node\]\n", f"[node]\nworkers = {workers}\n", path.read_text(), count=1, flags=re.M))
    return federation


async def _start(federation, logs: Path, workers: int) -> NodeSet:
    nodes = await NodeSet(federation, logs).start()
    if workers > 1:
        # The local API answers once the first process listens; the primary says when all do.
        for node in federation.nodes:
            log_file = logs / f"{node.id}.log"
            await wait_until(lambda: f"node {node.id} ready" in log_file.read_text(errors="replace"), 60, interval=0.1,
                             what=f"{node.id} with all its workers")  # fmt: skip
    return nodes


async def run_workers(workdir: Path, *, runs: int, seconds: float, origin_seconds: float, concurrency: int, catalog,
                      warmup_seconds: float = 2.0) -> dict:  # fmt: skip
    base = workdir / "workers"
    federations = {n: _federation(base / f"w{n}" / "federation", n) for n in WORKERS}
    files = write_message_files(base / "messages", LUZERN, KANTON, catalog)
    sets: dict[int, NodeSet] = {}
    out: dict = {"concurrency": concurrency, "seconds": seconds, "origin_seconds": origin_seconds,
                 "full": {str(n): [] for n in WORKERS}, "origin_only": {str(n): [] for n in WORKERS}}  # fmt: skip
    try:
        for n in WORKERS:
            sets[n] = await _start(federations[n], base / f"w{n}" / "logs", n)
            warm = run_loadgen(_spec(federations[n], files, "warm", mode="closed", concurrency=concurrency, duration=warmup_seconds),
                               base / f"w{n}", "warm")  # fmt: skip
            await drained(federations[n], "warm", len(_accepted(warm)), 120)
        for run in range(runs):
            for n in WORKERS:
                federation, nodes, where = federations[n], sets[n], base / f"w{n}"
                # Origin hop alone.
                prefix = f"origin{run}"
                nodes.pause(DESTINATION)
                try:
                    cpu0 = nodes.cpu_seconds()
                    result = run_loadgen(_spec(federation, files, prefix, mode="closed", concurrency=concurrency,
                                               duration=origin_seconds), where, prefix)  # fmt: skip
                    cpu1 = nodes.cpu_seconds()
                finally:
                    nodes.resume(DESTINATION)
                accepted = _accepted(result)
                await drained(federation, prefix, len(accepted), 300)
                first = min(r[2] for r in result["records"])
                origin = {
                    "accepted_per_s": len(accepted) / (max(r[2] + r[3] for r in accepted) - first),
                    "hop1": latency_stats([r[3] for r in accepted]),
                    "origin_cpu_ms_per_msg": (cpu1[ORIGIN] - cpu0[ORIGIN]) * 1000 / max(1, len(accepted)),
                    "errors": sum(1 for r in result["records"] if r[4] != 202),
                }
                out["origin_only"][str(n)].append(origin)
                # Full load, end to end.
                prefix = f"full{run}"
                cpu0 = nodes.cpu_seconds()
                result = run_loadgen(_spec(federation, files, prefix, mode="closed", concurrency=concurrency, duration=seconds),
                                     where, prefix)  # fmt: skip
                accepted = _accepted(result)
                await drained(federation, prefix, len(accepted), 300)
                cpu1 = nodes.cpu_seconds()
                nodes.check_alive()
                events = timeline(federation, prefix)
                first = min(r[2] for r in result["records"])
                receipts = [events[r[0]]["receipt"] for r in accepted if "receipt" in events.get(r[0], {})]
                full = {
                    "accepted_per_s": len(accepted) / (max(r[2] + r[3] for r in accepted) - first),
                    "e2e_per_s": len(receipts) / (max(receipts) - first),
                    "hop1": latency_stats([r[3] for r in accepted]),
                    "e2e_latency": latency_stats([events[r[0]]["receipt"] - r[2] for r in accepted if "receipt" in events.get(r[0], {})]),
                    "cpu_ms_per_msg": {node: (cpu1[node] - cpu0[node]) * 1000 / max(1, len(accepted)) for node in cpu0},
                    "errors": sum(1 for r in result["records"] if r[4] != 202),
                }
                out["full"][str(n)].append(full)
                log(f"workers={n} run {run + 1}: origin alone {origin['accepted_per_s']:.0f} accepted/s "
                    f"({origin['origin_cpu_ms_per_msg']:.2f} CPU ms/msg); full load {full['accepted_per_s']:.0f} accepted/s, "
                    f"{full['e2e_per_s']:.0f} delivered/s, hop1 p99 {full['hop1']['p99']:.1f} ms")  # fmt: skip
    finally:
        for nodes in sets.values():
            nodes.stop()
    return out
