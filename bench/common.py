"""Shared pieces of the benchmark suite: statistics, the machine, node processes, the stores.

Nothing here changes how a node works: nodes run as ``drehscheibe node run`` processes
(``gateway.demo.start_node``) from configurations written by ``gateway.federation``; the
benchmark only reads their stores, read-only, to get the nodes' own timestamps.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import signal
import sqlite3
import ssl
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psutil

from gateway.demo import start_node, wait_ready
from gateway.federation import DEFAULT_SCHEMAS, Federation, NodeSpec, build_federation

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = DEFAULT_SCHEMAS.resolve()
SAMPLES = (REPO / ".." / "shared" / "ech" / "samples").resolve()
LUZERN = "1-1061-1"  # Stadt Luzern: the sending participant, on the origin node
KANTON = "2-LU-1"  # the cantonal register office: the recipient, on the destination node
ORIGIN, DESTINATION = "node-luzern", "node-kanton"


# ------------------------------------------------------------------------------ statistics


def summarize(values: list[float]) -> dict:
    """Median, min and max of a figure over the runs (all values kept for the record)."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "runs": 0, "values": []}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values), "values": values}


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100): a value that was actually observed."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def latency_stats(seconds: list[float]) -> dict:
    """p50 / p99 / max in milliseconds, plus the sample count."""
    ms = [s * 1000 for s in seconds]
    return {"p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": max(ms) if ms else None, "n": len(ms)}


# ---------------------------------------------------------------------------------- machine


