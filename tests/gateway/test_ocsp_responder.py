"""The development OCSP responder: real signed answers over HTTP from the development CA's revocation list."""

from __future__ import annotations

import base64
from datetime import datetime, timezone

import aiohttp
import pytest
from cryptography import x509
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.crypto.ocsp import OcspError, ocsp_request, verify_ocsp_response
from gateway.ids import ParticipantId
from gateway.ocsp_responder import DevelopmentOcspResponder, serving
from gateway.pki import DevelopmentCA, load_certificate

from ..conftest import LUZERN

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def pki(tmp_path):
    ca = DevelopmentCA(tmp_path / "pki", now=NOW)
    signing, _ = ca.issue_participant(ParticipantId(LUZERN), ca.directory / "participants")
    return ca, load_certificate(signing.certificate), DevelopmentOcspResponder(ca, responder=ca.issue_ocsp_responder(), clock=lambda: NOW)


async def ask(url: str, cert, issuer, *, method: str = "POST") -> bytes:
    request = ocsp_request(cert, issuer)
    async with aiohttp.ClientSession() as session:
        if method == "POST":
            call = session.post(url, data=request, headers={"Content-Type": "application/ocsp-request"})
        else:
            call = session.get(url + base64.b64encode(request).decode())
        async with call as reply:
            assert reply.status == 200 and reply.content_type == "application/ocsp-response"
            return await reply.read()


async def test_the_responder_answers_good_then_revoked_after_the_ca_revokes(pki):
    """An issued certificate is good; once in the CA's crl.pem, the next answer says revoked (POST and GET alike)."""
    ca, cert, responder = pki
    async with serving(responder) as url:
        good = verify_ocsp_response(await ask(url, cert, ca.certificate), cert, ca.certificate, NOW)
        ca.revoke(cert)
        revoked = verify_ocsp_response(await ask(url, cert, ca.certificate, method="GET"), cert, ca.certificate, NOW)
    assert (good.status, revoked.status) == (ocsp.OCSPCertStatus.GOOD, ocsp.OCSPCertStatus.REVOKED)
    assert revoked.revoked_at is not None


async def test_the_responder_says_unknown_for_a_serial_its_ca_never_issued_here(pki, tmp_path):
    """A certificate of the CA that is not in the PKI directory is unknown to the responder."""
    ca, _, responder = pki
    elsewhere = load_certificate(ca.issue_node("node-elsewhere", tmp_path / "elsewhere").certificate)
    async with serving(responder) as url:
        answer = verify_ocsp_response(await ask(url, elsewhere, ca.certificate), elsewhere, ca.certificate, NOW)
    assert answer.status is ocsp.OCSPCertStatus.UNKNOWN


async def test_the_responder_refuses_to_answer_for_another_ca(pki, tmp_path):
    """A request about another CA's certificate gets an unauthorized response, never a status."""
    ca, _, responder = pki
    other = DevelopmentCA(tmp_path / "other", now=NOW)
    foreign, _ = other.issue_participant(ParticipantId(LUZERN), tmp_path / "other-participants")
    cert = load_certificate(foreign.certificate)
    async with serving(responder) as url:
        der = await ask(url, cert, other.certificate)
    with pytest.raises(OcspError, match="answered unauthorized"):
        verify_ocsp_response(der, cert, other.certificate, NOW)


def test_the_cli_issues_a_delegated_responder_certificate_for_ocsp_signing_only(tmp_path, capsys):
    """`drehscheibe pki ocsp-responder --issue-only` writes a responder certificate with the OCSP-signing EKU and ocsp-nocheck."""
    from gateway.cli import main

    assert main(["pki", "init", "--dir", str(tmp_path)]) == 0
    assert main(["pki", "ocsp-responder", "--dir", str(tmp_path), "--issue-only"]) == 0
    cert = load_certificate(tmp_path / "ocsp-responder.pem")
    assert str(tmp_path / "ocsp-responder.pem") in capsys.readouterr().out
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    assert cert.extensions.get_extension_for_class(x509.OCSPNoCheck) is not None
    cert.verify_directly_issued_by(load_certificate(tmp_path / "ca.pem"))
    assert oct((tmp_path / "ocsp-responder-key.pem").stat().st_mode & 0o777) == "0o600"
