"""B1 — small messages: ~20 KB eCH-0020 through origin node → destination node (two processes).

The load generator is its own process (``bench.loadgen``) and talks to the origin's local
REST API like register software would. Three phases, each repeated ``runs`` times:

1. **full load**: closed loop (``concurrency`` requests in flight). Reports accepted
   messages/s (HTTP 202), end-to-end messages/s (receipt 100 back at the origin), latencies
   and the CPU each node process spent per message (psutil, before/after, including the
   time to drain the forwarder's queue).
2. **50 % load**: open loop at half the full-load end-to-end rate. Latency per hop:
   hop 1 = submit → 202 (measured by the load generator); hop 2 = the origin's
   ``forwarding`` event → its ``receipt`` event (the destination has committed the message
   before it answers); end to end = scheduled submit → ``receipt`` event. Event times come
   from the origin's own timeline, read from its store read-only after the run (no status
   polling during the run, so the measurement does not load the node).
3. **origin hop alone**: the destination process is paused (SIGSTOP), so the origin's
   forwarder stalls on its first connections and the origin does only origin stages. The
   window stays under the forwarder's 10 s connect timeout. Then the destination is resumed
   and the backlog drains (forward + destination stages only).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .common import (
    DESTINATION, KANTON, LUZERN, ORIGIN, NodeSet, latency_stats, log, make_federation, query, run_loadgen, store_db,
    summarize, wait_until,
)  # fmt: skip
from .messages import write_message_files

DELIVERY = "retry_base_seconds = 0.5\nretry_max_seconds = 5.0"


def _spec(federation, files: dict, prefix: str, **load) -> dict:
    return {
        "url": federation.api_url(ORIGIN) + "/api/v1/messages",
        "token": federation.tokens[LUZERN],
        "ca": str(federation.ca_file),
        "envelope_template": files["envelope_template"],
        "payload": files["payload"],
        "payload_name": "data.xml",
        "id_prefix": prefix,
        **load,
    }


def timeline(federation, prefix: str) -> dict[str, dict[str, float]]:
    """messageId → {event kind: time} from the origin's store (first occurrence of each kind)."""
    rows = query(
        store_db(federation, ORIGIN),
        "SELECT message_id, kind, time FROM events WHERE sender=? AND message_id LIKE ? "
        "AND kind IN ('accepted','forwarding','receipt') ORDER BY id",
        (LUZERN, prefix + "-%"),
    )
    out: dict[str, dict[str, float]] = {}
    for message_id, kind, at in rows:
        out.setdefault(message_id, {}).setdefault(kind, at)
    return out


def states(federation, prefix: str) -> dict[str, int]:
    rows = query(store_db(federation, ORIGIN), "SELECT state, COUNT(*) FROM outgoing WHERE sender=? AND message_id LIKE ? GROUP BY state",
                 (LUZERN, prefix + "-%"))  # fmt: skip
    return dict(rows)


async def drained(federation, prefix: str, expected: int, timeout: float) -> float:
    def done() -> bool:
        counts = states(federation, prefix)
        return sum(counts.values()) >= expected and counts.get("queued", 0) == 0

    return await wait_until(done, timeout, interval=0.1, what=f"{expected} messages {prefix} to settle")


def _accepted(result: dict) -> list[list]:
    accepted = [r for r in result["records"] if r[4] == 202]
    if not accepted:
        raise RuntimeError(f"no message was accepted; first answers: {result.get('errors')}")
    return accepted


def _errors(result: dict) -> dict:
    out: dict = {}
    for r in result["records"]:
        if r[4] != 202:
            out[str(r[4])] = out.get(str(r[4]), 0) + 1
    return out


