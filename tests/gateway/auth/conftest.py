"""Fixtures: a development PKI, configured clients, and the local listener's shape on real HTTPS on loopback.

The listener mounts the same sub-applications at the same prefixes as ``api.local_api``:
``/api/v1`` and ``/admin/v1`` with stand-in handlers on the real route patterns (they answer
who called), the real auditor API on a real audit log at ``/audit/v1``, and the real token
endpoint at ``/oauth2``; ``require_scopes`` sits once on the root, as the node will install it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web

from gateway.audit import AuditLog
from gateway.audit.api import auditor_app
from gateway.auth import (
    PRINCIPAL, NodeAuthentication, OAuthClient, PrincipalKind, Scope, audit_authenticator, hash_secret,
)  # fmt: skip
from gateway.auth.principal import KIND_SCOPES
from gateway.config import LocalSystem, Operator, OperatorRole
from gateway.ids import ParticipantId
from gateway.pki import DevelopmentCA, IssuedIdentity, load_private_key

NODE_ID = "node-luzern"
KRIENS = "1-1059-1"
EMMEN = "1-1024-1"
STATIC_TOKENS = {"legacy-kriens": "static-token-of-kriens", "legacy-admin": "static-token-of-admin",
                 "legacy-auditor": "static-token-of-auditor"}  # fmt: skip


def basic(client_id: str, secret: str) -> str:
    """HTTP Basic client authentication as RFC 6749 §2.3.1 asks: both parts form-urlencoded first."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def b64(data: bytes | dict) -> str:
    """base64url without padding, of bytes or of compact JSON."""
    raw = json.dumps(data, separators=(",", ":")).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forge_hs256(header: dict, claims: dict, secret: bytes) -> str:
    """A JWT "signed" HS256 with ``secret`` (e.g. a public key): the algorithm-confusion attack, built by hand."""
    from cryptography.hazmat.primitives import hashes, hmac

    signing_input = f"{b64(header | {'alg': 'HS256'})}.{b64(claims)}"
    mac = hmac.HMAC(secret, hashes.SHA256())
    mac.update(signing_input.encode())
    return f"{signing_input}.{b64(mac.finalize())}"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Pki:
    ca: DevelopmentCA
    node: IssuedIdentity  # the node's TLS identity: serves the listener and signs access tokens
    emmen_system: IssuedIdentity  # a local system's TLS client certificate (pinned)
    stranger: IssuedIdentity  # chains to the same CA, pinned for nobody
    idp: IssuedIdentity  # the OIDC provider's HTTPS server

    @property
    def ca_file(self) -> Path:
        return self.ca.cert_path

    def fingerprint(self, identity: IssuedIdentity) -> str:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        der = x509.load_pem_x509_certificate(identity.certificate.read_bytes()).public_bytes(serialization.Encoding.DER)
        return hashlib.sha256(der).hexdigest()

    def server_context(self, identity: IssuedIdentity) -> ssl.SSLContext:
        """Like transport.server_context for the local listener: client certificate optional, CA-checked."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(identity.certificate, identity.private_key)
        context.load_verify_locations(cafile=str(self.ca_file))
        context.verify_mode = ssl.CERT_OPTIONAL
        return context

    def client_context(self, identity: IssuedIdentity | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if identity is not None:
            context.load_cert_chain(identity.certificate, identity.private_key)
        return context


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    base = tmp_path_factory.mktemp("auth-pki")
    ca = DevelopmentCA(base / "ca")
    return Pki(
        ca=ca,
        node=ca.issue_node(NODE_ID, base / "node"),
        emmen_system=ca.issue_node("emmen-einwohnerregister", base / "systems"),
        stranger=ca.issue_node("node-somewhere-else", base / "systems"),
        idp=ca.issue_node("idp", base / "idp", hosts=("127.0.0.1",)),
    )


@pytest.fixture(scope="session")
def secrets() -> dict[str, tuple[str, object]]:
    """Client secrets and their hashes (lowest accepted cost, hashed once per test session)."""
    names = ["kriens-register", "emmen-register", "kriens-sender", "ops-admin", "dpo-lu"]
    return {name: (f"secret-of-{name}", hash_secret(f"secret-of-{name}", log2_n=14)) for name in names}


@pytest.fixture(scope="session")
def clients(secrets, pki) -> tuple[OAuthClient, ...]:
    system = PrincipalKind.SYSTEM
    return (
        OAuthClient("kriens-register", system, KIND_SCOPES[system], frozenset({ParticipantId(KRIENS)}),
                    secrets["kriens-register"][1]),
        OAuthClient("emmen-register", system, KIND_SCOPES[system], frozenset({ParticipantId(EMMEN)}),
                    secrets["emmen-register"][1], pki.fingerprint(pki.emmen_system)),
        OAuthClient("kriens-sender", system, frozenset({Scope.MESSAGES_SEND}), frozenset({ParticipantId(KRIENS)}),
                    secrets["kriens-sender"][1]),
        OAuthClient("ops-admin", PrincipalKind.ADMIN, KIND_SCOPES[PrincipalKind.ADMIN], secret_hash=secrets["ops-admin"][1]),
        OAuthClient("dpo-lu", PrincipalKind.AUDITOR, KIND_SCOPES[PrincipalKind.AUDITOR], secret_hash=secrets["dpo-lu"][1]),
    )  # fmt: skip


@pytest.fixture(scope="session")
def node_key(pki):
    return load_private_key(pki.node.private_key)


def make_auth(pki: Pki, clients, clock, node_key, oidc=None) -> NodeAuthentication:
    return NodeAuthentication.create(
        node_id=NODE_ID, signing_key=node_key, now=clock.now, clients=clients, oidc=oidc,
        local_systems=[LocalSystem("legacy-kriens", sha256(STATIC_TOKENS["legacy-kriens"]), frozenset({ParticipantId(KRIENS)}))],
        operators=[Operator("legacy-admin", OperatorRole.ADMIN, sha256(STATIC_TOKENS["legacy-admin"])),
                   Operator("legacy-auditor", OperatorRole.AUDITOR, sha256(STATIC_TOKENS["legacy-auditor"]))],
    )  # fmt: skip


async def who(request: web.Request) -> web.Response:
    """Stand-in for a handler: answers the principal the middleware set, and the participant in the path."""
    principal = request[PRINCIPAL]
    return web.json_response({
        "name": principal.name, "kind": principal.kind.value, "method": principal.method.value,
        "participants": sorted(map(str, principal.participants)), "route": request.match_info.route.resource.canonical,
    })  # fmt: skip


def stand_in_api() -> tuple[web.Application, web.Application]:
    """/api/v1 and /admin/v1 with the route patterns of api.local_api."""
    systems = web.Application()
    systems.router.add_post("/messages", who)
    systems.router.add_get("/messages/{participant}/{message_id}", who)
    for suffix in ("receipts", "inbox", "inbox/{sender}/{message_id}/envelope", "inbox/{sender}/{message_id}/payload"):
        systems.router.add_get(f"/participants/{{participant}}/{suffix}", who)
    systems.router.add_post("/participants/{participant}/inbox/{sender}/{message_id}/ack", who)
    systems.router.add_get("/debug/unlisted", who)  # a route nobody put in ROUTE_SCOPES
    admin = web.Application()
    admin.router.add_get("/policies", who)
    admin.router.add_post("/policies/reload", who)
    admin.router.add_get("/routes", who)
    admin.router.add_post("/routes/reload", who)
    return systems, admin


@dataclass
class Listener:
    url: str
    pki: Pki
    auth: NodeAuthentication
    audit_log: Path
    runner: web.AppRunner = field(repr=False)

    async def call(self, method: str, path: str, *, token: str | None = None, cert: IssuedIdentity | None = None,
                   headers: dict | None = None, **kwargs) -> tuple[int, dict, object]:  # fmt: skip
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        connector = aiohttp.TCPConnector(ssl=self.pki.client_context(cert))
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.request(method, self.url + path, headers=headers, **kwargs) as response:
                text = await response.text()
                try:
                    body = json.loads(text) if text else {}
                except ValueError:
                    body = {"text": text}
                return response.status, body, response.headers

    async def token(self, client_id: str, secret: str, scope: str | None = None, *, how: str = "basic") -> tuple[int, dict, object]:
        form = {"grant_type": "client_credentials"} | ({"scope": scope} if scope else {})
        if how == "basic":
            return await self.call("POST", "/oauth2/token", data=form, headers={"Authorization": basic(client_id, secret)})
        return await self.call("POST", "/oauth2/token", data=form | {"client_id": client_id, "client_secret": secret})

    async def access_token(self, client_id: str, secrets, scope: str | None = None) -> str:
        status, body, _ = await self.token(client_id, secrets[client_id][0], scope)
        assert status == 200, body
        return body["access_token"]


async def start_listener(pki: Pki, auth: NodeAuthentication, audit_path: Path, clock, node_key) -> Listener:
    systems, admin = stand_in_api()
    log = AuditLog.open(audit_path, node=NODE_ID, signing_key=node_key, checkpoint_every=1)
    root = web.Application(middlewares=[auth.middleware()])
    root.add_subapp("/api/v1", systems)
    root.add_subapp("/admin/v1", admin)
    root.add_subapp("/audit/v1", auditor_app(log, person_secret=None, now=clock.now, authenticate=audit_authenticator()))
    root.add_subapp("/oauth2", auth.token_app())
    root.cleanup_ctx.append(auth.cleanup_ctx)

    async def close_log(app):
        yield
        log.close()

    root.cleanup_ctx.append(close_log)
    runner = web.AppRunner(root, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_context(pki.node))
    await site.start()
    port = runner.addresses[0][1]
    return Listener(f"https://127.0.0.1:{port}", pki, auth, audit_path, runner)


@pytest.fixture
async def listener(pki, clients, clock, node_key, tmp_path) -> AsyncIterator[Listener]:
    running = await start_listener(pki, make_auth(pki, clients, clock, node_key), tmp_path / "audit.db", clock, node_key)
    yield running
    await running.runner.cleanup()
