"""HTTP edges of a node: the local REST API (bearer tokens) and the node-to-node API (mTLS).

Every local route requires a token bound to one local system and the participants it
may act for; there is no anonymous route. Errors carry the sedex status code and the
eCH-0090 receipt so a client can act on them.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .audit import Actor, ActorKind
from .audit.api import auditor_app
from .console import ConsoleSessions, console_app
from .auth import PRINCIPAL, NodeAuthentication, Principal, audit_authenticator
from .directory import directory_routes
from .envelope import format_datetime
from .ids import GatewayError, InvalidIdentifier, ParticipantId, StatusCode, check_message_id
from .node import Node, RelayAck
from .openapi import OPENAPI_PATH, openapi_document
from .pki import load_private_key
from .receipt import parse_receipt
from .transport import RECEIPTS_PATH, TRANSFER_PATH, peer_common_name, read_header

NODE = web.AppKey("node", Node)

_HTTP_STATUS = {
    StatusCode.DUPLICATE_MESSAGE_ID: 409,
    StatusCode.NOT_ALLOWED_TO_SEND: 403,
    StatusCode.NOT_ALLOWED_TO_RECEIVE: 403,
    StatusCode.RECIPIENT_NOT_ALLOWED: 403,
    StatusCode.CERTIFICATE_NOT_VALID: 403,
    StatusCode.MESSAGE_TOO_LARGE: 413,
}


def _http_status(status: StatusCode) -> int:
    if status.is_temporary_failure:
        return 503
    return _HTTP_STATUS.get(status, 422)


def _iso(timestamp: float) -> str:
    return format_datetime(datetime.fromtimestamp(timestamp, timezone.utc))


def _error(status: StatusCode, info: str, receipt: bytes | None = None) -> web.Response:
    body = {"statusCode": int(status), "statusInfo": info}
    if receipt is not None:
        body["receipt"] = receipt.decode("utf-8")
    return web.json_response(body, status=_http_status(status))


def _participant(request: web.Request) -> ParticipantId:
    try:
        participant = ParticipantId.parse(request.match_info["participant"])
    except InvalidIdentifier:
        raise web.HTTPBadRequest(text="not a participant ID") from None
    # SECURITY: a system sees only the participants it is bound to; others look absent.
    if not request[PRINCIPAL].may_act_for(participant):
        raise web.HTTPNotFound(text="no such participant for this system")
    return participant


class MalformedMultipart(Exception):
    """Part headers the multipart reader cannot parse: the client's error (400), not ours."""


async def _next_part(reader):
    try:
        return await reader.next()
    except (ValueError, UnicodeError, AssertionError, HttpProcessingError):
        raise MalformedMultipart from None


async def submit_message(request: web.Request) -> web.StreamResponse:
    """POST /api/v1/messages — multipart: ``envelope`` (eCH-0090 XML) then ``payload`` (streamed)."""
    try:
        return await _submit_message(request)
    except MalformedMultipart:
        return web.json_response({"error": "malformed multipart part headers"}, status=400)


async def _submit_message(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError):
        return web.json_response({"error": "expected multipart/form-data with parts envelope and payload"}, status=400)
    part = await _next_part(reader)
    if part is None or part.name != "envelope":
        return web.json_response({"error": "the first part must be 'envelope'"}, status=400)
    envelope_xml = bytes(await part.read(decode=False))
    if len(envelope_xml) > node.config.limits.max_envelope_bytes:
        return _error(StatusCode.INVALID_ENVELOPE, "envelope larger than the configured limit")
    payload_part = await _next_part(reader)
    if payload_part is None or payload_part.name != "payload":
        return _error(StatusCode.NO_PAYLOAD, StatusCode.NO_PAYLOAD.default_info)
    payload_name = payload_part.filename or "data.xml"

    async def chunks():
        async for chunk in guarded(lambda: payload_part.read_chunk(256 * 1024), node.config.limits):
            yield chunk

    try:
        accepted = await node.submit(envelope_xml, chunks(), payload_name=payload_name, system=request[PRINCIPAL])
    except GatewayError as error:
        return _error(error.status, error.info, _receipt_for(node, envelope_xml, error))
    envelope = accepted.envelope
    return web.json_response(
        {
            "messageId": envelope.message_id,
            "senderId": str(envelope.sender),
            "recipientIds": [str(r) for r in envelope.recipients],
            "duplicate": accepted.duplicate,
            "status": f"/api/v1/messages/{envelope.sender}/{envelope.message_id}",
        },
        status=202,
    )


