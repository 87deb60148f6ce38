"""Load policy files (TOML) into a frozen :class:`PolicySet`, refusing anything doubtful.

Each file is first validated against the published JSON Schema (``schemas/policy.schema.json``,
see :mod:`.fileschema`), then checked for what a schema cannot see: unknown groups, duplicate
ids across files, namespace prefixes, and (given the XSDs) redactions that break payloads.
Every error names the file, the rule id, the field and the offending value, so an admin
can fix it without guessing. Policy files hold no personal data, so quoting values is safe.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import tomllib
from collections.abc import Iterable
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from ..ids import ParticipantId
from .fileschema import NAIVE, NOT_AN_INSTANT, SCHEMA_PATH, first_violation, parse_instant
from .model import Effect, ParticipantMatcher, PolicySet, RedactionPath, Rule

SWISS_TZ = "Europe/Zurich"
_GROUP_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_GLOB = re.compile(r"T?[0-9*?]-[0-9A-Z*?]+-[0-9*?]+|T?\*")
_EVENT = re.compile(r"[a-z][A-Za-z0-9]{0,80}")
_NAME = r"[A-Za-z_][A-Za-z0-9_.-]*"
_QNAME = re.compile(rf"(?:({_NAME}):)?({_NAME})|\{{([^{{}}]+)\}}({_NAME})")
# The participant IDs a policy file may write: exactly the schema's pattern (no blanks, and
# the sedex:// prefix in lower case), so the schema and the loader accept the same files.
_PARTICIPANT_REF = re.compile(r"(sedex://)?(T?[1-9]-[0-9A-Z]+-[0-9]+|T?0-sedex-[0-9])")
# eCH-0058 action codes: 1 new, 3 recall, 4 correction, 5 request, 6 response, 10 forward, 12 reminder.
ACTIONS = frozenset({"1", "3", "4", "5", "6", "10", "12"})

_RULE_FIELDS = {
    "id", "effect", "description", "senders", "recipients", "message_types", "message_classes",
    "actions", "events", "max_payload_size", "valid_from", "valid_until", "purpose",
    "legal_basis", "legal_reference", "allow_locked_data", "redact", "reason",
}
_PERMIT_ONLY = {"purpose", "legal_basis", "legal_reference", "allow_locked_data", "redact", "max_payload_size"}
_TOP_LEVEL = {"policy", "namespaces", "participants", "groups", "rule"}
_MAX_QUOTE = 200  # characters of a bad value quoted in an error


class PolicyLoadError(ValueError):
    """A policy file is refused; the message names file, rule, field and value."""

    def __init__(self, file: str, rule: str | None, field: str, problem: str, value: Any = None) -> None:
        self.file, self.rule, self.field, self.problem, self.value = file, rule, field, problem, value
        where = f"rule {rule!r}" if rule else "set"
        quoted = repr(value)
        if len(quoted) > _MAX_QUOTE:
            quoted = quoted[: _MAX_QUOTE - 1] + "…"
        super().__init__(f"{file}: {where}: field {field!r}: {problem}: {quoted}")


def policy_files(paths: Iterable[Path | str]) -> list[Path]:
    """The files a set of paths means: each file as given, each directory's *.toml in name order."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(path.glob("*.toml")))
        else:
            files.append(path)
    if not files:
        raise PolicyLoadError(", ".join(map(str, paths)) or "(none)", None, "paths", "no policy files found", None)
    return files


def load_policy_set(paths: Iterable[Path | str], *, schemas: Path | str | None = None) -> PolicySet:
    """Load and merge policy files (a directory means its ``*.toml``), or raise PolicyLoadError.

    With ``schemas`` (the folder of official eCH XSDs) every redaction is also proved
    against the XSDs, and a rule whose redaction would break payloads is refused.
    """
    documents: list[tuple[str, dict]] = []
    for path in policy_files(paths):
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyLoadError(str(path), None, "file", "cannot read", type(exc).__name__) from None
        except tomllib.TOMLDecodeError as exc:
            raise PolicyLoadError(str(path), None, "file", "not valid TOML", str(exc)) from None
        _check_schema(str(path), document)
        documents.append((str(path), document))
    policy_set = _build(documents)
    if schemas is not None:
        _check_redactions(policy_set, Path(schemas))
    return policy_set


def _check_schema(file: str, document: dict) -> None:
    try:
        violation = first_violation(document)
    except OSError as exc:
        # SECURITY: without the published schema nothing is loaded (fail closed).
        raise PolicyLoadError(str(SCHEMA_PATH), None, "schema", "cannot read the policy schema", type(exc).__name__) from None
    if violation is not None:
        raise PolicyLoadError(file, violation.rule, violation.field, violation.problem, violation.value)


