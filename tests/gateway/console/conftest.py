"""Fixtures of the console tests: a node with demo policies, an OAuth2 client, and a cookie-carrying client."""

from __future__ import annotations

import re
import shutil
import ssl
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from gateway.auth.hashing import MIN_LOG2_N, hash_secret
from gateway.federation import NodeSpec, build_federation

from ...conftest import KANTON, LUZERN, XSD

EMMEN = "1-1024-1"
POLICIES = Path(__file__).resolve().parents[3] / "policies" / "demo"
AUDITOR_CLIENT, AUDITOR_SECRET = "dsb-luzern", "correct horse battery staple, auditor edition"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def governed(tmp_path):
    """node-luzern (Stadt Luzern and Emmen, a configured OAuth2 auditor client) and node-kanton, on a copy of the demo policies."""
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    client = (f'[[oauth_clients]]\nclient_id = "{AUDITOR_CLIENT}"\nrole = "auditor"\n'
              f'secret_hash = "{hash_secret(AUDITOR_SECRET, log2_n=MIN_LOG2_N)}"\n')  # fmt: skip
    federation = build_federation(
        tmp_path / "governed", [NodeSpec("node-luzern", [LUZERN, EMMEN], extra_toml=client), NodeSpec("node-kanton", [KANTON])],
        schemas=XSD, policies=policies,
    )  # fmt: skip
    federation.policies = policies
    return federation


class Browser:
    """A minimal browser over aiohttp: keeps cookies (the __Host- cookie on 127.0.0.1 needs an unsafe jar), no redirects."""

    def __init__(self, federation, node_id: str = "node-luzern") -> None:
        self.base = federation.api_url(node_id)
        self.jar = aiohttp.CookieJar(unsafe=True)
        context = ssl.create_default_context(cafile=str(federation.ca_file))
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context), cookie_jar=self.jar)
        self.csrf = ""

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()

    def cookie(self) -> str | None:
        found = [c.value for c in self.jar if c.key == "__Host-drehscheibe-console"]
        return found[0] if found else None

    def plant(self, session_id: str) -> None:
        """Put a session id into this browser's jar, as an attacker would (fixation) or a replay does."""
        self.jar.update_cookies({"__Host-drehscheibe-console": session_id}, URL(self.base))

    async def request(self, method: str, path: str, **kwargs) -> tuple[int, str, aiohttp.typedefs.LooseHeaders]:
        async with self.session.request(method, self.base + path, allow_redirects=False, **kwargs) as response:
            text = await response.text()
            found = _CSRF.search(text)
            if found:
                self.csrf = found.group(1)
            return response.status, text, response.headers

    async def get(self, path: str, **kwargs):
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, data: dict, *, csrf: bool = True, **kwargs):
        form = {**data, **({"csrf": self.csrf} if csrf else {})}
        return await self.request("POST", path, data=form, **kwargs)

    async def login(self, name: str, secret: str) -> int:
        await self.get("/console/login")
        status, _, headers = await self.post("/console/login", {"name": name, "secret": secret})
        location, hops = headers.get("Location"), 0
        while status == 303 and location and hops < 3:  # to the role's home page, which carries the new CSRF token
            hop_status, _, hop_headers = await self.get(location)
            location, hops = hop_headers.get("Location") if hop_status == 303 else None, hops + 1
        return status


def operator(federation, node_id: str, role: str) -> tuple[str, str]:
    """The (name, token) of a node's static operator credential as build_federation writes it."""
    return f"{role}-{node_id}", federation.operator_tokens[node_id][role]


def system(federation, participant: str) -> tuple[str, str]:
    return f"register-{participant}", federation.tokens[participant]
