"""Console login through an OpenID Connect provider: code flow with PKCE, against a real provider and a real node on loopback."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from joserfc.jwk import RSAKey

from gateway.console.i18n import catalogue
from gateway.federation import NodeSpec, build_federation, free_port
from gateway.pki import DevelopmentCA

from ...conftest import LUZERN, XSD
from ..auth.oidc_provider import Provider
from ..nodes import running
from .browser import AXE, launch, require_browser_tools
from .conftest import Browser

CLIENT_ID = "drehscheibe-console"
CLIENT_SECRET = "console secret / with: reserved & characters"
ADMIN = {"sub": "9a0b-11", "preferred_username": "a.admin", "realm_access": {"roles": ["drehscheibe-admin"]}}


@pytest.fixture(scope="module")
def signing_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "idp-2026"})


@pytest.fixture(scope="module")
def stranger_key() -> RSAKey:
    """Another key under the provider's kid: what a forger has."""
    return RSAKey.generate_key(2048, parameters={"kid": "idp-2026"})


@dataclass
class Setup:
    federation: object
    provider: Provider
    idp_context: ssl.SSLContext


@pytest.fixture
async def oidc(tmp_path, clock, signing_key) -> AsyncIterator[Setup]:
    """node-luzern on 127.0.0.1 with [oidc] and [oidc.console]; the provider on HTTPS at localhost (another site), under its own CA."""
    idp_ca = DevelopmentCA(tmp_path / "idp-ca")
    idp_identity = idp_ca.issue_node("idp", tmp_path / "idp", hosts=("localhost",))
    idp_port, api_port = free_port(), free_port()
    secret_file = tmp_path / "console-client-secret"
    secret_file.write_text(CLIENT_SECRET + "\n", encoding="utf-8")
    redirect_uri = f"https://127.0.0.1:{api_port}/console/oidc/callback"
    provider = Provider(CLIENT_ID, CLIENT_SECRET, redirect_uri, signing_key, clock.now, base=f"https://localhost:{idp_port}")
    extra = f"""[oidc]
issuer = "{provider.issuer}"
jwks_uri = "{provider.issuer}/certs"
audience = "drehscheibe-node-luzern"
role_claim = "realm_access.roles"
name_claim = "preferred_username"
ca_file = "{idp_ca.cert_path}"

[[oidc.roles]]
value = "drehscheibe-admin"
role = "admin"

[[oidc.roles]]
value = "drehscheibe-auditor"
role = "auditor"

[oidc.console]
client_id = "{CLIENT_ID}"
client_secret_file = "{secret_file}"
redirect_uri = "{redirect_uri}"
scopes = ["openid", "profile"]
display_name = "LU-IAM"
"""
    federation = build_federation(tmp_path / "federation", [NodeSpec("node-luzern", [LUZERN], api_port=api_port, extra_toml=extra)],
                                  schemas=XSD)  # fmt: skip
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(idp_identity.certificate, idp_identity.private_key)
    runner = web.AppRunner(provider.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", idp_port, ssl_context=server).start()
    try:
        async with running(federation, clock, "node-luzern"):
            yield Setup(federation, provider, ssl.create_default_context(cafile=str(idp_ca.cert_path)))
    finally:
        await runner.cleanup()


class Person:
    """A browser that talks to the node (Browser) and to the provider (its own TLS trust)."""

    def __init__(self, setup: Setup) -> None:
        self.node = Browser(setup.federation)
        self.idp = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=setup.idp_context))

    async def __aenter__(self) -> Person:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.node.session.close()
        await self.idp.close()

    async def to_provider(self) -> str:
        """Login page, then "Log in with": returns the callback URL the provider sends the browser back to."""
        status, page, _ = await self.node.get("/console/login")
        assert status == 200 and 'href="/console/oidc/start"' in page
        status, _, headers = await self.node.get("/console/oidc/start")
        assert status == 303, status
        async with self.idp.get(headers["Location"], allow_redirects=False) as response:
            assert response.status == 302, await response.text()
            return response.headers["Location"]

    async def back(self, callback: str):
        """The browser arrives at the node's callback."""
        parts = urlsplit(callback)
        return await self.node.get(f"{parts.path}?{parts.query}")

    async def log_in(self):
        return await self.back(await self.to_provider())

    async def signed_in_page(self, path: str) -> int:
        return (await self.node.get(path))[0]


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return parts._replace(query="&".join(f"{k}={v}" for k, v in query.items())).geturl()


