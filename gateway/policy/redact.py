"""Field-level minimisation at the origin: remove elements, re-serialise, re-validate.

What was removed is reported as (path, count) only; the removed values are never read
into a log, an exception or the decision.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from lxml import etree

from ..ids import GatewayError, StatusCode
from ..safexml import parse_xml
from ..schemas import SchemaCatalog, SchemaError
from .model import RedactionPath


_LOCAL = re.compile(r"[A-Za-z_][\w.-]*")


class RedactionError(GatewayError):
    """A redaction would leave an invalid payload; the policy, not the sender, is at fault."""

    status = StatusCode.INTERNAL_ERROR


@dataclass(frozen=True, slots=True)
class RedactionResult:
    payload: bytes
    removed: tuple[tuple[str, int], ...]  # (Clark path, number of elements removed)


def _xpath(clark_path: str) -> etree.XPath:
    """Compile a Clark path (``//{uri}a/{uri}b``) with generated prefixes.

    Only element steps are possible: the policy loader accepts nothing else, so no
    XPath function or predicate from a policy file ever runs.
    """
    prefixes: dict[str, str] = {}  # uri -> generated prefix
    parts: list[str] = []
    rest = clark_path
    while rest:
        axis = "//" if rest.startswith("//") else "/"
        rest = rest[len(axis):]
        if not rest.startswith("{"):
            raise ValueError("redaction paths are namespaced element steps")
        uri, _, rest = rest[1:].partition("}")
        local, slash, tail = rest.partition("/")
        rest = slash + tail
        if not _LOCAL.fullmatch(local):
            raise ValueError("redaction paths are namespaced element steps")
        prefix = prefixes.setdefault(uri, f"n{len(prefixes)}")
        parts.append(f"{axis}{prefix}:{local}")
    return etree.XPath("".join(parts), namespaces={p: uri for uri, p in prefixes.items()})


def _remove(element: etree._Element) -> None:
    # Keep the element's tail text so the rest of the document stays unchanged.
    parent = element.getparent()
    tail = element.tail
    previous = element.getprevious()
    if tail:
        if previous is not None:
            previous.tail = (previous.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    parent.remove(element)


def redact(
    payload: bytes, redactions: Iterable[RedactionPath | str], catalog: SchemaCatalog
) -> RedactionResult:
    """Remove the elements named by ``redactions`` and prove the result is still schema-valid."""
    paths = sorted({p.clark if isinstance(p, RedactionPath) else p for p in redactions})
    if not paths:
        return RedactionResult(payload, ())
    tree = parse_xml(payload)
    root = tree.getroot()
    removed = []
    for path in paths:
        count = 0
        for element in _xpath(path)(tree):
            # A match inside an element removed by an earlier path is already gone.
            if element is not root and element.getparent() is not None and element.getroottree().getroot() is root:
                _remove(element)
                count += 1
        removed.append((path, count))
    data = etree.tostring(tree, xml_declaration=True, encoding="UTF-8")
    try:
        # SECURITY: validate what will actually be sent, re-parsed from the new bytes.
        catalog.validate(parse_xml(data))
    except SchemaError as exc:
        raise RedactionError(f"redaction leaves a payload that is not schema-valid: {exc}") from None
    return RedactionResult(data, tuple(removed))
