"""One node identity served by several processes on one machine (``[node] workers = N``).

A node's hop (parse, validate, sign, encrypt, audit) is CPU work in one Python thread, so one
process uses one core. With ``workers = N`` the node runs as N processes:

* the **primary** (``drehscheibe node run``, index 0) starts N-1 **workers** (``drehscheibe
  node worker``, new interpreters: an asyncio process is never forked), restarts one that
  dies, passes SIGHUP on to them and stops them on SIGTERM;
* every process binds the node-to-node and local API ports with ``SO_REUSEPORT``: the kernel
  spreads new connections over the processes, each takes submissions, transfers from peers
  and local systems' reads, and writes them to the one store and audit log of the node
  (SQLite: WAL, ``BEGIN IMMEDIATE``; the audit log re-reads its tree frontier in each write
  transaction, so several writers keep one hash chain);
* only the primary runs what must run once per node: the forwarder (the SQLite store has no
  row leases, so two forwarders could send a row twice), the sedex folder interface, audit
  checkpoints and retention, and the operations listener (``/metrics`` sums every process's
  counters, see :class:`MultiProcessExposition`). Each process keeps its own OCSP answers,
  revocation lists and directory copy fresh, since each verifies what it accepts;
* a worker that stored a new outgoing row tells the primary at once through a pipe
  (:class:`ForwarderWake`), so the message does not wait for the forwarder's next poll.
  An admin reload (routes, policies) answered by one process is passed on the same way:
  the primary reloads and sends SIGHUP to the other workers, so no process keeps the old rules;
* a worker's stdin is a pipe from the primary that is never written: when the primary dies
  (even by SIGKILL) the worker reads end-of-file and stops, so no orphan keeps the port.

Design choice: SO_REUSEPORT rather than one socket bound by the primary and inherited by the
workers. With an inherited socket every process wakes for each new connection and the first
to call accept() takes it, which sends bursts of kept-alive connections to one process; with
SO_REUSEPORT the kernel hashes each connection to one process's own accept queue. The price:
connections still queued on a process that dies are reset (clients retry).

``serve()`` called in-process with ``workers > 1`` (not through ``drehscheibe node run``) runs
without the metrics directory: its ``/metrics`` then counts the primary's messages only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .config import NodeConfig
    from .node import Node

log = logging.getLogger("drehscheibe.workers")

# One byte per note on the pipe to the primary.
WAKE = b"w"  # a worker stored an outgoing row: forward now
RELOAD = b"r"  # + the worker's index (one byte): it reloaded through the admin API, reload the others

# Admin requests that change what a process enforces; a success in one process is passed on to all.
RELOADING_REQUESTS = frozenset({
    ("POST", "/admin/v1/policies/reload"),
    ("POST", "/admin/v1/routes/reload"),
    ("POST", "/console/admin/policies/apply"),
})  # fmt: skip

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_directory(config: NodeConfig) -> Path:
    """Where the processes of a node with several workers keep their metric files."""
    return Path(config.store) / "metrics-processes"


def prepare_process_metrics(config: NodeConfig) -> None:
    """Primary, before prometheus_client is imported: a fresh directory for every process's counters.

    prometheus_client chooses file-backed values at import when ``PROMETHEUS_MULTIPROC_DIR``
    is set; the workers inherit the variable. Files of a previous run are removed: the
    counters of a restarted node start at zero, as Prometheus expects of any restart.
    """
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before the metrics directory was set")
    directory = metrics_directory(config)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(directory)


class MultiProcessExposition:
    """``/metrics`` of a node with several workers: every process's counters and histograms
    (summed over the processes' files), the state gauges read at scrape time, and the workers'."""

    def __init__(self, node: Node, workers: Workers) -> None:
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        from .metrics import NodeStateCollector

        self.registry = CollectorRegistry()
        MultiProcessCollector(self.registry)
        self.registry.register(NodeStateCollector(node))
        self.registry.register(WorkersCollector(workers))

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class WorkersCollector:
    """The primary's view of its workers, at scrape time: how many run, how often one was restarted."""

    def __init__(self, workers: Workers) -> None:
        self.workers = workers

    def describe(self) -> list:
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        running = GaugeMetricFamily("drehscheibe_worker_processes", "Worker processes besides the primary, by state.", labels=["state"])
        alive = sum(1 for p in self.workers.processes.values() if p.returncode is None)
        running.add_metric(["running"], alive)
        running.add_metric(["configured"], self.workers.count)
        yield running
        restarts = CounterMetricFamily("drehscheibe_worker_restarts", "Worker processes the primary restarted after they died.")
        restarts.add_metric([], self.workers.restarts)
        yield restarts


def _note(fd: int, what: bytes) -> None:
    """Write one byte to the primary; never block, never fail the request that caused it."""
    try:
        os.write(fd, what)
    except BlockingIOError:
        pass  # the pipe is full: the primary has unread notes, it wakes anyway
    except OSError:
        pass  # the primary is gone: this worker stops when its stdin closes


class ForwarderWake:
    """A worker's stand-in for the node's forwarder event: setting it wakes the primary's forwarder.

    The node sets its wake event after it stores outgoing rows (submit, relay) and after a
    routes reload; in a worker no forwarder waits on it, so the note goes to the primary.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def set(self) -> None:
        _note(self.fd, WAKE)

    def clear(self) -> None:
        pass

    def is_set(self) -> bool:
        return False

    async def wait(self) -> None:  # no forwarder runs in a worker
        await asyncio.Event().wait()


def reload_passing(notify) -> web.middleware:
    """Local API middleware: after a successful admin reload in this process, call ``notify``."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        response = await handler(request)
        if (request.method, request.path) in RELOADING_REQUESTS and response.status < 400:
            notify()
        return response

    return middleware


class Workers:
    """The primary's side: start, watch, restart, signal and stop the worker processes."""

    def __init__(self, config: NodeConfig, *, on_wake, on_reload, verbose: bool = False) -> None:
        self.config = config
        self.count = config.workers - 1
        self.verbose = verbose
        self._on_wake = on_wake
        self._on_reload = on_reload
        # Notes from the workers: non-blocking at both ends (the flag is shared with every
        # copy of the descriptor, so no worker can block on a full pipe).
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        self.restarts = 0
        self._ready: dict[int, asyncio.Event] = {}
        self._watchers: list[asyncio.Task] = []
        self._relays: set[asyncio.Task] = set()
        self._partial = b""
        self._stopping = False
        self._stopped = asyncio.Event()

    # -- start -------------------------------------------------------------------------

    async def start(self, timeout: float = 60.0) -> None:
        """Start every worker and wait until each listens; one that exits first fails the start."""
        asyncio.get_running_loop().add_reader(self.read_fd, self._read_notes)
        for index in range(1, self.count + 1):
            await self._spawn(index)
        for index in range(1, self.count + 1):
            await self._until_ready(index, timeout)
        self._watchers = [asyncio.create_task(self._watch(i), name=f"worker-{i}") for i in range(1, self.count + 1)]

    async def _spawn(self, index: int) -> None:
        command = [sys.executable, "-m", "gateway.cli", *(["-v"] if self.verbose else []), "node", "worker",
                   "--config", str(self.config.source), "--index", str(index), "--notify-fd", str(self.write_fd)]  # fmt: skip
        self._ready[index] = asyncio.Event()
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, pass_fds=(self.write_fd,),
        )  # fmt: skip
        self.processes[index] = process
        relay = asyncio.create_task(self._relay_output(index, process), name=f"worker-{index}-output")
        self._relays.add(relay)  # the loop keeps only weak references to tasks
        relay.add_done_callback(self._relays.discard)

    async def _relay_output(self, index: int, process: asyncio.subprocess.Process) -> None:
        """The worker's stdout goes to ours; its ready line marks it ready."""
        assert process.stdout is not None
        while line := await process.stdout.readline():
            text = line.decode("utf-8", "replace").rstrip("\n")
            if text == f"worker {index} ready":
                self._ready[index].set()
            print(text, flush=True)

    async def _until_ready(self, index: int, timeout: float) -> None:
        process = self.processes[index]
        ready = asyncio.create_task(self._ready[index].wait())
        exited = asyncio.create_task(process.wait())
        done, _ = await asyncio.wait({ready, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        exited.cancel()
        if ready not in done:
            raise RuntimeError(f"worker {index} did not start (exit code {process.returncode})")

    # -- run -------------------------------------------------------------------------------

    def _read_notes(self) -> None:
        try:
            notes = self._partial + os.read(self.read_fd, 4096)
        except BlockingIOError:
            return
        # A reload note cut by the read's size: its index byte comes with the next read
        # (indexes are below 65, so they never look like a note's letter).
        self._partial = RELOAD if notes.endswith(RELOAD) else b""
        notes = notes[:-1] if self._partial else notes
        if WAKE in notes:
            self._on_wake()
        reloaded = {notes[i + 1] for i in range(len(notes) - 1) if notes[i:i + 1] == RELOAD}
        if reloaded:
            self._on_reload(reloaded)

    async def _watch(self, index: int) -> None:
        """Restart the worker when it dies (not when we stop it); back off if it keeps dying."""
        delay = 0.5
        while True:
            process = self.processes[index]
            started = time.monotonic()
            code = await process.wait()
            if self._stopping:
                return
            self._forget_metrics(process.pid)
            log.error("worker %d (pid %d) exited with code %s; restarting it", index, process.pid, code)
            delay = 0.5 if time.monotonic() - started > 30 else min(delay * 2, 30.0)
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._spawn(index)
                await self._until_ready(index, 60.0)
                self.restarts += 1
            except (OSError, RuntimeError) as error:
                log.error("worker %d could not be restarted: %s", index, error)

    def signal(self, signum: int, *, skip: set[int] = frozenset()) -> None:
        """Send ``signum`` to every running worker but those in ``skip`` (SIGHUP: each reloads and audits its reload)."""
        for index, process in self.processes.items():
            if process.returncode is None and index not in skip:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)

    @staticmethod
    def _forget_metrics(pid: int) -> None:
        if MULTIPROC_ENV in os.environ:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid)  # gauges only; a dead worker's counts still count

    # -- stop -------------------------------------------------------------------------------

    async def stop(self) -> None:
        """SIGTERM every worker; each closes its listeners and finishes its requests in flight
        (``shutdown_seconds``); one still running after that and a margin is killed."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        try:
            for task in self._watchers:
                task.cancel()
            self.signal(signal.SIGTERM)
            grace = self.config.delivery.shutdown_seconds + 10.0
            for index, process in self.processes.items():
                try:
                    await asyncio.wait_for(process.wait(), timeout=grace)
                except asyncio.TimeoutError:
                    log.error("worker %d did not stop within %.0fs; killed", index, grace)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
                if process.stdin is not None:
                    process.stdin.close()
            asyncio.get_running_loop().remove_reader(self.read_fd)
            await asyncio.gather(*self._watchers, return_exceptions=True)
        finally:
            self._stopped.set()

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


# -- the worker process ------------------------------------------------------------------------


async def serve_worker(config: NodeConfig, index: int, notify_fd: int) -> None:
    """A worker: the node's listeners (sharing the ports), no forwarder, no folders, no ops listener."""
    from .node import Node
    from .server import _refresh_revocation, _reload_on_signal, start_listeners

    node = Node(config, worker=True)
    node._wake = ForwarderWake(notify_fd)  # see ForwarderWake: the forwarder runs in the primary
    runners: list[web.AppRunner] = []
    tasks: list[asyncio.Task] = []
    try:
        await node.refresh_revocation()
        runners = await start_listeners(node, reuse_port=True, ops=False,
                                        local_middlewares=[reload_passing(lambda: _note(notify_fd, RELOAD + bytes([index])))])  # fmt: skip
        tasks.append(asyncio.create_task(_worker_housekeeping(node), name="housekeeping"))
        if node.ocsp.enabled:
            tasks.append(asyncio.create_task(_refresh_revocation(node), name="ocsp"))
        if node.directory is not None:
            tasks.append(asyncio.create_task(node.directory.run(interval=config.directory.refresh_seconds,
                                                                retry_interval=config.directory.retry_seconds), name="directory"))  # fmt: skip
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, _reload_on_signal, node)
        loop.add_reader(sys.stdin.fileno(), _lifeline, sys.stdin.fileno(), stop)
        print(f"worker {index} ready", flush=True)
        await stop.wait()
        loop.remove_reader(sys.stdin.fileno())  # no-op when the lifeline already removed itself
        for task in tasks:
            task.cancel()
        # Listeners close; requests in flight finish (up to shutdown_seconds each runner).
        await asyncio.gather(*(runner.cleanup() for runner in runners), return_exceptions=True)
        runners = []
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for runner in runners:
            await runner.cleanup()
        await node.close()


def _lifeline(fd: int, stop: asyncio.Event) -> None:
    """stdin is the primary's pipe and carries nothing: end-of-file means the primary is gone."""
    try:
        data = os.read(fd, 64)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if not data:
        asyncio.get_running_loop().remove_reader(fd)  # end-of-file stays readable: read it once
        log.error("the primary process is gone; this worker stops")
        stop.set()


async def _worker_housekeeping(node: Node, period: float = 3600.0, flush: float = 5.0) -> None:
    """Hourly: read the revocation lists again (checkpoints and retention are the primary's).
    Every few seconds: delete ciphertexts released by returned receipts this worker settled."""
    next_trust = time.monotonic() + period
    while True:
        await asyncio.sleep(flush)
        if node._released_blobs:
            with contextlib.suppress(OSError):
                await node.flush_released_blobs()
        if time.monotonic() >= next_trust:
            node.reload_trust()
            next_trust = time.monotonic() + period
