"""B3 — the sedex folder interface: pairs/s outbox → remote inbox, and pickup latency.

Both participants have folders (``build_federation(folders=True)``); both nodes run as
processes with their folder tasks. The benchmark plays the register software: it writes
``data_<id>.xml`` and then the envelope under a temporary name (``.envl_<id>.xml.tmp``,
ignored by the interface) and renames it to ``envl_<id>.xml`` — the rename is the
envelope's appearance, and its time is taken right after it.

* **throughput**: a burst of pairs dropped as fast as the writer can, timed until the last
  ``envl_<id>.xml`` appears in the recipient's ``inbox/`` (checked every 50 ms). The same
  federation then takes the same number of messages over the REST API (load generator,
  closed loop), timed the same way to the same remote inbox, so the ratio compares like
  with like (both include the destination writing the inbox pair).
* **pickup latency**: pairs dropped at a steady rate (half the burst throughput); latency
  = envelope rename → the origin's ``accepted`` event (its timeline, read from its store
  read-only afterwards). The burst's latencies are reported too: they include waiting
  behind the rest of the burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

from .common import (
    KANTON, LUZERN, ORIGIN, NodeSet, latency_stats, log, make_federation, query, run_loadgen, store_db,
)  # fmt: skip
from .messages import envelope_for, write_message_files

DELIVERY = "retry_base_seconds = 0.5\nretry_max_seconds = 5.0"


def drop(outbox: Path, template: bytes, payload: bytes, message_id: str) -> float:
    (outbox / f"data_{message_id}.xml").write_bytes(payload)
    temporary = outbox / f".envl_{message_id}.xml.tmp"
    temporary.write_bytes(envelope_for(template, message_id))
    os.rename(temporary, outbox / f"envl_{message_id}.xml")
    return time.time()


async def wait_inbox(inbox: Path, prefix: str, expected: int, timeout: float) -> dict[str, float]:
    """messageId → first time its envelope was seen in ``inbox`` (50 ms polling)."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < expected:
        now = time.time()
        with os.scandir(inbox) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(f"envl_{prefix}-") and name.endswith(".xml"):
                    seen.setdefault(name[5:-4], now)
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(seen)} of {expected} pairs {prefix} reached the remote inbox")
        await asyncio.sleep(0.05)
    return seen


def accepted_times(federation, prefix: str) -> dict[str, float]:
    rows = query(store_db(federation, ORIGIN),
                 "SELECT message_id, MIN(time) FROM events WHERE sender=? AND message_id LIKE ? AND kind='accepted' GROUP BY message_id",
                 (LUZERN, prefix + "-%"))  # fmt: skip
    return dict(rows)


def tidy(folder: Path, prefix: str) -> None:
    """Remove a finished run's files (a register would have fetched them) so scans stay small."""
    for sub in ("inbox", "processed", "receipts"):
        with os.scandir(folder / sub) as entries:
            for entry in entries:
                # The node may still be writing a receipt (a temporary file it renames): skip
                # those, and a file the node moved meanwhile is simply gone already.
                if prefix in entry.name and not entry.name.startswith("."):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)


