"""Serve the latest signed directory from the hub's node API (``GET /node/v1/directory``).

The handler serves the file that :meth:`DirectoryEditor.publish` writes, exactly as
signed. It adds no authentication of its own: mount it on the node-to-node listener,
which already demands a client certificate from the federation CA (mutual TLS).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from .model import sha256_hex

DIRECTORY_PATH = "/node/v1/directory"
CONTENT_TYPE = "application/jose"  # RFC 7515 §9.2.1: a JWS in compact serialisation


def directory_handler(published: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler answering with the signed directory at ``published``.

    200 with the JWS, ``ETag`` (SHA-256 of the bytes) and ``Cache-Control: no-cache``;
    304 when ``If-None-Match`` names the current ETag; 503 while nothing is published.
    The file is re-read only when it changed (it is replaced atomically on publication).
    """
    path = Path(published)
    cached: dict[str, object] = {}

    def current() -> tuple[bytes, str] | None:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return None
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if cached.get("key") != key:
            body = path.read_bytes().strip()
            cached.update(key=key, body=body, etag=f'"{sha256_hex(body)}"')
        return cached["body"], cached["etag"]  # type: ignore[return-value]

    async def handle(request: web.Request) -> web.StreamResponse:
        found = current()
        if found is None:
            return web.json_response({"error": "no directory has been published"}, status=503)
        body, etag = found
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if etag in (tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")):
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type=CONTENT_TYPE, headers=headers)

    return handle


def directory_routes(published: Path) -> list[web.RouteDef]:
    """``[GET DIRECTORY_PATH]`` for ``app.add_routes``."""
    return [web.get(DIRECTORY_PATH, directory_handler(published))]
