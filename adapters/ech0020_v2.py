"""eCH-0020 v2 (namespace eCH-0020/2: releases 2.0 to 2.3, validated with eCH-0020-2-3.xsd).

Converts to 3.0 for the events listed in ``ech0020_convert.CONVERTIBLE_EVENTS``; the
result is validated against eCH-0020-3-0.xsd before it is returned.
"""

from __future__ import annotations

from lxml import etree

from gateway.schemas import SchemaCatalog, SchemaError

from . import ech0020_v3
from .base import ConversionUnavailable, DetectedFormat, ValidationResult, copy_tree, detect_namespace, no_conversion
from .ech0020_convert import convert_v2_to_v3

NAMESPACE = "http://www.ech.ch/xmlns/eCH-0020/2"


class Ech0020V2Adapter:
    """``catalog`` validates conversion results; ``local_id_category`` is the node's
    decision for persons whose 2.x localPersonId is empty (see :func:`convert_v2_to_v3`)."""

    name = "ech0020-v2"
    standard = "eCH-0020"
    converts_to = (ech0020_v3.Ech0020V3Adapter.name,)

    def __init__(self, catalog: SchemaCatalog, *, local_id_category: str | None = None) -> None:
        self._catalog = catalog
        self._local_id_category = local_id_category

    def detect(self, tree: etree._ElementTree) -> DetectedFormat | None:
        return detect_namespace(tree, self.name, NAMESPACE)

    def validate(self, tree: etree._ElementTree, catalog: SchemaCatalog, *,
                 well_formed_only: bool = False) -> ValidationResult:
        catalog.validate(tree)
        return ValidationResult(NAMESPACE, False, "eCH-0020 v2 valid")

    def convert(self, tree: etree._ElementTree, target: str) -> etree._ElementTree:
        if target == self.name:
            return copy_tree(tree)
        if target != ech0020_v3.Ech0020V3Adapter.name:
            raise no_conversion(self.name, target)
        converted = convert_v2_to_v3(tree, local_id_category=self._local_id_category)
        try:
            self._catalog.validate(converted)
        except SchemaError as exc:
            # SECURITY: SchemaError messages are already redacted (no element values).
            raise ConversionUnavailable(f"eCH-0020 2.x to 3.0: result is not valid 3.0: {exc.info}") from None
        return converted
