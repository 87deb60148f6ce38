"""The directory document: strict shape, secure defaults, one canonical form."""

from __future__ import annotations

import pytest

from gateway.directory import CertificateEntry, CertificateUse, Directory, Environment, NodeEntry, ParticipantEntry
from gateway.directory.model import MalformedDocument
from gateway.ids import ParticipantId

from .conftest import KANTON, LUZERN, LUZERN_NODE, Pki


def test_claims_round_trip_to_an_equal_directory(pki: Pki):
    """A directory read back from its claims is equal to the one that was written."""
    directory = pki.directory()
    assert Directory.from_claims(directory.to_claims()) == directory


def test_tables_are_sorted_so_equal_content_gives_equal_claims(pki: Pki):
    """The order in which entries were given does not change the signed claims."""
    one = pki.directory(participants=(pki.entry(LUZERN, LUZERN_NODE), pki.entry(KANTON, LUZERN_NODE)))
    other = pki.directory(participants=(pki.entry(KANTON, LUZERN_NODE), pki.entry(LUZERN, LUZERN_NODE)))
    assert one.to_claims() == other.to_claims()


def test_an_unknown_key_is_refused_with_its_path(pki: Pki):
    """A claim the reader does not know is refused, naming where it is."""
    claims = pki.directory().to_claims()
    claims["participants"][1]["certificates"][0]["x5u"] = "https://attacker.example/cert"
    with pytest.raises(MalformedDocument, match=r"participants\[1\]\.certificates\[0\]\.x5u: unknown key"):
        Directory.from_claims(claims)


def test_a_boolean_is_not_a_version(pki: Pki):
    """JSON true is refused where an integer is expected."""
    claims = pki.directory().to_claims()
    claims["version"] = True
    with pytest.raises(MalformedDocument, match="version: expected int"):
        Directory.from_claims(claims)


def test_a_test_participant_cannot_be_listed_as_production(pki: Pki):
    """A T-prefixed participant ID is always a test participant."""
    with pytest.raises(ValueError, match="test participant"):
        ParticipantEntry(ParticipantId("T1-1061-1"), LUZERN_NODE, Environment.PRODUCTION)


def test_a_node_url_must_be_https():
    """A plain-HTTP node address is refused."""
    with pytest.raises(ValueError, match="https"):
        NodeEntry("node-luzern", "http://luzern.example.ch:8080")


def test_a_participant_on_an_unlisted_node_is_refused(pki: Pki):
    """Every participant's node must be in the node table."""
    with pytest.raises(ValueError, match="not a listed node"):
        pki.directory(participants=(pki.entry(LUZERN, "node-elsewhere"),))


def test_a_certificate_naming_another_participant_is_refused(pki: Pki):
    """A participant's certificates carry its own ID as common name."""
    with pytest.raises(ValueError, match="names '2-LU-1'"):
        ParticipantEntry(LUZERN, LUZERN_NODE, Environment.PRODUCTION,
                         certificates=(CertificateEntry(CertificateUse.ENCRYPTION, pki.pem(KANTON, CertificateUse.ENCRYPTION)),))


@pytest.mark.parametrize("message_type", [-1, 2700000, "2011"])
def test_message_types_are_ech0090_integers(pki: Pki, message_type):
    """messageType is an integer from 0 to 2699999, as in eCH-0090."""
    with pytest.raises(ValueError, match="messageType"):
        ParticipantEntry(LUZERN, LUZERN_NODE, Environment.PRODUCTION, message_types=(message_type,))


def test_a_pem_is_stored_in_one_canonical_spelling(pki: Pki):
    """Whitespace around a PEM does not make a different certificate entry."""
    pem = pki.pem(LUZERN, CertificateUse.SIGNING)
    assert CertificateEntry(CertificateUse.SIGNING, "\n\n" + pem + "\n") == CertificateEntry(CertificateUse.SIGNING, pem)


def test_a_narrowing_window_must_not_be_empty(pki: Pki):
    """notBefore after notAfter is refused."""
    pem = pki.pem(LUZERN, CertificateUse.SIGNING)
    with pytest.raises(ValueError, match="notBefore"):
        CertificateEntry(CertificateUse.SIGNING, pem, not_before=pki.now, not_after=pki.now)
