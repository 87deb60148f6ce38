"""OCSP: which responses a verifier accepts, and what each mode decides per message."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from gateway.clock import FixedClock
from gateway.crypto.ocsp import (
    OcspChecker,
    OcspError,
    OcspMode,
    OcspSettings,
    certificates_in_tokens,
    ocsp_request,
    responder_urls,
    verify_ocsp_response,
)
from gateway.crypto.seal import CertificateError, SigningIdentity, TrustStore
from gateway.ids import ParticipantId, StatusCode
from gateway.ocsp_responder import DevelopmentOcspResponder, serving
from gateway.pki import DevelopmentCA, load_certificate, load_private_key

LUZERN = ParticipantId("1-1061-1")
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


class Pki:
    def __init__(self, directory):
        self.ca = DevelopmentCA(directory / "ca", now=NOW)
        signing, _ = self.ca.issue_participant(LUZERN, self.ca.directory / "participants")
        self.cert = load_certificate(signing.certificate)
        self.signing = signing
        responder = self.ca.issue_ocsp_responder()
        self.responder_cert = load_certificate(responder.certificate)
        self.responder_key = load_private_key(responder.private_key)
        self.responder = responder
        self.other = DevelopmentCA(directory / "other-ca", now=NOW)

    def delegate(self, *, eku: bool = True, issuer: DevelopmentCA | None = None):
        """A delegated responder certificate of ``issuer`` (default: the participant's CA)."""
        issuer = issuer or self.ca
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a delegated responder")])
        extra = [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING if eku else ExtendedKeyUsageOID.CLIENT_AUTH]), False)]
        cert = issuer._issue(subject, key, x509.KeyUsage(True, False, False, False, False, False, False, False, False), extra=extra)
        return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("ocsp-pki"))


def response(pki, status=ocsp.OCSPCertStatus.GOOD, *, signer=None, key=None, this_update=NOW - timedelta(minutes=1),
             next_update=NOW + HOUR, cert=None, embed=True, by_name=False) -> bytes:  # fmt: skip
    """A real OCSP response about ``cert`` built and signed with cryptography's OCSPResponseBuilder."""
    signer = signer or pki.responder_cert
    key = key or pki.responder_key
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert or pki.cert, pki.ca.certificate, hashes.SHA1(), status, this_update, next_update,
        NOW - HOUR if status is ocsp.OCSPCertStatus.REVOKED else None, None,
    )  # fmt: skip
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.NAME if by_name else ocsp.OCSPResponderEncoding.HASH, signer)
    if embed and signer is not pki.ca.certificate:
        builder = builder.certificates([signer])
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)


# -- verifying one response ------------------------------------------------------------------


def test_a_good_answer_from_the_delegated_responder_is_accepted_until_its_next_update(pki):
    """A response signed by the CA's delegated responder says good, valid from thisUpdate to nextUpdate."""
    answer = verify_ocsp_response(response(pki), pki.cert, pki.ca.certificate, NOW)
    assert answer.status is ocsp.OCSPCertStatus.GOOD
    assert answer.valid_until == NOW + HOUR and answer.fresh_at(NOW + HOUR) and not answer.fresh_at(NOW + HOUR + timedelta(seconds=1))


def test_an_answer_signed_by_the_issuing_ca_itself_is_accepted(pki):
    """The issuing CA may sign its OCSP responses directly."""
    der = response(pki, ocsp.OCSPCertStatus.REVOKED, signer=pki.ca.certificate, key=pki.ca.key)
    answer = verify_ocsp_response(der, pki.cert, pki.ca.certificate, NOW)
    assert answer.status is ocsp.OCSPCertStatus.REVOKED and answer.revoked_at == NOW - HOUR


def test_an_unknown_answer_is_read_as_unknown(pki):
    """A responder that does not know the certificate says so; the mode decides what that means."""
    answer = verify_ocsp_response(response(pki, ocsp.OCSPCertStatus.UNKNOWN), pki.cert, pki.ca.certificate, NOW)
    assert answer.status is ocsp.OCSPCertStatus.UNKNOWN


@pytest.mark.parametrize(
    ("this_update", "next_update"),
    [(NOW - 2 * HOUR, NOW - HOUR), (NOW + timedelta(minutes=6), NOW + HOUR)],
    ids=["past-next-update", "this-update-in-the-future"],
)
def test_an_answer_outside_its_validity_is_refused(pki, this_update, next_update):
    """A response is usable only from thisUpdate (five minutes of skew tolerated) to nextUpdate."""
    der = response(pki, this_update=this_update, next_update=next_update)
    with pytest.raises(OcspError, match="not fresh"):
        verify_ocsp_response(der, pki.cert, pki.ca.certificate, NOW)


