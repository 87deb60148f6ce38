"""Helpers for the operations tests: an ops listener on loopback around a real node, and scrapes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway.health import ops_app
from gateway.metrics import NodeMetrics
from gateway.node import Node


def metrics_of(node: Node) -> NodeMetrics:
    """The node's own metrics once the node creates them (``node.metrics``), else a fresh set."""
    existing = getattr(node, "metrics", None)
    return existing if isinstance(existing, NodeMetrics) else NodeMetrics(node)


def wired(node: Node) -> bool:
    """True once gateway/node.py creates and feeds ``node.metrics``."""
    return isinstance(getattr(node, "metrics", None), NodeMetrics)


@contextlib.asynccontextmanager
async def ops_listener(node: Node, metrics: NodeMetrics | None = None) -> AsyncIterator[str]:
    """Serve /healthz, /readyz and /metrics for ``node`` on 127.0.0.1 (plain HTTP); yields the base URL."""
    runner = web.AppRunner(ops_app(node, metrics or metrics_of(node)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a text exposition: (name, labels) → value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(scraped: dict, name: str, **labels: str) -> float | None:
    return scraped.get((name, frozenset(labels.items())))
