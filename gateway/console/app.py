"""The web console: server-rendered pages for auditors, admins and local systems, served by the node.

Mounted at ``/console`` on the local listener (gateway/api.py). Who may open which page is
decided by the listener's one authentication middleware from the one route table
(gateway/auth/routes.py), with the console's session cookie as the credential (sessions.py).
This module adds what only a browser needs: CSRF checks on every POST, security headers,
languages (i18n.py), charts (charts.py) and the pages themselves.

SECURITY, besides sessions.py:

* Every page an auditor opens is appended to the audit log (an ``audit_read`` record naming
  the page and its non-personal parameters) *before* anything is shown; if the log cannot
  record it, the page shows nothing but an error (fail closed), as the auditor API does.
* A person is searched by AHV number or local person ID, sent in a POST body only, and turned
  into its keyed hash at once; the number is never echoed, logged, stored in the session or
  written to the log. The CSV of a report is fetched with the hash kept in the session.
* Admins see envelopes' metadata and policies, never payloads or audit content; applying a
  policy change needs an explicit confirmation and the revision that was previewed, and goes
  through ``Node.reload_policies`` (audited before it takes effect).
* A local system sees only the messages of the participants it is bound to (the middleware
  answers 404 for another participant in the path; the list is built from its own only).
* Responses carry a strict Content-Security-Policy (no script at all), ``no-store``, and
  refuse framing.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, time as day_time, timedelta, timezone
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import jinja2
from aiohttp import web

from ..audit.errors import AuditUnavailable, AuditVerificationError
from ..audit.api import stream_export
from ..audit.export import FORMATS
from ..audit.log import AuditLog
from ..audit.persons import InvalidPersonIdentifier, person_ref
from ..audit.query import AuditQuery, audit_read, subject_access_report
from ..audit.record import Action, Actor, ActorKind, AuditRecord, Outcome, canonical_json
from ..audit.verify import verify_log
from ..auth import PRINCIPAL, AuthUnavailable, InvalidCredentials, OidcVerifier, Principal, PrincipalKind
from ..envelope import parse_envelope
from ..ids import GatewayError, InvalidIdentifier, ParticipantId, check_message_id
from ..node import Node
from ..policy.diff import diff_policy_sets
from ..policy.loader import PolicyLoadError, load_policy_set
from ..policy.model import PolicyRequest, Stage
from . import charts
from .i18n import LANGUAGES, ZURICH, language, swiss_date, swiss_datetime, translator
from .oidc import FLOW_COOKIE, OidcLogin, OidcLoginRefused, clear_flow_cookie, set_flow_cookie
from .sessions import ConsoleSessions, Session

log = logging.getLogger("drehscheibe.console")

_T = TypeVar("_T")
HERE = Path(__file__).parent
STATIC_FILES = {"console.css": "text/css"}
MAX_FORM_BYTES = 16 * 1024
MAX_RESULTS = 500
CHART_DAYS = 14
QUEUE_SAMPLE_SECONDS = 60.0
QUEUE_SAMPLES = 24 * 60  # one day of samples at one a minute
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")  # fmt: skip


@dataclass
class Console:
    """What the console application holds: the node, the sessions, templates and its log thread."""

    node: Node
    sessions: ConsoleSessions
    templates: jinja2.Environment
    queue_samples: deque = field(default_factory=lambda: deque(maxlen=QUEUE_SAMPLES))
    handle: AuditLog | None = None  # the console's own handle on the audit log, used only inside `thread`
    thread: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="console-audit"))
    oidc: OidcLogin | None = None  # login through the OpenID Connect provider, when [oidc.console] is configured


CONSOLE = web.AppKey("console", Console)
SESSION = web.RequestKey("console_session", Session)
FORM = web.RequestKey("console_form", dict)
LANG = web.RequestKey("console_lang", str)  # the language of a page shown before any session (the OIDC callback)


def console_app(node: Node, sessions: ConsoleSessions, *, sample_seconds: float = QUEUE_SAMPLE_SECONDS,
                oidc: OidcVerifier | None = None) -> web.Application:  # fmt: skip
    """The console as a sub-application; mount it at ``/console`` (the route table names those paths).

    ``oidc``: the listener's verifier of the provider's tokens; with ``[oidc.console]`` configured,
    the login page offers login through that provider (oidc.py), sharing its key set and role mapping.
    """
    templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # SECURITY: every value is HTML-escaped unless a chart marks its own markup safe
        trim_blocks=True,
        lstrip_blocks=True,
    )
    templates.filters["swiss"] = lambda text: swiss_datetime(datetime.fromisoformat(text.replace("Z", "+00:00")))
    console = Console(node, sessions, templates)
    if oidc is not None and oidc.settings.console is not None:
        console.oidc = OidcLogin(oidc, oidc.settings.console, now=node.clock.now)

    def forbidden(request: web.Request, principal: Principal) -> web.Response:
        session = sessions.current(request)
        if session is not None:
            request[SESSION] = session
        return _render(request, "error.html", status=403, title="error.forbidden.title", message="error.forbidden.text")

    sessions.render_forbidden = forbidden
    app = web.Application(middlewares=[_browser_checks])
    app[CONSOLE] = console
    app.on_response_prepare.append(_security_headers)
    app.cleanup_ctx.append(_lifetime(sample_seconds))
    app.router.add_get("/", index)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/oidc/start", oidc_start)
    app.router.add_get("/oidc/callback", oidc_callback)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/audit", audit_status)
    app.router.add_get("/audit/search", audit_search_form)
    app.router.add_post("/audit/search", audit_search)
    app.router.add_get("/audit/messages/{message_id}", audit_trace)
    app.router.add_get("/audit/report", audit_report_form)
    app.router.add_post("/audit/report", audit_report)
    app.router.add_get("/audit/report.csv", audit_report_csv)
    app.router.add_get("/audit/export", audit_export_form)
    app.router.add_post("/audit/export", audit_export)
    app.router.add_get("/admin", admin_overview)
    app.router.add_get("/admin/policies", admin_policies)
    app.router.add_get("/admin/policies/diff", admin_diff)
    app.router.add_post("/admin/policies/apply", admin_apply)
    app.router.add_get("/admin/explain", admin_explain_form)
    app.router.add_post("/admin/explain", admin_explain)
    app.router.add_get("/messages", system_messages)
    app.router.add_post("/messages", system_follow)
    app.router.add_get("/messages/{participant}/{message_id}", system_message)
    return app


# -- plumbing ----------------------------------------------------------------------------


def _lifetime(sample_seconds: float):
    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        """Sample the queue depth in the background; close the log handle and the sessions at the end."""
        console = app[CONSOLE]

        async def sample() -> None:
            while True:
                _sample_queue(console)
                await asyncio.sleep(sample_seconds)

        task = asyncio.create_task(sample())
        yield
        task.cancel()
        handle, console.handle = console.handle, None
        if handle is not None:
            await asyncio.get_running_loop().run_in_executor(console.thread, handle.close)
        console.thread.shutdown(wait=True)
        console.sessions.close()
        if console.oidc is not None:
            await console.oidc.aclose()

    return lifetime


def _sample_queue(console: Console) -> None:
    try:
        depth = sum(row[2] for row in console.node.store.queue_stats())
    except Exception:  # a store hiccup must not end the sampler; the gap shows in the chart
        log.warning("queue depth not sampled", exc_info=True)
        return
    console.queue_samples.append((console.node.clock.timestamp(), depth))


@web.middleware
async def _browser_checks(request: web.Request, handler):
    """Session, language and, for every POST, origin and CSRF token (before any handler runs)."""
    console = request.app[CONSOLE]
    session = console.sessions.current(request)
    if session is not None:
        request[SESSION] = session
        wanted = request.query.get("lang")
        if wanted in LANGUAGES:
            session.lang = wanted
    if request.method == "POST":
        origin = request.headers.get("Origin")
        # SECURITY: a cross-site form (or a script elsewhere) is refused even if a cookie came along:
        # Origin, when sent, must be this listener, and a browser's Sec-Fetch-Site must say same-origin.
        fetch_site = request.headers.get("Sec-Fetch-Site")
        if (origin is not None and origin != f"{request.scheme}://{request.host}") or fetch_site not in (None, "same-origin"):
            return _render(request, "error.html", status=403, title="error.csrf.title", message="error.csrf.text")
        if request.content_length is None or request.content_length > MAX_FORM_BYTES:
            return _render(request, "error.html", status=413, title="error.form.title", message="error.form.text")
        if request.content_type != "application/x-www-form-urlencoded":
            return _render(request, "error.html", status=415, title="error.form.title", message="error.form.text")
        form = dict(await request.post())
        # SECURITY: the form must carry this session's CSRF token; no session, no POST.
        if not console.sessions.csrf_valid(session, form.get("csrf")):
            log.info("console POST %s refused: CSRF token missing or wrong", request.match_info.route.resource.canonical
                     if request.match_info.route.resource else "?")  # fmt: skip
            return _render(request, "error.html", status=403, title="error.csrf.title", message="error.csrf.text")
        request[FORM] = {k: v for k, v in form.items() if isinstance(v, str)}
    return await handler(request)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on our own forms.
    response.headers["Referrer-Policy"] = "same-origin"
    if request.match_info.get("name") in STATIC_FILES:
        response.headers["Cache-Control"] = "max-age=3600"


def _lang(request: web.Request) -> str:
    session = request.get(SESSION)
    return language(session.lang if session is not None and session.lang else request.get(LANG) or request.query.get("lang"))


def _nav(principal: Principal | None) -> list[tuple[str, str]]:
    if principal is None:
        return []
    if principal.kind is PrincipalKind.AUDITOR:
        return [("/console/audit", "nav.audit.status"), ("/console/audit/search", "nav.audit.search"),
                ("/console/audit/report", "nav.audit.report"), ("/console/audit/export", "nav.audit.export")]  # fmt: skip
    if principal.kind is PrincipalKind.ADMIN:
        return [("/console/admin", "nav.admin.overview"), ("/console/admin/policies", "nav.admin.policies"),
                ("/console/admin/explain", "nav.admin.explain"), ("/console/admin/policies/diff", "nav.admin.diff")]  # fmt: skip
    return [("/console/messages", "nav.system.messages")]


def _console(request: web.Request) -> Console:
    """The console's state, also from the listener's middleware (where ``request.app`` is the root)."""
    for app in reversed(request.match_info.apps):
        if CONSOLE in app:
            return app[CONSOLE]
    raise LookupError("not a console route")


def _render(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    console = _console(request)
    session = request.get(SESSION)
    principal = session.principal if session is not None else None
    lang = _lang(request)
    page = console.templates.get_template(template).render(
        t=translator(lang), lang=lang, languages=LANGUAGES, principal=principal, csrf=session.csrf if session else "",
        node_id=console.node.id, path=request.path, nav=_nav(principal), date=swiss_date, datetime=swiss_datetime,
        **context,
    )  # fmt: skip
    return web.Response(text=page, content_type="text/html", charset="utf-8", status=status)


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _error(request: web.Request, status: int, title: str, message: str, **values: Any) -> web.Response:
    return _render(request, "error.html", status=status, title=title, message=message, values=values)


async def _in_log_thread(request: web.Request, work: Callable[[AuditLog], _T]) -> _T:
    """Run ``work`` with the console's log handle, in the one thread that owns it."""
    console = request.app[CONSOLE]

    def run() -> _T:
        if console.handle is None:
            console.handle = console.node.audit.reopen()
        return work(console.handle)

    return await asyncio.get_running_loop().run_in_executor(console.thread, run)


