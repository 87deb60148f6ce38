"""Hostile XML never gets past the parser: no DTDs, no entities, no network, bounded shape."""

from __future__ import annotations

import pytest

from gateway.safexml import UnsafeXml, XmlLimits, iter_validate, parse_xml

from ..conftest import SAMPLES


@pytest.mark.parametrize(
    "document",
    [
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>',
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]><r/>',
        b'<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><r>&c;</r>',
        b'<!DOCTYPE r SYSTEM "http://127.0.0.1:9/evil.dtd"><r/>',
    ],
    ids=["xxe-file", "parameter-entity", "billion-laughs", "external-dtd"],
)
def test_documents_with_a_doctype_are_refused(document):
    """XXE, parameter entities, entity expansion and external DTDs are refused before any expansion."""
    with pytest.raises(UnsafeXml, match="document type"):
        parse_xml(document)


def test_the_real_xxe_sample_is_refused():
    """The sedex Message Handler's XXE envelope is refused."""
    data = next((SAMPLES / "sedex-message-handler").glob("envl-test-xxe/*.xml")).read_bytes()
    with pytest.raises(UnsafeXml):
        parse_xml(data)


def test_nesting_deeper_than_the_limit_is_refused():
    """A document nested deeper than the configured depth is refused."""
    deep = b"<a>" * 70 + b"</a>" * 70
    with pytest.raises(UnsafeXml, match="deeper"):
        parse_xml(deep, XmlLimits(max_depth=64))
    parse_xml(b"<a>" * 10 + b"</a>" * 10, XmlLimits(max_depth=64))


def test_more_elements_than_the_limit_are_refused():
    """Element count is bounded."""
    with pytest.raises(UnsafeXml, match="elements"):
        parse_xml(b"<r>" + b"<e/>" * 1001 + b"</r>", XmlLimits(max_elements=1000))


def test_oversized_documents_are_refused_before_parsing():
    """Size is checked first."""
    with pytest.raises(UnsafeXml, match="larger"):
        parse_xml(b"<r>" + b"x" * 2000 + b"</r>", XmlLimits(max_bytes=1000))


def test_errors_do_not_quote_document_content():
    """A syntax error names the line, never the text around it (which may be personal data)."""
    with pytest.raises(UnsafeXml) as error:
        parse_xml(b"<r><name>Muster Hans</nam></r>")
    assert "Muster" not in str(error.value)


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b'<?xml version="1.0" encoding="UTF-7"?>+ADw-r+AD4-+ADw-/r+AD4-', "encoding UTF-7"),
        ('<?xml version="1.0" encoding="UTF-32"?><r/>'.encode("utf-32"), "encoding UTF-32"),
        ('<?xml version="1.0" encoding="IBM037"?><r/>'.encode("cp037"), "encoding EBCDIC"),
        ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r SYSTEM "http://127.0.0.1:9/x.dtd"><r/>'.encode("utf-16"), "document type"),
    ],
    ids=["utf7", "utf32", "ebcdic", "doctype-utf16"],
)
def test_encodings_outside_the_allow_list_and_dtds_in_any_encoding_are_refused(document, reason):
    """parse_xml and the streaming iter_validate refuse UTF-7, UTF-32, EBCDIC and a UTF-16 DOCTYPE, in any chunking."""
    with pytest.raises(UnsafeXml, match=reason):
        parse_xml(document)
    with pytest.raises(UnsafeXml, match=f"{reason}|not well-formed"):
        iter_validate([document[i : i + 5] for i in range(0, len(document), 5)], None)


@pytest.mark.parametrize(
    "document",
    [b"<r/>", '<?xml version="1.0" encoding="UTF-16"?><r>ä</r>'.encode("utf-16"), '<?xml version="1.0" encoding="ISO-8859-1"?><r>ä</r>'.encode("latin-1")],
    ids=["utf8", "utf16", "latin1"],
)
def test_the_accepted_encodings_parse(document):
    """UTF-8, UTF-16 and ISO-8859-1 documents without a DTD are accepted by both parsers."""
    assert parse_xml(document).getroot().tag == "r"
    assert iter_validate([document], None) == ""


def test_a_doctype_split_between_two_chunks_and_an_undeclared_prefix_are_refused_by_iter_validate():
    """The streaming parser sees a DOCTYPE cut in two, and refuses an undeclared root prefix instead of raising ValueError."""
    with pytest.raises(UnsafeXml, match="document type"):
        iter_validate([b"<?xml version='1.0'?><!DOC", b"TYPE r SYSTEM 'http://127.0.0.1:9/x.dtd'><r/>"], None)
    with pytest.raises(UnsafeXml, match="not well-formed"):
        iter_validate([b"<ns2:r/>"], None)
