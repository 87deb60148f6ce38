"""The streaming payload check: the parser's own view decides about DTDs, encodings and namespaces, in any chunking."""

from __future__ import annotations

import pytest

from gateway.config import PayloadAcceptance
from gateway.ids import GatewayError, StatusCode
from gateway.payload import PayloadCheck
from gateway.safexml import XmlLimits


def checked(document: bytes, chunk: int) -> PayloadCheck:
    check = PayloadCheck(PayloadAcceptance.WELL_FORMED, None, XmlLimits())
    for start in range(0, len(document), chunk):
        check.feed(document[start : start + chunk])
    check.finish()
    return check


@pytest.mark.parametrize("chunk", [1, 3, 64, 1 << 20])
@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r SYSTEM "http://127.0.0.1:9/x.dtd"><r/>'.encode("utf-16"), "document type"),
        ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r><r/>'.encode("utf-16"), "document type"),
        (b'<?xml version="1.0" encoding="UTF-7"?>+ADw-r+AD4-+ADw-/r+AD4-', "encoding UTF-7 is not accepted"),
        (b'<?xml version="1.0" encoding="windows-1252"?><r/>', "encoding WINDOWS-1252 is not accepted"),
        (b"<ns2:r><ns2:a>x</ns2:a></ns2:r>", "namespace prefix is not declared"),
        (b"<r><x:a/></r>", "not well-formed"),
    ],
    ids=["utf16-doctype", "utf16-bare-doctype", "utf7", "windows-1252", "undeclared-root-prefix", "undeclared-inner-prefix"],
)
def test_a_payload_with_a_dtd_a_refused_encoding_or_an_undeclared_prefix_is_refused_with_200(document, reason, chunk):
    """However the stream is cut, a DTD in UTF-16, UTF-7 or windows-1252 and undeclared prefixes are refused (sedex 200)."""
    with pytest.raises(GatewayError, match=reason) as refused:
        checked(document, chunk)
    assert refused.value.status == StatusCode.INVALID_ENVELOPE


@pytest.mark.parametrize("chunk", [1, 4096])
@pytest.mark.parametrize(
    "document",
    [b"<r/>", '<?xml version="1.0" encoding="UTF-16"?><r xmlns="urn:x">ä</r>'.encode("utf-16"), b'\xef\xbb\xbf<r xmlns="urn:x"/>'],
    ids=["shortest", "utf16", "utf8-bom"],
)
def test_a_well_formed_payload_in_an_accepted_encoding_passes_with_its_root_namespace(document, chunk):
    """The shortest document ('<r/>', whose root the pull parser reports only at close), UTF-16 and a UTF-8 BOM pass."""
    check = checked(document, chunk)
    assert check.namespace == ("" if document == b"<r/>" else "urn:x")
