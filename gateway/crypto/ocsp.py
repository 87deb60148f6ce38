"""OCSP revocation checking (RFC 6960) for the federation's certificates.

The per-message check (:meth:`OcspChecker.consult`, called by ``TrustStore.check_validity``
beside the CRL check) is synchronous and never touches the network: it reads a cache of
*verified* responses. Responses are fetched in the background: for every certificate the
node holds at start and at each refresh round, for a certificate seen for the first time
(``consult`` schedules a fetch), and on the asynchronous receive paths the certificates a
transfer carries are fetched before it is verified (:meth:`OcspChecker.prepare`).

Modes (``[tls] ocsp``; docs/operations.md):

* ``off`` (default): no OCSP; CRLs alone decide.
* ``prefer``: a fresh, correctly signed answer *revoked* refuses (312); *good* passes; no
  answer (responder unreachable, bad signature, stale) or *unknown* leaves the decision to
  the CRLs (logged).
* ``require``: only a fresh, correctly signed *good* answer passes. Revoked, unknown, stale,
  badly signed or missing answers all refuse with 312 (fail closed).

In every mode a certificate once seen *revoked* in a verified response stays revoked for
this process, even after that response ages: X.509 revocation is final.

A response is accepted only when it is signed by the certificate's issuing CA, or by a
delegated responder certificate that the same CA issued directly, that carries the
OCSP-signing extended key usage and is valid at the check's time; it must be about exactly
the certificate asked for (issuer name and key hashes, serial number), and it is fresh from
``thisUpdate`` (five minutes of clock skew tolerated) to ``nextUpdate`` (or one hour after
``thisUpdate`` when the responder gives no ``nextUpdate``). Requests carry no nonce:
responses are cached and usually pre-produced (RFC 5019), so freshness comes from
``thisUpdate``/``nextUpdate``, never from the request.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from .seal import CertificateError, common_name

log = logging.getLogger("drehscheibe.ocsp")

CLOCK_SKEW = timedelta(minutes=5)  # a responder's clock may run this far ahead of ours
DEFAULT_MAX_AGE = timedelta(hours=1)  # freshness of a response that gives no nextUpdate
RETRY_AFTER = timedelta(seconds=30)  # a certificate without a fresh answer is fetched again at most this often
MAX_RESPONSE_BYTES = 64 * 1024
MAX_WATCHED = 10_000
MAX_CONCURRENT_FETCHES = 8

CertificateKey = tuple[bytes, int]  # (SHA-256 of the issuer certificate, serial number)


class OcspMode(Enum):
    OFF = "off"
    PREFER = "prefer"
    REQUIRE = "require"


@dataclass(frozen=True)
class OcspSettings:
    """``[tls] ocsp*`` of the node file."""

    mode: OcspMode = OcspMode.OFF
    responder: str | None = None  # overrides the responder URL in the certificates (AIA)
    timeout_seconds: float = 5.0  # one HTTP exchange with the responder
    refresh_seconds: float = 300.0  # how often the background task looks for answers past half their life


class OcspError(CertificateError):
    """An OCSP response that cannot be used: not signed by the issuer or its delegate, about
    another certificate, not fresh, or not obtainable."""


@dataclass(frozen=True)
class OcspAnswer:
    """What a verified OCSP response says about one certificate, and for how long."""

    status: ocsp.OCSPCertStatus
    this_update: datetime
    valid_until: datetime  # nextUpdate, or thisUpdate + DEFAULT_MAX_AGE
    revoked_at: datetime | None = None

    def fresh_at(self, now: datetime) -> bool:
        return self.this_update - CLOCK_SKEW <= now <= self.valid_until

    def due_at(self, now: datetime) -> bool:
        """Time to fetch a newer answer: half of this one's life has passed."""
        return now >= self.this_update + (self.valid_until - self.this_update) / 2


