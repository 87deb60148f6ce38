"""The hub serves its signed directory over mutual TLS; a node fetches, verifies and resolves from it.

Real aiohttp servers on 127.0.0.1 with the development PKI; nothing under test is mocked.
"""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.audit import Actor, ActorKind
from gateway.clock import Clock
from gateway.directory import (
    CONTENT_TYPE,
    DIRECTORY_PATH,
    CertificateUse,
    DirectoryCache,
    DirectoryEditor,
    DirectoryState,
    Refusal,
    directory_routes,
    https_fetcher,
)
from gateway.pki import load_certificate

from .conftest import HUB, KANTON, KANTON_NODE, LUZERN, LUZERN_NODE, Pki

ADMIN = Actor(ActorKind.ADMIN, "admin-lu")


def server_context(pki: Pki) -> ssl.SSLContext:
    hub = pki.nodes[HUB]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(hub.certificate, hub.private_key)
    context.load_verify_locations(cafile=str(pki.ca.cert_path))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(pki: Pki, node: str | None = LUZERN_NODE) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca.cert_path))
    if node is not None:
        context.load_cert_chain(pki.nodes[node].certificate, pki.nodes[node].private_key)
    return context


@contextlib.asynccontextmanager
async def hub_api(pki: Pki, published: Path):
    """The hub's node-to-node listener with the directory route mounted; yields its base URL."""
    app = web.Application()
    app.add_routes(directory_routes(published))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(pki))
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"https://{host}:{port}"
    finally:
        await runner.cleanup()


def populate(pki: Pki, editor: DirectoryEditor, base_url: str) -> None:
    editor.set_node(HUB, base_url)
    editor.set_node(LUZERN_NODE, "https://127.0.0.1:9441")
    editor.set_node(KANTON_NODE, "https://127.0.0.1:9442")
    editor.add_participant(LUZERN, node=LUZERN_NODE, message_types=(10301,))
    editor.add_participant(KANTON, node=KANTON_NODE, message_types=(10301, 2011))
    for participant in (LUZERN, KANTON):
        for use in CertificateUse:
            editor.add_certificate(participant, pki.pem(participant, use), use=use)


async def test_publish_fetch_over_mutual_tls_and_lookup(live_pki: Pki, tmp_path: Path):
    """A directory published by the hub editor is fetched over HTTPS with mTLS, verified, kept and resolved."""
    pki = live_pki
    published = tmp_path / "hub" / "directory.jws"
    async with hub_api(pki, published) as base:
        editor, _ = DirectoryEditor.create(tmp_path / "hub" / "directory.toml", issuer=HUB, actor=ADMIN)
        populate(pki, editor, base)
        editor.publish(editor.sign(pki.signer(), pki.trust, published=published), published)

        cache = DirectoryCache(tmp_path / "luzern" / "directory.jws", trust=pki.trust, issuer=HUB,
                               fetch=https_fetcher(base + DIRECTORY_PATH, client_context(pki)), clock=Clock())
        status = await cache.refresh()
        assert status.state is DirectoryState.CURRENT and status.version == 1, status.last_error
        kanton = cache.lookup(KANTON)
        assert (kanton.node_id, kanton.node_url) == (KANTON_NODE, "https://127.0.0.1:9442")
        assert kanton.encryption_certificate == load_certificate(pki.participants[KANTON][1].certificate)
        assert kanton.message_types == {10301, 2011}
        assert cache.path.read_text() == published.read_text()

        # The admin retires Kanton's encryption key and publishes version 2; the node follows.
        editor = DirectoryEditor.load(editor.path, actor=ADMIN)
        encryption = next(c for c in editor.source.participant(KANTON).certificates if c.use is CertificateUse.ENCRYPTION)
        editor.retire_certificate(KANTON, encryption.fingerprint)
        editor.publish(editor.sign(pki.signer(), pki.trust, published=published), published)
        assert (await cache.refresh()).version == 2
        assert cache.lookup(KANTON).encryption_certificates == ()

    # The hub is gone: the node keeps routing on its verified copy and says it is stale.
    status = await cache.refresh()
    assert status.state is DirectoryState.STALE and status.last_error.reason is Refusal.UNAVAILABLE
    assert cache.lookup(LUZERN).node_id == LUZERN_NODE


async def test_a_node_without_a_client_certificate_gets_no_directory(live_pki: Pki, tmp_path: Path):
    """The hub's listener demands a federation client certificate; without one the fetch fails."""
    pki = live_pki
    published = tmp_path / "directory.jws"
    published.write_text(pki.signed())
    async with hub_api(pki, published) as base:
        cache = DirectoryCache(tmp_path / "node" / "directory.jws", trust=pki.trust, issuer=HUB,
                               fetch=https_fetcher(base + DIRECTORY_PATH, client_context(pki, node=None)), clock=Clock())
        status = await cache.refresh()
    assert status.state is DirectoryState.UNUSABLE and status.last_error.reason is Refusal.UNAVAILABLE


async def test_the_handler_serves_the_exact_file_with_an_etag(live_pki: Pki, tmp_path: Path):
    """GET answers the signed bytes as application/jose; If-None-Match with the ETag answers 304."""
    pki = live_pki
    published = tmp_path / "directory.jws"
    async with hub_api(pki, published) as base:
        async with aiohttp.ClientSession() as session:
            async with session.get(base + DIRECTORY_PATH, ssl=client_context(pki)) as response:
                assert response.status == 503
            token = pki.signed()
            published.write_text(token + "\n")
            async with session.get(base + DIRECTORY_PATH, ssl=client_context(pki)) as response:
                assert response.status == 200 and response.content_type == CONTENT_TYPE
                assert await response.text() == token
                etag = response.headers["ETag"]
            async with session.get(base + DIRECTORY_PATH, ssl=client_context(pki), headers={"If-None-Match": etag}) as response:
                assert response.status == 304


async def test_a_hub_answering_an_error_is_an_unavailable_directory(live_pki: Pki, tmp_path: Path):
    """An HTTP error from the hub is a failed refresh, not a directory."""
    pki = live_pki
    async with hub_api(pki, tmp_path / "nothing-published.jws") as base:
        fetch = https_fetcher(base + DIRECTORY_PATH, client_context(pki))
        cache = DirectoryCache(tmp_path / "d.jws", trust=pki.trust, issuer=HUB, fetch=fetch, clock=Clock())
        status = await cache.refresh()
    assert status.last_error.reason is Refusal.UNAVAILABLE and "HTTP 503" in str(status.last_error)
