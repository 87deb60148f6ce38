"""Static proof, against the official XSDs, that a redaction keeps payloads valid.

A redaction path is resolved over the schema's element declarations (not over sample
documents): if any element it can reach is mandatory, removing it breaks every message
that contains it, and the rule is refused by ``policy check``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import xmlschema
from lxml import etree
from xmlschema.validators import XsdComplexType, XsdElement

from .model import RedactionPath

_VERSION = re.compile(r"-(\d+)-(\d+)f?\.xsd$")


@lru_cache(maxsize=8)
def _schema_files(directory: Path) -> dict[str, Path]:
    """Highest-version XSD per target namespace, as gateway.schemas.SchemaCatalog picks it."""
    best: dict[str, tuple[tuple[int, int], Path]] = {}
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    for path in sorted(directory.glob("*.xsd")):
        try:
            namespace = etree.parse(str(path), parser).getroot().get("targetNamespace")
        except etree.XMLSyntaxError:
            continue
        if not namespace:
            continue
        match = _VERSION.search(path.name)
        version = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
        if namespace not in best or version > best[namespace][0]:
            best[namespace] = (version, path)
    return {ns: path for ns, (_, path) in best.items()}


@lru_cache(maxsize=32)
def _load(directory: Path, path: Path) -> xmlschema.XMLSchema:
    def local_only(uri: str) -> str:
        # SECURITY: every import resolves to a file of the same name in the catalog folder.
        return str(directory / uri.rsplit("/", 1)[-1])

    return xmlschema.XMLSchema(str(path), uri_mapper=local_only, allow="sandbox", base_url=str(directory))


def _children(decl: XsdElement) -> list[XsdElement]:
    xsd_type = decl.type
    if not isinstance(xsd_type, XsdComplexType) or not hasattr(xsd_type.content, "iter_elements"):
        return []
    return [e for e in xsd_type.content.iter_elements() if isinstance(e, XsdElement)]


def _descendants(decls: list[XsdElement]) -> list[XsdElement]:
    seen: set[int] = set()
    out: list[XsdElement] = []
    stack = list(decls)
    while stack:
        for child in _children(stack.pop()):
            if id(child) not in seen:
                seen.add(id(child))
                out.append(child)
                stack.append(child)
    return out


def _owner(decl: XsdElement) -> str:
    node = decl.parent
    while node is not None and not isinstance(node, (XsdComplexType, XsdElement)):
        node = node.parent
    if isinstance(node, XsdComplexType) and node.name:
        return f"type {etree.QName(node.name).localname}"
    if node is not None and getattr(node, "parent", None) is not None and isinstance(node.parent, XsdElement):
        return f"element {etree.QName(node.parent.name).localname}"
    return "its parent"


def check_redaction(path: RedactionPath, schema_dir: Path) -> list[str]:
    """Problems with ``path`` against the XSDs in ``schema_dir`` (empty list: safe to apply)."""
    directory = Path(schema_dir).resolve()
    files = _schema_files(directory)
    first_ns = etree.QName(path.steps[0][1]).namespace
    if first_ns not in files:
        return [f"no schema for namespace {first_ns} in {directory}"]
    maps = _load(directory, files[first_ns]).maps
    everything = [c for c in maps.iter_components(XsdElement)]
    axis, name = path.steps[0]
    if axis == "/":
        current = [e for e in maps.elements.values() if e.name == name]
    else:
        current = [e for e in everything if e.name == name]
    for axis, name in path.steps[1:]:
        pool = _descendants(current) if axis == "//" else [c for d in current for c in _children(d)]
        current = [e for e in pool if e.name == name]
    if not current:
        return ["matches no element declared in the schemas, so it can never remove anything"]
    problems = sorted({
        f"removes an element that is mandatory (minOccurs={e.min_occurs}) in {_owner(e)}"
        for e in current
        if e.min_occurs > 0
    })
    return problems
