"""What the origin may hold in memory: which payloads claim to be XML, and which fit the element budget."""

from __future__ import annotations

import zipfile
from io import BytesIO

import pytest

from gateway.inmemory import claims_xml, within_element_budget

from ..conftest import SAMPLES

SAMPLE = next(SAMPLES.glob("ech0099-v1-sempach/*/data_*.xml")).read_bytes()


def _zip() -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data.xml", SAMPLE)
    return buffer.getvalue()


@pytest.mark.parametrize(("payload", "expected"), [
    pytest.param(SAMPLE, True, id="ech-sample"),
    pytest.param(b"\xef\xbb\xbf" + SAMPLE, True, id="utf8-bom"),
    pytest.param(SAMPLE.decode("utf-8").replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16"), True, id="utf16-bom"),
    pytest.param("<r/>".encode("utf-16-le"), True, id="utf16le-without-bom"),
    pytest.param("<r/>".encode("utf-16-be"), True, id="utf16be-without-bom"),
    pytest.param("<r/>".encode("utf-32"), True, id="utf32-bom"),
    pytest.param(b"\r\n  \t<!DOCTYPE r><r/>", True, id="whitespace-then-doctype"),
    pytest.param(b"<r><unclosed></r>", True, id="broken-markup"),
    pytest.param(_zip(), False, id="zip"),
    pytest.param(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", False, id="pdf"),
    pytest.param(b"Name;Vorname\n", False, id="csv"),
    pytest.param(b"", False, id="empty"),
])  # fmt: skip
def test_a_payload_claims_xml_when_it_starts_as_markup_in_any_encoding(payload, expected):
    """Markup after an optional byte-order mark and white space, in UTF-8, -16 or -32, claims XML; zip, PDF and text do not."""
    assert claims_xml(payload) is expected


@pytest.mark.parametrize(("count", "limit", "expected"), [
    (999, 1000, True), (1000, 1000, False), (10_000, 1000, False),
])  # fmt: skip
def test_the_element_budget_counts_every_element_including_the_root(count, limit, expected):
    """``<r>`` plus ``count`` children is ``count`` + 1 elements: within the budget only up to ``limit``."""
    assert within_element_budget(b"<r>" + b"<e/>" * count + b"</r>", limit) is expected


def test_a_real_ech_sample_fits_a_budget_of_its_own_element_count():
    """The budget counts what a tree would hold: the Sempach sample's element count fits, one less does not."""
    from lxml import etree

    elements = sum(1 for _ in etree.fromstring(SAMPLE).iter(etree.Element))
    assert within_element_budget(SAMPLE, elements) and not within_element_budget(SAMPLE, elements - 1)


@pytest.mark.parametrize("document", [
    pytest.param(b"<r><e/>", id="truncated"),
    pytest.param(b'<!DOCTYPE r [<!ENTITY a "x">]><r>&a;&a;</r>', id="internal-entities"),
    pytest.param(b"\x00\x01binary", id="binary"),
])  # fmt: skip
def test_what_the_budget_cannot_read_is_left_to_the_safe_parser(document):
    """A document the counting parse cannot read counts as within the budget: gateway.safexml refuses it with its reason."""
    assert within_element_budget(document, 10) is True


def test_the_budget_stops_reading_at_the_limit():
    """Counting stops at the first element over the budget, so an oversized document costs only the budget's worth.

    Past the first 64 KiB slice the document is not well-formed: a count that read on would
    reach that part and leave the verdict to the safe parser (True); stopping answers False.
    """
    huge = b"<r>" + b"<e/>" * 20_000 + b"<<< not XML >>>" * 10_000
    assert not within_element_budget(huge, 1_000)


@pytest.mark.parametrize(("mark", "codec"), [
    (b"", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"), (b"", "iso-8859-1"),
])  # fmt: skip
def test_a_payload_with_few_angle_brackets_is_within_the_budget_in_every_accepted_encoding(mark, codec):
    """The shortcut (no more '<' bytes than the limit) agrees with the exact count in each encoding safexml accepts."""
    document = mark + ("<r>" + "<e/>" * 50 + "</r>").encode(codec)
    assert within_element_budget(document, 51) is True  # 52 '<' bytes: counted exactly, 51 elements fit
    assert within_element_budget(document, 50) is False
    assert within_element_budget(document, 60) is True  # 52 '<' bytes ≤ 60: no counting parse needed
