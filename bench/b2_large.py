"""B2 — large payloads through two node processes: MB/s end to end and peak RSS per node.

Each run starts a fresh pair of nodes (so ``VmHWM``, the kernel's record of a process's
peak resident set, belongs to that run alone), submits one payload of pseudo-random bytes
(incompressible, on an ``any`` route: no XML check, like a zip or PDF attachment) by
streaming it from a file over the local REST API, waits for the receipt at the origin, and
then fetches the decrypted payload from the destination's local API and compares its
SHA-256 with the original. MB = 10^6 bytes.

Figures per run: end to end (submit start → receipt event at the origin), the origin hop
(submit start → 202), the transfer (origin's ``forwarding`` event → ``receipt`` event), the
recipient's fetch (decrypt + stream), and each node's VmHWM after the fetch.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

from gateway.client import LocalApiClient

from .common import (
    DESTINATION, KANTON, LUZERN, ORIGIN, NodeSet, log, make_federation, query, store_db, wait_until,
)  # fmt: skip
from .messages import envelope_for, envelope_template

MB = 1_000_000
BLOCK = 1024 * 1024


def make_payload(path: Path, size: int) -> str:
    """Write ``size`` pseudo-random bytes (a rotating 1 MiB random block); return the SHA-256."""
    digest = hashlib.sha256()
    block = os.urandom(BLOCK)
    with open(path, "wb") as handle:
        written, i = 0, 0
        while written < size:
            chunk = (block[i % BLOCK:] + block[: i % BLOCK])[: size - written]
            handle.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            i += 4099
    return digest.hexdigest()


def needed_bytes(size: int) -> int:
    # the source file, the origin's ciphertext blob, the destination's blob, plus margin
    return int(size * 3.2) + 512 * 1024**2


class _HashSink:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.size += len(chunk)


def _rss_now_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def one_run(workdir: Path, source: Path, digest: str, size: int, tag: str) -> dict:
    federation = make_federation(workdir / f"federation-{tag}", route_payload={KANTON: "any"},
                                 delivery_toml="retry_base_seconds = 0.5\nretry_max_seconds = 5.0")  # fmt: skip
    nodes = await NodeSet(federation, workdir / "logs").start()
    try:
        idle_rss = {node: _rss_now_mb(p.pid) for node, p in nodes.processes.items()}
        message_id = f"large-{tag}"
        envelope = envelope_for(envelope_template(LUZERN, KANTON), message_id)
        cpu0 = nodes.cpu_seconds()
        async with LocalApiClient(federation.api_url(ORIGIN), federation.tokens[LUZERN], federation.ca_file) as api:
            started = time.time()
            with open(source, "rb") as payload:
                status, body = await api.submit(envelope, payload, "data.bin")
            accepted = time.time()
        if status != 202:
            raise RuntimeError(f"large payload refused: HTTP {status} {body}")
        db = store_db(federation, ORIGIN)

        def settled() -> bool:
            rows = query(db, "SELECT state FROM outgoing WHERE sender=? AND message_id=?", (LUZERN, message_id))
            return bool(rows) and rows[0][0] != "queued"

        await wait_until(settled, timeout=max(300, size / MB * 2), interval=0.1, what=f"{message_id} to settle")
        events = dict(query(db, "SELECT kind, time FROM events WHERE sender=? AND message_id=? AND kind IN ('forwarding','receipt') "
                                "ORDER BY id DESC", (LUZERN, message_id)))  # fmt: skip
        state = query(db, "SELECT state FROM outgoing WHERE sender=? AND message_id=?", (LUZERN, message_id))[0][0]
        if state != "delivered":
            raise RuntimeError(f"large payload ended {state}")
        sink = _HashSink()
        async with LocalApiClient(federation.api_url(DESTINATION), federation.tokens[KANTON], federation.ca_file) as api:
            fetch_started = time.time()
            await api.payload(KANTON, LUZERN, message_id, sink=sink)
            fetched = time.time()
        cpu1 = nodes.cpu_seconds()
        peaks = nodes.peak_rss_mb()
        return {
            "size_mb": size / MB,
            "identical": sink.digest.hexdigest() == digest and sink.size == size,
            "e2e_mb_s": size / MB / (events["receipt"] - started),
            "origin_hop_mb_s": size / MB / (accepted - started),
            "transfer_mb_s": size / MB / (events["receipt"] - events["forwarding"]),
            "fetch_mb_s": size / MB / (fetched - fetch_started),
            "e2e_seconds": events["receipt"] - started,
            "peak_rss_mb": peaks,
            "idle_rss_mb": idle_rss,
            "cpu_seconds": {node: cpu1[node] - cpu0[node] for node in cpu0},
        }
    finally:
        nodes.stop()
        shutil.rmtree(workdir / f"federation-{tag}", ignore_errors=True)


async def run_b2(workdir: Path, *, sizes_mb: list[int], runs: int) -> dict:
    base = workdir / "b2"
    base.mkdir(parents=True, exist_ok=True)
    out: dict = {"sizes": {}, "skipped": {}}
    for size_mb in sizes_mb:
        size = size_mb * MB
        free = shutil.disk_usage(base).free
        if free < needed_bytes(size):
            note = (f"skipped: {free / 1e9:.1f} GB free in {base}, {needed_bytes(size) / 1e9:.1f} GB needed "
                    f"(source file + one ciphertext per node + margin)")  # fmt: skip
            out["skipped"][size_mb] = note
            log(f"B2 {size_mb} MB {note}")
            continue
        source = base / f"payload-{size_mb}MB.bin"
        digest = make_payload(source, size)
        results = []
        try:
            for run in range(runs):
                result = await one_run(base, source, digest, size, f"{size_mb}mb-{run}")
                results.append(result)
                log(f"B2 {size_mb} MB run {run + 1}: {result['e2e_mb_s']:.0f} MB/s end to end, peak RSS "
                    + ", ".join(f"{k} {v:.0f} MB" for k, v in result["peak_rss_mb"].items())
                    + ("" if result["identical"] else " — FETCHED PAYLOAD DIFFERS"))  # fmt: skip
        finally:
            source.unlink(missing_ok=True)
        out["sizes"][size_mb] = results
    return out
