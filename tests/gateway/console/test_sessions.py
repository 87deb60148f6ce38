"""Console login and sessions: the node's own credentials, a new session id at login, cookie flags, CSRF."""

from __future__ import annotations

from gateway.audit import Action

from ...conftest import LUZERN
from ..nodes import running
from .conftest import AUDITOR_CLIENT, AUDITOR_SECRET, Browser, operator, system


async def test_a_static_operator_credential_logs_in_and_lands_on_the_roles_home_page(governed, clock):
    """An admin's configured name and token open a session; the landing page redirects to the admin overview."""
    async with running(governed, clock, "node-luzern"), Browser(governed) as browser:
        assert await browser.login(*operator(governed, "node-luzern", "admin")) == 303
        status, _, headers = await browser.get("/console/")
        assert (status, headers["Location"]) == (303, "/console/admin")
        status, page, _ = await browser.get("/console/admin")
        assert status == 200 and "admin-node-luzern" in page


async def test_an_oauth2_client_logs_in_with_its_secret_checked_against_the_configured_hash(governed, clock):
    """A configured [[oauth_clients]] auditor logs in with client id and secret; a wrong secret gets 401 and no session."""
    async with running(governed, clock, "node-luzern"), Browser(governed) as browser:
        assert await browser.login(AUDITOR_CLIENT, AUDITOR_SECRET + "x") == 401
        assert (await browser.get("/console/audit"))[0] == 303
        assert await browser.login(AUDITOR_CLIENT, AUDITOR_SECRET) == 303
        status, page, _ = await browser.get("/console/audit")
        assert status == 200 and AUDITOR_CLIENT in page


async def test_a_token_logs_in_only_under_its_own_name(governed, clock):
    """The admin's token with the auditor's name is refused: the token must belong to the name given."""
    async with running(governed, clock, "node-luzern"), Browser(governed) as browser:
        _, admin_token = operator(governed, "node-luzern", "admin")
        auditor_name, _ = operator(governed, "node-luzern", "auditor")
        assert await browser.login(auditor_name, admin_token) == 401
        assert (await browser.get("/console/audit"))[0] == 303


async def test_the_session_cookie_is_httponly_secure_samesite_strict_and_host_only(governed, clock):
    """The Set-Cookie of the login carries HttpOnly, Secure, SameSite=Strict and Path=/ under a __Host- name."""
    async with running(governed, clock, "node-luzern"), Browser(governed) as browser:
        _, _, headers = await browser.get("/console/login")
        cookie = headers["Set-Cookie"]
        assert cookie.startswith("__Host-drehscheibe-console=")
        for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
            assert flag in cookie
        assert "Domain" not in cookie


async def test_login_issues_a_new_session_id_so_a_planted_id_is_worthless(governed, clock):
    """Session fixation: the id the browser had before login is destroyed; an attacker holding it gets the login page."""
    async with running(governed, clock, "node-luzern"):
        async with Browser(governed) as victim, Browser(governed) as attacker:
            await attacker.get("/console/login")
            planted = attacker.cookie()
            victim.plant(planted)
            status, page, _ = await victim.get("/console/login")
            assert victim.cookie() == planted and 'name="csrf"' in page
            assert await victim.login(*operator(governed, "node-luzern", "auditor")) == 303
            assert victim.cookie() != planted
            assert (await victim.get("/console/audit"))[0] == 200
            status, _, headers = await attacker.get("/console/audit")
            assert (status, headers["Location"]) == (303, "/console/login")


async def test_logout_ends_the_session_on_the_server(governed, clock):
    """After logout the old cookie value opens nothing, even if a client keeps sending it."""
    async with running(governed, clock, "node-luzern"), Browser(governed) as browser:
        await browser.login(*operator(governed, "node-luzern", "auditor"))
        old = browser.cookie()
        assert (await browser.post("/console/logout", {}))[0] == 303
        async with Browser(governed) as replay:
            replay.plant(old)
            assert (await replay.get("/console/audit"))[0] == 303