def _actor(request: web.Request) -> Actor:
    principal: Principal = request[PRINCIPAL]
    kind = {PrincipalKind.AUDITOR: ActorKind.AUDITOR, PrincipalKind.ADMIN: ActorKind.ADMIN}.get(principal.kind, ActorKind.LOCAL_SYSTEM)
    return Actor(kind, principal.name)


def _viewed(handle: AuditLog, request: web.Request, page: str, params: dict[str, object] | None = None) -> int:
    """SECURITY: the auditor's page view as an audit record (parameters without personal data)."""
    description = canonical_json({k: v for k, v in (params or {}).items() if v is not None}).decode("utf-8")
    return audit_read(handle, _actor(request), request.app[CONSOLE].node.clock.now(), f"console:{page}", description)


def _unrecorded(request: web.Request) -> web.Response:
    log.warning("console page refused: the audit log cannot record the view")
    return _error(request, 503, "error.audit.title", "error.audit.text")


# -- login ---------------------------------------------------------------------------------


async def index(request: web.Request) -> web.Response:
    """GET /console/ — to the signed-in user's home page, or to the login."""
    session = request.get(SESSION)
    principal = session.principal if session is not None else None
    if principal is None:
        raise web.HTTPSeeOther("/console/login")
    raise web.HTTPSeeOther(_nav(principal)[0][0])