def _receipt_for(node: Node, envelope_xml: bytes, error: GatewayError) -> bytes | None:
    from .envelope import parse_envelope
    from .receipt import Receipt

    try:
        envelope = parse_envelope(envelope_xml, None)
    except GatewayError:
        return None
    return Receipt.for_envelope(envelope, envelope.recipients[0], error.status, error.info, node.clock.now()).to_xml()


async def message_status(request: web.Request) -> web.Response:
    """GET /api/v1/messages/{participant}/{message_id} — state, receipts and event timeline."""
    node = request.app[NODE]
    sender = _participant(request)
    message_id = _message_id(request)
    rows = node.store.outgoing_for(str(sender), message_id)
    events = node.store.timeline(str(sender), message_id)
    receipts = [r for _, r in node.store.receipts_for(str(sender)) if r.message_id == message_id]
    if not rows and not events:
        raise web.HTTPNotFound(text="no such message")
    return web.json_response(
        {
            "messageId": message_id,
            "senderId": str(sender),
            "recipients": [
                {"recipientId": r.recipient, "state": r.state.value, "attempts": r.attempts, "receiptStatus": r.receipt_status}
                for r in rows
            ],
            "receipts": [_receipt_json(r) for r in receipts],
            "events": [{**e.as_dict(), "time": _iso(e.time)} for e in events],
        }
    )


def _receipt_json(stored) -> dict:
    receipt = parse_receipt(stored.receipt)
    body = receipt.as_dict()
    body["receipt"] = stored.receipt.decode("utf-8")
    if stored.signature:
        body["signature"] = stored.signature
    return body


def _message_id(request: web.Request) -> str:
    try:
        return check_message_id(request.match_info["message_id"])
    except InvalidIdentifier:
        raise web.HTTPBadRequest(text="not a messageId") from None


async def list_receipts(request: web.Request) -> web.Response:
    """GET /api/v1/participants/{participant}/receipts?after=N — receipts for messages it sent."""
    node = request.app[NODE]
    participant = _participant(request)
    try:
        after = int(request.query.get("after", "0") or 0)
        if not 0 <= after < 2**63:
            raise ValueError
    except ValueError:
        raise web.HTTPBadRequest(text="after must be a receipt id (a non-negative integer)") from None
    return web.json_response(
        [{"id": i, **_receipt_json(r)} for i, r in node.store.receipts_for(str(participant), after)]
    )


async def list_inbox(request: web.Request) -> web.Response:
    """GET /api/v1/participants/{participant}/inbox — delivered, not yet acknowledged messages."""
    node = request.app[NODE]
    participant = _participant(request)
    entries = node.store.inbox(str(participant), include_acknowledged=request.query.get("all") == "1")
    return web.json_response(
        [
            {
                "messageId": e.message_id,
                "senderId": e.sender,
                "messageType": e.message_type,
                "received": _iso(e.received),
                "state": e.state,
                "envelope": f"/api/v1/participants/{participant}/inbox/{e.sender}/{e.message_id}/envelope",
                "payload": f"/api/v1/participants/{participant}/inbox/{e.sender}/{e.message_id}/payload",
            }
            for e in entries
        ]
    )


def _inbox_entry(request: web.Request):
    node = request.app[NODE]
    participant = _participant(request)
    try:
        sender = ParticipantId.parse(request.match_info["sender"])
    except InvalidIdentifier:
        raise web.HTTPBadRequest(text="not a participant ID") from None
    entry = node.store.find_inbox(str(sender), _message_id(request), str(participant))
    if entry is None:
        raise web.HTTPNotFound(text="no such message in this inbox")
    return node, entry


async def inbox_envelope(request: web.Request) -> web.Response:
    _, entry = _inbox_entry(request)
    return web.Response(body=entry.envelope, content_type="application/xml")


async def inbox_payload(request: web.Request) -> web.StreamResponse:
    """Streams the decrypted payload; the seal is verified again before the first byte."""
    node, entry = _inbox_entry(request)
    try:
        verified, plaintext = node.open_inbox_entry(entry)
        node.record_fetch(entry, Actor(ActorKind.LOCAL_SYSTEM, request[PRINCIPAL].name))
    except GatewayError as error:  # AuditUnavailable (403) included: no record, no payload
        return _error(error.status, error.info)
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Length": str(verified.plaintext_length),
            "Content-Disposition": f'attachment; filename="{_safe_name(verified.payload_name)}"',
        }
    )
    await response.prepare(request)
    async for chunk in plaintext:
        await response.write(chunk)
    node.store.add_events(entry.sender, entry.message_id, [(entry.recipient, node.event("fetched", detail=request[PRINCIPAL].name))])
    await response.write_eof()
    return response