async def test_a_post_without_the_sessions_csrf_token_is_refused_before_anything_happens(governed, clock):
    """No token or another session's token: 403, the policy set stays and no reload is audited."""
    async with running(governed, clock, "node-luzern") as nodes, Browser(governed) as admin, Browser(governed) as other:
        node = nodes["node-luzern"]
        await admin.login(*operator(governed, "node-luzern", "admin"))
        await other.login(*operator(governed, "node-luzern", "admin"))
        rules = governed.policies / "einwohnerregister.toml"
        rules.write_text(rules.read_text().replace('id = "lu-gemeinden-zuzugsmeldung"', 'id = "lu-zuzug-neu"'))
        _, page, _ = await admin.get("/console/admin/policies/diff")
        revision = page.split('name="revision" value="')[1].split('"')[0]
        before = node.policies.revision
        status, page, _ = await admin.post("/console/admin/policies/apply", {"confirm": "yes", "revision": revision}, csrf=False)
        assert status == 403
        status, _, _ = await admin.post("/console/admin/policies/apply", {"confirm": "yes", "revision": revision, "csrf": other.csrf}, csrf=False)
        assert status == 403
        assert node.policies.revision == before
        assert not [r for _, _, r in node.audit.iter_records() if r.action is Action.POLICY_RELOAD]


async def test_a_cross_site_post_is_refused_even_with_a_valid_token(governed, clock):
    """A POST whose Origin is another site gets 403, whatever it carries."""
    async with running(governed, clock, "node-luzern"), Browser(governed) as browser:
        await browser.login(*operator(governed, "node-luzern", "auditor"))
        status, _, _ = await browser.post("/console/audit/search", {"participant": LUZERN}, headers={"Origin": "https://evil.example"})
        assert status == 403


async def test_a_system_logs_in_with_its_local_system_token(governed, clock):
    """A local system's configured name and token open its sender-tracking page."""
    async with running(governed, clock, "node-luzern"), Browser(governed) as browser:
        assert await browser.login(*system(governed, LUZERN)) == 303
        status, page, _ = await browser.get("/console/messages")
        assert status == 200 and LUZERN in page


def _request_with(session_id: str):
    from aiohttp.test_utils import make_mocked_request

    return make_mocked_request("GET", "/console/audit", headers={"Cookie": f"__Host-drehscheibe-console={session_id}"})


def test_a_flood_of_login_page_sessions_does_not_push_out_a_signed_in_session():
    """Pre-login sessions are capped on their own: 5,000 of them leave a signed-in session alive."""
    from gateway.auth.principal import KIND_SCOPES, AuthMethod, Principal, PrincipalKind
    from gateway.console.sessions import MAX_ANONYMOUS, ConsoleSessions

    sessions = ConsoleSessions(clients=(), static=None)
    auditor = Principal(PrincipalKind.AUDITOR, "dsb", KIND_SCOPES[PrincipalKind.AUDITOR], AuthMethod.STATIC_TOKEN)
    signed_in = sessions.start(auditor)
    first_anonymous = sessions.start()
    for _ in range(5 * MAX_ANONYMOUS):
        sessions.start()
    assert sessions.principal(_request_with(signed_in.id)) == auditor
    assert sessions.current(_request_with(first_anonymous.id)) is None
    sessions.close()


def test_a_session_ends_after_fifteen_idle_minutes_and_after_eight_hours_in_any_case():
    """Idle for more than IDLE_SECONDS, or older than MAX_AGE_SECONDS however busy: the cookie opens nothing."""
    from gateway.auth.principal import KIND_SCOPES, AuthMethod, Principal, PrincipalKind
    from gateway.console.sessions import IDLE_SECONDS, MAX_AGE_SECONDS, ConsoleSessions

    now = [1000.0]
    sessions = ConsoleSessions(clients=(), static=None, clock=lambda: now[0])
    admin = Principal(PrincipalKind.ADMIN, "ops", KIND_SCOPES[PrincipalKind.ADMIN], AuthMethod.STATIC_TOKEN)
    idle, busy = sessions.start(admin), sessions.start(admin)
    now[0] += IDLE_SECONDS - 1
    assert sessions.principal(_request_with(busy.id)) == admin
    now[0] += 2
    assert sessions.principal(_request_with(idle.id)) is None
    while now[0] < 1000.0 + MAX_AGE_SECONDS - 60:
        now[0] += 60
        assert sessions.principal(_request_with(busy.id)) == admin
    now[0] += 120
    assert sessions.principal(_request_with(busy.id)) is None
    sessions.close()