async def login_form(request: web.Request) -> web.Response:
    """GET /console/login — the form, on an anonymous pre-session that carries its CSRF token."""
    sessions = request.app[CONSOLE].sessions
    session = request.get(SESSION)
    if session is not None and session.principal is not None:
        raise web.HTTPSeeOther("/console/")
    fresh = session is None
    if fresh:
        session = sessions.start(lang=language(request.query.get("lang")) if "lang" in request.query else None)
        request[SESSION] = session
    response = _render(request, "login.html", title="login.title", failed=False, oidc=request.app[CONSOLE].oidc)
    if fresh:
        sessions.set_cookie(response, session)
    return response


async def login(request: web.Request) -> web.Response:
    """POST /console/login — the node's own credentials; success issues a new session id."""
    sessions = request.app[CONSOLE].sessions
    form = request[FORM]
    principal = await sessions.authenticate(form.get("name", "").strip(), form.get("secret", ""))
    if principal is None:
        log.info("console login refused")  # no name: a mistyped secret pasted as the name must not reach the log
        return _render(request, "login.html", status=401, title="login.title", failed=True, oidc=request.app[CONSOLE].oidc)
    session = sessions.rotate(request.get(SESSION), principal)
    log.info("console login of %s (%s)", principal.name, principal.kind.value)
    response = _see_other("/console/")
    sessions.set_cookie(response, session)
    return response


async def oidc_start(request: web.Request) -> web.Response:
    """GET /console/oidc/start — a pending login (state, nonce, PKCE verifier) and off to the provider.

    A link, not a form: the Content-Security-Policy's ``form-action 'self'`` would stop a form's
    redirect to the provider. Starting a login grants nothing, so it needs no CSRF token.
    """
    console = request.app[CONSOLE]
    if console.oidc is None:
        raise web.HTTPNotFound()
    session = request.get(SESSION)
    if session is not None and session.principal is not None:
        raise web.HTTPSeeOther("/console/")
    try:
        endpoints = await console.oidc.endpoints()
    except AuthUnavailable as error:
        log.warning("console OIDC login not started: %s", error)
        return _error(request, 503, "error.oidc.title", "error.oidc.unavailable")
    wanted = session.lang if session is not None else request.query.get("lang")
    flow_id, pending = console.oidc.begin(lang=wanted if wanted in LANGUAGES else None, presession=session)
    response = _see_other(console.oidc.authorization_url(endpoints, pending))
    set_flow_cookie(response, flow_id)
    return response