def test_an_answer_signed_by_a_wrong_key_is_refused(pki):
    """A response naming the CA as responder but signed with another key (an impostor CA of the same name) does not verify."""
    assert pki.other.certificate.subject == pki.ca.certificate.subject
    der = response(pki, signer=pki.other.certificate, key=pki.other.key, by_name=True, embed=False)
    with pytest.raises(OcspError, match="signature does not verify"):
        verify_ocsp_response(der, pki.cert, pki.ca.certificate, NOW)


def test_a_responder_certificate_from_another_ca_is_refused(pki):
    """A delegated responder must be issued by the certificate's own CA."""
    cert, key = pki.delegate(issuer=pki.other)
    with pytest.raises(OcspError, match="not issued by the certificate's CA"):
        verify_ocsp_response(response(pki, signer=cert, key=key), pki.cert, pki.ca.certificate, NOW)


def test_a_delegated_responder_without_the_ocsp_signing_usage_is_refused(pki):
    """A certificate of the right CA without the OCSP-signing EKU cannot vouch for anyone's status."""
    cert, key = pki.delegate(eku=False)
    with pytest.raises(OcspError, match="not authorised for OCSP signing"):
        verify_ocsp_response(response(pki, signer=cert, key=key), pki.cert, pki.ca.certificate, NOW)


def test_a_delegated_responder_outside_its_validity_is_refused(pki):
    """The delegated responder's own certificate must be valid at the check's time."""
    later = NOW + timedelta(days=31)
    der = response(pki, this_update=later, next_update=later + HOUR)
    with pytest.raises(OcspError, match="responder certificate is not valid"):
        verify_ocsp_response(der, pki.cert, pki.ca.certificate, later)


def test_a_response_without_the_responder_certificate_is_refused(pki):
    """A delegated responder's response that does not carry its certificate has no verifiable signer."""
    with pytest.raises(OcspError, match="not signed by the certificate's CA or a responder it authorised"):
        verify_ocsp_response(response(pki, embed=False), pki.cert, pki.ca.certificate, NOW)


def test_a_good_answer_about_another_certificate_is_refused(pki):
    """A response is about exactly the certificate asked for (issuer hashes and serial number)."""
    node = load_certificate(pki.ca.issue_node("node-x", pki.ca.directory / "nodes").certificate)
    with pytest.raises(OcspError, match="not about this certificate"):
        verify_ocsp_response(response(pki, cert=node), pki.cert, pki.ca.certificate, NOW)


def test_an_unsuccessful_or_unreadable_response_is_refused(pki):
    """tryLater and bytes that are not OCSP are both errors, never a status."""
    busy = ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER).public_bytes(Encoding.DER)
    with pytest.raises(OcspError, match="answered try_later"):
        verify_ocsp_response(busy, pki.cert, pki.ca.certificate, NOW)
    with pytest.raises(OcspError, match="not a DER OCSP response"):
        verify_ocsp_response(b"<html>", pki.cert, pki.ca.certificate, NOW)


def test_a_request_names_the_certificate_and_its_issuer(pki):
    """The request built for a certificate carries its serial number and its issuer's hashes."""
    request = ocsp.load_der_ocsp_request(ocsp_request(pki.cert, pki.ca.certificate))
    assert request.serial_number == pki.cert.serial_number
    assert request.issuer_key_hash == x509.SubjectKeyIdentifier.from_public_key(pki.ca.certificate.public_key()).digest


async def test_the_responder_url_comes_from_the_certificate_when_not_configured(pki):
    """Without ocsp_responder, the checker asks the responder named in the certificate's Authority Information Access."""
    responder = DevelopmentOcspResponder(pki.ca, responder=pki.responder, clock=lambda: NOW)
    async with serving(responder) as url:
        key = ec.generate_private_key(ec.SECP256R1())
        aia = x509.AuthorityInformationAccess([x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(url))])
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node-aia")])
        cert = pki.ca._issue(subject, key, x509.KeyUsage(True, False, False, False, False, False, False, False, False), extra=[(aia, False)])
        assert responder_urls(cert) == [url] and responder_urls(pki.cert) == []
        check = OcspChecker(OcspSettings(OcspMode.REQUIRE), clock=lambda: NOW)
        answer = await check.fetch(cert, pki.ca.certificate)
        assert answer.status is ocsp.OCSPCertStatus.UNKNOWN  # issued, but not kept in the PKI directory
        with pytest.raises(OcspError, match="no OCSP responder configured and the certificate names none"):
            await check.fetch(pki.cert, pki.ca.certificate)


