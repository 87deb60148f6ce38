"""B1 breakdown by stage, in-process: where a 20 KB message's time goes in each node.

Two nodes are built from their configuration files exactly as ``tests/gateway/nodes.py``
does (``Node(load_config(...))``); the destination's listeners run on loopback with mTLS,
the origin's forwarder talks to them over a pooled connection. Messages go one at a time:
``Node.submit`` (the origin stages, called directly — the local REST API's multipart
handling is not in this figure), then ``Node.forward_due`` (forward over mTLS, the
destination stages in its request handler, the receipt back at the origin).

The harness wraps the stage methods with timers from the outside (nothing in ``gateway`` is
changed): each wrapped call records CPU time (``thread_time``) and wall time
(``perf_counter``) under its call path, so nested stages show up as a tree in the order
they first ran. Methods that do not exist in the current code are skipped and listed.
A second pass without the timers runs under cProfile for the functions that cost most.
"""

from __future__ import annotations

import asyncio
import contextvars
import cProfile
import inspect
import pstats
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from .common import DESTINATION, KANTON, LUZERN, ORIGIN, log, make_federation
from .messages import ech0020_delivery, envelope_for, envelope_template

_STACK: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("bench_stage_stack", default=())


class Timings:
    def __init__(self) -> None:
        self.paths: dict[tuple[str, ...], list[float]] = {}  # path -> [calls, cpu s, wall s]

    def add(self, path: tuple[str, ...], cpu: float, wall: float) -> None:
        entry = self.paths.setdefault(path, [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += cpu
        entry[2] += wall


class Instrument:
    """Wraps callables on objects, classes and modules; :meth:`undo` restores them all."""

    def __init__(self) -> None:
        self.timings = Timings()
        self._undo: list[Callable[[], None]] = []
        self.missing: list[str] = []

    def wrap(self, owner, attribute: str, label: str | None = None) -> None:
        original = owner.__dict__.get(attribute) if isinstance(owner, type) else getattr(owner, attribute, None)
        if original is None:
            original = getattr(owner, attribute, None)
        if original is None or not callable(original) or inspect.isasyncgenfunction(original) or inspect.isgeneratorfunction(original):
            self.missing.append(f"{getattr(owner, '__name__', type(owner).__name__)}.{attribute}")
            return
        if isinstance(original, (staticmethod, classmethod)):
            self.missing.append(f"{owner.__name__}.{attribute} (static)")
            return
        name = label or attribute
        timings = self.timings

        if inspect.iscoroutinefunction(original):

            async def wrapper(*args, **kwargs):
                path = _STACK.get() + (name,)
                token = _STACK.set(path)
                cpu, wall = time.thread_time(), time.perf_counter()
                try:
                    return await original(*args, **kwargs)
                finally:
                    timings.add(path, time.thread_time() - cpu, time.perf_counter() - wall)
                    _STACK.reset(token)

        else:

            def wrapper(*args, **kwargs):
                path = _STACK.get() + (name,)
                token = _STACK.set(path)
                cpu, wall = time.thread_time(), time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    timings.add(path, time.thread_time() - cpu, time.perf_counter() - wall)
                    _STACK.reset(token)

        had_own = isinstance(owner, type) or attribute in getattr(owner, "__dict__", {})
        setattr(owner, attribute, wrapper)

        def undo() -> None:
            if had_own:
                setattr(owner, attribute, original)
            else:
                delattr(owner, attribute)

        self._undo.append(undo)

    def undo(self) -> None:
        for step in reversed(self._undo):
            step()
        self._undo.clear()


# What is wrapped: every stage method of Node named in docs/architecture.md plus the
# library calls inside them that carry a cost of their own (XML, crypto, fsync, SQLite).
NODE_METHODS = [
    "submit", "parse_envelope", "check_participants", "check_message_date", "read_head", "parse_payload",
    "check_header", "inspect_format", "decide", "inspect_decide_and_seal", "inspect_payload", "decide_and_seal_streamed",
    "apply_policy_and_seal", "seal_payload", "persist", "audit_record", "_record_refusal",
    "forward_due", "expire_due", "forward", "_post_transfer", "_settle_with_receipt", "_conclude", "_release_blob",
    "flush_released_blobs", "audit_durably",
    "receive", "verify_transfer", "_sign_receipt", "_refusal_receipt",
]  # fmt: skip
STORE_METHODS = ["sync_blobs", "new_blob", "submit", "deliver", "settle", "add_events", "find_inbox", "due", "queued",
                 "outgoing_for", "next_due_time", "reschedule", "durable", "blobs_durable", "close_blob"]  # fmt: skip


def _instrument(instrument: Instrument, origin, destination) -> None:
    import gateway.api as api
    import gateway.node as node_module
    from gateway.crypto import primitives, seal
    from gateway.payload import PayloadCheck
    from gateway.receipt import Receipt
    from gateway.store import BlobWriter
    from gateway.transport import TransferHeader

    for node in (origin, destination):
        for method in NODE_METHODS:
            if hasattr(node, method):
                instrument.wrap(node, method)
        for method in STORE_METHODS:
            if hasattr(node.store, method):
                instrument.wrap(node.store, method, f"store.{method}")
        instrument.wrap(node.audit, "append", "audit.append")
    for name in ("payload_facts", "person_refs", "redact", "verify_seal", "verify_signed", "parse_receipt", "parse_envelope", "parse_xml"):
        if hasattr(node_module, name):
            instrument.wrap(node_module, name, f"{name}()")
    instrument.wrap(api, "receive_transfer", "HTTP receive_transfer")
    instrument.wrap(api, "read_header", "read_header()")
    instrument.wrap(PayloadCheck, "feed", "PayloadCheck.feed (stream parse+XSD)")
    instrument.wrap(PayloadCheck, "finish", "PayloadCheck.finish")
    instrument.wrap(seal.Sealing, "__init__", "Sealing() (content key)")
    instrument.wrap(seal.Sealing, "feed", "Sealing.feed (AES-GCM)")
    instrument.wrap(seal.Sealing, "finish", "Sealing.finish (AES-GCM)")
    instrument.wrap(seal.Sealing, "seal", "Sealing.seal (JWE wrap + JWS sign)")
    instrument.wrap(seal.SigningIdentity, "sign", "JWS sign")
    instrument.wrap(seal.TrustStore, "check", "certificate check")
    instrument.wrap(seal.VerifiedSeal, "opener", "VerifiedSeal.opener (JWE unwrap)")
    instrument.wrap(primitives.SegmentDecryptor, "feed", "SegmentDecryptor.feed (AES-GCM)")
    instrument.wrap(primitives.SegmentDecryptor, "finish", "SegmentDecryptor.finish (AES-GCM)")
    instrument.wrap(BlobWriter, "write", "BlobWriter.write (+SHA-256)")
    instrument.wrap(BlobWriter, "close", "BlobWriter.close (fsync)")
    instrument.wrap(TransferHeader, "encode", "TransferHeader.encode")
    instrument.wrap(Receipt, "to_xml", "Receipt.to_xml")


async def _once(data: bytes):
    yield data


class _Pair:
    """An origin and a destination node in this process (destination listening on loopback)."""

    def __init__(self, federation) -> None:
        self.federation = federation

    async def __aenter__(self):
        from gateway.config import load_config
        from gateway.node import Node
        from gateway.server import start_listeners

        self.origin = Node(load_config(self.federation.config_path(ORIGIN)))
        self.destination = Node(load_config(self.federation.config_path(DESTINATION)))
        self.runners = await start_listeners(self.destination)
        self.system = self.origin.config.local_systems[0]
        return self

    async def __aexit__(self, *exc) -> None:
        for runner in self.runners:
            await runner.cleanup()
        await self.origin.close()
        await self.destination.close()

    async def one(self, template: bytes, payload: bytes, message_id: str) -> None:
        accepted = await self.origin.submit(envelope_for(template, message_id), _once(payload), payload_name="data.xml", system=self.system)
        assert not accepted.duplicate
        settled = await self.origin.forward_due()
        if settled != 1:
            raise RuntimeError(f"message {message_id} was not settled by one forward round (settled={settled})")


async def run_stages(workdir: Path, *, runs: int, messages: int, profile_messages: int) -> dict:
    federation = make_federation(workdir / "stages" / "federation")
    template = envelope_template(LUZERN, KANTON)
    payload = ech0020_delivery()
    results: list[dict] = []
    missing: list[str] = []
    async with _Pair(federation) as pair:
        for i in range(20):  # warm-up: schema compilation, connection pool, SQLite pages
            await pair.one(template, payload, f"warm-{i}")
        for run in range(runs):
            instrument = Instrument()
            _instrument(instrument, pair.origin, pair.destination)
            try:
                cpu0, wall0 = time.process_time(), time.perf_counter()
                for i in range(messages):
                    await pair.one(template, payload, f"stage{run}-{i}")
                process_cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            finally:
                instrument.undo()
            missing = instrument.missing
            results.append({
                "paths": {"/".join(p): v for p, v in instrument.timings.paths.items()},
                "order": ["/".join(p) for p in instrument.timings.paths],
                "process_cpu_ms": process_cpu * 1000 / messages,
                "wall_ms": wall * 1000 / messages,
            })  # fmt: skip
            log(f"stage breakdown run {run + 1}: {results[-1]['process_cpu_ms']:.2f} ms CPU and {results[-1]['wall_ms']:.2f} ms wall "
                f"per message (both nodes, one process)")  # fmt: skip
        profiler = cProfile.Profile()  # wall clock: cheap to read, so the profile distorts least
        profiler.enable()
        for i in range(profile_messages):
            await pair.one(template, payload, f"profile-{i}")
        profiler.disable()
    return {
        "messages_per_run": messages,
        "runs": runs,
        "tree": _merge(results, messages),
        "process_cpu_ms": [r["process_cpu_ms"] for r in results],
        "wall_ms": [r["wall_ms"] for r in results],
        "missing": sorted(set(missing)),
        "profile": _profile_summary(profiler, profile_messages),
        "profile_messages": profile_messages,
    }


def _merge(results: list[dict], messages: int) -> list[dict]:
    """One row per call path: median over runs of CPU and wall ms per message, calls per message."""
    order: list[str] = []
    for result in results:
        for path in result["order"]:
            if path not in order:
                order.append(path)
    # Children listed right after their parent, in first-seen order.
    def sort_key(path: str) -> list[int]:
        parts = path.split("/")
        return [order.index("/".join(parts[: i + 1])) if "/".join(parts[: i + 1]) in order else 10**6 for i in range(len(parts))]

    rows = []
    for path in sorted(order, key=sort_key):
        values = [r["paths"].get(path) for r in results]
        values = [v for v in values if v is not None]
        rows.append({
            "path": path,
            "depth": path.count("/"),
            "name": path.rsplit("/", 1)[-1],
            "calls": statistics.median(v[0] for v in values) / messages,
            "cpu_ms": statistics.median(v[1] for v in values) * 1000 / messages,
            "wall_ms": statistics.median(v[2] for v in values) * 1000 / messages,
            "cpu_ms_min": min(v[1] for v in values) * 1000 / messages,
            "cpu_ms_max": max(v[1] for v in values) * 1000 / messages,
        })  # fmt: skip
    return rows


# Library calls that have a category of their own; other built-ins (list.extend, isinstance,
# str.startswith, …) are charged to the code that called them, via cProfile's caller edges.
_LIBRARIES = [
    ("fsync (waiting for the disk)", ("posix.fsync",)),
    ("file create / open / write / rename", ("io.open", "of '_io.", "posix.open", "posix.replace", "posix.rename", "posix.unlink",
                                             "posix.scandir", "posix.stat")),
    ("SQLite (store + audit)", ("sqlite3",)),
    ("lxml (C: parse, XSD validation, serialisation)", ("lxml",)),
    ("cryptography (Rust/OpenSSL: EC, AES-GCM, X.509)", ("cryptography",)),
    ("joserfc (Python JOSE around cryptography)", ("joserfc",)),
    ("ssl / TLS", ("_ssl.", "/ssl.py")),
    ("aiohttp", ("aiohttp",)),
    ("asyncio event loop", ("asyncio", "selectors", "select.epoll")),
    ("hashlib (SHA-256)", ("hashlib",)),
]


def _own_category(key: tuple) -> str | None:
    """The category of a function by itself, or None for a built-in to charge to its caller."""
    filename, _, function = key
    text = f"{filename} {function}"
    for name, needles in _LIBRARIES:
        if any(n in text for n in needles):
            return name
    for package in ("gateway", "adapters", "bench"):
        marker = f"/{package}/"
        if marker in filename and "site-packages" not in filename:
            return f"{package}/{filename.split(marker, 1)[1]} (own Python)"
    if filename == "~":
        return None
    if "/lib/python3" in filename:
        module = filename.split("/lib/python3", 1)[1].split("/", 1)[-1]
        return "Python stdlib: " + module.split("/")[0].removesuffix(".py")
    return "other: " + filename.rsplit("/", 1)[-1]


def _profile_summary(profiler: cProfile.Profile, messages: int) -> dict:
    stats = pstats.Stats(profiler).stats  # key -> (primitive calls, calls, tottime, cumtime, callers)
    total = sum(v[2] for v in stats.values())
    by_category: dict[str, float] = {}
    for key, (_, _, own, _, callers) in stats.items():
        category = _own_category(key)
        if category is not None:
            by_category[category] = by_category.get(category, 0.0) + own
            continue
        # A built-in: split its own time over its callers by what each call edge cost.
        charged = 0.0
        for caller, edge in callers.items():
            caller_category = _own_category(caller) or "Python built-ins called from built-ins"
            by_category[caller_category] = by_category.get(caller_category, 0.0) + edge[2]
            charged += edge[2]
        if own > charged:
            by_category["Python built-ins (caller unknown)"] = by_category.get("Python built-ins (caller unknown)", 0.0) + own - charged
    top = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:20]

    def name(key: tuple) -> str:
        filename, line, function = key
        if filename == "~":
            return function
        short = filename.split("site-packages/")[-1] if "site-packages/" in filename else filename.split("/work/main/")[-1]
        if "/lib/python3" in short:
            short = "stdlib " + short.split("/lib/python3", 1)[1].split("/", 1)[-1]
        return f"{short}:{line} {function}"

    def main_caller(value) -> str:
        callers = value[4]
        if not callers:
            return ""
        caller = max(callers.items(), key=lambda kv: kv[1][2])[0]
        return name(caller)

    return {
        "clock": "wall (perf_counter): fsync and commit waits are included",
        "total_ms": total * 1000 / messages,
        "by_category": sorted(((k, v * 1000 / messages) for k, v in by_category.items()), key=lambda kv: kv[1], reverse=True),
        "top": [
            {"function": name(k), "tottime_ms": v[2] * 1000 / messages, "cumtime_ms": v[3] * 1000 / messages,
             "calls": v[1] / messages, "caller": main_caller(v)}
            for k, v in top
        ],
    }


if __name__ == "__main__":  # python -m bench.stages: a quick look without the whole suite
    import json
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        out = asyncio.run(run_stages(Path(folder), runs=1, messages=int(sys.argv[1]) if len(sys.argv) > 1 else 100, profile_messages=50))
    for row in out["tree"]:
        print(f"{'  ' * row['depth']}{row['name']:<50} {row['calls']:5.2f} calls  {row['cpu_ms']:7.3f} ms CPU  {row['wall_ms']:7.3f} ms wall")
    print(json.dumps(out["profile"], indent=1)[:3000])
    print("missing:", out["missing"])
