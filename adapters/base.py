"""The interface every eCH format adapter implements.

An adapter knows one format and version (eCH-0020 v2, v3, …): it recognises a document,
validates it against the official XSD from the node's schema catalog, and converts it to
another adapter's format where a mapping is defined. Adapters are registered explicitly in
:mod:`adapters.registry`; a node's configuration names, per participant, which adapters it
uses.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from lxml import etree

from gateway.ids import GatewayError, StatusCode
from gateway.schemas import SchemaCatalog

ECH_NAMESPACE = re.compile(r"^http://www\.ech\.ch/xmlns/(eCH-\d{4}(?:-f)?)/(\d+)$")


class ConversionUnavailable(GatewayError):
    """No mapping exists from the document (or one of its parts) to the target format.

    Status 303: for the recipient, the message is of a type it cannot take.
    """

    status = StatusCode.INVALID_MESSAGE_TYPE


class ValidationRefused(GatewayError):
    """The document cannot be validated as asked (e.g. no public XSD exists for it)."""

    status = StatusCode.INVALID_ENVELOPE


@dataclass(frozen=True, slots=True)
class DetectedFormat:
    """What a document is: its standard and major version, and the eCH parts it uses.

    ``components`` lists every other eCH namespace present as ``("eCH-0044", 1)`` pairs,
    sorted, so a policy or a log line can say which component versions a message carries.
    """

    adapter: str
    standard: str
    version: int
    namespace: str
    components: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """The outcome of a successful validation.

    ``well_formed_only`` is True when no schema was applied (eCH-0020 v1 has no public XSD);
    ``info`` is a short text a receipt's statusInfo can carry.
    """

    namespace: str
    well_formed_only: bool
    info: str


@runtime_checkable
class EchAdapter(Protocol):
    """One eCH format and version.

    ``standard`` is the eCH standard the adapter is specific to (``"eCH-0020"``), or None
    for an adapter that takes any eCH standard; a recipient that lists a specific adapter
    has said which versions of that standard it reads. ``converts_to`` names the adapters
    :meth:`convert` has a mapping to (besides its own name), so a caller can choose a
    target without trying.
    """

    name: str
    standard: str | None
    converts_to: tuple[str, ...]

    def detect(self, tree: etree._ElementTree) -> DetectedFormat | None:
        """Return the format when the document is this adapter's, else None."""

    def validate(self, tree: etree._ElementTree, catalog: SchemaCatalog, *,
                 well_formed_only: bool = False) -> ValidationResult:
        """Validate against the official XSD; raise a :class:`GatewayError` when invalid."""

    def convert(self, tree: etree._ElementTree, target: str) -> etree._ElementTree:
        """Return the document in adapter ``target``'s format or raise ConversionUnavailable."""


def components_of(tree: etree._ElementTree, own_namespace: str) -> tuple[tuple[str, int], ...]:
    """The eCH standards and major versions used in ``tree`` besides its own namespace."""
    found: set[tuple[str, int]] = set()
    for element in tree.getroot().iter():
        if not isinstance(element.tag, str):
            continue
        namespace = etree.QName(element).namespace or ""
        if namespace == own_namespace:
            continue
        match = ECH_NAMESPACE.match(namespace)
        if match:
            found.add((match.group(1), int(match.group(2))))
    return tuple(sorted(found))


def detect_namespace(tree: etree._ElementTree, adapter: str, namespace: str) -> DetectedFormat | None:
    """A :class:`DetectedFormat` when the root element is in ``namespace``."""
    root_ns = etree.QName(tree.getroot()).namespace or ""
    if root_ns != namespace:
        return None
    match = ECH_NAMESPACE.match(root_ns)
    assert match is not None, namespace
    return DetectedFormat(adapter, match.group(1), int(match.group(2)), root_ns, components_of(tree, root_ns))


def no_conversion(adapter: str, target: str) -> ConversionUnavailable:
    return ConversionUnavailable(f"no conversion defined from {adapter} to {target}")


def copy_tree(tree: etree._ElementTree) -> etree._ElementTree:
    return copy.deepcopy(tree)