async def oidc_callback(request: web.Request) -> web.Response:
    """GET /console/oidc/callback — the provider's answer: checked as oidc.py lists, then a new session."""
    console = request.app[CONSOLE]
    if console.oidc is None:
        raise web.HTTPNotFound()
    pending = console.oidc.take(request.cookies.get(FLOW_COOKIE))
    if pending is not None and pending.lang:
        request[LANG] = pending.lang  # the callback comes cross-site, without the Strict cookie and its language
    try:
        principal = await console.oidc.finish(pending, dict(request.query))
    except AuthUnavailable as error:
        log.warning("console OIDC login failed: %s", error)
        response = _error(request, 503, "error.oidc.title", "error.oidc.unavailable")
    except (OidcLoginRefused, InvalidCredentials) as error:
        # SECURITY: deny by default, no session; the log names the failed check, never a claim value.
        log.info("console OIDC login refused: %s", error)
        response = _error(request, 403, "error.oidc.title", "error.oidc.refused")
    else:
        # SECURITY: no session fixation: the sessions this browser had (the login page's, and any sent
        # along now) end, and the login gets a new id.
        for old in (pending.presession, request.get(SESSION)):
            if old is not None:
                console.sessions.end(old)
        session = console.sessions.start(principal, lang=pending.lang)
        # No user name in the log: with OIDC it is a person's account name.
        log.info("console login through OIDC (%s)", principal.kind.value)
        request[SESSION] = session
        response = _render(request, "oidc_done.html", title="login.oidc.done.title")
        console.sessions.set_cookie(response, session)
    clear_flow_cookie(response)
    return response


async def logout(request: web.Request) -> web.Response:
    """POST /console/logout — ends the session on the server and clears the cookie."""
    sessions = request.app[CONSOLE].sessions
    sessions.end(request[SESSION])
    response = _see_other("/console/login")
    sessions.clear_cookie(response)
    return response


async def static(request: web.Request) -> web.Response:
    """GET /console/static/{name} — the stylesheet (a fixed list of files, never a path from the URL)."""
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    return web.Response(body=(HERE / "static" / name).read_bytes(), content_type=STATIC_FILES[name], charset="utf-8")


# -- auditor -------------------------------------------------------------------------------


def _message_outcome(records: list[AuditRecord]) -> str:
    outcomes = {r.outcome for r in records}
    return "refused" if Outcome.REFUSED in outcomes else "error" if Outcome.ERROR in outcomes else "ok"


_NOT_MESSAGES = {Action.AUDIT_READ, Action.AUDIT_EXPORT, Action.POLICY_RELOAD, Action.CONFIG_CHANGE}


def _per_day(handle: AuditLog, now: datetime, before: int) -> list[tuple[date, dict[str, int]]]:
    """Messages per Zurich day (the last CHART_DAYS days) by their outcome on this node."""
    today = now.astimezone(ZURICH).date()
    first = today - timedelta(days=CHART_DAYS - 1)
    since = datetime.combine(first, day_time(0), ZURICH)
    by_message: dict[tuple[date, str], list[AuditRecord]] = {}
    for _, _, record in handle.iter_records(since=since, limit_index=before):
        if record.message_id is None or record.action in _NOT_MESSAGES:
            continue
        day = record.time.astimezone(ZURICH).date()
        by_message.setdefault((day, record.message_id), []).append(record)
    days = {first + timedelta(days=i): {"ok": 0, "refused": 0, "error": 0} for i in range(CHART_DAYS)}
    for (day, _), records in by_message.items():
        if day in days:
            days[day][_message_outcome(records)] += 1
    return sorted(days.items())


async def audit_status(request: web.Request) -> web.Response:
    """GET /console/audit — log size, newest signed checkpoint, verification on request, messages per day."""
    node = request.app[CONSOLE].node
    now = node.clock.now()
    verify = request.query.get("verify") == "1"

    def work(handle: AuditLog):
        index = _viewed(handle, request, "status", {"verify": verify or None})
        return index, handle.size, handle.latest_checkpoint(), _per_day(handle, now, index), handle.verification_key()

    try:
        _, size, checkpoint, days, key = await _in_log_thread(request, work)
    except AuditUnavailable:
        return _unrecorded(request)
    verification = None
    if verify:
        try:
            result = await asyncio.to_thread(verify_log, node.audit.source, key, origin=node.id, scan_here=False)
            verification = {"valid": True, "size": result.size, "checkpoints": result.checkpoints,
                            "unsigned_tail": result.unsigned_tail}  # fmt: skip
        except AuditVerificationError as exc:
            verification = {"valid": False, "reason": exc.reason, "index": exc.index}
    t = translator(_lang(request))
    labels = {"ok": t("chart.outcome.ok"), "refused": t("chart.outcome.refused"), "error": t("chart.outcome.error")}
    rows = [(swiss_date(datetime.combine(day, day_time(12), ZURICH)), counts) for day, counts in days]
    chart = charts.messages_per_day(rows, title=t("chart.days.title"), description=t("chart.days.desc", days=CHART_DAYS),
                                    labels=labels)  # fmt: skip
    return _render(request, "audit_status.html", title="audit.status.title", size=size, checkpoint=checkpoint,
                   verification=verification, chart=chart, rows=rows)  # fmt: skip