def _safe_name(name: str) -> str:
    return "".join(c for c in name if c.isalnum() or c in "._-")[:100] or "payload"


async def inbox_ack(request: web.Request) -> web.Response:
    node, entry = _inbox_entry(request)
    node.store.acknowledge(entry, node.event("acknowledged", detail=request[PRINCIPAL].name))
    await node.store.durable()  # DURABILITY: an acknowledged message must never come back after a crash
    return web.Response(status=204)


class SlowSender(GatewayError):
    """A client that sends too slowly or stalls (slow-client protection): temporary, it may retry."""

    status = StatusCode.NETWORK_ERROR


async def guarded(read, limits):
    """Chunks from ``read()`` until it returns b"": cut on a stall or a trickle below the minimum rate."""
    loop = asyncio.get_running_loop()
    started, received = loop.time(), 0
    while True:
        try:
            chunk = await asyncio.wait_for(read(), timeout=limits.read_timeout_seconds)
        except asyncio.TimeoutError:
            raise SlowSender(f"nothing received for {limits.read_timeout_seconds:.0f} s") from None
        if not chunk:
            return
        received += len(chunk)
        elapsed = loop.time() - started
        if elapsed > 30 and received / elapsed < limits.min_bytes_per_second:
            raise SlowSender(f"{received / elapsed:.0f} bytes/s is below the minimum of {limits.min_bytes_per_second}")
        yield chunk


def guarded_body(content, limits):
    return guarded(lambda: content.read(256 * 1024), limits)


async def receive_transfer(request: web.Request) -> web.Response:
    """POST /node/v1/transfers — a peer node hands over one sealed message (mTLS only)."""
    node = request.app[NODE]
    peer = peer_common_name(request.transport.get_extra_info("ssl_object") if request.transport else None)
    if peer is None:
        return web.json_response({"error": "client certificate required"}, status=401)
    try:
        header = await read_header(request.content)
    except GatewayError as error:
        return web.json_response({"statusCode": int(error.status), "statusInfo": error.info}, status=400)

    stored = await node.receive(header, guarded_body(request.content, node.config.limits), peer)
    if isinstance(stored, RelayAck):
        return web.json_response({"statusCode": int(StatusCode.HANDED_OVER), "relayed": stored.token}, status=202)
    return web.json_response({"statusCode": stored.status, "receipt": stored.signature}, status=200 if stored.status == 100 else 422)


async def receive_returned_receipt(request: web.Request) -> web.Response:
    """POST /node/v1/receipts — a relay returns the final receipt of a message we handed to it (mTLS only)."""
    node = request.app[NODE]
    peer = peer_common_name(request.transport.get_extra_info("ssl_object") if request.transport else None)
    if peer is None or node.config.peer(peer) is None:
        return web.json_response({"error": "a configured peer's client certificate is required"}, status=401)
    try:
        body = await request.json()
        token = body["token"] if isinstance(body, dict) else None
        if not isinstance(token, str):
            raise ValueError
    except (ValueError, KeyError, RecursionError):  # SECURITY: nested JSON from a peer is a 400, not a 500 (F6)
        return web.json_response({"error": "expected {\"token\": \"…\"}"}, status=400)
    await node.prepare_revocation(token)  # OCSP answers for the relay's and the destination's certificates
    try:
        await node.accept_returned_receipt(token, peer)
    except GatewayError as error:  # AuditUnavailable included: the relay sends it again
        status = 503 if error.status.is_temporary_failure else 422
        return web.json_response({"statusCode": int(error.status), "statusInfo": error.info}, status=status)
    # DURABILITY: the relay deletes what it owes once we answer; our settle must be on disk first.
    await node.store.durable()
    return web.json_response({"accepted": True})


async def policy_status(request: web.Request) -> web.Response:
    """GET /admin/v1/policies — the active policy set's revision and rules (purpose, legal basis)."""
    node = request.app[NODE]
    if node.policies is None:
        return web.json_response({"revision": None, "rules": []})
    policy_set = node.policies.engine.policy_set
    return web.json_response({
        "revision": policy_set.revision,
        "rules": [{"id": r.id, "effect": r.effect.value, "purpose": r.purpose, "legalBasis": r.legal_basis,
                   "legalReference": r.legal_reference} for r in policy_set.rules],
    })  # fmt: skip


