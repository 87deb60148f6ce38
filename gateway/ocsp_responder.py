"""Development OCSP responder: answers for a development CA from its revocation list.

For development, the demo and tests only (``drehscheibe pki ocsp-responder``); production
uses the federation CA's responder. Speaks RFC 6960 over HTTP (POST of a DER request, or
GET with the base64 request in the path, appendix A.1), signs with the delegated
responder certificate of :meth:`DevelopmentCA.issue_ocsp_responder` (or, without one,
with the CA key itself), and answers:

* *revoked* for a serial in the CA's ``crl.pem`` (re-read when the file changes),
* *good* for a certificate the CA issued and that lies in the PKI directory,
* *unknown* for any other serial, and *unauthorized* for another CA's certificates.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from .pki import DevelopmentCA, IssuedIdentity, load_certificate, load_private_key

MAX_REQUEST_BYTES = 16 * 1024


class DevelopmentOcspResponder:
    """Signs OCSP responses for one development CA."""

    def __init__(
        self,
        ca: DevelopmentCA,
        *,
        responder: IssuedIdentity | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        validity: timedelta = timedelta(hours=1),
    ) -> None:
        self.ca = ca
        self.clock = clock
        self.validity = validity
        if responder is not None:
            self.signer_certificate = load_certificate(responder.certificate)
            self.signer_key: ec.EllipticCurvePrivateKey = load_private_key(responder.private_key)
        else:
            self.signer_certificate, self.signer_key = ca.certificate, ca.key
        self._crl_stamp: float | None = None
        self._revoked: dict[int, datetime] = {}
        self._issued: set[int] = set()

    def revoked(self) -> dict[int, datetime]:
        """Serial → revocation time, from the CA's crl.pem (re-read when it changed)."""
        path = self.ca.crl_path
        stamp = path.stat().st_mtime_ns if path.exists() else None
        if stamp != self._crl_stamp:
            self._revoked = {} if stamp is None else {e.serial_number: e.revocation_date_utc for e in x509.load_pem_x509_crl(path.read_bytes())}
            self._crl_stamp = stamp
        return self._revoked

    def issued(self, serial: int) -> bool:
        """Whether the CA issued ``serial``: the certificates in the PKI directory (rescanned on a miss)."""
        if serial not in self._issued:
            for path in Path(self.ca.directory).rglob("*.pem"):
                if path.name.endswith("-key.pem") or path.name in ("ca.pem", "crl.pem"):
                    continue
                try:
                    cert = load_certificate(path)
                    cert.verify_directly_issued_by(self.ca.certificate)
                except (ValueError, InvalidSignature, TypeError):
                    continue
                self._issued.add(cert.serial_number)
        return serial in self._issued

    def answer(self, request_der: bytes) -> bytes:
        """The DER response to a DER request."""
        try:
            request = ocsp.load_der_ocsp_request(request_der)
        except ValueError:
            return ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST).public_bytes(Encoding.DER)
        # The CA's own name and key hashes with the request's algorithm (the CA's certificate is its own issuer).
        own = ocsp.OCSPRequestBuilder().add_certificate(self.ca.certificate, self.ca.certificate, request.hash_algorithm).build()
        if (request.issuer_name_hash, request.issuer_key_hash) != (own.issuer_name_hash, own.issuer_key_hash):
            return ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED).public_bytes(Encoding.DER)
        now = self.clock()
        revoked_at = self.revoked().get(request.serial_number)
        if revoked_at is not None:
            status = ocsp.OCSPCertStatus.REVOKED
        elif self.issued(request.serial_number):
            status = ocsp.OCSPCertStatus.GOOD
        else:
            status = ocsp.OCSPCertStatus.UNKNOWN
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            request.issuer_name_hash, request.issuer_key_hash, request.serial_number, request.hash_algorithm, status,
            this_update=now - timedelta(minutes=1), next_update=now + self.validity,
            revocation_time=revoked_at, revocation_reason=None,
        )  # fmt: skip
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, self.signer_certificate)
        if self.signer_certificate is not self.ca.certificate:
            builder = builder.certificates([self.signer_certificate])
        return builder.sign(self.signer_key, hashes.SHA256()).public_bytes(Encoding.DER)

    def app(self) -> web.Application:
        async def post(request: web.Request) -> web.Response:
            body = await request.content.read(MAX_REQUEST_BYTES + 1)
            if len(body) > MAX_REQUEST_BYTES:
                raise web.HTTPRequestEntityTooLarge(MAX_REQUEST_BYTES, len(body))
            return web.Response(body=self.answer(body), content_type="application/ocsp-response")

        async def get(request: web.Request) -> web.Response:
            try:
                body = base64.b64decode(request.match_info["request"], validate=True)
            except ValueError:
                body = b""
            return web.Response(body=self.answer(body), content_type="application/ocsp-response")

        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_post("/", post)
        app.router.add_get("/{request:.+}", get)
        return app


@contextlib.asynccontextmanager
async def serving(responder: DevelopmentOcspResponder, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Run ``responder`` over HTTP on ``host``; yields its URL (``port=0``: any free port)."""
    runner = web.AppRunner(responder.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        bound = runner.addresses[0][1]
        yield f"http://{host}:{bound}/"
    finally:
        await runner.cleanup()
