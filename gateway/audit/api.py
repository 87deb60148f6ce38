"""The auditor's REST API: a self-contained aiohttp sub-application.

The node mounts it with ``app.add_subapp("/audit/v1", auditor_app(...))``. Routes
(all JSON unless noted; see docs/audit.md section 14):

    GET  /status                      log size and the newest signed checkpoint
    GET  /verify                      whole-log verification (first bad index)
    POST /query                       records by participant, type, time, id, action, outcome, person
    POST /report                      data-subject access report for one person
    GET  /export                      JSONL or CSV with checkpoint and inclusion proofs (streamed)
    GET  /proofs/inclusion            inclusion proof of one record against a signed checkpoint
    GET  /proofs/consistency          consistency proof between two tree sizes

Threat model. Callers are auditors and data-protection officers, authenticated by a
bearer token that the node's ``authenticate`` callable maps to a name; everything else
gets 401 (deny by default, unknown paths included). An auditor may read everything in
the log, so what the API guards is accountability and personal data:

* SECURITY: every read is appended to the log (``audit_read``/``audit_export``, actor =
  the auditor) *before* anything is returned; if that append fails, the request fails
  with 503 and returns nothing (fail closed).
* SECURITY: a person is searched by AHV number or local person ID, sent in a POST body
  (never in a URL, which proxies and access logs keep). It is turned into its keyed hash
  at once; the number itself is never echoed, logged or written to the log, and error
  messages name parameters, never values.
* Responses carry ``Cache-Control: no-store``.

Work on the log runs off the event loop, in one thread that owns this API's own handle
on the log file (SQLite connections belong to their thread); an export streams from its
own thread and handle, whole-log verification from a read-only connection.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar

from aiohttp import web

from ..ids import InvalidIdentifier, ParticipantId, check_message_id
from .checkpoint import SignedCheckpoint
from .errors import AuditUnavailable, AuditVerificationError
from .export import FORMATS, export_lines
from .log import AuditLog
from .persons import MIN_SECRET_BYTES, InvalidPersonIdentifier, person_ref
from .query import AuditQuery, audit_read, query, subject_access_report
from .record import Action, Actor, ActorKind, Outcome, canonical_json, format_time
from .verify import verify_log

log = logging.getLogger("drehscheibe.audit.api")

_T = TypeVar("_T")
MAX_BODY_BYTES = 16 * 1024
DEFAULT_LIMIT = 1_000
MAX_LIMIT = 10_000
EXPORT_BATCH = 500  # lines produced per hop to the export thread
_MESSAGE_TYPE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MEDIA_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv"}


class BadParameter(Exception):
    """A request parameter is missing, unknown or malformed; carries its name, never its value."""

    def __init__(self, name: str | None, problem: str) -> None:
        super().__init__(problem)
        self.name = name
        self.problem = problem


class ExportAborted(Exception):
    """An export failed after its first bytes were sent; aiohttp drops the connection."""


@dataclass
class _State:
    """What the sub-application holds: the node's log (settings only) and the API's worker."""

    log: AuditLog
    person_secret: bytes | None
    now: Callable[[], datetime]
    handle: AuditLog | None = None  # this API's own handle, used only inside `thread`
    thread: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="audit-api"))


STATE = web.AppKey("audit_api_state", _State)
AUDITOR = web.RequestKey("auditor", Actor)


def auditor_app(
    log: AuditLog,
    *,
    person_secret: bytes | None,
    now: Callable[[], datetime],
    authenticate: Callable[[str], str | None],
) -> web.Application:
    """The auditor API over ``log``; ``authenticate(token)`` returns the auditor's name or None.

    ``authenticate`` should compare tokens in constant time (e.g. ``hmac.compare_digest``
    on their hashes). Without ``person_secret`` person searches and reports answer 501.
    """
    if person_secret is not None and len(person_secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the person-ref secret must have at least {MIN_SECRET_BYTES} bytes")
    if not callable(authenticate) or not callable(now):
        raise TypeError("authenticate and now must be callables")
    app = web.Application(middlewares=[_auditors_only(authenticate), _errors])
    app[STATE] = _State(log, person_secret, now)
    app.cleanup_ctx.append(_worker_thread)
    app.on_response_prepare.append(_no_store)
    app.router.add_get("/status", status)
    app.router.add_get("/verify", verify)
    app.router.add_post("/query", search)
    app.router.add_post("/report", report)
    app.router.add_get("/export", export)
    app.router.add_get("/proofs/inclusion", inclusion_proof)
    app.router.add_get("/proofs/consistency", consistency_proof)
    return app


# -- plumbing -------------------------------------------------------------------------


async def _worker_thread(app: web.Application) -> AsyncIterator[None]:
    """The thread and the log handle live as long as the application."""
    state = app[STATE]
    yield
    handle, state.handle = state.handle, None
    if handle is not None:
        await asyncio.get_running_loop().run_in_executor(state.thread, handle.close)
    state.thread.shutdown(wait=True)


def _auditors_only(authenticate: Callable[[str], str | None]):
    @web.middleware
    async def middleware(request: web.Request, handler):
        """SECURITY: deny by default; every route, and every unknown path, needs an auditor token."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        name = authenticate(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if not name:
            return web.json_response(
                {"error": "an auditor bearer token is required"}, status=401,
                headers={"WWW-Authenticate": 'Bearer realm="drehscheibe-audit"'},
            )
        request[AUDITOR] = Actor(ActorKind.AUDITOR, name)
        return await handler(request)

    return middleware