async def test_an_auditor_logs_in_through_the_provider_and_gets_a_new_strict_session(oidc):
    """The code flow with S256 ends in a session under a new id with a Strict, HttpOnly, Secure cookie; the pre-login id is dead."""
    async with Person(oidc) as person:
        callback = await person.to_provider()
        pre_login = person.node.cookie()
        request = oidc.provider.authorize_requests[-1]
        assert request["code_challenge_method"] == "S256" and "code_verifier" not in request
        assert request["scope"] == "openid profile" and request["nonce"] and request["state"]
        status, page, headers = await person.back(callback)
        assert status == 200 and 'http-equiv="refresh" content="0; url=/console/"' in page
        cookies = headers.getall("Set-Cookie")
        session_cookie = next(c for c in cookies if c.startswith("__Host-drehscheibe-console="))
        for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
            assert flag in session_cookie
        assert any(c.startswith("__Host-drehscheibe-oidc=") and "Max-Age=0" in c for c in cookies)  # the flow cookie is cleared
        assert person.node.cookie() not in (None, pre_login)
        status, page, _ = await person.node.get("/console/audit")
        assert status == 200 and "m.muster" in page
        async with Browser(oidc.federation) as attacker:
            attacker.plant(pre_login)
            assert (await attacker.get("/console/audit"))[0] == 303


async def test_an_admin_from_the_provider_reaches_admin_pages_only(oidc):
    """The role claim maps through [[oidc.roles]] exactly as for API tokens: an admin, not an auditor."""
    oidc.provider.user = ADMIN
    async with Person(oidc) as person:
        assert (await person.log_in())[0] == 200
        status, page, _ = await person.node.get("/console/admin")
        assert status == 200 and "a.admin" in page
        assert await person.signed_in_page("/console/audit") == 403


async def test_a_role_the_node_does_not_map_gets_a_403_page_and_no_session(oidc):
    """Deny by default: a verified ID token whose roles map to nothing on this node opens no session."""
    oidc.provider.user = {"sub": "x-1", "preferred_username": "n.niemand", "realm_access": {"roles": ["offline_access"]}}
    async with Person(oidc) as person:
        status, page, _ = await person.log_in()
        assert status == 403 and "n.niemand" not in page
        assert await person.signed_in_page("/console/audit") == 303


async def test_two_mapped_roles_are_refused(oidc):
    """One principal, one role: an ID token with both the admin and the auditor role opens no session."""
    oidc.provider.user = ADMIN | {"realm_access": {"roles": ["drehscheibe-admin", "drehscheibe-auditor"]}}
    async with Person(oidc) as person:
        assert (await person.log_in())[0] == 403
        assert await person.signed_in_page("/console/admin") == 303


async def test_a_wrong_state_is_refused_before_the_code_is_exchanged(oidc):
    """A callback whose state is not the pending login's: 403, no token request, and the pending login is used up."""
    async with Person(oidc) as person:
        callback = await person.to_provider()
        assert (await person.back(with_query(callback, state="forged-state")))[0] == 403
        assert oidc.provider.grants  # the code was never exchanged
        assert (await person.back(callback))[0] == 403  # the pending login is gone, even with the right state now
        assert await person.signed_in_page("/console/audit") == 303


async def test_a_callback_without_a_started_login_is_refused(oidc):
    """Login CSRF: a victim's browser sent to the callback with the attacker's code and state has no pending login: 403."""
    async with Person(oidc) as attacker, Person(oidc) as victim:
        callback = await attacker.to_provider()
        assert (await victim.back(callback))[0] == 403
        assert await victim.signed_in_page("/console/audit") == 303


async def test_a_replayed_code_is_refused_by_the_node_and_by_the_provider(oidc):
    """The same callback twice fails at the node (used pending login); the old code in a fresh flow fails at the provider."""
    async with Person(oidc) as person:
        callback = await person.to_provider()
        assert (await person.back(callback))[0] == 200
    async with Person(oidc) as replay:
        assert (await replay.back(callback))[0] == 403
        fresh = await replay.to_provider()
        old_code = parse_qs(urlsplit(callback).query)["code"][0]
        assert (await replay.back(with_query(fresh, code=old_code)))[0] == 403
        assert oidc.provider.token_refusals == ["invalid_grant: code used before"]
        assert await replay.signed_in_page("/console/audit") == 303


async def test_a_code_issued_for_another_pkce_challenge_is_refused_by_the_provider(oidc):
    """Code injection: a code from another browser's flow, delivered with this browser's state, fails PKCE at the provider."""
    async with Person(oidc) as attacker, Person(oidc) as victim:
        attacker_callback = await attacker.to_provider()
        victim_callback = await victim.to_provider()
        injected = with_query(victim_callback, code=parse_qs(urlsplit(attacker_callback).query)["code"][0])
        assert (await victim.back(injected))[0] == 403
        assert oidc.provider.token_refusals == ["invalid_grant: code_verifier does not match the challenge"]
        assert await victim.signed_in_page("/console/audit") == 303


@pytest.mark.parametrize("claims", [
    pytest.param({"nonce": "another-nonce"}, id="wrong-nonce"),
    pytest.param({"nonce": None}, id="no-nonce"),
    pytest.param({"aud": "another-client", "azp": "another-client"}, id="wrong-audience"),
    pytest.param({"aud": [CLIENT_ID, "another-client"], "azp": "another-client"}, id="azp-of-another-client"),
    pytest.param({"iss": "https://idp.elsewhere.example/realms/verwaltung"}, id="wrong-issuer"),
    pytest.param({"exp": 1}, id="expired-long-ago"),
])  # fmt: skip
async def test_an_id_token_failing_a_claim_check_opens_no_session(oidc, claims):
    """nonce, aud/azp, iss and exp are checked on the signed ID token; any failure is a 403 with no session."""
    oidc.provider.id_token_claims = claims
    async with Person(oidc) as person:
        assert (await person.log_in())[0] == 403
        assert await person.signed_in_page("/console/audit") == 303