def test_the_certificates_a_token_carries_are_found_for_prefetching(pki):
    """The x5c certificates of signed tokens, and of tokens nested in named claims, are read (unverified) so their status can be fetched first."""
    signer = SigningIdentity.from_key(str(LUZERN), load_private_key(pki.signing.private_key), pki.cert)
    issued = pki.ca.issue_node("node-relay", pki.ca.directory / "nodes")
    relay = SigningIdentity.from_key("node-relay", load_private_key(issued.private_key), load_certificate(issued.certificate))
    inner = signer.sign("t", {"a": 1})
    outer = relay.sign("t", {"receipt": inner})
    assert certificates_in_tokens([inner, "garbage", ""]) == [pki.cert]
    assert certificates_in_tokens([outer]) == [relay.certificate]
    assert certificates_in_tokens([outer], nested=("receipt",)) == [relay.certificate, pki.cert]


# -- the checker: background fetching and per-message decisions ---------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def checker(mode: OcspMode, url: str, world) -> tuple[OcspChecker, TrustStore]:
    """An OCSP checker asking ``url``, and a trust store (the federation CA, no CRL) consulting it."""
    pki, clock = world
    check = OcspChecker(OcspSettings(mode, url, timeout_seconds=2.0), clock=clock.now)
    return check, TrustStore([pki.ca.certificate], ocsp=check)


@pytest.fixture
def world(pki):
    return pki, FixedClock(NOW)


def consult(trust: TrustStore, world) -> None:
    """The per-message check of the participant's signing certificate."""
    pki, clock = world
    trust.check(pki.cert, name=str(LUZERN), usage="digital_signature", now=clock.now())


@pytest.mark.parametrize("mode", [OcspMode.PREFER, OcspMode.REQUIRE])
async def test_a_revoked_answer_refuses_the_certificate_with_312_in_both_modes(world, mode):
    """A certificate revoked at the responder (in no CRL the node has) is refused once the answer is fetched."""
    pki, clock = world
    responder = DevelopmentOcspResponder(pki.ca, responder=pki.responder, clock=clock.now)
    async with serving(responder) as url:
        check, trust = checker(mode, url, world)
        check.watch(pki.cert, pki.ca.certificate)
        assert await check.refresh() == 1
        consult(trust, world)
        pki.ca.revoke(pki.cert)
        try:
            clock.advance(minutes=31)  # past half the answer's life: the next refresh asks again
            assert await check.refresh() == 1
            with pytest.raises(CertificateError, match=r"revoked \(OCSP\)") as refused:
                consult(trust, world)
            assert refused.value.status is StatusCode.CERTIFICATE_NOT_VALID
        finally:
            pki.ca.write_crl({})


async def test_a_revocation_seen_once_outlives_its_response(world):
    """Revocation is final: after the revoked answer ages and the responder is gone, prefer still refuses."""
    pki, clock = world
    responder = DevelopmentOcspResponder(pki.ca, responder=pki.responder, clock=clock.now)
    pki.ca.revoke(pki.cert)
    try:
        async with serving(responder) as url:
            check, trust = checker(OcspMode.PREFER, url, world)
            check.watch(pki.cert, pki.ca.certificate)
            await check.refresh()
    finally:
        pki.ca.write_crl({})
    clock.advance(hours=3)
    with pytest.raises(CertificateError, match="revoked"):
        consult(trust, world)


async def test_an_unreachable_responder_is_tolerated_under_prefer_and_refused_under_require(world):
    """With nothing fresh to consult, prefer leaves the decision to the CRLs; require fails closed with 312."""
    pki, clock = world
    url = f"http://127.0.0.1:{free_port()}/"
    prefer, prefer_trust = checker(OcspMode.PREFER, url, world)
    prefer.watch(pki.cert, pki.ca.certificate)
    assert await prefer.refresh() == 0
    consult(prefer_trust, world)
    require, require_trust = checker(OcspMode.REQUIRE, url, world)
    require.watch(pki.cert, pki.ca.certificate)
    assert await require.refresh() == 0
    with pytest.raises(CertificateError, match="no fresh OCSP response") as refused:
        consult(require_trust, world)
    assert refused.value.status is StatusCode.CERTIFICATE_NOT_VALID


async def test_require_refuses_once_the_good_answer_is_past_its_next_update(world):
    """A good answer counts only until nextUpdate; without a newer one, require refuses again."""
    pki, clock = world
    responder = DevelopmentOcspResponder(pki.ca, responder=pki.responder, clock=clock.now)
    async with serving(responder) as url:
        check, trust = checker(OcspMode.REQUIRE, url, world)
        check.watch(pki.cert, pki.ca.certificate)
        await check.refresh()
    consult(trust, world)
    clock.advance(hours=1, minutes=1)
    with pytest.raises(CertificateError, match="no fresh OCSP response"):
        consult(trust, world)