class FormError(Exception):
    """A form field is wrong; carries the field's catalogue key, never its value."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


def _day(form: dict[str, str], name: str, *, end: bool = False) -> datetime | None:
    """An HTML date field (yyyy-mm-dd) or a Swiss date (dd.mm.yyyy) as the start (or end) of that Zurich day."""
    text = form.get(name, "").strip()
    if not text:
        return None
    for pattern in ("%Y-%m-%d", "%d.%m.%Y"):
        try:
            day = datetime.strptime(text, pattern).date()
            break
        except ValueError:
            continue
    else:
        raise FormError(name, "form.error.date")
    return datetime.combine(day + timedelta(days=1) if end else day, day_time(0), ZURICH)


def _person(request: web.Request, form: dict[str, str], *, required: bool) -> str | None:
    """SECURITY: the keyed hash of the person; the identifier goes no further than this function."""
    text = form.get("person", "").strip()
    if not text:
        if required:
            raise FormError("person", "form.error.required")
        return None
    secret = request.app[CONSOLE].node.person_secret
    if secret is None:
        raise FormError("person", "form.error.no_secret")
    try:
        return person_ref(text, secret)
    except InvalidPersonIdentifier:
        raise FormError("person", "form.error.person") from None


def _form_message_id(form: dict[str, str]) -> str | None:
    """The form's messageId field, checked (FormError naming the field), or None when empty."""
    message_id = form.get("message_id", "").strip() or None
    if message_id is None:
        return None
    try:
        return check_message_id(message_id)
    except InvalidIdentifier:
        raise FormError("message_id", "form.error.message_id") from None


def _query(request: web.Request, form: dict[str, str]) -> AuditQuery:
    message_id = _form_message_id(form)
    participant = form.get("participant", "").strip() or None
    if participant is not None:
        try:
            participant = str(ParticipantId.parse(participant))
        except InvalidIdentifier:
            raise FormError("participant", "form.error.participant") from None
    message_type = form.get("message_type", "").strip() or None
    if message_type is not None and not (message_type.isdigit() and len(message_type) <= 9):
        raise FormError("message_type", "form.error.message_type")
    since, until = _day(form, "since"), _day(form, "until", end=True)
    return AuditQuery(participant=participant, message_type=message_type, since=since, until=until,
                      message_id=message_id, person_ref=_person(request, form, required=False))  # fmt: skip


_SEARCH_FIELDS = ("message_id", "participant", "message_type", "since", "until")


async def audit_search_form(request: web.Request) -> web.Response:
    """GET /console/audit/search — the search form (the view is recorded)."""
    try:
        await _in_log_thread(request, lambda handle: _viewed(handle, request, "search_form"))
    except AuditUnavailable:
        return _unrecorded(request)
    return _render(request, "audit_search.html", title="audit.search.title", values={}, error=None, results=None)


async def audit_search(request: web.Request) -> web.Response:
    """POST /console/audit/search — records by messageId, participant, type, time window and person."""
    form = request[FORM]
    values = {k: form.get(k, "") for k in _SEARCH_FIELDS}  # the person is never sent back to the page
    try:
        q = _query(request, form)
    except FormError as error:
        return _render(request, "audit_search.html", status=400, title="audit.search.title", values=values,
                       error=error, results=None)  # fmt: skip

    def work(handle: AuditLog):
        index = audit_read(handle, _actor(request), request.app[CONSOLE].node.clock.now(), "console:search", q.describe())
        found = (r for i, _, r in handle.iter_records(since=q.since, until=q.until, limit_index=index) if q.matches(r))
        return list(islice(found, MAX_RESULTS + 1))

    try:
        found = await _in_log_thread(request, work)
    except AuditUnavailable:
        return _unrecorded(request)
    return _render(request, "audit_search.html", title="audit.search.title", values=values, error=None,
                   results=found[:MAX_RESULTS], truncated=len(found) > MAX_RESULTS, by_person=q.person_ref is not None)  # fmt: skip


@dataclass(frozen=True)
class Step:
    """One line of a message's timeline: an audit record of this node or an event reported by any hop."""

    time: datetime
    node: str
    source: str  # "audit" or "event"
    what: str
    outcome: str | None = None
    code: int | None = None
    detail: str | None = None


