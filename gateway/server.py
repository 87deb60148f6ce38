"""Run a node: two TLS listeners (node-to-node with mTLS, local API) and the forwarder
(with ``[node] workers > 1`` also its worker processes, gateway/workers.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from aiohttp import web

from .api import local_api, node_api
from .config import NodeConfig
from .audit import Actor, ActorKind
from .folders import participant_folders
from .health import ops_app
from .ids import GatewayError
from .node import Node
from .transport import server_context
from .workers import MULTIPROC_ENV, MultiProcessExposition, Workers, reload_passing

log = logging.getLogger("drehscheibe.server")


async def start_listeners(node: Node, *, reuse_port: bool = False, ops: bool = True, metrics=None,
                          local_middlewares: list | None = None) -> list[web.AppRunner]:
    """Start the node-to-node (mTLS) and local API listeners of ``node`` (and the ops listener).

    ``reuse_port``: several processes of one node bind the same ports (``[node] workers``,
    gateway/workers.py). SECURITY: Linux lets only sockets of the same effective user join a
    SO_REUSEPORT group, so another account cannot take a share of the node's connections.
    """
    config = node.config
    runners = []
    local = local_api(node)
    local.middlewares.extend(local_middlewares or ())
    for app, address, mtls in ((node_api(node), config.listen, True), (local, config.api, False)):
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=config.delivery.shutdown_seconds)
        await runner.setup()
        site = web.TCPSite(runner, address.host, address.port, ssl_context=server_context(config, require_client_cert=mtls),
                           reuse_port=reuse_port or None)  # fmt: skip
        await site.start()
        runners.append(runner)
    if config.ops is not None and ops:
        # Probes and Prometheus: no secrets and no message data on this listener.
        runner = web.AppRunner(ops_app(node, metrics or node.metrics), access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, config.ops.host, config.ops.port).start()
        runners.append(runner)
    return runners


async def serve(config: NodeConfig, *, ready: asyncio.Event | None = None, verbose: bool = False) -> None:
    node = Node(config)
    runners = []
    workers = None
    try:
        node.record_configuration()
        # OCSP (when configured): answers for the node's own certificates before the first message.
        await node.refresh_revocation()
        if config.workers > 1:
            # The workers listen first: once this process listens too, every process takes work.
            workers = Workers(config, on_wake=node._wake.set, on_reload=lambda done: _reload_everywhere(node, workers, skip=done), verbose=verbose)
            await workers.start()
            multiprocess = MultiProcessExposition(node, workers) if MULTIPROC_ENV in os.environ else None
            runners = await start_listeners(node, reuse_port=True, metrics=multiprocess,
                                            local_middlewares=[reload_passing(lambda: workers.signal(signal.SIGHUP))])  # fmt: skip
        else:
            runners = await start_listeners(node)
        forwarder = asyncio.create_task(node.run_forwarder(), name="forwarder")
        folders = [asyncio.create_task(f.run(), name=f"folder-{f.participant}") for f in participant_folders(node)]
        housekeeping = asyncio.create_task(_housekeeping(node), name="housekeeping")
        if node.ocsp.enabled:
            folders.append(asyncio.create_task(_refresh_revocation(node), name="ocsp"))
        if node.directory is not None:
            folders.append(asyncio.create_task(node.directory.run(interval=config.directory.refresh_seconds, retry_interval=config.directory.retry_seconds), name="directory"))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if workers is None:
            loop.add_signal_handler(signal.SIGHUP, _reload_on_signal, node)
        else:
            loop.add_signal_handler(signal.SIGHUP, _reload_everywhere, node, workers)
        log.info("node %s listening: peers on %s:%s, local API on %s:%s", config.node_id, config.listen.host,
                 config.listen.port, config.api.host, config.api.port)  # fmt: skip
        print(f"node {config.node_id} ready", flush=True)
        if ready is not None:
            ready.set()
        await stop.wait()
        if workers is None:
            await shut_down(node, runners, forwarder, [housekeeping, *folders])
        else:
            # All listeners close together; the workers finish their requests while the forwarder ends its round.
            await asyncio.gather(workers.stop(), shut_down(node, runners, forwarder, [housekeeping, *folders]))
        runners = []
    finally:
        if workers is not None:
            await workers.stop()
            workers.close()
        for runner in runners:
            await runner.cleanup()
        await node.close()


def _reload_everywhere(node: Node, workers: Workers, skip: set[int] = frozenset()) -> None:
    """SIGHUP to the primary, or an admin reload in the workers ``skip``: this process and every
    other worker reload (each audits its own reload)."""
    _reload_on_signal(node)
    workers.signal(signal.SIGHUP, skip=skip)


def _reload_on_signal(node: Node) -> None:
    """SIGHUP: reload routes and peers from the node file, and the policy files (each audited;
    a bad file keeps what runs)."""
    actor = Actor(ActorKind.ADMIN, "SIGHUP")
    node.reload_trust()
    try:
        routes = node.reload_routes(actor)
        print(f"routes reload on SIGHUP: {'accepted' if routes.accepted else 'refused: ' + str(routes.error)}"
              + (f"; needs a restart: {', '.join(routes.restart_needed)}" if routes.restart_needed else ""), flush=True)  # fmt: skip
    except GatewayError as error:
        log.error("routes reload on SIGHUP failed: %s", error.info)
    if node.policies is None:
        return
    try:
        result = node.reload_policies(actor)
    except GatewayError as error:
        log.error("policy reload on SIGHUP failed: %s", error.info)
        return
    print(f"policy reload on SIGHUP: {'accepted' if result.accepted else 'refused'}, active revision "
          f"{result.new_revision if result.accepted else result.old_revision}", flush=True)  # fmt: skip


async def _housekeeping(node: Node, period: float = 3600.0) -> None:
    """Hourly: a signed audit checkpoint, and pruning of audit records past their retention."""
    while True:
        try:
            node.reload_trust()
            node.warn_expiring_certificates()
            node.audit.checkpoint(node.clock.now())
            pruned = node.apply_retention()
            if pruned:
                log.info("audit retention: %d records older than %d days pruned", pruned, node.config.audit_retention_days)
        except GatewayError as error:
            log.error("audit housekeeping failed: %s", error.info)
        await asyncio.sleep(period)


async def _refresh_revocation(node: Node) -> None:
    """OCSP answers are renewed when half their life has passed; the per-message check reads only them."""
    period = node.config.tls.ocsp.refresh_seconds
    while True:
        await asyncio.sleep(period)
        await node.refresh_revocation()


async def shut_down(node: Node, runners: list[web.AppRunner], forwarder: asyncio.Task, others: list[asyncio.Task]) -> None:
    """SIGTERM: take no new work, let transfers in flight finish (bounded), then stop.

    Listeners close first (new submissions and transfers are refused at the socket; senders
    retry). Folder pickup stops at once: a pair half taken is finished at the next start.
    The forwarder ends its current round; one still running after ``shutdown_seconds`` is
    cancelled: its rows stay queued and are sent again after the restart, where the
    receiving node recognises a re-send (no second delivery).
    """
    log.info("shutting down: listeners closed, finishing transfers in flight")
    for task in others:
        task.cancel()
    node.stop_forwarding()
    await asyncio.gather(*(runner.cleanup() for runner in runners), return_exceptions=True)
    try:
        await asyncio.wait_for(asyncio.shield(forwarder), timeout=node.config.delivery.shutdown_seconds)
    except asyncio.TimeoutError:
        log.warning("transfers still in flight after %.0fs are cut; they are sent again after the restart",
                    node.config.delivery.shutdown_seconds)  # fmt: skip
        forwarder.cancel()
    await asyncio.gather(forwarder, *others, return_exceptions=True)