def _check_redactions(policy_set: PolicySet, schemas: Path) -> None:
    from .schemacheck import check_redaction  # loads xmlschema only when XSDs are given

    for rule in policy_set.rules:
        for path in rule.redactions:
            problems = check_redaction(path, schemas)
            if problems:
                # SECURITY: a redaction that breaks payloads would stop every message it
                # applies to, and one that matches nothing (a typo) would let the data through.
                raise PolicyLoadError(rule.source, rule.id, "redact", problems[0], path.text)


def _build(documents: list[tuple[str, dict]]) -> PolicySet:
    namespaces: dict[str, str] = {}
    participants: dict[str, str] = {}
    groups: dict[str, tuple[str, ...]] = {}
    origin: dict[tuple[str, str], str] = {}
    for file, doc in documents:
        for key in doc:
            if key not in _TOP_LEVEL:
                raise PolicyLoadError(file, None, key, "unknown top-level table", key)
        for key, value in _table(file, doc, "policy").items():
            if key not in ("name", "description") or not isinstance(value, str):
                raise PolicyLoadError(file, None, f"policy.{key}", "only name and description (text) are allowed", value)
        for prefix, uri in _table(file, doc, "namespaces").items():
            if not isinstance(uri, str) or not uri or not re.fullmatch(_NAME, prefix):
                raise PolicyLoadError(file, None, f"namespaces.{prefix}", "prefix or URI invalid", uri)
            if namespaces.get(prefix, uri) != uri:
                raise PolicyLoadError(file, None, f"namespaces.{prefix}", f"prefix already bound in {origin[('ns', prefix)]}", uri)
            namespaces[prefix] = uri
            origin[("ns", prefix)] = file
        for pid, name in _table(file, doc, "participants").items():
            if not isinstance(name, str):
                raise PolicyLoadError(file, None, f"participants.{pid}", "a display name is text", name)
            # Stored normalised (sedex:// removed), as rules store IDs, so lint compares like with like.
            participants[_participant(file, None, f"participants.{pid}", pid)] = name
        for name, members in _table(file, doc, "groups").items():
            if not _GROUP_NAME.fullmatch(name) or _GLOB.fullmatch(name):
                raise PolicyLoadError(file, None, f"groups.{name}", "group names are lower-case words with dashes", name)
            if name in groups:
                raise PolicyLoadError(file, None, f"groups.{name}", f"group already defined in {origin[('group', name)]}", name)
            if not isinstance(members, list) or not members:
                raise PolicyLoadError(file, None, f"groups.{name}", "a group is a non-empty list of participant IDs", members)
            groups[name] = tuple(_participant(file, None, f"groups.{name}", m) for m in members)
            origin[("group", name)] = file
    rules: dict[str, Rule] = {}
    for file, doc in documents:
        raw_rules = doc.get("rule", [])
        if not isinstance(raw_rules, list):
            raise PolicyLoadError(file, None, "rule", "rules are an array of tables [[rule]]", raw_rules)
        for index, raw in enumerate(raw_rules):
            rule = _rule(file, index, raw, groups, namespaces)
            if rule.id in rules:
                raise PolicyLoadError(file, rule.id, "id", f"duplicate rule id (also in {rules[rule.id].source})", rule.id)
            rules[rule.id] = rule
    ordered = tuple(sorted(rules.values(), key=lambda r: r.id))
    frozen_groups = tuple(sorted(groups.items()))
    frozen_participants = tuple(sorted(participants.items()))
    frozen_ns = tuple(sorted(namespaces.items()))
    revision = _revision(ordered, frozen_groups, frozen_participants, frozen_ns)
    return PolicySet(ordered, frozen_groups, frozen_participants, frozen_ns, revision, tuple(f for f, _ in documents))


def _table(file: str, doc: dict, name: str) -> dict:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise PolicyLoadError(file, None, name, "must be a table", value)
    return value


def _participant(file: str, rule: str | None, field: str, value: Any) -> str:
    match = _PARTICIPANT_REF.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise PolicyLoadError(file, rule, field, "not a sedex participant ID", value)
    return ParticipantId(match.group(2)).value