def machine_info() -> dict:
    import aiohttp
    import cryptography
    import joserfc
    import lxml.etree as etree
    from cryptography.hazmat.backends.openssl.backend import backend

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu_flags = next((l.split(":", 1)[1].split() for l in text.splitlines() if l.startswith("flags")), [])
        flags = ", ".join(f for f in ("aes", "avx2", "sha_ni", "vaes", "avx512f") if f in cpu_flags)
    except (OSError, StopIteration):
        pass
    return {
        "cpu": model,
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "ram_gb": psutil.virtual_memory().total / 1024**3,
        "os": f"{platform.system()} {platform.release()}",
        "virtualised": _hypervisor(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "cryptography_openssl": backend.openssl_version_text(),
        "libraries": f"aiohttp {aiohttp.__version__}, cryptography {cryptography.__version__}, "
        f"joserfc {getattr(joserfc, '__version__', '?')}, lxml {etree.__version__} "
        f"(libxml2 {'.'.join(map(str, etree.LIBXML_VERSION))}), psutil {psutil.__version__}",
        "fsync_ms": fsync_latency_ms(),
        "file_create_us": file_create_us(),
    }


def _hypervisor() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Hypervisor vendor:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "no"


def fsync_latency_ms(directory: Path | None = None, count: int = 200) -> float:
    """Median time of one small write + fsync in the benchmark's work directory."""
    directory = Path(directory or os.environ.get("BENCH_DIR") or "/tmp")
    path = directory / f".fsync-probe-{os.getpid()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    times = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            os.write(fd, b"x" * 128)
            os.fsync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return statistics.median(times) * 1000


def file_create_us(batches: int = 5, per_batch: int = 100) -> dict:
    """CPU µs to create (and close) one new empty file: median, min and max over batches.

    The node creates one blob file per message at each hop, so this cost is part of every
    hop; it is measured here because it depends on the machine's file system, not on
    Drehscheibe. On virtual machines it can vary a lot from one minute to the next.
    """
    import tempfile
    import uuid

    folder = Path(tempfile.mkdtemp(prefix="fcreate-", dir=os.environ.get("BENCH_DIR")))
    results = []
    try:
        for _ in range(batches):
            names = [folder / uuid.uuid4().hex for _ in range(per_batch)]
            start = time.process_time()
            for name in names:
                open(name, "xb").close()
            results.append((time.process_time() - start) / per_batch * 1e6)
            for name in names:
                name.unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return summarize(results)


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not commit:
        return "unknown"
    if dirty:
        changed = len(dirty.splitlines())
        return f"{commit} + uncommitted changes in {changed} tracked file(s)"
    return commit


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ------------------------------------------------------------------------------- federations


def make_federation(directory: Path, *, folders: bool = False, route_payload: dict | None = None,
                    delivery_toml: str = "", policies: Path | None = None) -> Federation:  # fmt: skip
    """Two nodes on loopback: Stadt Luzern's (origin) and the canton's (destination)."""
    if directory.exists():
        shutil.rmtree(directory)
    return build_federation(
        directory, [NodeSpec(ORIGIN, [LUZERN]), NodeSpec(DESTINATION, [KANTON])],
        schemas=SCHEMAS, route_payload=route_payload, delivery_toml=delivery_toml, policies=policies, folders=folders,
    )  # fmt: skip


def store_db(federation: Federation, node_id: str) -> Path:
    return federation.config_path(node_id).parent / "store" / "messages.db"


def query(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    """Read a node's store read-only (WAL allows this while the node runs)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


@dataclass
class NodeSet:
    """The node processes of one federation, with their psutil handles."""

    federation: Federation
    log_dir: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    async def start(self, *node_ids: str) -> NodeSet:
        for node_id in node_ids or [n.id for n in self.federation.nodes]:
            self.processes[node_id] = start_node(self.federation, node_id, self.log_dir)
        for node_id in node_ids or [n.id for n in self.federation.nodes]:
            await wait_ready(self.federation, node_id, timeout=60, process=self.processes[node_id])
        return self

    def cpu_seconds(self) -> dict[str, float]:
        """User+system CPU of each node, its worker processes ([node] workers > 1) included."""
        out = {}
        for node_id, process in self.processes.items():
            parent = psutil.Process(process.pid)
            out[node_id] = 0.0
            for each in (parent, *parent.children(recursive=True)):
                try:
                    times = each.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                out[node_id] += times.user + times.system
        return out

    def peak_rss_mb(self) -> dict[str, float]:
        """VmHWM: the highest resident set size each node process has had since it started."""
        out = {}
        for node_id, process in self.processes.items():
            with open(f"/proc/{process.pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        out[node_id] = int(line.split()[1]) / 1024
        return out

    def pause(self, node_id: str) -> None:
        """SIGSTOP the node's processes (its workers first, so none takes over the primary's share)."""
        for pid in [*self._workers(node_id), self.processes[node_id].pid]:
            os.kill(pid, signal.SIGSTOP)

    def resume(self, node_id: str) -> None:
        for pid in [self.processes[node_id].pid, *self._workers(node_id)]:
            os.kill(pid, signal.SIGCONT)

    def _workers(self, node_id: str) -> list[int]:
        return [child.pid for child in psutil.Process(self.processes[node_id].pid).children()]

    def check_alive(self) -> None:
        for node_id, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"node {node_id} exited with code {process.returncode}; see {self.log_dir / (node_id + '.log')}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


class ForeignLoad:
    """Measures the CPU that processes outside this benchmark use while it runs.

    Other work on the machine (a test suite, a build) takes cores from the nodes and makes
    the figures worse; the report states how much there was, per section, so a noisy run
    can be recognised. Samples every second in a thread; only reads /proc via psutil.
    """

    def __init__(self, interval: float = 1.0) -> None:
        import threading

        self.interval = interval
        self.section = "setup"
        self.cpu_by_section: dict[str, float] = {}
        self.wall_by_section: dict[str, float] = {}
        self._last: dict[int, float] = {}
        self._started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="foreign-load", daemon=True)

    def start(self) -> ForeignLoad:
        self._sample(initial=True)
        self._thread.start()
        return self

    def enter(self, section: str) -> None:
        self.section = section

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(timeout=5)
        return {
            section: {"cpu_seconds": cpu, "wall_seconds": self.wall_by_section.get(section, 0.0),
                      "cores_busy": cpu / self.wall_by_section[section] if self.wall_by_section.get(section) else 0.0}
            for section, cpu in self.cpu_by_section.items()
        }  # fmt: skip

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            section = self.section
            self.wall_by_section[section] = self.wall_by_section.get(section, 0.0) + (now - last)
            last = now
            self._sample(section=section)

    def _sample(self, initial: bool = False, section: str = "") -> None:
        me = psutil.Process()
        own = {me.pid} | {c.pid for c in me.children(recursive=True)}
        seen: dict[int, float] = {}
        total = 0.0
        for process in psutil.process_iter(["pid", "create_time"]):
            pid = process.info["pid"]
            if pid in own:
                continue
            try:
                times = process.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            cpu = times.user + times.system
            seen[pid] = cpu
            if initial:
                continue
            before = self._last.get(pid)
            if before is None:
                # A process that appeared since the last sample: count what it used since the start.
                before = 0.0 if (process.info["create_time"] or 0) >= self._started else cpu
            total += max(0.0, cpu - before)
        self._last = seen
        if not initial:
            self.cpu_by_section[section] = self.cpu_by_section.get(section, 0.0) + total


def run_loadgen(spec: dict, workdir: Path, name: str) -> dict:
    """Run the load generator as its own process (``python -m bench.loadgen``) and read its result."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, result_path = workdir / f"{name}.spec.json", workdir / f"{name}.result.json"
    spec_path.write_text(json.dumps(spec))
    completed = subprocess.run([sys.executable, "-m", "bench.loadgen", str(spec_path), str(result_path)], cwd=REPO,
                               capture_output=True, text=True, timeout=spec["duration"] + 300)  # fmt: skip
    if completed.returncode != 0:
        raise RuntimeError(f"load generator failed: {completed.stderr[-2000:]}")
    return json.loads(result_path.read_text())


async def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition") -> float:
    """Poll ``predicate`` until true; returns the time.time() when it became true."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.time()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)
