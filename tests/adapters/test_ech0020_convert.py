"""eCH-0020 2.x to 3.0 conversion of real open-eCH deliveries, compared field by field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from lxml import etree

from adapters.base import ConversionUnavailable
from adapters.ech0020_convert import CONVERTIBLE_EVENTS, convert_v2_to_v3
from adapters.ech0020_v2 import Ech0020V2Adapter
from gateway.safexml import parse_xml

from .conftest import SAMPLES

OPEN_ECH = SAMPLES / "openech-ech0020-v2.2"
E20_2 = "http://www.ech.ch/xmlns/eCH-0020/2"
E44_1 = "http://www.ech.ch/xmlns/eCH-0044/1"
E20_3 = "http://www.ech.ch/xmlns/eCH-0020/3"
V3 = "ech0020-v3"


def event_of(path: Path) -> str:
    return etree.QName(parse_xml(path.read_bytes()).getroot()[1]).localname


def has_vn(path: Path) -> bool:
    return parse_xml(path.read_bytes()).getroot().find(f".//{{{E44_1}}}vn") is not None


CONVERTIBLE = [p for p in sorted(OPEN_ECH.glob("*/*.xml")) if event_of(p) in CONVERTIBLE_EVENTS and has_vn(p)]


@pytest.fixture(scope="module")
def adapter(catalog):
    # The open-eCH samples leave localPersonId empty (eCH-0044/1 allowed it); this node
    # configuration fills it from the vn, which is what the conversion tests exercise.
    return Ech0020V2Adapter(catalog, local_id_category="CH.VN")


def values(tree: etree._ElementTree, local: str) -> list[str]:
    """Texts of every element with this local name outside the header, in document order."""
    root = tree.getroot()
    body = [child for child in root if etree.QName(child).localname not in ("deliveryHeader", "header")]
    return [(e.text or "").strip() for part in body for e in part.iter() if isinstance(e.tag, str) and etree.QName(e).localname == local]


# Person and address fields that both releases carry, compared as the same multiset of values:
# each appears once per place in both versions.
SAME_COUNT = ["vn", "street", "houseNumber", "dwellingNumber", "town", "swissZipCode", "swissZipCodeId",
              "addressLine1", "addressLine2", "locality", "EGID", "EWID", "householdID", "typeOfHousehold",
              "movingDate", "arrivalDate", "departureDate", "municipalityId", "municipalityName",
              "cantonAbbreviation", "historyMunicipalityId", "religion", "maritalStatus", "dateOfMaritalStatus",
              "nationalityStatus", "countryId", "countryIdISO2", "countryNameShort",
              "naturalizationDate", "expatriationDate", "languageOfCorrespondance", "callName", "aliasName", "otherName", "originalName",
              "postOfficeBoxNumber"]
# Fields 3.0 repeats (personIdentification and nameData/birthData): same set of values.
# 2.x also repeats the place of origin (anyPerson and placeOfOriginAddon).
SAME_SET = ["officialName", "firstName", "sex", "yearMonthDay", "yearMonth", "year", "canton", "originName"]


@pytest.mark.parametrize("path", CONVERTIBLE, ids=lambda p: p.parent.name)
def test_a_real_delivery_converts_to_valid_3_0_with_the_same_person_data(adapter, catalog, path):
    """A real 2.2 delivery converts to a schema-valid 3.0 delivery carrying the same person and address data."""
    source = parse_xml(path.read_bytes())
    converted = adapter.convert(source, V3)

    assert catalog.validate(converted) == E20_3
    assert converted.getroot().get("version") == "3.0"
    assert etree.QName(converted.getroot()[1]).localname == event_of(path)
    for field in SAME_COUNT:
        assert sorted(values(converted, field)) == sorted(values(source, field)), field
    for field in SAME_SET:
        assert set(values(converted, field)) == set(values(source, field)), field
    assert values(converted, "allianceName") == values(source, "alliancePartnershipName")


def test_the_converted_samples_cover_the_main_events():
    """The real samples exercised above include baseDelivery, moveIn, move and contact."""
    assert {event_of(p) for p in CONVERTIBLE} >= {"baseDelivery", "moveIn", "move", "contact"}


def text3(tree: etree._ElementTree, path: str) -> str:
    ns = {"e20": E20_3, "e44": "http://www.ech.ch/xmlns/eCH-0044/4", "e11": "http://www.ech.ch/xmlns/eCH-0011/8",
          "e10": "http://www.ech.ch/xmlns/eCH-0010/5", "e7": "http://www.ech.ch/xmlns/eCH-0007/5",
          "e58": "http://www.ech.ch/xmlns/eCH-0058/5", "e8": "http://www.ech.ch/xmlns/eCH-0008/3",
          "e21": "http://www.ech.ch/xmlns/eCH-0021/7"}
    found = tree.getroot().find(path, ns)
    assert found is not None, path
    return found.text


def test_a_secondary_residence_move_in_maps_field_by_field(adapter):
    """The moveIn of a person with a secondary residence keeps every identifying and address field in its 3.0 place."""
    path = OPEN_ECH / "movein-personsecondaryresidence/personSecondaryResidence.xml"
    out = adapter.convert(parse_xml(path.read_bytes()), V3)
    person = "e20:moveIn/e20:moveInPerson"
    residence = "e20:moveIn/e20:hasSecondaryResidence"
    expected = {
        f"{person}/e20:personIdentification/e44:vn": "7565706688248",
        f"{person}/e20:personIdentification/e44:localPersonId/e44:personIdCategory": "CH.VN",
        f"{person}/e20:personIdentification/e44:localPersonId/e44:personId": "7565706688248",
        f"{person}/e20:personIdentification/e44:officialName": "Meier",
        f"{person}/e20:personIdentification/e44:firstName": "Dirk",
        f"{person}/e20:nameInfo/e20:nameData/e11:officialName": "Meier",
        f"{person}/e20:nameInfo/e20:nameData/e11:originalName": "Brunner",
        f"{person}/e20:nameInfo/e20:nameData/e11:allianceName": "Huber",
        f"{person}/e20:nameInfo/e20:nameData/e11:callName": "Lorem Ipsum",
        f"{person}/e20:religionData/e11:religion": "000",
        f"{person}/e20:personAdditionalData/e21:languageOfCorrespondance": "fr",
        f"{person}/e20:placeOfOriginInfo/e20:placeOfOrigin/e11:originName": "Huber",
        f"{person}/e20:placeOfOriginInfo/e20:placeOfOriginAddonData/e21:naturalizationDate": "1966-11-18",
        f"{person}/e20:birthInfo/e20:birthData/e11:sex": "1",
        f"{person}/e20:birthInfo/e20:birthData/e11:dateOfBirth/e44:yearMonthDay": "1955-08-16",
        f"{person}/e20:birthInfo/e20:birthData/e11:placeOfBirth/e11:swissTown/e7:municipalityName": "Ropraz",
        f"{person}/e20:maritalInfo/e20:maritalData/e11:maritalStatus": "7",
        f"{person}/e20:nationalityData/e11:countryInfo/e11:country/e8:countryIdISO2": "CH",
        f"{person}/e20:lockData/e21:dataLock": "0",
        f"{residence}/e20:reportingMunicipality/e7:municipalityName": "Aarau",
        f"{residence}/e20:arrivalDate": "2004-05-27",
        f"{residence}/e20:comesFrom/e11:swissTown/e7:municipalityName": "Grafenried",
        f"{residence}/e20:dwellingAddress/e11:EGID": "978535644",
        f"{residence}/e20:dwellingAddress/e11:address/e10:street": "Rosenweg",
        f"{residence}/e20:dwellingAddress/e11:address/e10:swissZipCode": "5017",
        f"{residence}/e20:mainResidence/e7:municipalityName": "Zürich",
        "e20:deliveryHeader/e58:senderId": "3-CH-6",
        "e20:deliveryHeader/e58:eventDate": "2001-12-31",
        "e20:deliveryHeader/e58:testDeliveryFlag": "true",
        "e20:deliveryHeader/e20:dataLock": "0",
    }
    assert {p: text3(out, p) for p in expected} == expected


def replace_event(template: Path, event_xml: str) -> etree._ElementTree:
    """A valid 2.x delivery built from a real one by replacing its event (for events no sample has)."""
    tree = parse_xml(template.read_bytes())
    root = tree.getroot()
    pid = copy.deepcopy(root.find(f".//{{{E20_2}}}personIdentification"))
    event = etree.fromstring(event_xml.replace("PID", etree.tostring(pid).decode()))
    root.replace(root[1], event)
    return etree.ElementTree(etree.fromstring(etree.tostring(root)))


NS_DECL = f'xmlns:e20="{E20_2}"'


@pytest.mark.parametrize("event_xml, checks", [
    (f"<e20:death {NS_DECL}><e20:deathPerson>PID</e20:deathPerson><e20:dateOfDeath>2010-09-01</e20:dateOfDeath></e20:death>",
     {"e20:death/e20:deathData/e11:deathPeriod/e11:dateFrom": "2010-09-01",
      "e20:death/e20:deathPerson/e44:vn": "7561829871378"}),
    (f"<e20:changeName {NS_DECL}><e20:changeNamePerson>PID<e20:officialName>Neuname</e20:officialName>"
     f"</e20:changeNamePerson></e20:changeName>",
     {"e20:changeName/e20:nameInfo/e20:nameData/e11:officialName": "Neuname",
      "e20:changeName/e20:nameInfo/e20:nameData/e11:firstName": "Test Person",
      "e20:changeName/e20:changeNamePerson/e44:officialName": "TestPerson"}),
])
def test_death_and_change_name_convert(adapter, catalog, event_xml, checks):
    """death and changeName 2.x events (built from a real delivery and valid 2.3) convert to valid 3.0."""
    source = replace_event(OPEN_ECH / "div-movetest/moveTest.xml", event_xml)
    catalog.validate(source)
    out = adapter.convert(source, V3)
    assert {p: text3(out, p) for p in checks} == checks


def test_a_move_out_converts_with_departure_before_destination(adapter, catalog):
    """moveOut (2.x: goesTo before departureDate) converts to 3.0 order with the same values."""
    event = (f"<e20:moveOut {NS_DECL} xmlns:e11='http://www.ech.ch/xmlns/eCH-0011/4' xmlns:e8='http://www.ech.ch/xmlns/eCH-0008/2'>"
             "<e20:moveOutPerson>PID</e20:moveOutPerson><e20:moveOutReportingDestination>"
             "<e20:reportingMunicipality><e7:municipalityId xmlns:e7='http://www.ech.ch/xmlns/eCH-0007/4'>3340</e7:municipalityId>"
             "<e7:municipalityName xmlns:e7='http://www.ech.ch/xmlns/eCH-0007/4'>Rapperswil-Jona</e7:municipalityName></e20:reportingMunicipality>"
             "<e20:goesTo><e11:foreignCountry><e11:country><e8:countryNameShort>Frankreich</e8:countryNameShort></e11:country>"
             "</e11:foreignCountry></e20:goesTo><e20:departureDate>2011-01-31</e20:departureDate>"
             "</e20:moveOutReportingDestination></e20:moveOut>")
    source = replace_event(OPEN_ECH / "div-movetest/moveTest.xml", event)
    catalog.validate(source)
    out = adapter.convert(source, V3)
    base = "e20:moveOut/e20:moveOutReportingDestination"
    assert text3(out, f"{base}/e20:departureDate") == "2011-01-31"
    assert text3(out, f"{base}/e20:goesTo/e11:foreignCountry/e11:country/e8:countryNameShort") == "Frankreich"


@pytest.mark.parametrize("sample, reason", [
    ("changenationality-changeresidencepermittest/changeResidencePermitTest.xml", "changeResidencePermit"),
    ("undopartnership-partnershiptest1/partnershipTest1.xml", "partnership"),
    ("gardian-persongardian/personGardian.xml", "localPersonId"),
])
def test_deliveries_without_a_mapping_are_refused_clearly(adapter, sample, reason):
    """An event or person the mapping cannot carry is refused with a reason and no personal data."""
    path = OPEN_ECH / sample
    with pytest.raises(ConversionUnavailable) as caught:
        adapter.convert(parse_xml(path.read_bytes()), V3)
    assert reason in caught.value.info
    source = parse_xml(path.read_bytes())
    for personal in values(source, "officialName") + values(source, "firstName") + values(source, "street"):
        assert personal not in caught.value.info


def test_a_birth_is_refused_because_3_0_needs_the_residence():
    """A 2.x birth is refused: 3.0 requires the child's residence, which 2.x does not carry."""
    source = replace_event(OPEN_ECH / "div-movetest/moveTest.xml",
                           f"<e20:birth {NS_DECL}><e20:birthPerson>PID</e20:birthPerson></e20:birth>")
    with pytest.raises(ConversionUnavailable, match="residence"):
        convert_v2_to_v3(source, local_id_category="CH.VN")


def test_an_empty_local_person_id_is_refused_without_a_configured_fallback(catalog):
    """Without a configured fallback, a person whose 2.x localPersonId is empty is refused, never invented."""
    with pytest.raises(ConversionUnavailable, match="localPersonId"):
        Ech0020V2Adapter(catalog).convert(parse_xml((OPEN_ECH / "div-movetest/moveTest.xml").read_bytes()), V3)


def test_a_non_v2_document_is_not_converted():
    """convert_v2_to_v3 refuses a document that is not an eCH-0020 2.x delivery."""
    with pytest.raises(ConversionUnavailable):
        convert_v2_to_v3(parse_xml(b"<delivery xmlns='http://www.ech.ch/xmlns/eCH-0020/3'/>"))
