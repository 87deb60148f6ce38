"""Operator commands against a node's local REST API: ``send``, ``status``, ``inbox``, ``receipts``.

Registered into the ``drehscheibe`` command by :func:`register`; also runnable on its own as
``python -m gateway.operator_cli``. See ``docs/cli.md``.

Exit codes: 0 ok; 1 refused or failed (the sedex status code and statusInfo are printed on
stderr); 2 usage, credential or connection errors.

SECURITY: the bearer token is never printed, logged or put into an error message; every text
that reaches stdout or stderr passes through :func:`_scrub` as a second line of defence.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import contextmanager
from pathlib import Path

import aiohttp

from .client import ApiError, LocalApiClient
from .ids import InvalidIdentifier, ParticipantId, check_message_id

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
CHUNK = 256 * 1024
TOKEN_ENV, URL_ENV, CA_ENV = "DREHSCHEIBE_TOKEN", "DREHSCHEIBE_URL", "DREHSCHEIBE_CA"
# A bearer token (RFC 6750 b64token) has visible ASCII characters only: no whitespace, no CR/LF.
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# Names we write into --fetch directories come from the node; accept only what a messageId may be.
_SAFE_ID = re.compile(r"[A-Za-z0-9-]{1,36}")
_FAILED_STATES = {"failed", "expired"}


class UsageError(Exception):
    """Bad arguments, unreadable files or unusable credentials (exit 2)."""


class AuthError(Exception):
    """The node refused the token (HTTP 401/403) (exit 2)."""


# ----------------------------------------------------------------------------------------------
# argument parsing


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--url", default=None, help=f"node local API base URL, e.g. https://127.0.0.1:9443 (env {URL_ENV})")
    group.add_argument("--token", default=None, help=f"bearer token (prefer --token-file or env {TOKEN_ENV}: arguments are visible in ps)")
    group.add_argument("--token-file", type=Path, default=None, help="file holding the bearer token")
    group.add_argument("--ca", type=Path, default=None, help=f"CA certificate file for the node's TLS certificate (env {CA_ENV}; default: system trust)")
    parser.add_argument("--json", action="store_true", help="machine-readable output: one JSON document on stdout")


def register(commands) -> None:
    """Add ``send``, ``status``, ``inbox`` and ``receipts`` to an argparse subparsers object."""
    send = commands.add_parser("send", help="submit a message (envelope + payload) or every sedex pair of a directory")
    send.add_argument("envelope", type=Path, help="eCH-0090 envelope file, or a directory of envl_X.xml/data_X.* pairs")
    send.add_argument("payload", type=Path, nargs="?", help="payload file (streamed); omit when ENVELOPE is a directory")
    progress = send.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show a progress bar on stderr")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show one (default: when stderr is a terminal)")
    _common(send)
    send.set_defaults(func=run, operator_command="send")

    status = commands.add_parser("status", help="state, receipts and timeline of a sent message")
    status.add_argument("sender", help="sender participant ID")
    status.add_argument("message_id", help="the messageId")
    _common(status)
    status.set_defaults(func=run, operator_command="status")

    inbox = commands.add_parser("inbox", help="list a participant's inbox; optionally fetch and acknowledge")
    inbox.add_argument("participant")
    inbox.add_argument("--fetch", type=Path, metavar="DIR", default=None, help="save each message as DIR/envl_ID.xml and DIR/data_ID.EXT")
    inbox.add_argument("--ack", action="store_true", help="acknowledge each listed message (after --fetch saved it)")
    progress = inbox.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show a progress bar on stderr")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show one (default: when stderr is a terminal)")
    _common(inbox)
    inbox.set_defaults(func=run, operator_command="inbox")

    receipts = commands.add_parser("receipts", help="receipts for messages a participant sent")
    receipts.add_argument("participant")
    receipts.add_argument("--after", type=int, default=0, metavar="N", help="only receipts with id > N (cursor)")
    _common(receipts)
    receipts.set_defaults(func=run, operator_command="receipts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drehscheibe", description="Operator commands against a node's local API")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


# ----------------------------------------------------------------------------------------------
# output


class Output:
    """Text lines on stdout as they come, or one JSON document on stdout at the end; errors on stderr."""

    def __init__(self, as_json: bool, token: str | None) -> None:
        self.as_json = as_json
        self.token = token

    def line(self, text: str) -> None:
        if not self.as_json:
            sys.stdout.write(_scrub(text, self.token) + "\n")
            sys.stdout.flush()

    def error(self, text: str) -> None:
        sys.stderr.write(_scrub(text, self.token) + "\n")
        sys.stderr.flush()

    def document(self, data) -> None:
        if self.as_json:
            text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True)
            sys.stdout.write(_scrub(text, self.token) + "\n")
            sys.stdout.flush()


def _scrub(text: str, token: str | None) -> str:
    if token:
        text = text.replace(token, "[token]")
    return text


# ----------------------------------------------------------------------------------------------
# progress


class _Bar:
    """A progress bar on stderr: rich when installed, else a plain updating line."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.enabled, self.total, self.label, self.done = enabled, total, label, 0
        self._rich = self._task = None
        self._last = 0.0
        if not enabled:
            return
        try:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)  # fmt: skip
        except ImportError:
            return
        self._rich = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                              TimeRemainingColumn(), console=Console(stderr=True))  # fmt: skip
        self._rich.start()
        self._task = self._rich.add_task(label, total=total or None)

    def describe(self, label: str) -> None:
        self.label = label
        if self._rich is not None:
            self._rich.update(self._task, description=label)

    def advance(self, count: int) -> None:
        self.done += count
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, advance=count)
            return
        now = time.monotonic()
        if now - self._last >= 0.2 or self.done >= self.total:
            self._last = now
            percent = f" {100 * self.done // self.total:3d}%" if self.total else ""
            sys.stderr.write(f"\r{self.label}: {_size(self.done)} of {_size(self.total)}{percent}")
            sys.stderr.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.stop()
        else:
            sys.stderr.write("\n")
            sys.stderr.flush()