async def run_b3(workdir: Path, *, runs: int, burst: int, paced_seconds: float, concurrency: int, catalog, warmup: int = 10) -> dict:
    base = workdir / "b3"
    federation = make_federation(base / "federation", folders=True, delivery_toml=DELIVERY)
    files = write_message_files(base / "messages", LUZERN, KANTON, catalog)
    template, payload = Path(files["envelope_template"]).read_bytes(), Path(files["payload"]).read_bytes()
    nodes = await NodeSet(federation, base / "logs").start()
    outbox = federation.folder(LUZERN) / "outbox"
    inbox = federation.folder(KANTON) / "inbox"
    if not outbox.is_dir() or not inbox.is_dir():
        raise RuntimeError("the nodes' folder interface did not create the participants' folders")
    out: dict = {"burst": burst, "folder": [], "rest": [], "paced": []}
    try:
        # Warm-up through both paths.
        for i in range(warmup):
            drop(outbox, template, payload, f"fwarm-{i}")
        await wait_inbox(inbox, "fwarm", warmup, 120)
        run_loadgen({"url": federation.api_url(ORIGIN) + "/api/v1/messages", "token": federation.tokens[LUZERN],
                     "ca": str(federation.ca_file), "envelope_template": files["envelope_template"], "payload": files["payload"],
                     "payload_name": "data.xml", "id_prefix": "rwarm", "mode": "closed", "concurrency": concurrency,
                     "duration": 60, "count": warmup}, base, "rwarm")  # fmt: skip
        await wait_inbox(inbox, "rwarm", warmup, 120)

        for run in range(runs):
            prefix = f"fburst{run}"
            drops = {}
            cpu0 = nodes.cpu_seconds()
            for i in range(burst):
                message_id = f"{prefix}-{i:06d}"
                drops[message_id] = drop(outbox, template, payload, message_id)
            first = min(drops.values())
            arrived = await wait_inbox(inbox, prefix, burst, 600)
            cpu1 = nodes.cpu_seconds()
            accepted = accepted_times(federation, prefix)
            figures = {
                "pairs_per_s": burst / (max(arrived.values()) - first),
                "drop_seconds": max(drops.values()) - first,
                "pickup_under_burst": latency_stats([accepted[m] - t for m, t in drops.items() if m in accepted]),
                "cpu_ms_per_pair": {node: (cpu1[node] - cpu0[node]) * 1000 / burst for node in cpu0},
            }
            out["folder"].append(figures)
            tidy(federation.folder(LUZERN), prefix)
            tidy(federation.folder(KANTON), prefix)

            prefix = f"rburst{run}"
            spec = {"url": federation.api_url(ORIGIN) + "/api/v1/messages", "token": federation.tokens[LUZERN],
                    "ca": str(federation.ca_file), "envelope_template": files["envelope_template"], "payload": files["payload"],
                    "payload_name": "data.xml", "id_prefix": prefix, "mode": "closed", "concurrency": concurrency,
                    "duration": 600, "count": burst}  # fmt: skip
            cpu0 = nodes.cpu_seconds()
            result = run_loadgen(spec, base, prefix)
            ok = [r for r in result["records"] if r[4] == 202]
            if len(ok) != burst:
                raise RuntimeError(f"REST path: only {len(ok)} of {burst} accepted; {result.get('errors')}")
            arrived = await wait_inbox(inbox, prefix, burst, 600)
            cpu1 = nodes.cpu_seconds()
            first = min(r[2] for r in result["records"])
            rest = {"pairs_per_s": burst / (max(arrived.values()) - first),
                    "cpu_ms_per_pair": {node: (cpu1[node] - cpu0[node]) * 1000 / burst for node in cpu0}}  # fmt: skip
            out["rest"].append(rest)
            tidy(federation.folder(LUZERN), prefix)
            tidy(federation.folder(KANTON), prefix)
            log(f"B3 run {run + 1}: folder {figures['pairs_per_s']:.0f} pairs/s, REST {rest['pairs_per_s']:.0f} pairs/s to the "
                f"remote inbox; pickup under burst p99 {figures['pickup_under_burst']['p99']:.0f} ms")  # fmt: skip

        folder_rate = sorted(f["pairs_per_s"] for f in out["folder"])[len(out["folder"]) // 2]
        rate = max(1.0, folder_rate / 2)
        out["paced_rate"] = rate
        for run in range(runs):
            prefix = f"fpaced{run}"
            drops = {}
            count = max(5, int(rate * paced_seconds))
            start = time.perf_counter()
            for i in range(count):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                message_id = f"{prefix}-{i:06d}"
                drops[message_id] = drop(outbox, template, payload, message_id)
            await wait_inbox(inbox, prefix, count, 600)
            accepted = accepted_times(federation, prefix)
            figures = {"rate": rate, "pairs": count, "pickup": latency_stats([accepted[m] - t for m, t in drops.items() if m in accepted])}
            out["paced"].append(figures)
            tidy(federation.folder(LUZERN), prefix)
            tidy(federation.folder(KANTON), prefix)
            log(f"B3 paced run {run + 1} at {rate:.0f} pairs/s: pickup p50 {figures['pickup']['p50']:.0f} ms, "
                f"p99 {figures['pickup']['p99']:.0f} ms, max {figures['pickup']['max']:.0f} ms")  # fmt: skip
    finally:
        nodes.stop()
    return out
