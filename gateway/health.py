"""Liveness and readiness of a node, and the operations listener that serves them with /metrics.

* ``GET /healthz`` — the process and its event loop answer: 200, always. A failing liveness
  probe restarts the container, so it checks nothing a restart would not fix.
* ``GET /readyz`` — the node can do its work now: 200 when every check passes, else 503.
  Each check is reported by name with a short reason, so an operator sees *what* is wrong:

  ======================  =========================================================================
  ``store``               the message store answers a trivial query; its blob directory is writable
  ``keys``                the node key and every hosted participant's keys are loaded
  ``policies``            the policy set is loaded (when ``[node] policies`` is set)
  ``schemas``             every XSD of the schema catalog compiles
  ``audit``               the audit log can take a write lock (no record, no processing: a node
                          that cannot audit refuses everything with 403, so it is not ready)
  ``directory``           the federation directory is usable (when ``[directory] url`` is set)
  ======================  =========================================================================

The checks are synchronous and take milliseconds (the schemas compile once and are
cached), so they run in the event loop's thread, which owns the store and audit connections.

SECURITY: the operations listener has no authentication. It serves only these three
routes; their answers hold check names, counts, participant and peer IDs, and sedex codes,
never message content or keys. Bind it to the pod network and restrict who may connect
(the Helm chart's NetworkPolicy allows only the monitoring namespace and the kubelet).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from .metrics import NodeMetrics, metrics_handler

if TYPE_CHECKING:
    from .node import Node

HEALTHZ = "/healthz"
READYZ = "/readyz"
METRICS = "/metrics"


@dataclass(frozen=True)
class Check:
    """The result of one readiness check."""

    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict:
        return {"ok": self.ok, "detail": self.detail}


def check_store(node: Node) -> Check:
    """A trivial query that reads the database file, and a writable blob directory."""
    try:
        ping = getattr(node.store, "ping", None)
        if ping is not None:
            ping()
        else:
            # Not ``SELECT 1``: that is answered without touching the database file.
            node.store.db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except Exception as error:  # noqa: BLE001 - any failure means: not reachable
        return Check("store", False, f"store query failed ({type(error).__name__})")
    blobs = getattr(node.store, "blobs", None)
    if blobs is not None and not (blobs.is_dir() and os.access(blobs, os.W_OK | os.X_OK)):
        return Check("store", False, "blob directory missing or not writable")
    return Check("store", True, "reachable")


def check_keys(node: Node) -> Check:
    """The node's signing key and every hosted participant's keys were loaded at start."""
    missing = [str(p.id) for p in node.config.participants if p.id not in node.hosted]
    if getattr(node, "node_signer", None) is None:
        return Check("keys", False, "node key not loaded")
    if missing:
        return Check("keys", False, f"keys not loaded for {', '.join(missing)}")
    return Check("keys", True, f"node key and {len(node.hosted)} participant(s)")


def check_policies(node: Node) -> Check:
    if node.config.policies is None:
        return Check("policies", True, "not configured (no policy stage)")
    if node.policies is None:
        return Check("policies", False, "configured but not loaded")
    revision = node.policies.revision
    return Check("policies", True, f"revision {revision}") if revision else Check("policies", False, "no active policy revision")


def check_schemas(node: Node) -> Check:
    from .ids import GatewayError

    try:
        count = node.catalog.compile_all()
    except GatewayError as error:
        return Check("schemas", False, error.info[:200])
    if count == 0:
        return Check("schemas", False, "the schema catalog is empty")
    return Check("schemas", True, f"{count} schemas compiled")


def check_audit(node: Node, *, timeout: float = 0.2) -> Check:
    """The audit log takes a write lock (then released, nothing written): file or PostgreSQL."""
    problem = node.audit.writable_problem(timeout)
    return Check("audit", False, problem) if problem else Check("audit", True, "writable")


def check_directory(node: Node) -> Check:
    if node.directory is None:
        return Check("directory", True, "not configured")
    status = node.directory.status
    detail = f"{status.state.value}, version {status.version if status.version is not None else '-'}"
    return Check("directory", status.state.value != "unusable", detail)


READINESS_CHECKS: tuple[Callable[[Node], Check], ...] = (
    check_store, check_keys, check_policies, check_schemas, check_audit, check_directory,
)  # fmt: skip


def readiness(node: Node) -> list[Check]:
    """Run every readiness check; a check that raises counts as failed (never as passed)."""
    results = []
    for check in READINESS_CHECKS:
        name = check.__name__.removeprefix("check_")
        try:
            results.append(check(node))
        except Exception as error:  # noqa: BLE001 - a broken check is a failed check
            results.append(Check(name, False, f"check failed ({type(error).__name__})"))
    return results


NODE_KEY: web.AppKey = web.AppKey("drehscheibe_ops_node")


async def healthz(request: web.Request) -> web.Response:
    """Alive: the event loop answers."""
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    checks = readiness(request.app[NODE_KEY])
    ready = all(c.ok for c in checks)
    body = {"ready": ready, "checks": {c.name: c.to_json() for c in checks}}
    return web.json_response(body, status=200 if ready else 503, headers={"Cache-Control": "no-store"})


def ops_app(node: Node, metrics: NodeMetrics) -> web.Application:
    """The operations listener's app: ``/healthz``, ``/readyz``, ``/metrics`` (GET only)."""
    app = web.Application()
    app[NODE_KEY] = node
    app.router.add_get(HEALTHZ, healthz, allow_head=True)
    app.router.add_get(READYZ, readyz, allow_head=True)
    app.router.add_get(METRICS, metrics_handler(metrics))
    return app