@web.middleware
async def _errors(request: web.Request, handler):
    """Map the audit errors to statuses; messages name the parameter, never the value sent."""
    try:
        return await handler(request)
    except BadParameter as exc:
        body = {"error": exc.problem} | ({"parameter": exc.name} if exc.name else {})
        return web.json_response(body, status=400)
    except AuditUnavailable:
        # SECURITY: fail closed: the read could not be recorded, so nothing was read.
        log.warning("auditor request refused: the audit log cannot record it")
        return web.json_response({"error": "the audit log cannot record this read; nothing was read"}, status=503)


async def _no_store(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"


async def _in_log_thread(request: web.Request, work: Callable[[AuditLog], _T]) -> _T:
    """Run ``work`` with this API's log handle, in the one thread that owns it."""
    state = request.app[STATE]

    def run() -> _T:
        if state.handle is None:
            state.handle = state.log.reopen()
        return work(state.handle)

    return await asyncio.get_running_loop().run_in_executor(state.thread, run)


def _actor(request: web.Request) -> Actor:
    return request[AUDITOR]


def _describe(params: Mapping[str, object]) -> str:
    """Canonical JSON of the (already hashed, non-personal) parameters, for the read record."""
    return canonical_json({k: v for k, v in params.items() if v is not None}).decode("utf-8")


def _checkpoint_json(signed: SignedCheckpoint) -> dict[str, Any]:
    checkpoint = signed.checkpoint
    return {
        "note": checkpoint.signed_bytes().decode("ascii"),
        "signature": base64.b64encode(signed.signature).decode("ascii"),
        "origin": checkpoint.origin,
        "size": checkpoint.size,
        "root": checkpoint.root.hex(),
        "time": format_time(checkpoint.time),
    }


# -- parameters -----------------------------------------------------------------------


def _only(params: Mapping[str, object], allowed: set[str]) -> None:
    unknown = set(params) - allowed
    if unknown:
        # The names an auditor sent are not echoed either: one could be an AHV number.
        raise BadParameter(None, f"unknown parameter; allowed: {', '.join(sorted(allowed))}")


def _text(params: Mapping[str, object], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadParameter(name, "must be a non-empty string")
    return value.strip()


def _time(params: Mapping[str, object], name: str) -> datetime | None:
    text = _text(params, name)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadParameter(name, "must be an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise BadParameter(name, "must carry a timezone (e.g. Z)")
    return moment


def _int(params: Mapping[str, object], name: str, *, minimum: int, maximum: int | None = None) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit() and len(value) <= 18:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        limits = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        raise BadParameter(name, f"must be an integer {limits}")
    return value


def _enum(params: Mapping[str, object], name: str, kind):
    text = _text(params, name)
    if text is None:
        return None
    try:
        return kind(text)
    except ValueError:
        raise BadParameter(name, f"must be one of {', '.join(m.value for m in kind)}") from None


def _message_id(params: Mapping[str, object]) -> str | None:
    text = _text(params, "message_id")
    if text is None:
        return None
    try:
        return check_message_id(text)
    except InvalidIdentifier:
        raise BadParameter("message_id", "must be an eCH-0090 messageId") from None


def _participant(params: Mapping[str, object]) -> str | None:
    text = _text(params, "participant")
    if text is None:
        return None
    try:
        return str(ParticipantId.parse(text))
    except InvalidIdentifier:
        raise BadParameter("participant", "must be a sedex participant ID") from None


def _person(request: web.Request, params: Mapping[str, object], *, required: bool) -> str | None:
    """SECURITY: the person's keyed hash; the identifier itself goes no further than here."""
    value = params.get("person")
    if value is None:
        if required:
            raise BadParameter("person", "is required")
        return None
    secret = request.app[STATE].person_secret
    if secret is None:
        raise web.HTTPNotImplemented(
            text=json.dumps({"error": "person search is not configured on this node (no audit secret)"}),
            content_type="application/json",
        )
    if not isinstance(value, str):
        raise BadParameter("person", "must be an AHV number (756…) or local:CATEGORY:ID")
    try:
        return person_ref(value, secret)
    except InvalidPersonIdentifier:
        raise BadParameter("person", "must be an AHV number (756…) or local:CATEGORY:ID") from None


async def _json_body(request: web.Request) -> dict[str, object]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise BadParameter(None, f"request body larger than {MAX_BODY_BYTES} bytes")
    data = await request.content.read(MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES:
        raise BadParameter(None, f"request body larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(data or b"{}")
    except ValueError:
        raise BadParameter(None, "request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadParameter(None, "request body must be a JSON object")
    return body


# -- handlers -------------------------------------------------------------------------


async def status(request: web.Request) -> web.Response:
    """GET /status — size of the log and its newest signed checkpoint."""
    _only(request.query, set())
    actor, now = _actor(request), request.app[STATE].now()

    def work(handle: AuditLog) -> dict[str, Any]:
        read_index = audit_read(handle, actor, now, "status", "{}")
        latest = handle.latest_checkpoint()
        return {
            "node": handle.node,
            "size": handle.size,
            "checkpoint": _checkpoint_json(latest) if latest else None,
            "read_index": read_index,
        }

    return web.json_response(await _in_log_thread(request, work))


async def verify(request: web.Request) -> web.Response:
    """GET /verify — check the whole log against its signed checkpoints with the node's key.

    This is the node vouching for itself; an auditor who distrusts the node verifies an
    export, or the log file, with ``drehscheibe audit verify`` and the node's certificate.
    """
    _only(request.query, set())
    state, actor, now = request.app[STATE], _actor(request), request.app[STATE].now()

    def record(handle: AuditLog):
        return audit_read(handle, actor, now, "verify", "{}"), handle.verification_key()

    read_index, key = await _in_log_thread(request, record)
    try:
        # SECURITY/availability: the hashing runs in worker processes, not under this
        # process's GIL, so the node keeps serving while an auditor verifies.
        result = await asyncio.to_thread(verify_log, state.log.source, key, origin=state.log.node, scan_here=False)
    except AuditVerificationError as exc:
        return web.json_response(
            {"valid": False, "reason": exc.reason, "first_bad_index": exc.index, "read_index": read_index}
        )
    return web.json_response(
        {
            "valid": True,
            "size": result.size,
            "checkpoints": result.checkpoints,
            "signed_size": result.latest.size if result.latest else 0,
            "unsigned_tail": result.unsigned_tail,
            "pruned": result.pruned,
            "read_index": read_index,
        }
    )


_QUERY_FIELDS = {"participant", "message_type", "since", "until", "message_id", "action", "outcome", "person", "limit"}


async def search(request: web.Request) -> web.Response:
    """POST /query — JSON object with any of the filters (AND), ``person`` and ``limit``."""
    _only(request.query, set())
    params = await _json_body(request)
    _only(params, _QUERY_FIELDS)
    message_type = _text(params, "message_type")
    if message_type is not None and not _MESSAGE_TYPE.fullmatch(message_type):
        raise BadParameter("message_type", "must be a message type such as 2020")
    q = AuditQuery(
        participant=_participant(params),
        message_type=message_type,
        since=_time(params, "since"),
        until=_time(params, "until"),
        message_id=_message_id(params),
        action=_enum(params, "action", Action),
        outcome=_enum(params, "outcome", Outcome),
        person_ref=_person(request, params, required=False),
    )
    limit = _int(params, "limit", minimum=1, maximum=MAX_LIMIT) or DEFAULT_LIMIT
    actor, now = _actor(request), request.app[STATE].now()
    found = await _in_log_thread(request, lambda handle: query(handle, q, actor=actor, now=now))
    return web.json_response(
        {
            # The query as recorded in the log: the person only as its keyed hash.
            "query": json.loads(q.describe()),
            "records": [{"index": index, "record": record.to_json()} for index, record in found[:limit]],
            "truncated": len(found) > limit,
        }
    )


async def report(request: web.Request) -> web.Response:
    """POST /report — ``{"person": "756…"}``: every message about that person, as this node saw it."""
    _only(request.query, set())
    params = await _json_body(request)
    _only(params, {"person"})
    ref = _person(request, params, required=True)
    assert ref is not None
    actor, now = _actor(request), request.app[STATE].now()
    result = await _in_log_thread(request, lambda handle: subject_access_report(handle, ref, actor=actor, now=now))
    return web.json_response(asdict(result))


async def export(request: web.Request) -> web.StreamResponse:
    """GET /export?since=&until=&format=jsonl|csv&message_id= — streamed, verifiable offline."""
    params = request.query
    _only(params, {"since", "until", "format", "message_id"})
    fmt = _text(params, "format") or "jsonl"
    if fmt not in FORMATS:
        raise BadParameter("format", f"must be one of {', '.join(FORMATS)}")
    since, until, message_id = _time(params, "since"), _time(params, "until"), _message_id(params)
    state = request.app[STATE]
    return await stream_export(request, state.log, actor=_actor(request), now=state.now(), since=since, until=until,
                               fmt=fmt, message_id=message_id, filename=f"audit-{state.log.node}.{fmt}")  # fmt: skip


async def stream_export(request: web.Request, log_: AuditLog, *, actor: Actor, now: datetime, since: datetime | None,
                        until: datetime | None, fmt: str, message_id: str | None, filename: str) -> web.StreamResponse:  # fmt: skip
    """Record the export, then stream it (the auditor API and the console share this).

    Raises :class:`AuditUnavailable` before anything is sent if the read cannot be recorded.
    The export runs in its own thread on its own handle: it holds a cursor open while it
    streams, and other auditors' requests go on meanwhile.
    """
    thread = ThreadPoolExecutor(1, thread_name_prefix="audit-export")
    loop = asyncio.get_running_loop()
    handle: AuditLog | None = None

    def start() -> Iterator[str]:
        nonlocal handle
        handle = log_.reopen()
        _, lines = export_lines(handle, actor=actor, now=now, since=since, until=until, fmt=fmt, message_id=message_id)
        return lines

    try:
        lines = await loop.run_in_executor(thread, start)
        response = web.StreamResponse(
            headers={
                "Content-Type": f"{_MEDIA_TYPES[fmt]}; charset=utf-8",
                "Content-Disposition": f'attachment; filename="{filename}"',
            }
        )
        await response.prepare(request)
        try:
            while batch := await loop.run_in_executor(thread, lambda: list(islice(lines, EXPORT_BATCH))):
                await response.write("".join(batch).encode("utf-8"))
        except ConnectionResetError:
            raise  # the auditor went away; nothing to report
        except Exception as exc:
            # The status line is gone: the only way left to say "incomplete" is to end the
            # connection without the final chunk, which every HTTP client reports.
            log.error("audit export aborted while streaming (%s)", type(exc).__name__)
            raise ExportAborted from None
        await response.write_eof()
        return response
    finally:
        if handle is not None:
            await loop.run_in_executor(thread, handle.close)
        thread.shutdown(wait=False)


async def _proof(
    request: web.Request, what: str, params: Mapping[str, object], size: int | None,
    build: Callable[[AuditLog, SignedCheckpoint], dict[str, Any]],
) -> web.Response:
    """Record the read, pick the checkpoint (stored of ``size``, or a fresh one), build the proof."""
    actor, now = _actor(request), request.app[STATE].now()

    def work(handle: AuditLog) -> dict[str, Any] | None:
        audit_read(handle, actor, now, what, _describe(params))
        signed = handle.checkpoint(now) if size is None else handle.checkpoint_at(size)
        if signed is None:
            return None
        return build(handle, signed) | {"checkpoint": _checkpoint_json(signed)}

    body = await _in_log_thread(request, work)
    if body is None:
        return web.json_response({"error": "no signed checkpoint of that size"}, status=404)
    return web.json_response(body)


def _tree_for(handle: AuditLog, signed: SignedCheckpoint):
    size = signed.checkpoint.size
    tree = handle.tree(size)
    if tree.size != size or tree.root(size) != signed.checkpoint.root:
        # The stored leaves disagree with a signed checkpoint: the log needs verifying.
        raise web.HTTPConflict(
            text=json.dumps({"error": "stored leaf hashes do not match the checkpoint; run verify"}),
            content_type="application/json",
        )
    return tree


async def inclusion_proof(request: web.Request) -> web.Response:
    """GET /proofs/inclusion?index=I[&size=N] — ``size``: a signed checkpoint's size (default: sign one now)."""
    _only(request.query, {"index", "size"})
    index = _int(request.query, "index", minimum=0)
    if index is None:
        raise BadParameter("index", "is required")
    size = _int(request.query, "size", minimum=1)
    if size is not None and index >= size:
        raise BadParameter("index", "must be below size")

    def build(handle: AuditLog, signed: SignedCheckpoint) -> dict[str, Any]:
        n = signed.checkpoint.size
        if index >= n:
            raise BadParameter("index", "must be below the checkpoint's size")
        tree = _tree_for(handle, signed)
        body = handle.body(index)
        return {
            "index": index,
            "size": n,
            "leaf_hash": tree.leaf(index).hex(),
            "body": body.decode("utf-8") if body is not None else None,
            "proof": [p.hex() for p in tree.inclusion_proof(index, n)],
        }

    return await _proof(request, "inclusion_proof", {"index": index, "size": size}, size, build)


async def consistency_proof(request: web.Request) -> web.Response:
    """GET /proofs/consistency?first=M[&second=N] — from a size the auditor kept to a signed checkpoint."""
    _only(request.query, {"first", "second"})
    first = _int(request.query, "first", minimum=1)
    if first is None:
        raise BadParameter("first", "is required")
    second = _int(request.query, "second", minimum=1)
    if second is not None and first > second:
        raise BadParameter("first", "must not exceed second")

    def build(handle: AuditLog, signed: SignedCheckpoint) -> dict[str, Any]:
        n = signed.checkpoint.size
        if first > n:
            raise BadParameter("first", "must not exceed the checkpoint's size")
        tree = _tree_for(handle, signed)
        earlier = handle.checkpoint_at(first)
        return {
            "first": first,
            "second": n,
            "proof": [p.hex() for p in tree.consistency_proof(first, n)],
            "first_checkpoint": _checkpoint_json(earlier) if earlier else None,
        }

    return await _proof(request, "consistency_proof", {"first": first, "second": second}, second, build)