async def test_an_id_token_expired_beyond_the_leeway_is_refused_and_within_it_accepted(oidc, clock):
    """exp is checked against the node's clock with the configured leeway (60 s)."""
    now = int(clock.now().timestamp())
    oidc.provider.id_token_claims = {"exp": now - 61}
    async with Person(oidc) as person:
        assert (await person.log_in())[0] == 403
    oidc.provider.id_token_claims = {"exp": now - 30}
    async with Person(oidc) as person:
        assert (await person.log_in())[0] == 200


async def test_an_id_token_signed_by_another_key_under_the_providers_kid_is_refused(oidc, stranger_key):
    """The signature is checked against the provider's published JWKS, not against a key the token names."""
    published = oidc.provider.signing_key
    oidc.provider.keys = [published]
    oidc.provider.signing_key = stranger_key
    async with Person(oidc) as person:
        assert (await person.log_in())[0] == 403
        assert await person.signed_in_page("/console/audit") == 303


async def test_an_error_from_the_provider_ends_the_login(oidc):
    """access_denied (the person declined or is not allowed) comes back with the state: 403, no session."""
    async with Person(oidc) as person:
        callback = await person.to_provider()
        state = parse_qs(urlsplit(callback).query)["state"][0]
        assert (await person.back(f"{urlsplit(callback).path}?error=access_denied&state={state}"))[0] == 403
        assert await person.signed_in_page("/console/audit") == 303


async def test_a_discovery_document_naming_another_issuer_stops_the_login_before_the_provider(oidc):
    """OIDC Discovery §4.3: the document must name the configured issuer, or the node sends nobody there (503)."""
    oidc.provider.discovery_issuer = "https://evil.example/realms/verwaltung"
    async with Person(oidc) as person:
        await person.node.get("/console/login")
        status, _, headers = await person.node.get("/console/oidc/start")
        assert status == 503 and "Location" not in headers
        assert not oidc.provider.authorize_requests


async def test_in_chromium_the_login_crosses_sites_and_lands_on_the_role_home_page(oidc):
    """In a real browser, provider on another site: the Lax flow cookie survives the way back, the Strict session cookie the next page."""
    require_browser_tools()
    from playwright.async_api import async_playwright

    oidc.provider.interactive = True  # the person presses the provider's login button: the way back starts on its site
    base = oidc.federation.api_url("node-luzern")
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            context = await browser.new_context(ignore_https_errors=True)
            page = await context.new_page()
            await page.goto(base + "/console/login?lang=fr")
            await page.locator("#oidc-login").click()
            await page.wait_for_url(lambda url: url.startswith(oidc.provider.base))
            await page.locator("#idp-login").click()
            await page.wait_for_url(base + "/console/audit")
            assert "m.muster" in await page.locator("header").inner_text()
            assert await page.locator("html").get_attribute("lang") == "fr"
            cookies = {cookie["name"]: cookie for cookie in await context.cookies()}
            session = cookies["__Host-drehscheibe-console"]
            assert (session["sameSite"], session["httpOnly"], session["secure"]) == ("Strict", True, True)
            assert "__Host-drehscheibe-oidc" not in cookies
            # axe-core on the login page with the provider's button and on the refusal page (axe needs bypass_csp)
            checked = await browser.new_context(ignore_https_errors=True, bypass_csp=True)
            page = await checked.new_page()
            await page.goto(base + "/console/login")
            problems = {"login": await serious_violations(page)}
            await page.goto(base + "/console/oidc/callback?state=x&code=y")
            assert await page.locator("h1").inner_text() == catalogue("de")["error.oidc.title"]
            problems["refused"] = await serious_violations(page)
            assert problems == {"login": [], "refused": []}
        finally:
            await browser.close()


async def serious_violations(page) -> list[str]:
    """axe-core's serious and critical WCAG 2.1 A/AA and best-practice violations on the page."""
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate("""async () => await axe.run(document, {runOnly: {type: 'tag',
        values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})""")
    return [f"{v['id']} ({v['impact']})" for v in result["violations"] if v["impact"] in ("serious", "critical")]


async def test_without_a_console_client_the_login_page_has_no_provider_button_and_the_routes_answer_404(federation, clock):
    """The OIDC login exists only when [oidc.console] is configured; otherwise nothing of it is reachable."""
    async with running(federation, clock, "node-luzern"), Browser(federation) as browser:
        status, page, _ = await browser.get("/console/login")
        assert status == 200 and "/console/oidc/start" not in page
        assert (await browser.get("/console/oidc/start"))[0] == 404
        assert (await browser.get("/console/oidc/callback?state=x&code=y"))[0] == 404
