"""The adapter pipeline the node calls: inspect a real payload once, adapt it per recipient."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lxml import etree

from adapters.base import ConversionUnavailable, ValidationRefused
from adapters.pipeline import Inspection, adapt_for, inspect
from adapters.registry import AdapterRegistry, UnknownFormat, default_registry
from gateway.ids import GatewayError, StatusCode
from gateway.safexml import parse_xml
from gateway.schemas import SchemaError

from .conftest import SAMPLES

OPEN_ECH = SAMPLES / "openech-ech0020-v2.2"
MOVE_IN = OPEN_ECH / "movein-personsecondaryresidence/personSecondaryResidence.xml"
BASE_DELIVERY = OPEN_ECH / "birthtest-7566223399589/BirthTest_7566223399589.xml"
PARTNERSHIP = OPEN_ECH / "undopartnership-partnershiptest1/partnershipTest1.xml"
V1 = SAMPLES / "ordipro-ech0020-v1/moveIn/ordipro-moveIn-21/data_ordipro-moveIn-21.xml"
E45 = next(SAMPLES.glob("stimmregister-ech0045-v6/apiexport*/*.xml"))
E20_3 = "http://www.ech.ch/xmlns/eCH-0020/3"
PERSONAL = ("vn", "officialName", "firstName", "callName", "originalName", "street", "town", "originName",
            "municipalityName", "personId", "yearMonthDay")


@pytest.fixture(scope="module")
def adapters(catalog):
    # The open-eCH samples leave localPersonId empty; this node fills it from the vn.
    return default_registry(catalog, local_id_category="CH.VN")


def load(path: Path) -> etree._ElementTree:
    return parse_xml(path.read_bytes())


def personal_values(tree: etree._ElementTree) -> set[str]:
    """Names, numbers, places and dates of the persons in a document (what no statusInfo may quote)."""
    return {(e.text or "").strip() for e in tree.getroot().iter()
            if isinstance(e.tag, str) and etree.QName(e).localname in PERSONAL and (e.text or "").strip()}


def assert_no_personal_data(info: str, tree: etree._ElementTree) -> None:
    leaked = {value for value in personal_values(tree) if value in info}
    assert not leaked, leaked


def values(tree: etree._ElementTree, local: str) -> set[str]:
    return {(e.text or "").strip() for e in tree.getroot().iter()
            if isinstance(e.tag, str) and etree.QName(e).localname == local}


def v3_document(adapters) -> etree._ElementTree:
    """A 3.0 delivery from a real 2.2 one (no public 3.0 message exists), as bytes a v3 register would send."""
    converted = adapters.get("ech0020-v2").convert(load(MOVE_IN), "ech0020-v3")
    return parse_xml(etree.tostring(converted, xml_declaration=True, encoding="UTF-8"))


# -- inspect ----------------------------------------------------------------------------------


def test_a_real_2_x_delivery_is_inspected_as_eCH_0020_v2(adapters, catalog):
    """inspect names the adapter and format of a real 2.2 delivery and validates it against the 2.3 XSD."""
    inspection = inspect(load(MOVE_IN), adapters.select(["ech0020-v2", "ech0020-v3"]), catalog)

    assert isinstance(inspection, Inspection)
    assert inspection.adapter.name == "ech0020-v2"
    assert (inspection.detected.standard, inspection.detected.version) == ("eCH-0020", 2)
    assert ("eCH-0044", 1) in inspection.detected.components
    assert inspection.validation.well_formed_only is False


def test_a_format_the_sender_is_not_configured_for_is_refused_with_303(adapters, catalog):
    """A payload none of the sender's adapters knows is refused with 303 naming its namespace, not its content."""
    tree = load(MOVE_IN)
    with pytest.raises(UnknownFormat) as caught:
        inspect(tree, adapters.select(["ech0020-v3"]), catalog)
    assert caught.value.status == StatusCode.INVALID_MESSAGE_TYPE
    assert "eCH-0020/2" in caught.value.info
    assert_no_personal_data(caught.value.info, tree)


def test_a_namespace_outside_eCH_is_not_quoted(adapters, catalog):
    """A non-eCH namespace is free text from the document, so the 303 statusInfo does not repeat it."""
    with pytest.raises(UnknownFormat) as caught:
        inspect(parse_xml(b"<p xmlns='urn:person:Muster-Hans-7561234567897'/>"), adapters, catalog)
    assert caught.value.status == StatusCode.INVALID_MESSAGE_TYPE
    assert "Muster" not in caught.value.info and "756" not in caught.value.info


