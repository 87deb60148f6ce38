"""Group commit, before and after in one run: B1 full load with ``[store] commit = "each"`` and ``"group"``.

Two federations (origin → destination, both as in B1) differ only in the ``[store] commit``
setting of both nodes. Both are started once; the runs alternate between them (each, group,
each, group …) so that other load on the machine falls on both alike. A run is a closed
loop of ``concurrency`` requests for ``seconds``, then the wait until every accepted message
has its receipt at the origin.

``each`` is the node as it was before group commit: every durable write synced on its own,
in line on the event loop (SQLite ``synchronous=FULL`` in every store COMMIT, one audit
transaction per message, blob and directory fsyncs in line). ``group`` shares them
(``gateway/groupcommit.py``).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from .b1_small import DELIVERY, _accepted, _spec, drained, timeline
from .common import DESTINATION, KANTON, LUZERN, ORIGIN, NodeSet, latency_stats, log, run_loadgen
from .messages import write_message_files

MODES = ("each", "group")


def _federation(directory: Path, commit: str):
    import shutil

    from gateway.federation import NodeSpec, build_federation

    from .common import SCHEMAS

    if directory.exists():
        shutil.rmtree(directory)
    store = f'[store]\ncommit = "{commit}"'
    return build_federation(
        directory, [NodeSpec(ORIGIN, [LUZERN], extra_toml=store), NodeSpec(DESTINATION, [KANTON], extra_toml=store)],
        schemas=SCHEMAS, delivery_toml=DELIVERY,
    )  # fmt: skip


async def run_commit(workdir: Path, *, runs: int, seconds: float, concurrency: int, catalog, warmup_seconds: float = 2.0) -> dict:
    base = workdir / "commit"
    federations = {mode: _federation(base / mode / "federation", mode) for mode in MODES}
    files = write_message_files(base / "messages", LUZERN, KANTON, catalog)
    sets = {}
    out: dict = {"concurrency": concurrency, "seconds": seconds, "runs": {mode: [] for mode in MODES}}
    try:
        for mode in MODES:
            sets[mode] = await NodeSet(federations[mode], base / mode / "logs").start()
            warm = run_loadgen(_spec(federations[mode], files, "warm", mode="closed", concurrency=concurrency,
                                     duration=warmup_seconds), base / mode, "warm")  # fmt: skip
            await drained(federations[mode], "warm", len(_accepted(warm)), 120)
        for run in range(runs):
            for mode in MODES:
                federation, nodes, prefix = federations[mode], sets[mode], f"{mode}{run}"
                cpu0 = nodes.cpu_seconds()
                result = run_loadgen(_spec(federation, files, prefix, mode="closed", concurrency=concurrency, duration=seconds),
                                     base / mode, prefix)  # fmt: skip
                accepted = _accepted(result)
                await drained(federation, prefix, len(accepted), 300)
                cpu1 = nodes.cpu_seconds()
                events = timeline(federation, prefix)
                first = min(r[2] for r in result["records"])
                receipts = [events[r[0]]["receipt"] for r in accepted if "receipt" in events.get(r[0], {})]
                window = max(r[2] + r[3] for r in accepted) - first
                figures = {
                    "accepted_per_s": len(accepted) / window,
                    "e2e_per_s": len(receipts) / (max(receipts) - first),
                    "hop1": latency_stats([r[3] for r in accepted]),
                    "cpu_ms_per_msg": {node: (cpu1[node] - cpu0[node]) * 1000 / max(1, len(accepted)) for node in cpu0},
                    "errors": sum(1 for r in result["records"] if r[4] != 202),
                }
                out["runs"][mode].append(figures)
                log(f"commit={mode} run {run + 1}: {figures['accepted_per_s']:.0f} accepted/s, {figures['e2e_per_s']:.0f} "
                    f"delivered/s, hop1 p50 {figures['hop1']['p50']:.1f} ms p99 {figures['hop1']['p99']:.1f} ms")  # fmt: skip
        # Latency at a moderate load both modes carry: an open loop at half the slower mode's full-load delivery rate.
        rate = max(1.0, 0.5 * min(statistics.median(r["e2e_per_s"] for r in out["runs"][mode]) for mode in MODES))
        out["half_rate"] = rate
        out["half"] = {mode: [] for mode in MODES}
        for run in range(runs):
            for mode in MODES:
                federation, prefix = federations[mode], f"{mode}-half{run}"
                result = run_loadgen(_spec(federation, files, prefix, mode="open", rate=rate, duration=seconds), base / mode, prefix)
                accepted = _accepted(result)
                await drained(federation, prefix, len(accepted), 300)
                events = timeline(federation, prefix)
                complete = [r for r in accepted if "receipt" in events.get(r[0], {})]
                figures = {"hop1": latency_stats([r[3] for r in accepted]),
                           "e2e_latency": latency_stats([events[r[0]]["receipt"] - r[1] for r in complete])}  # fmt: skip
                out["half"][mode].append(figures)
                log(f"commit={mode} at {rate:.0f}/s run {run + 1}: hop1 p99 {figures['hop1']['p99']:.1f} ms, "
                    f"end to end p99 {figures['e2e_latency']['p99']:.1f} ms")  # fmt: skip
    finally:
        for nodes in sets.values():
            nodes.stop()
    return out
