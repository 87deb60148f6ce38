"""Structured logs: one JSON object per line, and a filter that keeps personal data out.

Every line carries ``time``, ``level``, ``logger``, ``message`` and ``node``, plus the
fields bound for the message being handled (``messageId``, ``sender``, ``recipient``,
``stage``, ``peer``). Bind them once where a message enters a hop::

    with bound(message_id=envelope.message_id, sender=str(envelope.sender)):
        ...   # every log line in here, in any module, carries them

The context lives in a :class:`~contextvars.ContextVar`, so concurrent messages (one
asyncio task each) never see each other's fields.

SECURITY: what may reach a log line is allow-listed, not block-listed, because the names,
addresses and dates inside an eCH payload cannot be recognised in general:

* **fields**: only the keys above, plus a few typed extras (``status``, ``peer``,
  ``participant``, ``message_id``); every value must have its expected shape (a participant
  ID, a messageId, an integer) or it is replaced. Any other ``extra=`` key is dropped.
* **message**: a format string that is a literal in this project's code passes as written;
  its arguments do not. Each argument — and a whole message whose format string is not one
  of ours (a library's, or a variable) — goes through :func:`scrub_text`: XML is cut,
  quoted values are cut, AHV numbers (``756…`` in any formatting) and calendar dates are
  replaced, and of the remaining words only those that occur in this project's code, numbers,
  digests and configured identifiers (participant IDs, node IDs, peers) are kept.
* **exceptions**: a traceback is reduced to the exception's type (and sedex code) and where
  it was raised (file, line, function); its message and ``repr`` never reach the log.

The filter rewrites the record itself, so a handler with any formatter only ever sees the
scrubbed text. :func:`configure_logging` installs it with :class:`JsonFormatter` on stderr.
"""

from __future__ import annotations

import ast
import contextlib
import contextvars
import datetime as _dt
import enum
import functools
import json
import logging
import re
import sys
import traceback
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, TextIO

# -- bound context ------------------------------------------------------------------------

_FIELDS: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("drehscheibe_log_fields", default=MappingProxyType({}))