async def audit_trace(request: web.Request) -> web.Response:
    """GET /console/audit/messages/{message_id} — the message's path across hops, as a timeline."""
    try:
        message_id = check_message_id(request.match_info["message_id"])
    except InvalidIdentifier:
        return _error(request, 400, "error.form.title", "form.error.message_id")
    node = request.app[CONSOLE].node

    def work(handle: AuditLog) -> list[AuditRecord]:
        index = _viewed(handle, request, "trace", {"message_id": message_id})
        return [r for _, _, r in handle.iter_records(limit_index=index) if r.message_id == message_id]

    try:
        records = await _in_log_thread(request, work)
    except AuditUnavailable:
        return _unrecorded(request)
    steps = [Step(r.time, r.node, "audit", r.action.value, r.outcome.value, r.receipt_code,
                  ", ".join(r.policy.rule_ids) if r.policy else None) for r in records]  # fmt: skip
    senders = sorted({r.envelope.sender for r in records if r.envelope})
    for sender in senders:
        for event in node.store.timeline(sender, message_id):
            steps.append(Step(datetime.fromtimestamp(event.time, timezone.utc), event.node, "event", event.kind,
                              None, event.status, event.recipient))  # fmt: skip
    steps.sort(key=lambda s: (s.time, s.source))
    hops: list[str] = []
    for step in steps:
        if step.node not in hops:
            hops.append(step.node)
    envelope = next((r.envelope for r in records if r.envelope), None)
    policy = next((r.policy for r in records if r.policy), None)
    return _render(request, "audit_trace.html", title="audit.trace.title", message_id=message_id, steps=steps,
                   hops=hops, envelope=envelope, policy=policy)  # fmt: skip


async def audit_report_form(request: web.Request) -> web.Response:
    """GET /console/audit/report — the data-subject access report form."""
    try:
        await _in_log_thread(request, lambda handle: _viewed(handle, request, "report_form"))
    except AuditUnavailable:
        return _unrecorded(request)
    return _render(request, "audit_report.html", title="audit.report.title", error=None, report=None)


async def audit_report(request: web.Request) -> web.Response:
    """POST /console/audit/report — every message about one person, printable; the CSV link follows."""
    try:
        ref = _person(request, request[FORM], required=True)
    except FormError as error:
        return _render(request, "audit_report.html", status=400, title="audit.report.title", error=error, report=None)
    assert ref is not None
    node = request.app[CONSOLE].node
    try:
        report = await _in_log_thread(
            request, lambda handle: subject_access_report(handle, ref, actor=_actor(request), now=node.clock.now()))
    except AuditUnavailable:
        return _unrecorded(request)
    request[SESSION].data["report_ref"] = ref  # the keyed hash only: what the CSV download needs
    return _render(request, "audit_report.html", title="audit.report.title", error=None, report=report,
                   generated=node.clock.now(), ref=ref)  # fmt: skip


REPORT_COLUMNS = ("message_id", "first_time", "sender", "recipients", "message_type", "purposes", "legal_bases",
                  "removed_fields", "nodes", "actions")  # fmt: skip


def _cell(text: str) -> str:
    """SECURITY: a cell a spreadsheet would run as a formula (=, +, -, @) is quoted as text."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def audit_report_csv(request: web.Request) -> web.Response:
    """GET /console/audit/report.csv — the last report of this session as CSV (read again, and recorded again)."""
    ref = request[SESSION].data.get("report_ref")
    if ref is None:
        raise web.HTTPSeeOther("/console/audit/report")
    node = request.app[CONSOLE].node
    try:
        report = await _in_log_thread(
            request, lambda handle: subject_access_report(handle, ref, actor=_actor(request), now=node.clock.now()))
    except AuditUnavailable:
        return _unrecorded(request)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(REPORT_COLUMNS)
    for message in report.messages:
        row = []
        for column in REPORT_COLUMNS:
            value = getattr(message, column)
            if column == "first_time":
                value = swiss_datetime(datetime.fromisoformat(value.replace("Z", "+00:00")), seconds=True)
            row.append(_cell(" ".join(value) if isinstance(value, tuple) else ("" if value is None else str(value))))
        writer.writerow(row)
    stamp = node.clock.now().astimezone(ZURICH).strftime("%Y%m%d")
    return web.Response(body=out.getvalue().encode("utf-8-sig"), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="auskunft-{node.id}-{stamp}.csv"'})  # fmt: skip


async def audit_export_form(request: web.Request) -> web.Response:
    """GET /console/audit/export — choose a window and a format; the download is a POST."""
    try:
        await _in_log_thread(request, lambda handle: _viewed(handle, request, "export_form"))
    except AuditUnavailable:
        return _unrecorded(request)
    return _render(request, "audit_export.html", title="audit.export.title", error=None, values={}, formats=FORMATS)


async def audit_export(request: web.Request) -> web.StreamResponse:
    """POST /console/audit/export — JSONL or CSV with a signed checkpoint and inclusion proofs (audited)."""
    form = request[FORM]
    values = {k: form.get(k, "") for k in ("since", "until", "format", "message_id")}
    try:
        fmt = form.get("format", "jsonl")
        if fmt not in FORMATS:
            raise FormError("format", "form.error.format")
        since, until = _day(form, "since"), _day(form, "until", end=True)
        message_id = _form_message_id(form)
    except FormError as error:
        return _render(request, "audit_export.html", status=400, title="audit.export.title", error=error,
                       values=values, formats=FORMATS)  # fmt: skip
    node = request.app[CONSOLE].node
    suffix = f"-{message_id}" if message_id else ""
    try:
        return await stream_export(request, node.audit, actor=_actor(request), now=node.clock.now(), since=since, until=until,
                                   fmt=fmt, message_id=message_id, filename=f"audit-{node.id}{suffix}.{fmt}")  # fmt: skip
    except AuditUnavailable:
        return _unrecorded(request)


# -- admin ---------------------------------------------------------------------------------


async def admin_overview(request: web.Request) -> web.Response:
    """GET /console/admin — participants, peers and health, queues, certificates, routes, queue depth."""
    console = request.app[CONSOLE]
    node = console.node
    _sample_queue(console)
    now = node.clock.now()
    names = dict(node.policies.engine.policy_set.participants) if node.policies else {}
    participants = [(str(p.id), names.get(str(p.id), "")) for p in node.config.participants]
    peers = [(p.id, p.url, node.breakers[p.id].state if p.id in node.breakers else "-") for p in node.config.peers]
    queues = []
    for via, state, count, oldest in node.store.queue_stats():
        age = None if oldest is None else max(0.0, node.clock.timestamp() - oldest)
        queues.append({"via": via, "state": state, "count": count, "oldest": oldest, "age_minutes": None if age is None else int(age // 60)})
    backlog = node.store.inbox_backlog()
    warning = timedelta(days=node.config.tls.expiry_warning_days)
    certificates = [{"what": what, "whose": whose, "not_after": not_after, "days": (not_after - now).days,
                     "warn": not_after - now <= warning} for what, whose, not_after in node.certificate_expiries()]  # fmt: skip
    routes = [{"recipient": r.recipient, "members": list(r.members), "via": r.via, "payload": r.payload.value} for r in node.config.routes]
    t = translator(_lang(request))
    samples = [(swiss_datetime(ts), depth) for ts, depth in console.queue_samples]
    chart = charts.queue_depth(samples, title=t("chart.queue.title"), description=t("chart.queue.desc"))
    return _render(request, "admin_overview.html", title="admin.overview.title", participants=participants, peers=peers,
                   queues=queues, backlog=backlog, certificates=certificates, routes=routes, chart=chart,
                   samples=samples[-10:])  # fmt: skip


async def admin_policies(request: web.Request) -> web.Response:
    """GET /console/admin/policies — the active policy set: each rule's purpose and legal basis."""
    policies = request.app[CONSOLE].node.policies
    policy_set = policies.engine.policy_set if policies is not None else None
    return _render(request, "admin_policies.html", title="admin.policies.title", policy_set=policy_set)