async def test_an_unknown_answer_is_refused_under_require_and_tolerated_under_prefer(world):
    """A certificate the responder does not know has no good status: require refuses it."""
    pki, clock = world
    stranger = load_certificate(pki.ca.issue_node("node-stranger", pki.ca.directory.parent / "elsewhere").certificate)
    responder = DevelopmentOcspResponder(pki.ca, responder=pki.responder, clock=clock.now)
    async with serving(responder) as url:
        outcomes = {}
        for mode in (OcspMode.PREFER, OcspMode.REQUIRE):
            check, trust = checker(mode, url, world)
            check.watch(stranger, pki.ca.certificate)
            await check.refresh()
            try:
                trust.check(stranger, name="node-stranger", usage="digital_signature", now=clock.now())
                outcomes[mode] = "accepted"
            except CertificateError as error:
                outcomes[mode] = error.info
    assert outcomes == {OcspMode.PREFER: "accepted", OcspMode.REQUIRE: "certificate of node-stranger is unknown to the OCSP responder"}


async def test_a_certificate_seen_for_the_first_time_is_fetched_in_the_background(world):
    """The first per-message check under require refuses and starts a fetch; once it lands, the check passes."""
    pki, clock = world
    responder = DevelopmentOcspResponder(pki.ca, responder=pki.responder, clock=clock.now)
    async with serving(responder) as url:
        check, trust = checker(OcspMode.REQUIRE, url, world)
        with pytest.raises(CertificateError, match="no fresh OCSP response"):
            consult(trust, world)
        await check.settled()
        consult(trust, world)


async def test_prepare_fetches_the_status_of_certificates_a_transfer_carries(world):
    """Before a synchronous verification, prepare fetches answers for federation certificates only."""
    pki, clock = world
    foreign = load_certificate(pki.other.issue_node("node-foreign", pki.other.directory / "nodes").certificate)
    responder = DevelopmentOcspResponder(pki.ca, responder=pki.responder, clock=clock.now)
    async with serving(responder) as url:
        check, trust = checker(OcspMode.REQUIRE, url, world)
        await check.prepare([pki.cert, foreign], trust.anchors)
        consult(trust, world)
        assert await check.refresh() == 0, "only the federation certificate is watched, and its answer is fresh"


async def test_a_response_from_a_responder_of_another_ca_is_not_stored(world):
    """A responder answering with another CA's signature is logged and leaves require refusing."""
    pki, clock = world
    impostor = DevelopmentOcspResponder(pki.other, clock=clock.now)
    impostor.ca = pki.ca  # answers about the federation CA's certificates, signed with the other CA's key
    impostor.signer_certificate, impostor.signer_key = pki.other.certificate, pki.other.key
    async with serving(impostor) as url:
        check, trust = checker(OcspMode.REQUIRE, url, world)
        check.watch(pki.cert, pki.ca.certificate)
        assert await check.refresh() == 0
    with pytest.raises(CertificateError, match="no fresh OCSP response"):
        consult(trust, world)


def test_off_never_consults_anything(pki):
    """ocsp = off: the trust store decides with the CRLs alone, and nothing is watched."""
    check = OcspChecker(OcspSettings(), clock=lambda: NOW)
    trust = TrustStore([pki.ca.certificate], ocsp=check)
    check.watch(pki.cert, pki.ca.certificate)
    trust.check(pki.cert, name=str(LUZERN), usage="digital_signature", now=NOW)
    assert not check.enabled and check._watched == {}


def test_the_issuing_anchor_is_found_among_anchors_that_share_a_name(pki):
    """During a CA key rollover two anchors have the same name: the answer is looked up under the one that signed."""
    from gateway.crypto.ocsp import issuing_anchor

    assert pki.other.certificate.subject == pki.ca.certificate.subject
    assert issuing_anchor(pki.cert, (pki.other.certificate, pki.ca.certificate)) is pki.ca.certificate
    assert issuing_anchor(pki.cert, (pki.ca.certificate,)) is pki.ca.certificate


async def test_a_check_about_a_past_moment_refuses_only_a_known_revocation(world):
    """The directory's structural check and the re-check of a stored seal look at the past: no answer says nothing, a revocation still refuses."""
    pki, clock = world
    check, trust = checker(OcspMode.REQUIRE, f"http://127.0.0.1:{free_port()}/", world)
    earlier = clock.now()
    clock.advance(hours=2)
    trust.check(pki.cert, name=str(LUZERN), usage="digital_signature", now=earlier)
    assert check._tasks == set(), "a check about the past starts no fetch"
    responder = DevelopmentOcspResponder(pki.ca, responder=pki.responder, clock=clock.now)
    pki.ca.revoke(pki.cert)
    try:
        async with serving(responder) as url:
            check, trust = checker(OcspMode.REQUIRE, url, world)
            check.watch(pki.cert, pki.ca.certificate)
            await check.refresh()
    finally:
        pki.ca.write_crl({})
    with pytest.raises(CertificateError, match="revoked"):
        trust.check(pki.cert, name=str(LUZERN), usage="digital_signature", now=earlier)
