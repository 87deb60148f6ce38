"""What the node asks of the format adapters: inspect a payload once, adapt it per recipient.

At origin the node calls :func:`inspect` with the sender's adapters: the payload must be a
format the sender is configured for and valid against its official XSD, or the message is
refused with the adapters' sedex status (303 unknown format, 200 invalid). Per recipient it
calls :func:`adapt_for` with that recipient's adapters: ``None`` means the recipient reads
the payload as it is; bytes are the payload converted to a format the recipient reads,
already validated against the target XSD; :class:`ConversionUnavailable` (303) means no
mapping exists, and the recipient gets nothing it cannot read.

Every error raised here is a :class:`GatewayError` whose ``info`` names formats, adapters,
elements and schema positions only, never a value from the document (personal data).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from gateway.ids import GatewayError
from gateway.safexml import parse_xml
from gateway.schemas import SchemaCatalog

from .base import ConversionUnavailable, DetectedFormat, EchAdapter, ValidationResult
from .registry import AdapterRegistry


@dataclass(frozen=True, slots=True)
class Inspection:
    """A payload recognised by ``adapter`` as ``detected`` and validated (``validation``).

    ``catalog`` is the schema catalog the payload was validated with; :func:`adapt_for`
    validates conversion results with the same one.
    """

    adapter: EchAdapter
    detected: DetectedFormat
    validation: ValidationResult
    catalog: SchemaCatalog = field(repr=False, compare=False)


def inspect(tree: etree._ElementTree, registry: AdapterRegistry, catalog: SchemaCatalog, *,
            well_formed_only: bool = False) -> Inspection:
    """Recognise and validate a payload with the sender's adapters; raise when refused.

    Raises :class:`~adapters.registry.UnknownFormat` (303) when no adapter in ``registry``
    knows the document, and the adapter's error when it is invalid (``SchemaError``,
    ``ValidationRefused``: 200). ``well_formed_only`` is the route's permission to accept a
    format without a public XSD (eCH-0020 v1) after a well-formedness check; the result's
    ``validation.info`` then says so, for the receipt.
    """
    adapter, detected = registry.detect(tree)
    validation = adapter.validate(tree, catalog, well_formed_only=well_formed_only)
    return Inspection(adapter, detected, validation, catalog)


def adapt_for(inspection: Inspection, tree: etree._ElementTree, recipient_adapters: AdapterRegistry) -> bytes | None:
    """The payload for a recipient that uses ``recipient_adapters``.

    * ``None`` when the recipient reads the format as it is: one of its adapters detects
      the document, and that adapter is specific to the standard, or it is a generic one
      and the recipient lists no specific adapter for this standard (a recipient that
      lists ``ech0020-v3`` has said which eCH-0020 version it reads).
    * Otherwise the document converted by the inspecting adapter to the first of the
      recipient's adapters it has a mapping to, serialised, parsed again and validated
      against the target's XSD (what is validated is exactly what is delivered).
    * :class:`ConversionUnavailable` (303) naming the source and the recipient's formats
      when there is no such mapping, or when this document has a part the mapping cannot
      carry (the reason is kept).

    ``tree`` must be the document ``inspection`` was made from.
    """
    detected = inspection.detected
    same_standard = [a for a in recipient_adapters if a.standard == detected.standard]
    for adapter in recipient_adapters:
        if adapter.detect(tree) is not None and (adapter.standard is not None or not same_standard):
            return None
    source = inspection.adapter
    for target in same_standard:
        if target.name in source.converts_to:
            return _convert(inspection, tree, target)
    readable = ", ".join(recipient_adapters.names) or "none"
    raise ConversionUnavailable(
        f"no conversion from {source.name} ({detected.standard} v{detected.version}) "
        f"to a format the recipient reads ({readable})"
    )


def _convert(inspection: Inspection, tree: etree._ElementTree, target: EchAdapter) -> bytes:
    source = inspection.adapter
    try:
        converted = source.convert(tree, target.name)
    except ConversionUnavailable as exc:
        raise ConversionUnavailable(f"cannot convert {source.name} to {target.name}: {exc.info}") from None
    data = etree.tostring(converted, xml_declaration=True, encoding="UTF-8")
    # SECURITY: check the bytes that will be delivered, not the tree they came from.
    delivered = parse_xml(data)
    try:
        if target.detect(delivered) is None:
            raise ConversionUnavailable("result is not in the target format")
        target.validate(delivered, inspection.catalog)
    except GatewayError as exc:
        # SchemaError messages are redacted (positions and reasons, no values).
        raise ConversionUnavailable(f"cannot convert {source.name} to {target.name}: {exc.info}") from None
    return data