def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
    """A DER OCSP request for ``cert``. The CertID uses SHA-1, which every responder must
    support (RFC 5019); it only identifies the certificate, the response's signature is what
    is trusted."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())  # noqa: S303
    return builder.build().public_bytes(Encoding.DER)


def responder_urls(cert: x509.Certificate) -> list[str]:
    """The OCSP responder URLs the certificate names (Authority Information Access)."""
    try:
        access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [
        d.access_location.value
        for d in access
        if d.access_method == AuthorityInformationAccessOID.OCSP and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]


def verify_ocsp_response(der: bytes, cert: x509.Certificate, issuer: x509.Certificate, now: datetime) -> OcspAnswer:
    """Verify a DER OCSP response about ``cert`` (issued by ``issuer``) at ``now``; raise :class:`OcspError`.

    A verifier MUST check, in this order: the response status is *successful*; the signer is
    the issuer, or a certificate in the response that the issuer signed directly, with the
    OCSP-signing EKU, valid at ``now``; the signature over the response data verifies with
    the signer's key; a single response names exactly this certificate; and it is fresh.
    """
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError:
        raise OcspError("OCSP response is not a DER OCSP response") from None
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise OcspError(f"OCSP responder answered {response.response_status.name.lower()}")
    signer = _response_signer(response, issuer, now)
    _verify_signature(signer, response)
    single = _single_response_for(response, cert, issuer)
    this_update = single.this_update_utc
    answer = OcspAnswer(
        status=single.certificate_status,
        this_update=this_update,
        valid_until=single.next_update_utc or this_update + DEFAULT_MAX_AGE,
        revoked_at=single.revocation_time_utc if single.certificate_status is ocsp.OCSPCertStatus.REVOKED else None,
    )
    if not answer.fresh_at(now):
        raise OcspError(f"OCSP response is not fresh at {now.isoformat(timespec='seconds')} (valid {this_update.isoformat(timespec='seconds')} to {answer.valid_until.isoformat(timespec='seconds')})")
    return answer


def _names_responder(response: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    if response.responder_name is not None:
        return response.responder_name == cert.subject
    # byKey: SHA-1 of the subjectPublicKey bits, which is how SubjectKeyIdentifier.from_public_key hashes.
    return response.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _response_signer(response: ocsp.OCSPResponse, issuer: x509.Certificate, now: datetime) -> x509.Certificate:
    if _names_responder(response, issuer):
        return issuer
    for candidate in response.certificates:
        if not _names_responder(response, candidate):
            continue
        # SECURITY: a delegated responder is trusted only for the CA that issued it directly,
        # and only with the OCSP-signing EKU: any other certificate of the federation (a
        # participant's, a node's) cannot vouch for anyone's status.
        try:
            candidate.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError):
            raise OcspError("OCSP responder certificate is not issued by the certificate's CA") from None
        try:
            usages = candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usages = x509.ExtendedKeyUsage([])
        if ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
            raise OcspError("OCSP responder certificate is not authorised for OCSP signing")
        if not (candidate.not_valid_before_utc <= now <= candidate.not_valid_after_utc):
            raise OcspError(f"OCSP responder certificate is not valid at {now.isoformat(timespec='seconds')}")
        return candidate
    raise OcspError("OCSP response is not signed by the certificate's CA or a responder it authorised")


def _verify_signature(signer: x509.Certificate, response: ocsp.OCSPResponse) -> None:
    key = signer.public_key()
    algorithm = response.signature_hash_algorithm
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))
        elif isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(response.signature, response.tbs_response_bytes, padding.PKCS1v15(), algorithm)
        else:
            raise OcspError("OCSP response is signed with an unsupported algorithm")
    except InvalidSignature:
        raise OcspError("OCSP response signature does not verify") from None


def _single_response_for(response: ocsp.OCSPResponse, cert: x509.Certificate, issuer: x509.Certificate) -> ocsp.OCSPSingleResponse:
    for single in response.responses:
        try:
            expected = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, single.hash_algorithm).build()
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
        if (single.serial_number, single.issuer_name_hash, single.issuer_key_hash) == (
            expected.serial_number, expected.issuer_name_hash, expected.issuer_key_hash,
        ):  # fmt: skip
            return single
    raise OcspError("OCSP response is not about this certificate")


def certificates_in_tokens(tokens: Iterable[str], *, nested: tuple[str, ...] = ()) -> list[x509.Certificate]:
    """The certificates (``x5c``) that compact JWS tokens carry, unverified: only to know what
    to fetch before the tokens are verified. ``nested`` names claims that hold further tokens
    (a returned receipt carries the final receipt), read one level deep. Unreadable tokens are
    skipped (verification refuses them later)."""
    found = []
    for token in tokens:
        try:
            parts = token.split(".")
            header = json.loads(_unb64(parts[0]))
            found.append(x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0])))
            if nested:
                claims = json.loads(_unb64(parts[1]))
                found += certificates_in_tokens([claims[n] for n in nested if isinstance(claims.get(n), str)])
        except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
            continue
    return found


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class OcspChecker:
    """A cache of verified OCSP answers, kept fresh in the background; consulted per message.

    One checker lives as long as the node: it survives trust-store reloads (CRL rereads).
    """

    def __init__(self, settings: OcspSettings, *, clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self._clock = clock
        self._answers: dict[CertificateKey, OcspAnswer] = {}
        self._revoked: dict[CertificateKey, datetime | None] = {}
        self._watched: dict[CertificateKey, tuple[x509.Certificate, x509.Certificate]] = {}
        self._last_attempt: dict[CertificateKey, datetime] = {}
        self._in_flight: set[CertificateKey] = set()
        self._tasks: set[asyncio.Task] = set()  # first-sight fetches; referenced so they are not collected
        self._limit = asyncio.Semaphore(MAX_CONCURRENT_FETCHES)
        self._issuer_ids: dict[int, tuple[x509.Certificate, bytes]] = {}

    @property
    def enabled(self) -> bool:
        return self.settings.mode is not OcspMode.OFF

    def key(self, cert: x509.Certificate, issuer: x509.Certificate) -> CertificateKey:
        # The issuer's fingerprint is remembered per anchor object: hashing its DER for every
        # message would cost more than the rest of the check.
        known = self._issuer_ids.get(id(issuer))
        if known is None or known[0] is not issuer:
            if len(self._issuer_ids) > 64:  # anchors are re-created on every trust reload
                self._issuer_ids.clear()
            known = self._issuer_ids[id(issuer)] = (issuer, issuer.fingerprint(hashes.SHA256()))
        return known[1], cert.serial_number

    # -- the per-message check (synchronous, cache only) ---------------------------------

    def consult(self, cert: x509.Certificate, anchors: tuple[x509.Certificate, ...], *, name: str, now: datetime) -> None:
        """Raise :class:`CertificateError` (312) when OCSP says no for ``cert`` at ``now``.

        The caller has verified that one of ``anchors`` issued ``cert`` (``TrustStore.check``).
        OCSP answers speak about the present, so freshness is judged by this checker's clock.
        A check about a past moment (the directory's structural check at a certificate's
        start, the re-check of a stored seal as of its reception) is refused only for a known
        revocation (as with CRLs, whatever the revocation date); a missing answer says nothing
        about the past, and such checks neither refuse nor trigger fetches.
        """
        mode = self.settings.mode
        if mode is OcspMode.OFF:
            return
        require = mode is OcspMode.REQUIRE
        issuer = issuing_anchor(cert, anchors)
        if issuer is None:
            if require:
                raise CertificateError(f"certificate of {name}: its issuer is not a trust anchor, no OCSP status")
            return
        key = self.key(cert, issuer)
        # SECURITY: revocation is final; a verified *revoked* answer is never outlived by time.
        if key in self._revoked:
            raise CertificateError(f"certificate of {name} is revoked (OCSP)")
        present = self._clock()
        if now < present - CLOCK_SKEW:
            return
        answer = self._answers.get(key)
        if answer is None or not answer.fresh_at(present):
            self._fetch_soon(cert, issuer, present)
            if require:
                # SECURITY: fail closed: no fresh, verified answer, no message.
                raise CertificateError(f"certificate of {name}: no fresh OCSP response (ocsp = require)")
            return
        if answer.status is ocsp.OCSPCertStatus.UNKNOWN and require:
            raise CertificateError(f"certificate of {name} is unknown to the OCSP responder")

    # -- background fetching ---------------------------------------------------------------

    def watch(self, cert: x509.Certificate, issuer: x509.Certificate) -> None:
        """Keep an answer for ``cert`` fresh from now on (fetched at the next :meth:`refresh`)."""
        if not self.enabled:
            return
        key = self.key(cert, issuer)
        if key not in self._watched:
            if len(self._watched) >= MAX_WATCHED:
                # Bounded: certificates are federation-issued, but a long-running node sees many.
                stale = next(iter(self._watched))
                self._watched.pop(stale)
                self._answers.pop(stale, None)
                self._last_attempt.pop(stale, None)
            self._watched[key] = (cert, issuer)

    def _fetch_soon(self, cert: x509.Certificate, issuer: x509.Certificate, now: datetime) -> None:
        """First sight, or a stale answer: fetch in the background (at most every RETRY_AFTER)."""
        self.watch(cert, issuer)
        key = self.key(cert, issuer)
        last = self._last_attempt.get(key)
        if key in self._in_flight or (last is not None and now - last < RETRY_AFTER):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (node start-up): the first refresh fetches it
        self._last_attempt[key] = now
        task = loop.create_task(self._fetch_and_store(key), name="ocsp-fetch")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def refresh(self) -> int:
        """Fetch answers for every watched certificate that has none or whose answer is past
        half its life; return how many were stored. Failures are logged and leave the old
        answer in place until it is no longer fresh."""
        if not self.enabled:
            return 0
        now = self._clock()
        due = [
            k for k in self._watched
            if k not in self._revoked and k not in self._in_flight and (k not in self._answers or self._answers[k].due_at(now))
        ]  # fmt: skip
        stored = await asyncio.gather(*(self._fetch_and_store(k) for k in due))
        return sum(stored)

    async def prepare(self, certificates: Iterable[x509.Certificate], anchors: Iterable[x509.Certificate]) -> None:
        """Before a synchronous verification on an async path: fetch answers for the given
        certificates that have no fresh one (first sight), bounded by the timeout.

        Certificates not issued directly by an anchor are ignored (verification refuses them);
        so a stranger cannot make the node fetch for arbitrary certificates.
        """
        if not self.enabled:
            return
        now = self._clock()
        anchors = tuple(anchors)
        keys = []
        for cert in certificates:
            issuer = issuing_anchor(cert, anchors)
            if issuer is None:
                continue
            key = self.key(cert, issuer)
            answer = self._answers.get(key)
            last = self._last_attempt.get(key)
            if key in self._revoked or (answer is not None and answer.fresh_at(now)) or key in self._in_flight:
                continue
            if last is not None and now - last < RETRY_AFTER:
                continue  # the responder failed a moment ago: do not hold every transfer up for it
            if not _issued_by(cert, issuer):
                continue  # checked only before a fetch, so a known certificate costs no signature check here
            self.watch(cert, issuer)
            self._last_attempt[key] = now
            keys.append(key)
        if keys:
            await asyncio.gather(*(self._fetch_and_store(k) for k in keys))

    async def _fetch_and_store(self, key: CertificateKey) -> bool:
        entry = self._watched.get(key)
        if entry is None:
            return False
        cert, issuer = entry
        self._in_flight.add(key)
        try:
            async with self._limit:
                answer = await self.fetch(cert, issuer)
        except (OcspError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            reason = error.info if isinstance(error, OcspError) else (type(error).__name__ + (f": {error}" if str(error) else ""))
            log.warning("OCSP status of certificate %x of %s not refreshed: %s", cert.serial_number, common_name(cert), reason)
            return False
        finally:
            self._in_flight.discard(key)
        self._store(key, answer, common_name(cert))
        return True

    def _store(self, key: CertificateKey, answer: OcspAnswer, whose: str) -> None:
        if answer.status is ocsp.OCSPCertStatus.REVOKED:
            if key not in self._revoked:
                log.warning("OCSP: certificate %x of %s is revoked", key[1], whose)
            self._revoked[key] = answer.revoked_at
            self._answers.pop(key, None)
            return
        current = self._answers.get(key)
        # SECURITY: never roll back to an older answer (a replayed or delayed response).
        if current is None or answer.this_update >= current.this_update:
            self._answers[key] = answer

    async def fetch(self, cert: x509.Certificate, issuer: x509.Certificate) -> OcspAnswer:
        """Ask the responder (configured, else the certificate's AIA) and verify its answer."""
        url = self.settings.responder or next(iter(responder_urls(cert)), None)
        if url is None:
            raise OcspError("no OCSP responder configured and the certificate names none")
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
        headers = {"Content-Type": "application/ocsp-request", "Accept": "application/ocsp-response"}
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(url, data=ocsp_request(cert, issuer), headers=headers) as reply:
                if reply.status != 200:
                    raise OcspError(f"OCSP responder answered HTTP {reply.status}")
                body = bytearray()
                async for chunk in reply.content.iter_chunked(16 * 1024):
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise OcspError("OCSP response is too large")
        return verify_ocsp_response(bytes(body), cert, issuer, self._clock())

    async def settled(self) -> None:
        """Wait until the first-sight fetches started so far have finished."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """Cancel first-sight fetches still running (node shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def issuing_anchor(cert: x509.Certificate, anchors: tuple[x509.Certificate, ...]) -> x509.Certificate | None:
    """Which anchor issued ``cert``, cheaply: a federation usually has one anchor; otherwise by
    name, and by signature only when several anchors share the name (a CA key rollover).
    Callers verify the signature themselves before trusting the result."""
    if len(anchors) == 1:
        return anchors[0]
    named = [a for a in anchors if a.subject == cert.issuer]
    if len(named) <= 1:
        return named[0] if named else None
    return next((a for a in named if _issued_by(cert, a)), None)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False