async def run_b1(workdir: Path, *, runs: int, full_seconds: float, half_seconds: float, origin_seconds: float,
                 concurrency: int, catalog, warmup_seconds: float = 2.0) -> dict:  # fmt: skip
    base = workdir / "b1"
    federation = make_federation(base / "federation", delivery_toml=DELIVERY)
    files = write_message_files(base / "messages", LUZERN, KANTON, catalog)
    nodes = await NodeSet(federation, base / "logs").start()
    out: dict = {"message": files, "concurrency": concurrency, "full": [], "half": [], "origin_only": []}
    try:
        log("B1 warm-up")
        warm = run_loadgen(_spec(federation, files, "warm", mode="closed", concurrency=concurrency, duration=warmup_seconds), base, "warm")
        await drained(federation, "warm", len(_accepted(warm)), 120)

        for run in range(runs):
            prefix = f"full{run}"
            cpu0 = nodes.cpu_seconds()
            result = run_loadgen(_spec(federation, files, prefix, mode="closed", concurrency=concurrency, duration=full_seconds), base, prefix)
            accepted = _accepted(result)
            done_at = await drained(federation, prefix, len(accepted), 300)
            cpu1 = nodes.cpu_seconds()
            nodes.check_alive()
            events = timeline(federation, prefix)
            first_start = min(r[2] for r in result["records"])
            receipts = [events[r[0]]["receipt"] for r in accepted if "receipt" in events.get(r[0], {})]
            e2e_seconds = max(receipts) - first_start
            submit_window = max(r[2] + r[3] for r in accepted) - first_start
            delivered = states(federation, prefix).get("delivered", 0)
            figures = {
                "submitted": len(result["records"]),
                "accepted": len(accepted),
                "delivered": delivered,
                "errors": _errors(result),
                "accepted_per_s": len(accepted) / submit_window,
                "e2e_per_s": len(receipts) / e2e_seconds,
                "hop1": latency_stats([r[3] for r in accepted]),
                "e2e_latency": latency_stats([events[r[0]]["receipt"] - r[2] for r in accepted if "receipt" in events.get(r[0], {})]),
                "cpu_ms_per_msg": {node: (cpu1[node] - cpu0[node]) * 1000 / max(1, len(accepted)) for node in cpu0},
                "loadgen_cpu_ms_per_msg": result["cpu_seconds"] * 1000 / max(1, len(result["records"])),
                "drain_after_load_s": done_at - result["stopped"],
            }
            out["full"].append(figures)
            log(f"B1 full load run {run + 1}: {figures['accepted_per_s']:.0f} accepted/s, {figures['e2e_per_s']:.0f} delivered/s, "
                f"hop1 p99 {figures['hop1']['p99']:.1f} ms, CPU ms/msg {figures['cpu_ms_per_msg']}")  # fmt: skip

        full_e2e = summarize([f["e2e_per_s"] for f in out["full"]])["median"]
        rate = max(1.0, 0.5 * full_e2e)
        out["half_rate"] = rate
        for run in range(runs):
            prefix = f"half{run}"
            cpu0 = nodes.cpu_seconds()
            result = run_loadgen(_spec(federation, files, prefix, mode="open", rate=rate, duration=half_seconds), base, prefix)
            accepted = _accepted(result)
            await drained(federation, prefix, len(accepted), 300)
            cpu1 = nodes.cpu_seconds()
            events = timeline(federation, prefix)
            complete = [r for r in accepted if {"forwarding", "receipt"} <= set(events.get(r[0], {}))]
            figures = {
                "offered_per_s": rate,
                "submitted": len(result["records"]),
                "accepted": len(accepted),
                "errors": _errors(result),
                "hop1": latency_stats([r[3] for r in accepted]),
                "queue": latency_stats([events[r[0]]["forwarding"] - events[r[0]]["accepted"] for r in complete if "accepted" in events[r[0]]]),
                "hop2": latency_stats([events[r[0]]["receipt"] - events[r[0]]["forwarding"] for r in complete]),
                "e2e_latency": latency_stats([events[r[0]]["receipt"] - r[1] for r in complete]),
                "cpu_ms_per_msg": {node: (cpu1[node] - cpu0[node]) * 1000 / max(1, len(accepted)) for node in cpu0},
            }
            out["half"].append(figures)
            log(f"B1 50% load run {run + 1} at {rate:.0f}/s: hop1 p99 {figures['hop1']['p99']:.1f} ms, hop2 p99 "
                f"{figures['hop2']['p99']:.1f} ms, e2e p99 {figures['e2e_latency']['p99']:.1f} ms")  # fmt: skip

        for run in range(runs):
            prefix = f"origin{run}"
            nodes.pause(DESTINATION)
            try:
                cpu0 = nodes.cpu_seconds()
                result = run_loadgen(_spec(federation, files, prefix, mode="closed", concurrency=concurrency, duration=origin_seconds),
                                     base, prefix)  # fmt: skip
                cpu1 = nodes.cpu_seconds()
            finally:
                resumed = time.time()
                nodes.resume(DESTINATION)
            accepted = _accepted(result)
            done_at = await drained(federation, prefix, len(accepted), 300)
            first_start = min(r[2] for r in result["records"])
            window = max(r[2] + r[3] for r in accepted) - first_start
            figures = {
                "accepted": len(accepted),
                "errors": _errors(result),
                "accepted_per_s": len(accepted) / window,
                "hop1": latency_stats([r[3] for r in accepted]),
                "origin_cpu_ms_per_msg": (cpu1[ORIGIN] - cpu0[ORIGIN]) * 1000 / max(1, len(accepted)),
                "drain_per_s": len(accepted) / (done_at - resumed),
            }
            out["origin_only"].append(figures)
            log(f"B1 origin hop alone run {run + 1}: {figures['accepted_per_s']:.0f} accepted/s, "
                f"origin CPU {figures['origin_cpu_ms_per_msg']:.2f} ms/msg; backlog drained at {figures['drain_per_s']:.0f}/s")  # fmt: skip
        blobs = federation.config_path(DESTINATION).parent / "store" / "blobs"
        out["destination_blob_files"] = sum(1 for _ in os.scandir(blobs)) if blobs.is_dir() else None
    finally:
        nodes.stop()
    return out