@pytest.mark.parametrize("local, value", [("sex", "Muster"), ("vn", "7560000000000000000")])
def test_an_invalid_payload_is_refused_with_200_without_its_values(adapters, catalog, local, value):
    """A real delivery made invalid is refused with 200; the statusInfo quotes neither the bad value nor any person's data."""
    tree = load(MOVE_IN)
    original = personal_values(tree)
    tree.getroot().find(f".//{{*}}{local}").text = value
    with pytest.raises(SchemaError) as caught:
        inspect(tree, adapters, catalog)
    assert caught.value.status == StatusCode.INVALID_ENVELOPE
    assert value not in caught.value.info
    assert not {v for v in original if v in caught.value.info}


def test_eCH_0020_v1_needs_the_routes_well_formed_only_permission(adapters, catalog):
    """A v1 payload (no public XSD) is refused with 200 unless the route allows well-formed-only, which the result then says."""
    with pytest.raises(ValidationRefused) as caught:
        inspect(load(V1), adapters, catalog)
    assert caught.value.status == StatusCode.INVALID_ENVELOPE

    inspection = inspect(load(V1), adapters, catalog, well_formed_only=True)
    assert inspection.validation.well_formed_only is True
    assert "well-formedness only" in inspection.validation.info


# -- adapt_for --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [MOVE_IN, BASE_DELIVERY], ids=["moveIn", "baseDelivery"])
def test_a_2_x_delivery_for_a_v3_only_recipient_is_converted_and_valid(adapters, catalog, path):
    """A real 2.2 delivery for a recipient that reads only 3.0 arrives as schema-valid 3.0 bytes with the same persons."""
    source = load(path)
    inspection = inspect(source, adapters.select(["ech0020-v2"]), catalog)

    data = adapt_for(inspection, source, adapters.select(["ech0020-v3"]))

    assert isinstance(data, bytes) and data.startswith(b"<?xml")
    delivered = parse_xml(data)
    assert catalog.validate(delivered) == E20_3
    for local in ("vn", "officialName", "firstName", "street", "municipalityName", "yearMonthDay"):
        assert values(delivered, local) == values(source, local), local


def test_a_v3_delivery_for_a_v3_recipient_passes_as_is(adapters, catalog):
    """A 3.0 payload for a recipient that reads 3.0 needs no conversion (None: deliver the original bytes)."""
    tree = v3_document(adapters)
    inspection = inspect(tree, adapters, catalog)
    assert inspection.adapter.name == "ech0020-v3"

    assert adapt_for(inspection, tree, adapters.select(["ech0020-v3"])) is None
    assert adapt_for(inspection, tree, adapters.select(["ech0020-v2", "ech0020-v3"])) is None


def test_a_v3_delivery_for_a_v2_only_recipient_is_refused_with_303(adapters, catalog):
    """A 3.0 payload for a recipient that reads only 2.x is refused with 303 naming both formats, no personal data."""
    tree = v3_document(adapters)
    inspection = inspect(tree, adapters, catalog)

    with pytest.raises(ConversionUnavailable) as caught:
        adapt_for(inspection, tree, adapters.select(["ech0020-v2"]))

    assert caught.value.status == StatusCode.INVALID_MESSAGE_TYPE
    assert "ech0020-v3" in caught.value.info and "ech0020-v2" in caught.value.info
    assert_no_personal_data(caught.value.info, tree)


def test_a_2_x_delivery_for_a_2_x_recipient_passes_as_is(adapters, catalog):
    """A recipient that lists the source's own format gets the payload unchanged, even if it also reads 3.0."""
    tree = load(MOVE_IN)
    inspection = inspect(tree, adapters, catalog)
    assert adapt_for(inspection, tree, adapters.select(["ech0020-v2"])) is None
    assert adapt_for(inspection, tree, adapters.select(["ech0020-v2", "ech0020-v3"])) is None


def test_a_generic_adapter_does_not_swallow_a_standard_the_recipient_lists_versions_of(adapters, catalog):
    """A recipient listing ech0020-v3 and ech-generic gets a 2.x delivery converted; ech-generic covers other standards."""
    tree = load(MOVE_IN)
    inspection = inspect(tree, adapters, catalog)

    data = adapt_for(inspection, tree, adapters.select(["ech0020-v3", "ech-generic"]))

    assert data is not None and catalog.validate(parse_xml(data)) == E20_3