async def policy_reload(request: web.Request) -> web.Response:
    """POST /admin/v1/policies/reload — load the policy files again (audited); a bad set keeps the old one."""
    node = request.app[NODE]
    operator: Principal = request[PRINCIPAL]
    try:
        result = node.reload_policies(Actor(ActorKind.ADMIN, operator.name))
    except GatewayError as error:  # AuditUnavailable (403) included: nothing changed
        return _error(error.status, error.info)
    return web.json_response(result.to_json(), status=200 if result.accepted else 422)


async def routes_reload(request: web.Request) -> web.Response:
    """POST /admin/v1/routes/reload — read the node file again, swap routes and peers (audited)."""
    node = request.app[NODE]
    try:
        result = node.reload_routes(Actor(ActorKind.ADMIN, request[PRINCIPAL].name))
    except GatewayError as error:  # AuditUnavailable (403): nothing changed
        return _error(error.status, error.info)
    return web.json_response(result.to_json(), status=200 if result.accepted else 422)


async def routes_status(request: web.Request) -> web.Response:
    """GET /admin/v1/routes — the active routes and peers."""
    config = request.app[NODE].config
    return web.json_response({
        "routes": [{"recipient": r.recipient, "members": list(r.members), "via": r.via, "payload": r.payload.value} for r in config.routes],
        "peers": [{"id": p.id, "url": p.url, "breaker": request.app[NODE].breakers[p.id].state} for p in config.peers],
    })  # fmt: skip


async def openapi_json(request: web.Request) -> web.Response:
    """GET /openapi.json — the OpenAPI 3.1 description of this listener (public)."""
    return web.json_response(openapi_document())


def local_api(node: Node) -> web.Application:
    """The local listener: /api/v1 for local systems, /admin/v1 for admins, /audit/v1 for auditors,
    /oauth2 for tokens, /console for people in a browser (gateway/console). SECURITY: one middleware
    authenticates every request and checks the scope gateway.auth.ROUTE_SCOPES maps the route to;
    a route not in that table is refused."""
    config = node.config
    limit = config.limits.max_envelope_bytes
    auth = NodeAuthentication.create(
        node_id=config.node_id, signing_key=load_private_key(config.tls.private_key), now=node.clock.now,
        local_systems=config.local_systems, operators=config.operators,
        clients=config.oauth_clients, oauth2=config.oauth2, oidc=config.oidc,
    )  # fmt: skip
    systems = web.Application(client_max_size=limit)
    systems[NODE] = node
    systems.router.add_post("/messages", submit_message)
    systems.router.add_get("/messages/{participant}/{message_id}", message_status)
    systems.router.add_get("/participants/{participant}/receipts", list_receipts)
    systems.router.add_get("/participants/{participant}/inbox", list_inbox)
    systems.router.add_get("/participants/{participant}/inbox/{sender}/{message_id}/envelope", inbox_envelope)
    systems.router.add_get("/participants/{participant}/inbox/{sender}/{message_id}/payload", inbox_payload)
    systems.router.add_post("/participants/{participant}/inbox/{sender}/{message_id}/ack", inbox_ack)
    admin = web.Application()
    admin[NODE] = node
    admin.router.add_get("/policies", policy_status)
    admin.router.add_post("/policies/reload", policy_reload)
    admin.router.add_get("/routes", routes_status)
    admin.router.add_post("/routes/reload", routes_reload)
    # The web console's session cookie counts on /console pages only, checked by the same middleware and table.
    sessions = ConsoleSessions(clients=auth.clients, static=auth.authenticator.static)
    app = web.Application(client_max_size=limit, middlewares=[auth.middleware(sessions)])
    app[NODE] = node
    app.router.add_get(OPENAPI_PATH, openapi_json)
    app.cleanup_ctx.append(auth.cleanup_ctx)
    app.add_subapp("/api/v1", systems)
    app.add_subapp("/admin/v1", admin)
    app.add_subapp("/audit/v1", auditor_app(node.audit, person_secret=node.person_secret, now=node.clock.now,
                                            authenticate=audit_authenticator()))  # fmt: skip
    app.add_subapp("/oauth2", auth.token_app())
    app.add_subapp("/console", console_app(node, sessions, oidc=auth.authenticator.oidc))
    return app


def node_api(node: Node) -> web.Application:
    app = web.Application(client_max_size=node.config.limits.max_envelope_bytes)
    app[NODE] = node
    app.router.add_post(TRANSFER_PATH, receive_transfer)
    app.router.add_post(RECEIPTS_PATH, receive_returned_receipt)
    if node.config.directory is not None and node.config.directory.publish is not None:
        # The hub serves the signed directory to the federation's nodes (mTLS, like every node route).
        app.add_routes(directory_routes(node.config.directory.publish))
    return app
