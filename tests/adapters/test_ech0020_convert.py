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


# No public 2.x birth event exists (the open-eCH "BirthTest" files are baseDeliveries), so the
# birth deliveries below are built from eCH-0020-2-3.xsd: a real delivery's header with a
# birth event whose every element follows the 2.3 birthPersonType, checked against the XSD
# before each conversion. The child is fictitious.
E11_4 = "http://www.ech.ch/xmlns/eCH-0011/4"
BIRTH_NS = (f'xmlns:e20="{E20_2}" xmlns:e44="{E44_1}" xmlns:e11="{E11_4}" '
            'xmlns:e7="http://www.ech.ch/xmlns/eCH-0007/4" xmlns:e8="http://www.ech.ch/xmlns/eCH-0008/2"')
CHILD_ID = ("<e20:personIdentification><e44:vn>7569217076985</e44:vn>"
            "<e44:localPersonId><e44:personIdCategory>CH.ZAR</e44:personIdCategory><e44:personId>4711</e44:personId></e44:localPersonId>"
            "<e44:officialName>Beispiel</e44:officialName><e44:firstName>Lea Sofia</e44:firstName><e44:sex>2</e44:sex>"
            "<e44:dateOfBirth><e44:yearMonthDay>2024-03-05</e44:yearMonthDay></e44:dateOfBirth></e20:personIdentification>")
SWISS_BIRTH = ("<e20:placeOfBirth><e20:swissTown><e20:country>CH</e20:country><e20:municipality>"
               "<e7:municipalityId>1061</e7:municipalityId><e7:municipalityName>Luzern</e7:municipalityName>"
               "<e7:cantonAbbreviation>LU</e7:cantonAbbreviation></e20:municipality></e20:swissTown></e20:placeOfBirth>")
SWISS_NATIONALITY = ("<e20:nationality><e11:nationalityStatus>2</e11:nationalityStatus><e11:country><e8:countryId>8100</e8:countryId>"
                     "<e8:countryIdISO2>CH</e8:countryIdISO2><e8:countryNameShort>Schweiz</e8:countryNameShort></e11:country></e20:nationality>")
SWISS_ORIGIN = ("<e20:anyPerson><e11:swiss><e11:placeOfOrigin><e11:originName>Kriens</e11:originName><e11:canton>LU</e11:canton>"
                "</e11:placeOfOrigin><e11:placeOfOrigin><e11:originName>Sarnen</e11:originName><e11:canton>OW</e11:canton>"
                "</e11:placeOfOrigin></e11:swiss></e20:anyPerson>")
MOTHER = ("<e20:mother><e20:typeOfRelationship>3</e20:typeOfRelationship><e20:partner><e20:personIdentification>"
          "<e44:localPersonId><e44:personIdCategory>CH.ZAR</e44:personIdCategory><e44:personId>4710</e44:personId></e44:localPersonId>"
          "<e44:officialName>Beispiel</e44:officialName><e44:firstName>Maria</e44:firstName><e44:sex>2</e44:sex>"
          "<e44:dateOfBirth><e44:yearMonthDay>1990-07-01</e44:yearMonthDay></e44:dateOfBirth></e20:personIdentification>"
          "</e20:partner></e20:mother>")


def birth_delivery(catalog, *, child: str = CHILD_ID, call_name: str = "<e20:callName>Lea</e20:callName>",
                   place: str = SWISS_BIRTH, nationality: str = SWISS_NATIONALITY,
                   religion: str = "<e20:religion>121</e20:religion>",
                   language: str = "<e20:languageOfCorrespondance>de</e20:languageOfCorrespondance>",
                   any_person: str = SWISS_ORIGIN, after: str = "") -> etree._ElementTree:
    """A schema-valid eCH-0020 2.3 birth delivery (validated here, so every test starts from valid 2.3)."""
    event = (f"<e20:birth {BIRTH_NS}><e20:birthPerson>{child}{call_name}{place}{nationality}{religion}{language}"
             f"{any_person}</e20:birthPerson>{after}</e20:birth>")
    tree = parse_xml(etree.tostring(replace_event(OPEN_ECH / "div-movetest/moveTest.xml", event).getroot()))
    assert catalog.validate(tree) == E20_2
    return tree