@contextmanager
def _progress(enabled: bool, total: int, label: str):
    bar = _Bar(enabled, total, label)
    try:
        yield bar
    finally:
        bar.close()


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} B"


def _show_progress(args) -> bool:
    return sys.stderr.isatty() if args.progress is None else args.progress


# ----------------------------------------------------------------------------------------------
# client


class OperatorClient(LocalApiClient):
    """The local API client, plus: system trust when no CA file is given, and payload downloads
    that report the payload's file name and progress."""

    def __init__(self, base_url: str, token: str, ca_file: Path | None) -> None:
        if ca_file is not None:
            super().__init__(base_url, token, ca_file)
            return
        self.base_url = base_url.rstrip("/")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl.create_default_context()),
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=None, sock_read=300),
        )

    async def download_payload(self, participant: str, sender: str, message_id: str, sink, on_total: Callable[[int], None],
                               on_chunk: Callable[[int], None]) -> str | None:  # fmt: skip
        """Stream the payload into ``sink``; returns the file name the node gives it."""
        url = f"{self.base_url}/api/v1/participants/{participant}/inbox/{sender}/{message_id}/payload"
        async with self._session.get(url) as response:
            if response.status != 200:
                raise ApiError(response.status, await response.text())
            on_total(response.content_length or 0)
            async for chunk in response.content.iter_chunked(CHUNK):
                sink.write(chunk)
                on_chunk(len(chunk))
            return response.content_disposition.filename if response.content_disposition else None


def _credentials(args) -> tuple[str, str, Path | None]:
    url = args.url or os.environ.get(URL_ENV)
    if not url:
        raise UsageError(f"no node URL: give --url or set {URL_ENV}")
    if not url.startswith("https://"):
        raise UsageError("--url must be an https:// URL (the local API is TLS only; the token must not travel in clear)")
    if args.token is not None:
        token = args.token
    elif args.token_file is not None:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the token file {args.token_file}: {getattr(exc, 'strerror', None) or type(exc).__name__}") from None
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise UsageError(f"no token: give --token-file, --token or set {TOKEN_ENV}")
    if not _TOKEN_CHARS.fullmatch(token):
        raise UsageError("the token contains characters a bearer token cannot have (not shown)")
    ca = args.ca or (Path(os.environ[CA_ENV]) if os.environ.get(CA_ENV) else None)
    if ca is not None and not ca.is_file():
        raise UsageError(f"CA file not found: {ca}")
    return url, token, ca


