"""The published JSON Schema of policy files, enforced on every file at load.

``schemas/policy.schema.json`` is the contract an admin's editor or CI checks a policy file
against, so the loader runs exactly that schema first (from its copy inside the package,
``gateway/policy/policy.schema.json``, which an installed node — the container image — has
too; a test keeps the two byte-identical): a file the schema refuses is never
loaded. Each violation is mapped back to the file's own words (rule id and field, the bad
value), like the loader's own checks. Validation uses ``jsonschema``, the reference Python
implementation of JSON Schema, rather than a hand-written interpreter of the schema.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import lru_cache
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators

# Package data, found wherever the package is installed (not relative to a source checkout).
SCHEMA_PATH = files(__package__) / "policy.schema.json"

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATE_TIME = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?)([Zz]|[+-][0-9]{2}:[0-9]{2})")
_NAIVE_DATE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?")
NAIVE = "a date-time needs an offset (e.g. +01:00)"
NOT_AN_INSTANT = "a TOML date or offset date-time"


def parse_instant(text: str) -> date | datetime:
    """An ISO 8601 date, or a date-time with offset; raise ValueError for anything else.

    Shared by the schema's format check and the loader, so both read quoted dates alike.
    """
    try:
        if _DATE.fullmatch(text):
            return date.fromisoformat(text)
        match = _DATE_TIME.fullmatch(text)
        if match:
            day, clock, offset = match.groups()
            return datetime.fromisoformat(f"{day}T{clock}{'+00:00' if offset in 'Zz' else offset}")
    except ValueError:
        pass  # the shape is right but the day or time does not exist (2026-02-30)
    raise ValueError(NAIVE if _NAIVE_DATE_TIME.fullmatch(text) else NOT_AN_INSTANT)


_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("date", raises=ValueError)
def _is_date(value: object) -> bool:
    if not isinstance(value, str):
        return True  # "format" constrains strings only; "type" judges the rest
    return _DATE.fullmatch(value) is not None and isinstance(parse_instant(value), date)


@_FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    return not isinstance(value, str) or isinstance(parse_instant(value), datetime)


# A TOML float is never an integer: ``message_types = 94.0`` is a mistake, not type 94.
_TYPES = Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
)
PolicyFileValidator = validators.extend(Draft202012Validator, type_checker=_TYPES)


@lru_cache(maxsize=1)
def validator() -> Draft202012Validator:
    """The validator for policy files: the published schema, formats asserted (raises OSError if missing)."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    PolicyFileValidator.check_schema(schema)
    return PolicyFileValidator(_inline_definitions(schema), format_checker=_FORMATS)