def test_a_birth_converts_to_valid_3_0_with_the_child_field_by_field(adapter, catalog):
    """A 2.3 birth becomes a schema-valid 3.0 birth whose child carries every 2.3 value in its 3.0 place."""
    out = adapter.convert(birth_delivery(catalog), V3)

    assert catalog.validate(out) == E20_3
    child = "e20:birth/e20:birthPerson"
    expected = {
        f"{child}/e20:personIdentification/e44:vn": "7569217076985",
        f"{child}/e20:personIdentification/e44:localPersonId/e44:personIdCategory": "CH.ZAR",
        f"{child}/e20:personIdentification/e44:localPersonId/e44:personId": "4711",
        f"{child}/e20:personIdentification/e44:officialName": "Beispiel",
        f"{child}/e20:personIdentification/e44:firstName": "Lea Sofia",
        f"{child}/e20:personIdentification/e44:sex": "2",
        f"{child}/e20:personIdentification/e44:dateOfBirth/e44:yearMonthDay": "2024-03-05",
        f"{child}/e20:nameInfo/e20:nameData/e11:officialName": "Beispiel",
        f"{child}/e20:nameInfo/e20:nameData/e11:firstName": "Lea Sofia",
        f"{child}/e20:nameInfo/e20:nameData/e11:callName": "Lea",
        f"{child}/e20:birthInfo/e20:birthData/e11:dateOfBirth/e44:yearMonthDay": "2024-03-05",
        f"{child}/e20:birthInfo/e20:birthData/e11:placeOfBirth/e11:swissTown/e7:municipalityId": "1061",
        f"{child}/e20:birthInfo/e20:birthData/e11:placeOfBirth/e11:swissTown/e7:municipalityName": "Luzern",
        f"{child}/e20:birthInfo/e20:birthData/e11:placeOfBirth/e11:swissTown/e7:cantonAbbreviation": "LU",
        f"{child}/e20:birthInfo/e20:birthData/e11:sex": "2",
        f"{child}/e20:religionData/e11:religion": "121",
        f"{child}/e20:maritalData/e11:maritalStatus": "1",
        f"{child}/e20:nationalityData/e11:nationalityStatus": "2",
        f"{child}/e20:nationalityData/e11:countryInfo/e11:country/e8:countryId": "8100",
        f"{child}/e20:nationalityData/e11:countryInfo/e11:country/e8:countryIdISO2": "CH",
        f"{child}/e20:nationalityData/e11:countryInfo/e11:country/e8:countryNameShort": "Schweiz",
        f"{child}/e20:personAdditionalData/e21:languageOfCorrespondance": "de",
        f"{child}/e20:placeOfOriginInfo[1]/e20:placeOfOrigin/e11:originName": "Kriens",
        f"{child}/e20:placeOfOriginInfo[1]/e20:placeOfOrigin/e11:canton": "LU",
        f"{child}/e20:placeOfOriginInfo[2]/e20:placeOfOrigin/e11:originName": "Sarnen",
        f"{child}/e20:placeOfOriginInfo[2]/e20:placeOfOrigin/e11:canton": "OW",
        f"{child}/e20:lockData/e21:dataLock": "0",
        f"{child}/e20:lockData/e21:paperLock": "0",
        "e20:deliveryHeader/e58:senderId": "3-CH-6",
        "e20:deliveryHeader/e58:eventDate": "2001-12-31",
    }
    assert {p: text3(out, p) for p in expected} == expected
    # 2.x carries no residence for the child and 3.0 makes it optional: none is invented.
    assert [etree.QName(e).localname for e in out.getroot()[1]] == ["birthPerson"]


