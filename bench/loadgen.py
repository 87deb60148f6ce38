"""Load generator: submits messages over HTTPS as a local system would, in its own process.

Run: python -m bench.loadgen SPEC.json RESULT.json

The spec names the URL, the bearer token (or a client certificate for the bare mTLS
server), the envelope template and payload files, and the load shape:

* ``closed``: ``concurrency`` requests in flight at all times for ``duration`` seconds
  (or until ``count`` messages were sent) — this finds the full load;
* ``open``: requests start at a constant ``rate`` for ``duration`` seconds whatever the
  answers do, and each latency counts from the request's *scheduled* start, so a slow
  answer cannot hide the requests queued behind it (no coordinated omission).

The result lists, per request: messageId, scheduled and actual start (epoch seconds, to
compare with the nodes' timelines), latency in seconds (``perf_counter``) and HTTP status;
plus this process's CPU time, so its share of the 2 cores can be reported.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import time
from pathlib import Path

import aiohttp

PLACEHOLDER = b"BENCHMESSAGEIDPLACEHOLDER0"


def _context(spec: dict) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=spec["ca"])
    if spec.get("client_cert"):
        context.load_cert_chain(spec["client_cert"], spec["client_key"])
    return context


async def run(spec: dict) -> dict:
    template = Path(spec["envelope_template"]).read_bytes()
    payload = Path(spec["payload"]).read_bytes()
    payload_name = spec.get("payload_name", "data.xml")
    prefix = spec["id_prefix"]
    headers = {"Authorization": f"Bearer {spec['token']}"} if spec.get("token") else {}
    concurrency = int(spec.get("concurrency", 32))
    duration = float(spec["duration"])
    count_limit = spec.get("count")
    records: list[list] = []
    first_errors: dict[int, str] = {}  # one answer body per unexpected HTTP status, for the report
    counter = 0

    def next_message() -> tuple[str, bytes]:
        nonlocal counter
        counter += 1
        message_id = f"{prefix}-{counter:07d}"
        return message_id, template.replace(PLACEHOLDER, message_id.encode())

    connector = aiohttp.TCPConnector(ssl=_context(spec), limit=max(concurrency, 64), force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:

        async def one(message_id: str, envelope: bytes, scheduled_epoch: float, scheduled_perf: float) -> None:
            form = aiohttp.FormData()
            form.add_field("envelope", envelope, filename="envelope.xml", content_type="application/xml")
            form.add_field("payload", payload, filename=payload_name, content_type="application/octet-stream")
            started_epoch = time.time()
            try:
                async with session.post(spec["url"], data=form) as response:
                    body = await response.read()
                    status = response.status
                if status >= 300 and status not in first_errors:
                    first_errors[status] = body[:500].decode("utf-8", "replace")
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
                status = f"error: {type(error).__name__}"
            records.append([message_id, scheduled_epoch, started_epoch, time.perf_counter() - scheduled_perf, status])

        if spec.get("start_at"):
            await asyncio.sleep(max(0.0, spec["start_at"] - time.time()))
        started = time.time()
        deadline = time.perf_counter() + duration
        if spec["mode"] == "closed":

            async def worker() -> None:
                while time.perf_counter() < deadline and (count_limit is None or counter < count_limit):
                    message_id, envelope = next_message()
                    await one(message_id, envelope, time.time(), time.perf_counter())

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        elif spec["mode"] == "open":
            rate = float(spec["rate"])
            tasks: set[asyncio.Task] = set()
            t0_perf, t0_epoch = time.perf_counter() + 0.05, time.time() + 0.05
            i = 0
            while True:
                offset = i / rate
                if offset >= duration or (count_limit is not None and i >= count_limit):
                    break
                delay = t0_perf + offset - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                message_id, envelope = next_message()
                task = asyncio.create_task(one(message_id, envelope, t0_epoch + offset, t0_perf + offset))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            await asyncio.gather(*tasks)
        else:
            raise ValueError(f"unknown mode {spec['mode']!r}")
        stopped = time.time()
    times = os.times()
    return {"records": records, "errors": first_errors, "started": started, "stopped": stopped, "cpu_seconds": times.user + times.system}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    result = asyncio.run(run(spec))
    Path(sys.argv[2]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