_PARTICIPANT = re.compile(r"T?[1-9]-[0-9A-Z]+-[0-9]+|T?0-sedex-[0-9]")
# An eCH-0090 messageId, and (SECURITY) at least one digit: systems use UUIDs or counters,
# and a value of letters only might be a name put where an ID belongs.
_MESSAGE_ID = re.compile(r"(?=[a-zA-Z-]*[0-9])[a-zA-Z0-9-]{1,36}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_STAGE = re.compile(r"[a-z][a-z_]{0,39}")

# Bound field → (JSON key, the shape its value must have).
_BINDABLE = {
    "message_id": ("messageId", _MESSAGE_ID),
    "sender": ("sender", _PARTICIPANT),
    "recipient": ("recipient", _PARTICIPANT),
    "participant": ("participant", _PARTICIPANT),
    "stage": ("stage", _STAGE),
    "peer": ("peer", _NAME),
}
INVALID = "‹invalid›"


@contextlib.contextmanager
def bound(**fields: object) -> Iterator[None]:
    """Bind fields (``message_id``, ``sender``, ``recipient``, ``participant``, ``stage``,
    ``peer``) to every log line inside the block; ``None`` values are ignored."""
    unknown = set(fields) - set(_BINDABLE)
    if unknown:
        raise TypeError(f"cannot bind {sorted(unknown)}; bindable: {sorted(_BINDABLE)}")
    merged = dict(_FIELDS.get())
    for name, value in fields.items():
        if value is not None:
            key, shape = _BINDABLE[name]
            merged[key] = _shaped(value, shape)
    token = _FIELDS.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _FIELDS.reset(token)


def bound_fields() -> Mapping[str, str]:
    """The fields bound in the current context (for tests and for the formatter)."""
    return _FIELDS.get()


def _shaped(value: object, shape: re.Pattern) -> str:
    text = value.value if isinstance(value, enum.Enum) else str(value)
    text = str(text)
    if text.lower().startswith("sedex://"):
        text = text[len("sedex://") :]
    return text if shape.fullmatch(text) else INVALID


# -- what the project's own code says ----------------------------------------------------------

_PACKAGES = ("gateway", "adapters")
# Modules that hold or make example persons (the demo, test-message generation): their
# literals are sample payloads, so none of their words may count as "the code's".
# This module is left out too: its own documentation discusses what must not pass.
_EXAMPLE_MODULES = frozenset({"gateway/generated.py", "gateway/samples.py", "gateway/demo.py", "gateway/logs.py"})
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


@functools.cache
def code_vocabulary() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(string literals, words as written, lower-case words) of this project's code.

    Literals are the format strings that may pass verbatim; words are what free text may
    keep. Identifiers (class, function, attribute and argument names) count as words too,
    so exception names and technical terms survive. Personal data is never a literal in
    the code, so it can be neither; modules that hold example persons are left out.

    A word matches as written; only a word written all in lower case may also match a word
    the code capitalises. A capitalised or upper-case word (how registers write names)
    passes only if the code itself writes it that way.
    """
    literals: set[str] = set()
    words: set[str] = set()
    root = Path(__file__).resolve().parent.parent
    for package in _PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if path.relative_to(root).as_posix() in _EXAMPLE_MODULES:
                continue
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (OSError, SyntaxError, UnicodeDecodeError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    literals.add(node.value)
                    if "<" not in node.value:  # an XML literal is a document, not words of ours
                        words.update(_WORD.findall(node.value))
                elif isinstance(node, ast.Name):
                    words.update(_WORD.findall(node.id))
                elif isinstance(node, ast.Attribute):
                    words.update(_WORD.findall(node.attr))
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    words.update(_WORD.findall(node.name))
                elif isinstance(node, ast.arg):
                    words.update(_WORD.findall(node.arg))
    words.update(_exception_names())
    words.update(_TECHNICAL_WORDS)
    words.update(w.capitalize() for w in _TECHNICAL_WORDS)
    words = {w for w in words if len(w) > 1 or w == "a"}
    return frozenset(literals), frozenset(words), frozenset(w.lower() for w in words)


def _known_word(word: str) -> bool:
    _, exact, lower = code_vocabulary()
    return word in exact or (word.islower() and word in lower)


def _exception_names() -> list[str]:
    """Names of the exceptions a node can meet (builtins, asyncio, ssl, sqlite3, aiohttp)."""
    import asyncio
    import builtins
    import sqlite3
    import ssl

    names = []
    for module in (builtins, asyncio, ssl, sqlite3):
        names += [n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, BaseException)]
    with contextlib.suppress(ImportError):
        import aiohttp

        names += [n for n, v in vars(aiohttp).items() if isinstance(v, type) and issubclass(v, BaseException)]
    return names


# Words of messages from libraries the node runs on (libxml2, aiohttp, ssl) that are not in
# the project's own code but name no one.
_TECHNICAL_WORDS = frozenset(
    "element attribute value facet pattern length maxlength minlength enumeration content model "
    "expected missing child children not allowed valid invalid type simple complex sequence choice "
    "namespace prefix declaration schema document root start end tag mismatch premature opening closing "
    "cannot connect host ssl certificate verify failed handshake connection reset refused timeout timed "
    "out closed peer server client request response status header body chunk stream eof read write "
    "error errno file directory no such permission denied disk full database locked busy".split()
)


# -- scrubbing ------------------------------------------------------------------------------------

# SECURITY: AHV/AVS numbers (756 + 10 digits) in any formatting: dots, spaces, dashes, none.
_AHV = re.compile(r"(?<!\d)7[\s.\-/_]*5[\s.\-/_]*6(?:[\s.\-/_]*\d){10}(?!\d)")
# Calendar dates (birth dates, death dates, moves): ISO, Swiss, slashes. A full timestamp
# with a time of day (messageDate, certificate ends) stays.
_DATES = re.compile(
    r"(?<![\d-])\d{4}-\d{2}-\d{2}(?![\dT:])(?:Z|[+-]\d{2}:\d{2})?|(?<![\d.])\d{1,2}\.\d{1,2}\.\d{2,4}(?![\d.])|(?<!\d)\d{1,2}/\d{1,2}/\d{4}(?!\d)"
)
_XML = re.compile(r"<[^<>]*>(?:[^<>]*<[^<>]*>)*|<[!?/A-Za-z][^<>]*$|&lt;.*?(?:&gt;|$)", re.DOTALL)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|«[^»]*»|‘[^’]*’|“[^”]*”")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[A-Za-z0-9.\-]+(?::\d+)?")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?")
_NUMBER = re.compile(r"[+-]?\d+(?:[.,]\d+)*(?:s|ms|h|d|%|B|KiB|MiB|GiB)?")
_HEX = re.compile(r"(?=[0-9a-fA-F-]*\d)[0-9a-fA-F]{8,}(?:-[0-9a-fA-F]{4,})*")
_TOKEN = re.compile(r"\S+")
_PART = re.compile(r"‹(?:ahv|date|xml|…)›|[^\W_]+|[^\w‹]+|[_‹]", re.UNICODE)
REDACTED = "‹…›"

_identifiers: set[str] = set()


def allow_identifiers(names: Iterable[str]) -> None:
    """Add configured identifiers (node ID, peer IDs, local system and operator names, rule
    IDs) that free text may keep. Call once at start with the configuration's names."""
    _identifiers.update(str(n) for n in names if n)
    _token.cache_clear()


def scrub_text(text: str) -> str:
    """``text`` with everything that is not known to be harmless replaced (see the module doc)."""
    text = _XML.sub("‹xml›", str(text))
    text = _QUOTED.sub(REDACTED, text)
    text = _AHV.sub("‹ahv›", text)
    text = _DATES.sub("‹date›", text)
    return _TOKEN.sub(lambda m: _token(m.group(0)), text)


@functools.lru_cache(maxsize=4096)
def _token(token: str) -> str:
    if token in ("‹ahv›", "‹date›", "‹xml›", REDACTED) or _kept_whole(token):
        return token
    url = _URL.match(token)
    if url:
        return url.group(0) + _token(token[url.end() :]) if url.end() < len(token) else url.group(0)
    out = []
    for part in _PART.findall(token):
        if not part[0].isalnum():
            out.append(part)
        elif _kept_whole(part) or _known_word(part):
            out.append(part)
        elif part.isdigit() and len(part) < 9:
            out.append(part)  # counts, ports, status codes, line numbers; AHV and dates are gone already
        else:
            out.append(REDACTED)
    return "".join(out)


def _kept_whole(token: str) -> bool:
    core = token.strip(".,;:()[]{}")
    return bool(core) and (
        core in _identifiers
        or _PARTICIPANT.fullmatch(core.removeprefix("sedex://")) is not None
        or (_NUMBER.fullmatch(core) is not None and len(core) < 16)
        or _HEX.fullmatch(core) is not None
        or _TIMESTAMP.fullmatch(core) is not None
    )


def scrub_value(value: object) -> object:
    """An argument of a log call, safe to format: numbers stay numbers, the rest is scrubbed text."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and not isinstance(value, enum.Enum):
        return value if not _AHV.fullmatch(str(value)) else "‹ahv›"
    if isinstance(value, float):
        return value
    if isinstance(value, enum.Enum):
        return scrub_value(value.value)
    if isinstance(value, _dt.datetime):
        return value.isoformat()
    if isinstance(value, _dt.date):
        return "‹date›"
    if isinstance(value, BaseException):
        return exception_summary(value)["type"]
    return scrub_text(str(value))


# -- exceptions -------------------------------------------------------------------------------


def exception_summary(error: BaseException, tb: TracebackType | None = None) -> dict[str, Any]:
    """Type and location of an exception; never its message (it may quote a payload)."""
    kind = type(error)
    name = kind.__qualname__ if kind.__module__ in ("builtins", "__main__") else f"{kind.__module__}.{kind.__qualname__}"
    summary: dict[str, Any] = {"type": name}
    status = getattr(error, "status", None)
    if status is not None and hasattr(status, "value") and isinstance(status.value, int):
        summary["status"] = status.value  # a GatewayError's sedex code
    frames = traceback.extract_tb(tb if tb is not None else error.__traceback__)
    if frames:
        summary["at"] = _where(frames[-1])
        ours = [f for f in frames if _is_ours(f.filename)]
        if ours and ours[-1] is not frames[-1]:
            summary["in"] = _where(ours[-1])
    cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    if cause is not None:
        summary["cause"] = exception_summary(cause)["type"]
    return summary


def _where(frame: traceback.FrameSummary) -> str:
    parts = Path(frame.filename).parts
    return f"{'/'.join(parts[-2:])}:{frame.lineno} in {frame.name}"


def _is_ours(filename: str) -> bool:
    return any(part in _PACKAGES for part in Path(filename).parts[-3:-1])


# -- the filter and the formatter ------------------------------------------------------------------

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
# extra= keys that may pass, with the shape of their value.
_EXTRAS = {
    "message_id": ("messageId", _MESSAGE_ID),
    "status": ("status", None),  # an integer (sedex code)
    "peer": ("peer", _NAME),
    "participant": ("participant", _PARTICIPANT),
    "sender": ("sender", _PARTICIPANT),
    "recipient": ("recipient", _PARTICIPANT),
}
# Set on a record once scrubbed: a record passes the filter of two handlers but is scrubbed once.
_SCRUBBED = "drehscheibe_scrubbed"


class ScrubbingFilter(logging.Filter):
    """Rewrites each record so that only allow-listed content is left (see the module doc).

    Attach it to the *handler* (a logger's filters do not see records of child loggers).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _SCRUBBED, False):
            return True
        record.msg = self._message(record)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.drehscheibe_exception = exception_summary(record.exc_info[1], record.exc_info[2])
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        fields, dropped = {}, []
        for key in [k for k in vars(record) if k not in _STANDARD and not k.startswith("drehscheibe_")]:
            value = vars(record).pop(key)
            if key in _EXTRAS:
                name, shape = _EXTRAS[key]
                if shape is None:
                    fields[name] = value if isinstance(value, int) and not isinstance(value, bool) else INVALID
                else:
                    fields[name] = _shaped(value, shape)
            else:
                dropped.append(key)
        record.drehscheibe_fields = {**bound_fields(), **fields}
        if dropped:
            record.drehscheibe_dropped = sorted(scrub_text(k) for k in dropped)
        setattr(record, _SCRUBBED, True)
        return True

    @staticmethod
    def _message(record: logging.LogRecord) -> str:
        template = record.msg
        literals = code_vocabulary()[0]
        if isinstance(template, str) and template in literals:
            if not record.args:
                return template
            args = record.args
            if isinstance(args, Mapping):
                safe: Any = {k: scrub_value(v) for k, v in args.items()}
            else:
                safe = tuple(scrub_value(a) for a in (args if isinstance(args, tuple) else (args,)))
            try:
                return template % safe
            except (TypeError, ValueError, KeyError):
                # e.g. %d given a scrubbed string: keep the format string, drop the values.
                return f"{template} [arguments withheld]"
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken log call must not break logging
            text = str(template)
        return scrub_text(text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, node, bound fields, exception."""

    def __init__(self, node: str | None = None) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        if not getattr(record, _SCRUBBED, False):
            ScrubbingFilter().filter(record)  # SECURITY: never format an unscrubbed record
        line: dict[str, Any] = {
            "time": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.msg,
        }
        if self.node:
            line["node"] = self.node
        line.update(getattr(record, "drehscheibe_fields", {}))
        exception = getattr(record, "drehscheibe_exception", None)
        if exception:
            line["exception"] = exception
        dropped = getattr(record, "drehscheibe_dropped", None)
        if dropped:
            line["droppedFields"] = dropped
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=str)


def configure_logging(node: str | None, *, level: int = logging.WARNING, stream: TextIO | None = None,
                      identifiers: Iterable[str] = ()) -> logging.Handler:  # fmt: skip
    """Send every log record (any logger) as scrubbed JSON lines to ``stream`` (stderr).

    Replaces the root logger's handlers; Python warnings are routed through logging too, so
    they are scrubbed as well. ``identifiers`` are configured names free text may keep.
    """
    allow_identifiers([*(identifiers or ()), *([node] if node else [])])
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ScrubbingFilter())
    handler.setFormatter(JsonFormatter(node))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    code_vocabulary()  # build it now, not on the first log line of a message
    return handler


def config_identifiers(config) -> list[str]:
    """The names in a node configuration that log text may keep: node, peers, local systems,
    participants need no listing (their IDs have a shape of their own)."""
    # Operators' names are left out on purpose: they may be people's names.
    names = [config.node_id, *(p.id for p in config.peers), *(s.name for s in config.local_systems)]
    return [n for n in names if n]