def _rule(file: str, index: int, raw: Any, groups: dict[str, tuple[str, ...]], namespaces: dict[str, str]) -> Rule:
    if not isinstance(raw, dict):
        raise PolicyLoadError(file, None, "rule", "a rule is a table", raw)
    rid = raw.get("id")
    if not isinstance(rid, str) or not _RULE_ID.fullmatch(rid):
        # A rule without a usable id is named by its position in the file.
        name = rid if isinstance(rid, str) else f"#{index + 1}"
        raise PolicyLoadError(file, name, "id", "missing or invalid rule id", rid)
    for key in raw:
        if key not in _RULE_FIELDS:
            raise PolicyLoadError(file, rid, key, "unknown field", raw[key])
    try:
        effect = Effect(raw.get("effect"))
    except ValueError:
        raise PolicyLoadError(file, rid, "effect", "must be 'permit' or 'forbid'", raw.get("effect")) from None
    if effect is Effect.FORBID:
        for key in _PERMIT_ONLY & raw.keys():
            raise PolicyLoadError(file, rid, key, "only permits may carry this field", raw[key])

    def text(key: str, required: bool) -> str | None:
        value = raw.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            raise PolicyLoadError(file, rid, key, "required non-empty text", value)
        return value.strip()

    purpose = text("purpose", effect is Effect.PERMIT)
    legal_basis = text("legal_basis", effect is Effect.PERMIT)
    legal_reference = text("legal_reference", effect is Effect.PERMIT)
    reason = text("reason", False)
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise PolicyLoadError(file, rid, "description", "text", description)
    valid_from = _instant(file, rid, "valid_from", raw.get("valid_from"))
    valid_until = _instant(file, rid, "valid_until", raw.get("valid_until"))
    size = raw.get("max_payload_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise PolicyLoadError(file, rid, "max_payload_size", "a positive number of bytes", size)
    locked = raw.get("allow_locked_data", False)
    if not isinstance(locked, bool):
        raise PolicyLoadError(file, rid, "allow_locked_data", "true or false", locked)
    return Rule(
        id=rid,
        effect=effect,
        source=file,
        senders=_matcher(file, rid, "senders", raw.get("senders"), groups),
        recipients=_matcher(file, rid, "recipients", raw.get("recipients"), groups),
        message_types=_ints(file, rid, "message_types", raw.get("message_types"), 0, 2699999),
        message_classes=_ints(file, rid, "message_classes", raw.get("message_classes"), 0, 2699999),
        actions=_strings(file, rid, "actions", raw.get("actions"), lambda v: v in ACTIONS, "an eCH-0058 action code (1, 3, 4, 5, 6, 10, 12)"),
        events=_strings(file, rid, "events", raw.get("events"), _EVENT.fullmatch, "an eCH-0020 event element name such as moveIn"),
        max_payload_size=size,
        valid_from=valid_from,
        valid_until=valid_until,
        purpose=purpose,
        legal_basis=legal_basis,
        legal_reference=legal_reference,
        allow_locked_data=locked,
        redactions=_redactions(file, rid, raw.get("redact"), namespaces),
        reason=reason,
    )


def _matcher(file: str, rid: str, field: str, value: Any, groups: dict[str, tuple[str, ...]]) -> ParticipantMatcher:
    # SECURITY: senders and recipients are mandatory; a rule about "everyone" must say "*".
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise PolicyLoadError(file, rid, field, "a non-empty list of participant IDs, globs or group names", value)
    ids: set[str] = set()
    patterns: list[str] = []
    for entry in value:
        if not isinstance(entry, str):
            raise PolicyLoadError(file, rid, field, "entries are strings", entry)
        if "*" in entry or "?" in entry:
            if not _GLOB.fullmatch(entry):
                raise PolicyLoadError(file, rid, field, "not a participant ID glob such as 1-*-1", entry)
            patterns.append(entry)
        elif entry in groups:
            ids.update(groups[entry])
        elif _GROUP_NAME.fullmatch(entry) and not entry[0].isdigit():
            # SECURITY: an unknown group is refused rather than matching nobody, because a
            # misspelt group in a forbid would silently open what the forbid meant to close.
            raise PolicyLoadError(file, rid, field, "unknown group", entry)
        else:
            ids.add(_participant(file, rid, field, entry))
    regexes = tuple(re.compile(fnmatch.translate(p)) for p in sorted(set(patterns)))
    return ParticipantMatcher(frozenset(ids), tuple(sorted(set(patterns))), regexes, tuple(value))


def _ints(file: str, rid: str, field: str, value: Any, low: int, high: int) -> frozenset[int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise PolicyLoadError(file, rid, field, "a non-empty list of numbers (omit the field for any)", value)
    for item in value:
        if not isinstance(item, int) or isinstance(item, bool) or not low <= item <= high:
            raise PolicyLoadError(file, rid, field, f"a number between {low} and {high}", item)
    return frozenset(value)


def _strings(file: str, rid: str, field: str, value: Any, valid, what: str) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise PolicyLoadError(file, rid, field, "a non-empty list (omit the field for any)", value)
    out = set()
    for item in value:
        item = str(item) if isinstance(item, int) and not isinstance(item, bool) else item
        if not isinstance(item, str) or not valid(item):
            raise PolicyLoadError(file, rid, field, f"not {what}", item)
        out.add(item)
    return frozenset(out)


def _instant(file: str, rid: str, field: str, value: Any) -> datetime | None:
    from zoneinfo import ZoneInfo

    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise PolicyLoadError(file, rid, field, NAIVE, value.isoformat())
        return value
    if isinstance(value, str):
        # Quoted ISO text means the same as the TOML value (the schema cannot tell them apart).
        try:
            parsed = parse_instant(value)
        except ValueError as exc:
            raise PolicyLoadError(file, rid, field, str(exc), value) from None
        return _instant(file, rid, field, parsed)
    if isinstance(value, date):
        # A plain date means midnight in Switzerland, where the laws it implements apply.
        return datetime.combine(value, time(0), ZoneInfo(SWISS_TZ))
    raise PolicyLoadError(file, rid, field, NOT_AN_INSTANT, value)


def parse_path(text: str, namespaces: dict[str, str]) -> RedactionPath:
    """Parse ``//p:a/p:b`` or Clark ``//{uri}a/{uri}b``; raise ValueError naming the bad part."""
    if not isinstance(text, str) or not text.startswith("/"):
        raise ValueError("a path starts with / (from the root) or // (anywhere)")
    steps: list[tuple[str, str]] = []
    rest = text
    while rest:
        axis = "//" if rest.startswith("//") else "/"
        rest = rest[len(axis):]
        match = _QNAME.match(rest)
        if not match:
            raise ValueError(f"bad step at {rest[:40]!r}")
        prefix, local, uri, clark_local = match.groups()
        if uri is not None:
            name = f"{{{uri}}}{clark_local}"
        else:
            if prefix is None:
                # SECURITY: eCH elements are always namespaced; an unqualified step would
                # silently match nothing and leave the data in place.
                raise ValueError(f"step {local!r} has no namespace prefix")
            if prefix not in namespaces:
                raise ValueError(f"prefix {prefix!r} is not declared in [namespaces]")
            name = f"{{{namespaces[prefix]}}}{local}"
        steps.append((axis, name))
        rest = rest[match.end():]
        if rest and not rest.startswith("/"):
            raise ValueError(f"bad step at {rest[:40]!r}")
    return RedactionPath(text, tuple(steps))


def _redactions(file: str, rid: str, value: Any, namespaces: dict[str, str]) -> tuple[RedactionPath, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise PolicyLoadError(file, rid, "redact", "a list of element paths", value)
    paths = []
    for item in value:
        try:
            paths.append(parse_path(item, namespaces))
        except ValueError as exc:
            raise PolicyLoadError(file, rid, "redact", str(exc), item) from None
    return tuple(sorted(set(paths), key=lambda p: p.clark))


def canonical(rule: Rule) -> dict:
    """The order-free, whitespace-free form of a rule used for the revision and diffs."""

    def opt(values):
        return None if values is None else sorted(values)

    return {
        "id": rule.id,
        "effect": rule.effect.value,
        "senders": {"ids": sorted(rule.senders.ids), "patterns": list(rule.senders.patterns)},
        "recipients": {"ids": sorted(rule.recipients.ids), "patterns": list(rule.recipients.patterns)},
        "message_types": opt(rule.message_types),
        "message_classes": opt(rule.message_classes),
        "actions": opt(rule.actions),
        "events": opt(rule.events),
        "max_payload_size": rule.max_payload_size,
        "valid_from": rule.valid_from.isoformat() if rule.valid_from else None,
        "valid_until": rule.valid_until.isoformat() if rule.valid_until else None,
        "purpose": rule.purpose,
        "legal_basis": rule.legal_basis,
        "legal_reference": rule.legal_reference,
        "allow_locked_data": rule.allow_locked_data,
        "redact": [p.clark for p in rule.redactions],
        "reason": rule.reason,
    }


def _revision(rules, groups, participants, namespaces) -> str:
    # Groups are expanded into the rules, so the revision covers what is enforced; the
    # group and participant tables are included too, since lint results depend on them.
    body = {
        "rules": [canonical(r) for r in rules],
        "groups": [[name, sorted(members)] for name, members in groups],
        "participants": [list(p) for p in participants],
        "namespaces": [list(n) for n in namespaces],
    }
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()