def _inline_definitions(schema: dict) -> dict:
    """The same schema with its local ``#/$defs/…`` references written out in place.

    Resolving a reference costs more than the check it leads to, and a set of 10,000 rules
    follows some 50,000 of them; written out, validation takes half the time. The meaning
    is unchanged (2020-12: a ``$ref`` beside other keywords applies with them, as allOf).
    """
    definitions = schema.get("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        reference = node.get("$ref", "")
        if not reference.startswith("#/$defs/"):
            return {key: inline(value) for key, value in node.items()}
        target = inline(definitions[reference.removeprefix("#/$defs/")])
        rest = {key: inline(value) for key, value in node.items() if key != "$ref"}
        return {**rest, "allOf": [*rest.get("allOf", []), target]} if rest else target

    return inline(schema)


def json_form(value: Any) -> Any:
    """A parsed TOML document as the schema sees it: dates and times become ISO 8601 text."""
    if isinstance(value, dict):
        return {key: json_form(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_form(item) for item in value]
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return value


@dataclass(frozen=True, slots=True)
class SchemaViolation:
    """Where a file breaks the schema, in the terms of :class:`~gateway.policy.PolicyLoadError`."""

    rule: str | None
    field: str
    problem: str
    value: Any


# What each rule field must be, in the words the loader uses for the same mistakes.
_RULE_PROBLEMS = {
    "id": "missing or invalid rule id (letters, digits, '.', '_', '-'; at most 128)",
    "effect": "must be 'permit' or 'forbid'",
    "description": "text",
    "senders": "not a participant ID, a glob such as 1-*-1, or a group name",
    "recipients": "not a participant ID, a glob such as 1-*-1, or a group name",
    "message_types": "a number between 0 and 2699999",
    "message_classes": "a number between 0 and 2699999",
    "actions": "not an eCH-0058 action code (1, 3, 4, 5, 6, 10, 12)",
    "events": "not an eCH-0020 event element name such as moveIn",
    "max_payload_size": "a positive number of bytes",
    "valid_from": NOT_AN_INSTANT,
    "valid_until": NOT_AN_INSTANT,
    "purpose": "required non-empty text",
    "legal_basis": "required non-empty text",
    "legal_reference": "required non-empty text",
    "reason": "non-empty text",
    "allow_locked_data": "true or false",
    "redact": "not a namespaced element path (//p:a/p:b or //{uri}a; element steps only, no predicates or functions)",
}
_LIST_PROBLEMS = {
    "senders": "a non-empty list of participant IDs, globs or group names",
    "recipients": "a non-empty list of participant IDs, globs or group names",
    "message_types": "a non-empty list of numbers (omit the field for any)",
    "message_classes": "a non-empty list of numbers (omit the field for any)",
    "actions": "a non-empty list (omit the field for any)",
    "events": "a non-empty list (omit the field for any)",
    "redact": "a list of element paths",
}
# Set-level tables: what a key must be, and what a value must be (by depth below the table).
_KEY_PROBLEMS = {
    "policy": "only name and description (text) are allowed",
    "namespaces": "a prefix is a letter or _ followed by letters, digits, _, . or -",
    "participants": "not a sedex participant ID",
    "groups": "group names are lower-case words with dashes",
}
_VALUE_PROBLEMS = {
    "policy": ("only name and description (text) are allowed",),
    "namespaces": ("a namespace URI is non-empty text",),
    "participants": ("a display name is text",),
    "groups": ("a group is a non-empty list of participant IDs", "not a sedex participant ID"),
}


def first_violation(document: dict) -> SchemaViolation | None:
    """The violation an admin should fix first (document order), or None if the file is valid."""
    errors = [_specific(e) for e in validator().iter_errors(json_form(document))]
    if not errors:
        return None
    error = min(errors, key=lambda e: _order(document, e))
    return _describe(document, error)


def _specific(error: ValidationError) -> ValidationError:
    """Descend from a failed oneOf/anyOf to the alternative that got furthest into the value."""
    while error.context:
        tried = [e for e in error.context if e.validator != "type"] or list(error.context)
        deepest = max(tried, key=lambda e: len(e.absolute_path))
        if len(deepest.absolute_path) <= len(error.absolute_path) and not deepest.context:
            break  # every alternative failed on the value itself: the parent says it best
        error = deepest
    return error


_KIND_ORDER = {"additionalProperties": 1, "required": 3}


def _order(document: dict, error: ValidationError) -> tuple:
    # Document order (positions of the keys and items on the error's path), except that
    # inside one rule the id comes first and an unknown field (often a typo of a missing
    # one) comes before the missing field it explains.
    positions: list[int] = []
    node: Any = document
    for step in error.absolute_path:
        if isinstance(node, dict):
            positions.append(list(node).index(step))
        else:
            positions.append(step)
        node = node[step]
    kind = _KIND_ORDER.get(error.validator, 2)
    if list(error.absolute_path)[:3:2] == ["rule", "id"]:
        kind = 0
    return (positions[:2], kind, positions[2:])


def _describe(document: dict, error: ValidationError) -> SchemaViolation:
    path = list(error.absolute_path)
    if not path:
        if error.validator != "additionalProperties":
            return SchemaViolation(None, "file", "not a policy file", None)
        extra = _unknown_keys(document, error)
        return SchemaViolation(None, extra, "unknown top-level table", extra)
    table = path[0]
    if table == "rule":
        return _describe_rule(document, error, path)
    if len(path) == 1:
        if error.validator == "additionalProperties":
            extra = _unknown_keys(document[table], error)
            return SchemaViolation(None, f"{table}.{extra}", _KEY_PROBLEMS[table], document[table][extra])
        if "propertyNames" in error.absolute_schema_path:
            # The instance of a propertyNames error is the offending key itself.
            return SchemaViolation(None, f"{table}.{error.instance}", _KEY_PROBLEMS[table], error.instance)
        return SchemaViolation(None, table, "must be a table", error.instance)
    problems = _VALUE_PROBLEMS[table]
    return SchemaViolation(None, f"{table}.{path[1]}", problems[min(len(path) - 2, len(problems) - 1)], error.instance)


def _describe_rule(document: dict, error: ValidationError, path: list) -> SchemaViolation:
    if len(path) == 1:
        return SchemaViolation(None, "rule", "rules are an array of tables [[rule]]", error.instance)
    index = path[1]
    raw = document["rule"][index]
    if not isinstance(raw, dict):
        return SchemaViolation(None, "rule", "a rule is a table", raw)
    rid = raw.get("id")
    rule = rid if isinstance(rid, str) else f"#{index + 1}"
    if len(path) == 2:
        if error.validator == "additionalProperties":
            extra = _unknown_keys(raw, error)
            return SchemaViolation(rule, extra, "unknown field", raw[extra])
        if error.validator == "required":
            missing = next(k for k in error.validator_value if k not in raw)
            problem = _LIST_PROBLEMS.get(missing) or _RULE_PROBLEMS[missing]
            if missing in ("purpose", "legal_basis", "legal_reference"):
                problem = "a permit needs purpose, legal_basis and legal_reference (non-empty text)"
            return SchemaViolation(rule, missing, problem, None)
        return SchemaViolation(rule, "rule", "a rule is a table", raw)
    field = path[2]
    value = error.instance
    if error.validator == "not" and "else" in error.absolute_schema_path:
        return SchemaViolation(rule, field, "only permits may carry this field", value)
    if field in ("valid_from", "valid_until") and isinstance(value, str) and _NAIVE_DATE_TIME.fullmatch(value):
        return SchemaViolation(rule, field, NAIVE, value)
    if len(path) == 3 and isinstance(value, list) and field in _LIST_PROBLEMS:
        return SchemaViolation(rule, field, _LIST_PROBLEMS[field], value)
    return SchemaViolation(rule, field, _RULE_PROBLEMS.get(field, "invalid"), value)


def _unknown_keys(instance: dict, error: ValidationError) -> str:
    allowed = set(error.schema.get("properties", {}))
    return next(key for key in instance if key not in allowed)