def _pending(node: Node):
    """(active set, pending set from the policy files, load error text) — nothing is applied here."""
    active = node.policies.engine.policy_set if node.policies is not None else None
    if node.config.policies is None or active is None:
        return active, None, None
    try:
        return active, load_policy_set([node.config.policies], schemas=node.config.schemas), None
    except PolicyLoadError as error:
        return active, None, str(error)  # names file, rule and field; policy files hold no personal data


async def admin_diff(request: web.Request) -> web.Response:
    """GET /console/admin/policies/diff — who gains or loses access if the files on disk were applied."""
    node = request.app[CONSOLE].node
    active, pending, problem = await asyncio.to_thread(_pending, node)
    diff = diff_policy_sets(active, pending, node.clock.now()) if active is not None and pending is not None else None
    return _render(request, "admin_diff.html", title="admin.diff.title", active=active, pending=pending,
                   problem=problem, diff=diff, result=None)  # fmt: skip


async def admin_apply(request: web.Request) -> web.Response:
    """POST /console/admin/policies/apply — apply the previewed revision after explicit confirmation (audited)."""
    node = request.app[CONSOLE].node
    form = request[FORM]
    if form.get("confirm") != "yes":
        return _error(request, 400, "admin.apply.title", "admin.apply.unconfirmed")
    active, pending, problem = await asyncio.to_thread(_pending, node)
    # SECURITY: apply only what the admin saw: the files must still hold the previewed revision.
    if pending is None or pending.revision != form.get("revision"):
        return _error(request, 409, "admin.apply.title", "admin.apply.changed")
    try:
        result = node.reload_policies(_actor(request))
    except GatewayError:  # AuditUnavailable included: nothing changed
        return _error(request, 503, "admin.apply.title", "admin.apply.failed")
    return _render(request, "admin_diff.html", title="admin.diff.title", active=node.policies.engine.policy_set,
                   pending=None, problem=None, diff=None, result=result)  # fmt: skip


async def admin_explain_form(request: web.Request) -> web.Response:
    """GET /console/admin/explain — explain a stored message, or a sender/recipient/type combination."""
    return _render(request, "admin_explain.html", title="admin.explain.title", values={}, error=None, explained=None)


def _participant_field(form: dict[str, str], name: str) -> ParticipantId:
    try:
        return ParticipantId.parse(form.get(name, "").strip())
    except InvalidIdentifier:
        raise FormError(name, "form.error.participant") from None


def _int_field(form: dict[str, str], name: str, default: int | None = None) -> int:
    text = form.get(name, "").strip()
    if not text and default is not None:
        return default
    if not text.isdigit() or len(text) > 9:
        raise FormError(name, "form.error.number")
    return int(text)