def _check_identifiers(args) -> None:
    """Participant IDs and messageIds go into URL paths: accept only well-formed ones (normalised)."""
    try:
        for name in ("sender", "participant"):
            if getattr(args, name, None) is not None:
                setattr(args, name, str(ParticipantId.parse(getattr(args, name))))
        if getattr(args, "message_id", None) is not None:
            check_message_id(args.message_id)
    except InvalidIdentifier as exc:
        raise UsageError(str(exc)) from None


def _error_body(body) -> dict:
    """Whatever the node answered with, as a dict (JSON error bodies, or plain text)."""
    if isinstance(body, dict):
        return body
    if isinstance(body, str):
        try:
            parsed = json.loads(body)
        except ValueError:
            return {"error": body.strip()}
        return parsed if isinstance(parsed, dict) else {"error": body.strip()}
    return {"error": str(body)}


def _check_auth(http_status: int, body) -> None:
    if http_status in (401, 403):
        detail = _error_body(body)
        reason = detail.get("error_description") or detail.get("error") or ""
        raise AuthError(f"the node refused the token: HTTP {http_status}" + (f" ({reason})" if reason else ""))


def _refusal(http_status: int, body) -> dict:
    detail = _error_body(body)
    return {"httpStatus": http_status, "statusCode": detail.get("statusCode"),
            "statusInfo": detail.get("statusInfo") or detail.get("error") or f"HTTP {http_status}"}  # fmt: skip


def _refusal_text(refusal: dict) -> str:
    code = refusal.get("statusCode")
    return f"{code} {refusal['statusInfo']}" if code is not None else f"HTTP {refusal['httpStatus']}: {refusal['statusInfo']}"


# ----------------------------------------------------------------------------------------------
# commands


def run(args) -> int:
    """Entry point of every operator command (argparse ``func``)."""
    out = Output(args.json, None)
    try:
        _check_identifiers(args)
        url, token, ca = _credentials(args)
    except UsageError as exc:
        return _fail(out, args, str(exc))
    out.token = token
    handler = {"send": _send, "status": _status, "inbox": _inbox, "receipts": _receipts}[args.operator_command]

    async def session() -> int:
        async with OperatorClient(url, token, ca) as api:
            return await handler(args, api, out)

    try:
        return asyncio.run(session())
    except (UsageError, AuthError) as exc:
        return _fail(out, args, str(exc))
    except (aiohttp.ClientError, asyncio.TimeoutError, ssl.SSLError, ConnectionError) as exc:
        return _fail(out, args, f"cannot talk to {url}: {type(exc).__name__}: {exc}")
    except OSError as exc:
        return _fail(out, args, f"{exc.filename or ''}: {exc.strerror or exc}")


def _fail(out: Output, args, message: str) -> int:
    """A usage, credential or connection error: a message on stderr (and the JSON document), exit 2."""
    out.error(f"drehscheibe {args.operator_command}: {message}")
    out.document({"ok": False, "error": message})
    return EXIT_USAGE


def _pairs(directory: Path) -> list[tuple[Path, Path | None]]:
    """Every ``envl_X.xml`` of a sedex directory with its ``data_X.*`` (None when missing or ambiguous)."""
    pairs = []
    for envelope in sorted(directory.glob("envl_*.xml")):
        stem = envelope.name[len("envl_"):-len(".xml")]
        data = [p for p in directory.iterdir() if p.is_file() and (p.name == f"data_{stem}" or p.name.startswith(f"data_{stem}."))]
        pairs.append((envelope, data[0] if len(data) == 1 else None))
    return pairs


async def _stream(path: Path, bar: _Bar) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            bar.advance(len(chunk))
            yield chunk
            await asyncio.sleep(0)