def test_another_eCH_standard_passes_to_a_generic_recipient_and_is_refused_otherwise(adapters, catalog):
    """A real eCH-0045 export passes as is to a recipient with ech-generic and is refused (303) for an eCH-0020-only one."""
    tree = load(E45)
    inspection = inspect(tree, adapters, catalog)
    assert inspection.adapter.name == "ech-generic"

    assert adapt_for(inspection, tree, adapters.select(["ech0020-v3", "ech-generic"])) is None
    with pytest.raises(ConversionUnavailable) as caught:
        adapt_for(inspection, tree, adapters.select(["ech0020-v3"]))
    assert "eCH-0045" in caught.value.info and "ech0020-v3" in caught.value.info
    assert_no_personal_data(caught.value.info, tree)


def test_a_generic_only_recipient_reads_any_eCH_document_as_is(adapters, catalog):
    """A recipient that lists only ech-generic has not restricted eCH-0020 versions, so a 2.x delivery passes as is."""
    tree = load(MOVE_IN)
    assert adapt_for(inspect(tree, adapters, catalog), tree, adapters.select(["ech-generic"])) is None


def test_an_event_without_a_mapping_is_refused_with_the_reason_and_both_formats(adapters, catalog):
    """A real 2.2 event the 3.0 mapping does not cover is refused with 303, the event's name and both formats."""
    tree = load(PARTNERSHIP)
    inspection = inspect(tree, adapters, catalog)

    with pytest.raises(ConversionUnavailable) as caught:
        adapt_for(inspection, tree, adapters.select(["ech0020-v3"]))

    info = caught.value.info
    assert caught.value.status == StatusCode.INVALID_MESSAGE_TYPE
    assert info.startswith("cannot convert ech0020-v2 to ech0020-v3") and "partnership" in info
    assert_no_personal_data(info, tree)


def test_a_v1_payload_is_refused_for_a_v3_recipient_and_passes_to_a_v1_one(adapters, catalog):
    """A well-formed-only v1 payload cannot be converted (303) but passes to a recipient that reads v1."""
    tree = load(V1)
    inspection = inspect(tree, adapters, catalog, well_formed_only=True)

    assert adapt_for(inspection, tree, adapters.select(["ech0020-v1"])) is None
    with pytest.raises(ConversionUnavailable, match="ech0020-v1"):
        adapt_for(inspection, tree, adapters.select(["ech0020-v3"]))


@dataclass
class RecordingTarget:
    """A stand-in for the 3.0 adapter that records what it validates and can refuse it."""

    real: object
    refuse: GatewayError | None = None
    validated: list[bytes] = field(default_factory=list)
    parsed: list[bool] = field(default_factory=list)
    name: str = "ech0020-v3"
    standard: str = "eCH-0020"
    converts_to: tuple[str, ...] = ()

    def detect(self, tree):
        return self.real.detect(tree)

    def validate(self, tree, catalog, *, well_formed_only=False):
        self.validated.append(etree.tostring(tree, xml_declaration=True, encoding="UTF-8"))
        # A tree parsed from bytes knows its source lines; one built in memory does not.
        self.parsed.append(tree.getroot().sourceline is not None)
        if self.refuse is not None:
            raise self.refuse
        return self.real.validate(tree, catalog)

    def convert(self, tree, target):
        return self.real.convert(tree, target)


def test_the_delivered_bytes_are_what_the_target_validated(adapters, catalog):
    """The target adapter validates a fresh parse of exactly the bytes adapt_for returns."""
    tree = load(MOVE_IN)
    target = RecordingTarget(adapters.get("ech0020-v3"))
    data = adapt_for(inspect(tree, adapters, catalog), tree, AdapterRegistry([target]))
    assert target.validated == [data] and target.parsed == [True]


def test_a_conversion_result_the_target_schema_rejects_is_not_delivered(adapters, catalog):
    """When the converted document fails the target's validation, adapt_for refuses with 303 and the (redacted) reason."""
    tree = load(MOVE_IN)
    target = RecordingTarget(adapters.get("ech0020-v3"), refuse=SchemaError("payload does not validate: line 7: reason"))
    with pytest.raises(ConversionUnavailable) as caught:
        adapt_for(inspect(tree, adapters, catalog), tree, AdapterRegistry([target]))
    assert caught.value.status == StatusCode.INVALID_MESSAGE_TYPE
    assert caught.value.info == "cannot convert ech0020-v2 to ech0020-v3: payload does not validate: line 7: reason"
