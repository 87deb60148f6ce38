"""eCH-0020 v1 (namespace eCH-0020/1, 2009): INFOSTAR and ORDIPRO still send it.

No public XSD of eCH-0020 v1 exists (see ../shared/ech/xsd/SOURCES.md), so such a
document cannot be schema-validated. :meth:`validate` refuses it unless the caller
explicitly accepts a well-formedness check only, and then says so in the result.
"""

from __future__ import annotations

from lxml import etree

from gateway.schemas import SchemaCatalog

from .base import DetectedFormat, ValidationRefused, ValidationResult, copy_tree, detect_namespace, no_conversion

NAMESPACE = "http://www.ech.ch/xmlns/eCH-0020/1"
WELL_FORMED_ONLY_INFO = "eCH-0020 v1: no public XSD, checked for well-formedness only"


class Ech0020V1Adapter:
    name = "ech0020-v1"
    standard = "eCH-0020"
    converts_to: tuple[str, ...] = ()

    def detect(self, tree: etree._ElementTree) -> DetectedFormat | None:
        return detect_namespace(tree, self.name, NAMESPACE)

    def validate(self, tree: etree._ElementTree, catalog: SchemaCatalog, *,
                 well_formed_only: bool = False) -> ValidationResult:
        if catalog.has(NAMESPACE):
            # Should an operator add a v1 XSD to the catalog, it is used.
            catalog.validate(tree)
            return ValidationResult(NAMESPACE, False, "eCH-0020 v1 valid")
        if not well_formed_only:
            raise ValidationRefused("eCH-0020 v1 has no public XSD; schema validation is impossible")
        # The tree exists, so the safe parser already found it well-formed.
        return ValidationResult(NAMESPACE, True, WELL_FORMED_ONLY_INFO)

    def convert(self, tree: etree._ElementTree, target: str) -> etree._ElementTree:
        if target == self.name:
            return copy_tree(tree)
        # Without a v1 schema there is no reliable structure to map from.
        raise no_conversion(self.name, target)