async def _send(args, api: OperatorClient, out: Output) -> int:
    if args.envelope.is_dir():
        if args.payload is not None:
            raise UsageError("give either a directory of sedex pairs or an envelope and a payload file")
        pairs = _pairs(args.envelope)
        if not pairs:
            raise UsageError(f"no envl_*.xml in {args.envelope}")
    else:
        if args.payload is None:
            raise UsageError("a payload file is needed with an envelope file")
        for path in (args.envelope, args.payload):
            if not path.is_file():
                raise UsageError(f"not a file: {path}")
        pairs = [(args.envelope, args.payload)]
    total = sum(data.stat().st_size for _, data in pairs if data is not None)
    results = []
    with _progress(_show_progress(args), total, "sending") as bar:
        for number, (envelope_path, data_path) in enumerate(pairs, 1):
            result = {"envelope": str(envelope_path), "payload": str(data_path) if data_path else None}
            results.append(result)
            if data_path is None:
                result.update(accepted=False, statusCode=None, statusInfo="no single data_* file for this envelope")
                out.error(f"refused {envelope_path.name}: {result['statusInfo']}")
                continue
            bar.describe(f"[{number}/{len(pairs)}] {data_path.name}" if len(pairs) > 1 else data_path.name)
            envelope_xml = envelope_path.read_bytes()
            result["bytes"] = data_path.stat().st_size
            try:
                http_status, body = await api.submit(envelope_xml, _stream(data_path, bar), data_path.name)
            except ValueError:  # an answer that is not JSON (a proxy, or a plain-text 400)
                http_status, body = 502, {"error": "the node's answer was not JSON"}
            _check_auth(http_status, body)
            if http_status == 202 and isinstance(body, dict):
                result.update(accepted=True, httpStatus=http_status, **body)
                duplicate = " (duplicate, already accepted)" if body.get("duplicate") else ""
                out.line(f"accepted {body['senderId']}/{body['messageId']} -> {', '.join(body['recipientIds'])}{duplicate}")
            else:
                refusal = _refusal(http_status, body)
                result.update(accepted=False, **refusal)
                if isinstance(body, dict) and body.get("receipt"):
                    result["receipt"] = body["receipt"]
                out.error(f"refused {envelope_path.name}: {_refusal_text(refusal)}")
    accepted = sum(1 for r in results if r["accepted"])
    if len(results) > 1:
        out.line(f"{accepted} accepted, {len(results) - accepted} refused")
    ok = accepted == len(results)
    out.document({"ok": ok, "accepted": accepted, "refused": len(results) - accepted, "results": results})
    return EXIT_OK if ok else EXIT_FAILED


async def _status(args, api: OperatorClient, out: Output) -> int:
    try:
        state = await api.status(args.sender, args.message_id)
    except ApiError as exc:
        _check_auth(exc.http_status, exc.body)
        refusal = _refusal(exc.http_status, exc.body)
        out.error(f"status {args.sender}/{args.message_id}: {_refusal_text(refusal)}")
        out.document({"ok": False, **refusal})
        return EXIT_FAILED
    receipts = {r.get("recipientId"): r for r in state.get("receipts", [])}
    failed = [r for r in state.get("recipients", []) if r.get("state") in _FAILED_STATES]
    out.line(f"message {state['senderId']}/{state['messageId']}")
    for recipient in state.get("recipients", []):
        receipt = receipts.get(recipient["recipientId"])
        code = f", receipt {receipt['statusCode']} {receipt.get('statusInfo') or ''}".rstrip() if receipt else ""
        out.line(f"  {recipient['recipientId']}: {recipient['state']} (attempts {recipient['attempts']}){code}")
    for event in state.get("events", []):
        who = f" [{event['recipient']}]" if event.get("recipient") else ""
        detail = f" {event['detail']}" if event.get("detail") else ""
        out.line(f"  {event['time']}  {event['node']}  {event['kind']}{who}{detail}")
    for recipient in failed:
        receipt = receipts.get(recipient["recipientId"])
        text = f"{receipt['statusCode']} {receipt.get('statusInfo') or ''}".strip() if receipt else "no receipt"
        out.error(f"{recipient['recipientId']}: {recipient['state']}: {text}")
    out.document({"ok": not failed, **state})
    return EXIT_FAILED if failed else EXIT_OK


