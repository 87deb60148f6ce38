"""Hostile-input-safe XML parsing.

XML that reaches the gateway is hostile until proven otherwise. Every parse in the
gateway goes through :func:`parse_xml` (or :func:`iter_validate` for large streams):
no DTD, no entity expansion, no network, and limits on size, depth and element count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lxml import etree

from .ids import GatewayError, StatusCode


class UnsafeXml(GatewayError):
    """The document is not well-formed or breaks a parsing limit."""

    status = StatusCode.INVALID_ENVELOPE


@dataclass(frozen=True, slots=True)
class XmlLimits:
    """Limits applied to every parsed document; configurable per node."""

    max_bytes: int = 64 * 1024 * 1024
    max_depth: int = 64
    max_elements: int = 2_000_000


DEFAULT_LIMITS = XmlLimits()


def _parser() -> etree.XMLParser:
    # SECURITY: no DTD loading, no entity resolution, no network, no huge-tree mode
    # (which would lift libxml2's own protections against quadratic blow-up).
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        # SECURITY: comments and processing instructions are dropped, so a value such as
        # "1-1061-1<!---->0" is read whole ("1-1061-10"), as the XSD and recipients read it,
        # not cut at the comment (threat model F1).
        remove_comments=True,
        remove_pis=True,
    )


def _refuse_doctype(tree: etree._ElementTree) -> None:
    # SECURITY: a DOCTYPE is how entity attacks start; eCH documents never carry one.
    docinfo = tree.docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise UnsafeXml("document type declarations are not allowed")


def _check_shape(root: etree._Element, limits: XmlLimits) -> None:
    count = 0
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        count += 1
        if depth > limits.max_depth:
            raise UnsafeXml(f"nesting deeper than {limits.max_depth} levels")
        if count > limits.max_elements:
            raise UnsafeXml(f"more than {limits.max_elements} elements")
        stack.extend((child, depth + 1) for child in element)


def parse_xml(data: bytes, limits: XmlLimits = DEFAULT_LIMITS) -> etree._ElementTree:
    """Parse ``data`` safely and return the tree; raise :class:`UnsafeXml` otherwise."""
    if len(data) > limits.max_bytes:
        raise UnsafeXml(f"document larger than {limits.max_bytes} bytes")
    if b"<!DOCTYPE" in data[:4096] or b"<!ENTITY" in data:
        raise UnsafeXml("document type declarations are not allowed")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise UnsafeXml(f"not well-formed XML: {_first_line(exc)}") from None
    tree = root.getroottree()
    _refuse_doctype(tree)
    _check_shape(root, limits)
    return tree


def iter_validate(
    chunks: Iterable[bytes],
    schema: etree.XMLSchema | None,
    limits: XmlLimits = DEFAULT_LIMITS,
) -> str:
    """Parse a stream chunk by chunk (bounded memory), validating against ``schema``.

    Returns the namespace of the root element. Elements are discarded as soon as
    they are complete, so a 1 GB document needs only a few MB.
    """
    parser = etree.XMLPullParser(
        events=("start", "end"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        schema=schema,
    )
    total = 0
    depth = 0
    elements = 0
    root_ns = None
    try:
        for chunk in chunks:
            total += len(chunk)
            if total > limits.max_bytes:
                raise UnsafeXml(f"document larger than {limits.max_bytes} bytes")
            if b"<!DOCTYPE" in chunk or b"<!ENTITY" in chunk:
                raise UnsafeXml("document type declarations are not allowed")
            parser.feed(chunk)
            for event, element in parser.read_events():
                if event == "start":
                    depth += 1
                    elements += 1
                    if root_ns is None:
                        root_ns = etree.QName(element).namespace or ""
                    if depth > limits.max_depth:
                        raise UnsafeXml(f"nesting deeper than {limits.max_depth} levels")
                    if elements > limits.max_elements:
                        raise UnsafeXml(f"more than {limits.max_elements} elements")
                else:
                    depth -= 1
                    if depth > 0:
                        element.clear(keep_tail=True)
                        previous = element.getprevious()
                        while previous is not None:
                            parent = previous.getparent()
                            if parent is None:
                                break
                            parent.remove(previous)
                            previous = element.getprevious()
        root = parser.close()
    except etree.XMLSyntaxError as exc:
        raise UnsafeXml(f"not well-formed XML: {_first_line(exc)}") from None
    _refuse_doctype(root.getroottree())
    if root_ns is None:
        raise UnsafeXml("empty document")
    return root_ns


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