def test_a_child_born_abroad_to_foreign_parents_converts_with_town_and_permit(adapter, catalog):
    """A birth abroad keeps country and town (foreignBirthTown -> town); a foreign child's permit becomes residencePermitData."""
    place = ("<e20:placeOfBirth><e20:foreignCountry><e20:country><e8:countryId>8207</e8:countryId>"
             "<e8:countryIdISO2>DE</e8:countryIdISO2><e8:countryNameShort>Deutschland</e8:countryNameShort></e20:country>"
             "<e20:foreignBirthTown>Konstanz</e20:foreignBirthTown></e20:foreignCountry></e20:placeOfBirth>")
    nationality = ("<e20:nationality><e11:nationalityStatus>2</e11:nationalityStatus><e11:country><e8:countryId>8207</e8:countryId>"
                   "<e8:countryIdISO2>DE</e8:countryIdISO2><e8:countryNameShort>Deutschland</e8:countryNameShort></e11:country></e20:nationality>")
    foreigner = ("<e20:anyPerson><e11:foreigner><e11:residencePermit>0301</e11:residencePermit>"
                 "<e11:residencePermitTill>2029-03-04</e11:residencePermitTill></e11:foreigner></e20:anyPerson>")
    out = adapter.convert(birth_delivery(catalog, call_name="", place=place, nationality=nationality,
                                         language="", any_person=foreigner), V3)

    assert catalog.validate(out) == E20_3
    child = "e20:birth/e20:birthPerson"
    expected = {
        f"{child}/e20:birthInfo/e20:birthData/e11:placeOfBirth/e11:foreignCountry/e11:country/e8:countryIdISO2": "DE",
        f"{child}/e20:birthInfo/e20:birthData/e11:placeOfBirth/e11:foreignCountry/e11:town": "Konstanz",
        f"{child}/e20:nationalityData/e11:countryInfo/e11:country/e8:countryId": "8207",
        f"{child}/e20:residencePermitData/e11:residencePermit": "0301",
        f"{child}/e20:residencePermitData/e11:residencePermitValidTill": "2029-03-04",
    }
    assert {p: text3(out, p) for p in expected} == expected
    person = out.getroot().find("e20:birth/e20:birthPerson", {"e20": E20_3})
    assert person.find(f"{{{E20_3}}}placeOfOriginInfo") is None
    assert person.find(f"{{{E20_3}}}personAdditionalData") is None


@pytest.mark.parametrize("parts, reason", [
    ({"after": MOTHER}, "birth/mother"),
    ({"after": MOTHER.replace("mother>", "father>").replace(">3<", ">4<")}, "birth/father"),
    ({"religion": ""}, "religion"),
    ({"after": "<e20:extension><anything/></e20:extension>"}, "birth/extension"),
    ({"any_person": "<e20:anyPerson><e11:foreigner><e11:residencePermit>0301</e11:residencePermit>"
                    "<e11:nameOnPassport>Beispiel-Pass</e11:nameOnPassport></e11:foreigner></e20:anyPerson>"},
     "nameOnPassport"),
])
def test_birth_parts_without_a_3_0_mapping_are_refused_clearly(adapter, catalog, parts, reason):
    """A birth part 3.0 cannot carry (parents without custody, no religion, extension, passport name) is refused by name, with no personal data."""
    source = birth_delivery(catalog, **parts)
    with pytest.raises(ConversionUnavailable) as caught:
        adapter.convert(source, V3)
    assert reason in caught.value.info and caught.value.status == 303
    for personal in ("Beispiel", "Lea", "Maria", "7569217076985", "4711", "Kriens", "Luzern"):
        assert personal not in caught.value.info


def test_a_refused_birth_parent_says_why(adapter, catalog):
    """The refusal of a birth's parents names the missing 3.0 datum (custody), so an operator knows what to supply."""
    with pytest.raises(ConversionUnavailable, match=r"care"):
        adapter.convert(birth_delivery(catalog, after=MOTHER), V3)


def test_an_empty_local_person_id_is_refused_without_a_configured_fallback(catalog):
    """Without a configured fallback, a person whose 2.x localPersonId is empty is refused, never invented."""
    with pytest.raises(ConversionUnavailable, match="localPersonId"):
        Ech0020V2Adapter(catalog).convert(parse_xml((OPEN_ECH / "div-movetest/moveTest.xml").read_bytes()), V3)


def test_a_non_v2_document_is_not_converted():
    """convert_v2_to_v3 refuses a document that is not an eCH-0020 2.x delivery."""
    with pytest.raises(ConversionUnavailable):
        convert_v2_to_v3(parse_xml(b"<delivery xmlns='http://www.ech.ch/xmlns/eCH-0020/3'/>"))
