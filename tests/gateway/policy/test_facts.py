"""Payload facts read from real eCH messages: action, event, test flag, data lock."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from gateway.generated import generated_ech0020_v3_bytes
from gateway.policy import PayloadFacts, payload_facts
from gateway.safexml import parse_xml

from .conftest import MOVE_IN, OPENECH, SAMPLES

DEATH = OPENECH / "deathtest-7561829871378" / "DeathTest_7561829871378.xml"
VOTERS = next((SAMPLES / "stimmregister-ech0045-v6").rglob("*.xml"))


def facts_of(path, replace: tuple[bytes, bytes] | None = None) -> PayloadFacts:
    data = path.read_bytes()
    if replace:
        assert replace[0] in data
        data = data.replace(*replace)
    return payload_facts(parse_xml(data))


def test_ech0020_v2_move_in_facts():
    """An eCH-0020 v2 moveIn (eCH-0078 header) yields action 1, event moveIn, test flag and no lock."""
    assert facts_of(MOVE_IN) == PayloadFacts("1", "moveIn", True, False, "http://www.ech.ch/xmlns/eCH-0020/2")


@pytest.mark.parametrize("sample", sorted(OPENECH.rglob("*.xml")), ids=lambda p: p.parent.name)
def test_every_open_ech_sample_has_an_event_and_the_test_flag(sample):
    """Every open-eCH eCH-0020 2.2 sample yields an event element name and testDeliveryFlag=true."""
    facts = facts_of(sample)
    assert facts.event and facts.event != "deliveryHeader"
    assert facts.test_delivery and facts.action == "1" and not facts.data_lock


@pytest.mark.parametrize(("folder", "event"), [
    ("changenationality-changeresidencepermittest", "changeResidencePermit"),
    ("div-contacttest", "contact"),
    ("div-movetest", "move"),
    ("undopartnership-partnershiptest1", "partnership"),
    ("deathtest-7561829871378", "baseDelivery"),
])
def test_event_is_the_first_element_after_the_header(folder, event):
    """The event is the local name of the first child of the delivery that is not the header."""
    assert facts_of(next((OPENECH / folder).glob("*.xml"))).event == event


def test_person_data_lock_is_detected():
    """An eCH-0021 dataLock other than 0 on a person marks the payload as locked."""
    assert facts_of(DEATH, (b"<e20:dataLock>0</e20:dataLock>", b"<e20:dataLock>1</e20:dataLock>")).data_lock


def test_paper_lock_is_detected():
    """A paperLock of 1 marks the payload as locked too."""
    assert facts_of(DEATH, (b"<e20:paperLock>0</e20:paperLock>", b"<e20:paperLock>1</e20:paperLock>")).data_lock


def test_header_extension_data_lock_is_detected():
    """The eCH-0078 header extension's dataLock counts as a lock."""
    assert facts_of(MOVE_IN, (b"<e78:dataLock>0</e78:dataLock>", b"<e78:dataLock>2</e78:dataLock>")).data_lock


def test_production_delivery_is_not_test():
    """testDeliveryFlag=false is read as production traffic."""
    facts = facts_of(MOVE_IN, (b"<e78:testDeliveryFlag>true", b"<e78:testDeliveryFlag>false"))
    assert not facts.test_delivery


def test_ech0058_v5_header_is_read():
    """An eCH-0045 delivery with an eCH-0058 v5 header yields its action and test flag."""
    facts = facts_of(VOTERS)
    assert (facts.action, facts.test_delivery, facts.event) == ("1", True, "voterList")


def test_header_elements_from_foreign_namespaces_are_ignored():
    """An 'action' element outside the eCH-0058/eCH-0078 namespaces is not taken for the header action."""
    data = b'<d xmlns="urn:x"><header><action>3</action></header><moveIn/></d>'
    assert payload_facts(parse_xml(data)) == PayloadFacts(None, "moveIn", False, False, "urn:x")


GENERATED_V3 = generated_ech0020_v3_bytes(now=datetime(2026, 3, 1, tzinfo=timezone.utc))
# The eCH "f" variants of the namespaces the generated eCH-0020 3.0 message uses (same versions).
F_VARIANTS = [(f"/eCH-{n}/{v}".encode(), f"/eCH-{n}-f/{v}".encode())
              for n, v in (("0020", 3), ("0011", 8), ("0010", 5), ("0008", 3), ("0021", 7), ("0044", 4), ("0007", 5))]


def as_f_variant(data: bytes) -> bytes:
    for plain, variant in F_VARIANTS:
        data = data.replace(plain, variant)
    return data


@pytest.mark.parametrize(("lock", "locked"), [
    (b"<e21:dataLock>0</e21:dataLock><e21:paperLock>0</e21:paperLock>", False),
    (b"<e21:dataLock>1</e21:dataLock><e21:paperLock>0</e21:paperLock>", True),
    (b"<e21:dataLock>2</e21:dataLock><e21:paperLock>0</e21:paperLock>", True),
    (b"<e21:dataLock>0</e21:dataLock><e21:paperLock>1</e21:paperLock>", True),
], ids=["no-lock", "address-lock", "information-lock", "paper-lock"])
@pytest.mark.parametrize("variant", ["plain", "f"])
def test_ech0021_v7_lock_data_in_an_ech0020_v3_message(catalog, lock, locked, variant):
    """eCH-0020 3.0 lockData (eCH-0021 v7, plain and "f" namespaces) counts unless dataLock and paperLock are 0."""
    original = b"<e21:dataLock>0</e21:dataLock><e21:paperLock>0</e21:paperLock>"
    assert original in GENERATED_V3
    data = GENERATED_V3.replace(original, lock)
    if variant == "f":
        data = as_f_variant(data)
    tree = parse_xml(data)
    assert catalog.validate(tree).endswith("/3")  # a schema-valid message, not a made-up shape
    assert payload_facts(tree).data_lock is locked


def test_ech0045_voter_data_lock_is_detected():
    """The eCH-0045 voter's dataLock (eCH-0021 v8, default namespace) counts when it is 1."""
    assert not facts_of(VOTERS).data_lock
    assert facts_of(VOTERS, (b"<dataLock>0</dataLock>", b"<dataLock>1</dataLock>")).data_lock


def test_ech0021_v8_address_lock_is_detected():
    """eCH-0021 v8 moved the address lock into its own addressLock element, which counts too."""
    ns = "http://www.ech.ch/xmlns/eCH-0021/8"
    template = ('<d xmlns="urn:x" xmlns:e21="%s"><header/><event><e21:lockData><e21:addressLock>%s</e21:addressLock>'
                "<e21:dataLock>0</e21:dataLock><e21:paperLock>0</e21:paperLock></e21:lockData></event></d>")
    assert not payload_facts(parse_xml((template % (ns, "0")).encode())).data_lock
    assert payload_facts(parse_xml((template % (ns, "1")).encode())).data_lock


def test_lock_elements_outside_ech_namespaces_are_ignored():
    """Only eCH elements count: a foreign dataLock element does not decide anything."""
    data = b'<d xmlns="urn:x"><header/><event><dataLock>1</dataLock></event></d>'
    assert not payload_facts(parse_xml(data)).data_lock