async def admin_explain(request: web.Request) -> web.Response:
    """POST /console/admin/explain — the decision per recipient with the rules that matched, purpose, legal basis."""
    node = request.app[CONSOLE].node
    form = request[FORM]
    values = {k: form.get(k, "") for k in ("sender", "message_id", "recipient", "message_type", "message_class")}
    if node.policies is None:
        return _error(request, 409, "admin.explain.title", "admin.policies.none")
    try:
        sender = _participant_field(form, "sender")
        message_id = form.get("message_id", "").strip()
        if message_id:
            try:
                message_id = check_message_id(message_id)
            except InvalidIdentifier:
                raise FormError("message_id", "form.error.message_id") from None
            rows = node.store.outgoing_for(str(sender), message_id)
            if not rows:
                raise FormError("message_id", "form.error.no_message")
            # Metadata only: the envelope; the payload stays sealed (admins never read payloads).
            envelope = parse_envelope(rows[0].envelope, None)
            requests = [PolicyRequest(envelope.sender, r, envelope.message_type, envelope.message_class, 0, None)
                        for r in envelope.recipients]  # fmt: skip
        else:
            recipient = _participant_field(form, "recipient")
            requests = [PolicyRequest(sender, recipient, _int_field(form, "message_type"), _int_field(form, "message_class", 0), 0, None)]
    except FormError as error:
        return _render(request, "admin_explain.html", status=400, title="admin.explain.title", values=values,
                       error=error, explained=None)  # fmt: skip
    except GatewayError:
        return _render(request, "admin_explain.html", status=400, title="admin.explain.title", values=values,
                       error=FormError("message_id", "form.error.envelope"), explained=None)  # fmt: skip
    engine = node.policies.engine
    now = node.clock.now()
    explained = []
    for policy_request, decision in zip(requests, engine.decide_all(requests, now, Stage.ORIGIN)):
        forbids, permits = engine.matching(policy_request, now, Stage.ORIGIN)
        explained.append({"request": policy_request, "decision": decision,
                          "permits": sorted(r.id for r in permits), "forbids": sorted(r.id for r in forbids)})  # fmt: skip
    return _render(request, "admin_explain.html", title="admin.explain.title", values=values, error=None,
                   explained=explained, revision=engine.policy_set.revision)  # fmt: skip


# -- local systems ---------------------------------------------------------------------------


async def system_messages(request: web.Request) -> web.Response:
    """GET /console/messages — the messages of this system's own participants: sent (with receipts) and received."""
    node = request.app[CONSOLE].node
    principal: Principal = request[PRINCIPAL]
    own = sorted(str(p) for p in principal.participants)
    sent, received = [], []
    for participant in own:
        latest: dict[str, dict] = {}
        for _, receipt in node.store.receipts_for(participant):
            entry = latest.setdefault(receipt.message_id, {"participant": participant, "message_id": receipt.message_id,
                                                           "recipients": {}, "time": receipt.time})  # fmt: skip
            entry["recipients"][receipt.recipient] = receipt.status
            entry["time"] = max(entry["time"], receipt.time)
        sent.extend(latest.values())
        for item in node.store.inbox(participant, include_acknowledged=True):
            received.append({"participant": participant, "sender": item.sender, "message_id": item.message_id,
                             "message_type": item.message_type, "received": item.received, "state": item.state})  # fmt: skip
    sent.sort(key=lambda e: e["time"], reverse=True)
    received.sort(key=lambda e: e["received"], reverse=True)
    return _render(request, "messages.html", title="system.messages.title", own=own, sent=sent[:MAX_RESULTS],
                   received=received[:MAX_RESULTS], error=None)  # fmt: skip


async def system_follow(request: web.Request) -> web.Response:
    """POST /console/messages — follow one message by its messageId (of one of this system's participants)."""
    principal: Principal = request[PRINCIPAL]
    form = request[FORM]
    try:
        participant = _participant_field(form, "participant")
        message_id = check_message_id(form.get("message_id", "").strip())
    except (FormError, InvalidIdentifier):
        return _error(request, 400, "error.form.title", "form.error.message_id")
    if not principal.may_act_for(participant):
        raise web.HTTPNotFound(text="no such participant for this system")
    raise web.HTTPSeeOther(f"/console/messages/{participant}/{message_id}")


async def system_message(request: web.Request) -> web.Response:
    """GET /console/messages/{participant}/{message_id} — one sent message's status timeline ("Geschäft mitverfolgen")."""
    node = request.app[CONSOLE].node
    principal: Principal = request[PRINCIPAL]
    try:
        participant = ParticipantId.parse(request.match_info["participant"])
        message_id = check_message_id(request.match_info["message_id"])
    except InvalidIdentifier:
        return _error(request, 400, "error.form.title", "form.error.message_id")
    # SECURITY: the middleware already answered 404 for a participant not bound to this system; again here.
    if not principal.may_act_for(participant):
        raise web.HTTPNotFound(text="no such participant for this system")
    rows = node.store.outgoing_for(str(participant), message_id)
    events = node.store.timeline(str(participant), message_id)
    receipts = [r for _, r in node.store.receipts_for(str(participant)) if r.message_id == message_id]
    if not rows and not events:
        return _error(request, 404, "system.message.title", "system.message.unknown")
    return _render(request, "message.html", title="system.message.title", participant=str(participant),
                   message_id=message_id, rows=rows, events=events, receipts=receipts)  # fmt: skip
