"""Run a node: two TLS listeners (node-to-node with mTLS, local API) and the forwarder."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from .api import local_api, node_api
from .config import NodeConfig
from .folders import participant_folders
from .node import Node
from .transport import server_context

log = logging.getLogger("drehscheibe.server")


async def start_listeners(node: Node) -> list[web.AppRunner]:
    """Start the node-to-node (mTLS) and local API listeners of ``node``."""
    config = node.config
    runners = []
    for app, address, mtls in ((node_api(node), config.listen, True), (local_api(node), config.api, False)):
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, address.host, address.port, ssl_context=server_context(config, require_client_cert=mtls))
        await site.start()
        runners.append(runner)
    return runners


async def serve(config: NodeConfig, *, ready: asyncio.Event | None = None) -> None:
    node = Node(config)
    runners = []
    try:
        runners = await start_listeners(node)
        forwarder = asyncio.create_task(node.run_forwarder(), name="forwarder")
        folders = [asyncio.create_task(f.run(), name=f"folder-{f.participant}") for f in participant_folders(node)]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("node %s listening: peers on %s:%s, local API on %s:%s", config.node_id, config.listen.host,
                 config.listen.port, config.api.host, config.api.port)  # fmt: skip
        print(f"node {config.node_id} ready", flush=True)
        if ready is not None:
            ready.set()
        await stop.wait()
        for task in (forwarder, *folders):
            task.cancel()
        await asyncio.gather(forwarder, *folders, return_exceptions=True)
    finally:
        for runner in runners:
            await runner.cleanup()
        await node.close()