def _write_atomically(target: Path, write: Callable) -> None:
    temporary = target.with_name(f".{target.name}.part")
    try:
        with temporary.open("wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


async def _inbox(args, api: OperatorClient, out: Output) -> int:
    if args.fetch is not None:
        args.fetch.mkdir(parents=True, exist_ok=True)
    try:
        entries = await api.inbox(args.participant)
    except ApiError as exc:
        _check_auth(exc.http_status, exc.body)
        refusal = _refusal(exc.http_status, exc.body)
        out.error(f"inbox {args.participant}: {_refusal_text(refusal)}")
        out.document({"ok": False, **refusal})
        return EXIT_FAILED
    failures = 0
    for entry in entries:
        sender, message_id = entry["senderId"], entry["messageId"]
        if not (_SAFE_ID.fullmatch(message_id) and _SAFE_ID.fullmatch(sender)):
            raise UsageError("the node listed a message with an unusable messageId or senderId")
        entry["files"], entry["acknowledged"] = None, False
        notes = []
        try:
            if args.fetch is not None:
                entry["files"] = await _fetch_one(args, api, entry)
                notes.append(f"saved {Path(entry['files']['envelope']).name}, {Path(entry['files']['payload']).name}")
            if args.ack:
                http_status = await api.acknowledge(args.participant, sender, message_id)
                _check_auth(http_status, "")
                if http_status != 204:
                    raise ApiError(http_status, "acknowledgement refused")
                entry["acknowledged"] = True
                notes.append("acknowledged")
        except ApiError as exc:
            _check_auth(exc.http_status, exc.body)
            failures += 1
            refusal = _refusal(exc.http_status, exc.body)
            entry["error"] = refusal
            out.error(f"{sender}/{message_id}: {_refusal_text(refusal)}")
        suffix = f"  ({'; '.join(notes)})" if notes else ""
        out.line(f"{entry['received']}  {sender}/{message_id}  type {entry['messageType']}  {entry['state']}{suffix}")
    if not entries:
        out.line(f"inbox of {args.participant} is empty")
    out.document({"ok": failures == 0, "participant": args.participant, "messages": entries})
    return EXIT_FAILED if failures else EXIT_OK


async def _fetch_one(args, api: OperatorClient, entry: dict) -> dict:
    """Save the payload first, then the envelope (as sedex does: the envelope marks a complete pair)."""
    sender, message_id = entry["senderId"], entry["messageId"]
    temporary = args.fetch / f".data_{message_id}.part"
    name = None
    try:
        with _progress(_show_progress(args), 0, f"{sender}/{message_id}") as bar, temporary.open("wb") as sink:
            def on_total(total: int) -> None:
                bar.total = total
                if bar._rich is not None:
                    bar._rich.update(bar._task, total=total or None)

            name = await api.download_payload(args.participant, sender, message_id, sink, on_total, bar.advance)
            sink.flush()
            os.fsync(sink.fileno())
        suffix = Path(name).suffix if name else ""
        if not re.fullmatch(r"\.[A-Za-z0-9]{1,10}", suffix):
            suffix = ".xml"
        payload_path = args.fetch / f"data_{message_id}{suffix}"
        os.replace(temporary, payload_path)
    finally:
        temporary.unlink(missing_ok=True)
    envelope = await api.envelope(args.participant, sender, message_id)
    envelope_path = args.fetch / f"envl_{message_id}.xml"
    _write_atomically(envelope_path, lambda handle: handle.write(envelope))
    return {"envelope": str(envelope_path), "payload": str(payload_path), "payloadName": name}


async def _receipts(args, api: OperatorClient, out: Output) -> int:
    if args.after < 0:
        raise UsageError("--after must be 0 or more")
    try:
        receipts = await api.receipts(args.participant, args.after)
    except ApiError as exc:
        _check_auth(exc.http_status, exc.body)
        refusal = _refusal(exc.http_status, exc.body)
        out.error(f"receipts {args.participant}: {_refusal_text(refusal)}")
        out.document({"ok": False, **refusal})
        return EXIT_FAILED
    for receipt in receipts:
        out.line(f"{receipt['id']}  {receipt['statusCode']}  {receipt['senderId']}/{receipt['messageId']} -> {receipt['recipientId']}"
                 f"  {receipt['eventDate']}  {receipt.get('statusInfo') or ''}".rstrip())  # fmt: skip
    last = max((r["id"] for r in receipts), default=args.after)
    if not receipts:
        out.line(f"no receipts after {args.after}")
    out.document({"ok": True, "participant": args.participant, "after": args.after, "last": last, "receipts": receipts})
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
