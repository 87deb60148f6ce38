"""Signature and encryption attacks on seals, key records, hop entries, receipts and relay acknowledgements.

Destination side: a forged or bent transfer is refused with a signed receipt (200, or 312 when the certificate is not
fit) and nothing reaches the store. Origin side: a forged receipt or acknowledgement from a peer never settles or
releases a message; it stays queued and is retried later.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import tracemalloc
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.audit import Action, Role
from gateway.crypto.seal import (
    HOP_TYPE, RECEIPT_TYPE, RELAY_TYPE, SEAL_TYPE, CertificateError, SealError, TrustStore, verify_node_signed, verify_seal,
    verify_signed,
)  # fmt: skip
from gateway.envelope import parse_envelope
from gateway.ids import GatewayError, ParticipantId, StatusCode
from gateway.pki import load_certificate
from gateway.receipt import Receipt
from gateway.store import OutgoingState
from gateway.transport import TransferHeader

from ..gateway.nodes import ciphertexts, running
from .hostile import (
    KANTON, KRIENS, LUZERN, HostilePeer, RogueCA, assert_nothing_stored, audit_actions, b64url, chunks, forge_transfer,
    hop_entry, identity, message, nested_json, queued_transfer, raw_jws, split_jws, submit,
)  # fmt: skip

# ------------------------------------------------------------------------------ forged seals


def resign(token: str, signer, **claim_changes) -> str:
    _, claims = split_jws(token)
    return signer.sign(SEAL_TYPE, {**claims, **claim_changes})


def with_header(token: str, header: dict) -> str:
    _, body, signature = token.split(".")
    return f"{b64url(json.dumps(header).encode())}.{body}.{signature}"


def hs256_with_public_key(token: str, federation) -> str:
    """Algorithm confusion: HMAC-SHA256 keyed with the signer's *public* key, as a naive verifier would check it."""
    header, claims = split_jws(token)
    cert = base64.b64decode(header["x5c"][0])
    public = x509.load_der_x509_certificate(cert).public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    head = b64url(json.dumps({**header, "alg": "HS256"}).encode())
    body = token.split(".")[1]
    signature = hmac.new(public, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(signature)}"


SEAL_ATTACKS = {
    # name: (bend(token, federation, rogue) -> token, expected sedex code)
    "alg-none": (lambda t, f, r: raw_jws({**split_jws(t)[0], "alg": "none"}, split_jws(t)[1]), 200),
    "alg-none-no-signature": (lambda t, f, r: t.rsplit(".", 1)[0] + ".", 200),
    "hs256-keyed-with-the-public-key": (lambda t, f, r: hs256_with_public_key(t, f), 200),
    "es512-header": (lambda t, f, r: with_header(t, {**split_jws(t)[0], "alg": "ES512"}), 200),
    "embedded-jwk": (lambda t, f, r: with_header(t, {**split_jws(t)[0], "jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}}), 200),
    "jku": (lambda t, f, r: with_header(t, {**split_jws(t)[0], "jku": "http://127.0.0.1:9/keys"}), 200),
    "x5u": (lambda t, f, r: with_header(t, {**split_jws(t)[0], "x5u": "http://127.0.0.1:9/cert.pem"}), 200),
    "kid": (lambda t, f, r: with_header(t, {**split_jws(t)[0], "kid": "../../etc/passwd"}), 200),
    "crit": (lambda t, f, r: with_header(t, {**split_jws(t)[0], "crit": ["exp"], "exp": 1}), 200),
    "b64-false": (lambda t, f, r: with_header(t, {**split_jws(t)[0], "b64": False, "crit": ["b64"]}), 200),
    "zip": (lambda t, f, r: with_header(t, {**split_jws(t)[0], "zip": "DEF"}), 200),
    "typ-of-a-receipt": (lambda t, f, r: identity(f, LUZERN).sign(RECEIPT_TYPE, split_jws(t)[1]), 200),
    "x5c-from-a-rogue-ca-with-the-same-name": (lambda t, f, r: resign(t, r.participant(LUZERN)), 312),
    "signed-by-another-participant": (lambda t, f, r: resign(t, identity(f, KRIENS)), 312),
    "signed-by-the-origin-node-key": (lambda t, f, r: resign(t, identity(f, "node-luzern")), 312),
    "x5c-swapped-for-another-participant": (lambda t, f, r: with_header(t, {**split_jws(t)[0],
                                            "x5c": split_jws(identity(f, KRIENS).sign(SEAL_TYPE, {}))[0]["x5c"]}), 312),
    "flipped-signature-bit": (lambda t, f, r: t[:-5] + ("A" if t[-5] != "A" else "B") + t[-4:], 200),
    "claims-name-another-sender": (lambda t, f, r: resign(t, identity(f, LUZERN), sender=KRIENS), 200),
    "claims-name-another-message": (lambda t, f, r: resign(t, identity(f, LUZERN), messageId="other-message"), 200),
    "claims-bind-another-envelope": (lambda t, f, r: resign(t, identity(f, LUZERN), envelopeSha256="0" * 64), 200),
    "manifest-without-payload": (lambda t, f, r: identity(f, LUZERN).sign(SEAL_TYPE, {k: v for k, v in split_jws(t)[1].items() if k != "payload"}), 200),
    "manifest-not-an-object": (lambda t, f, r: raw_jws(split_jws(t)[0], b"[1,2,3]"), 200),
}  # fmt: skip


@pytest.mark.parametrize("attack", list(SEAL_ATTACKS))
async def test_a_forged_seal_is_refused_at_the_destination_and_nothing_is_stored(pair, clock, tmp_path, attack):
    """alg none, algorithm confusion, key-pointing headers, rogue CAs, other signers and bent claims are all refused."""
    bend, code = SEAL_ATTACKS[attack]
    rogue = RogueCA.create(tmp_path / "rogue")
    async with running(pair, clock) as nodes:
        header, ciphertext, _ = await queued_transfer(pair, clock, nodes["node-luzern"])
        forged = TransferHeader(header.sender, header.recipient, header.message_id, header.envelope, bend(header.seal, pair, rogue), header.hops)
        receipt = await nodes["node-kanton"].receive(forged, chunks(ciphertext), peer="node-luzern")
        assert receipt.status == code, receipt.receipt
        verify_signed(receipt.signature, typ=RECEIPT_TYPE, signer="node-kanton", trust=nodes["node-luzern"].trust, now=clock.now())
        assert_nothing_stored(nodes["node-kanton"])


async def test_a_valid_seal_with_another_messages_ciphertext_or_envelope_is_refused(pair, clock):
    """A genuine seal does not cover a swapped payload or a swapped envelope: both are refused with 200."""
    async with running(pair, clock) as nodes:
        first, first_ciphertext, _ = await queued_transfer(pair, clock, nodes["node-luzern"])
        second, second_ciphertext, _ = await queued_transfer(pair, clock, nodes["node-luzern"])
        kanton = nodes["node-kanton"]
        swapped_payload = await kanton.receive(first, chunks(second_ciphertext), peer="node-luzern")
        swapped_envelope = await kanton.receive(
            TransferHeader(first.sender, first.recipient, first.message_id, second.envelope, first.seal, first.hops),
            chunks(first_ciphertext), peer="node-luzern")  # fmt: skip
        assert (swapped_payload.status, swapped_envelope.status) == (200, 200)
        assert_nothing_stored(kanton)


def test_unit_seal_verification_refuses_what_the_trust_store_does_not_vouch_for(pair, tmp_path, clock):
    """verify_seal raises SealError or CertificateError (never returns) for a rogue-CA signer and a CN that is not the sender."""
    trust = TrustStore([load_certificate(pair.ca_file)])
    envelope = b"<e/>"
    claims = {"messageId": "m", "sender": LUZERN, "node": "n", "sealedAt": "", "envelopeSha256": hashlib.sha256(envelope).hexdigest(),
              "payload": {}, "keys": {}}  # fmt: skip
    rogue = RogueCA.create(tmp_path / "rogue").participant(LUZERN)
    for signer in (rogue, identity(pair, KRIENS), identity(pair, "node-luzern")):
        with pytest.raises(CertificateError):
            verify_seal(signer.sign(SEAL_TYPE, claims), envelope, sender=ParticipantId(LUZERN), trust=trust, now=clock.now())


@pytest.mark.parametrize("verify", ["verify_signed", "verify_node_signed"])
def test_a_deeply_nested_jws_header_is_refused_as_a_bad_signature(pair, clock, verify):
    """A JWS whose header is JSON nested 50 000 deep is refused with SealError, like any other malformed token."""
    trust = TrustStore([load_certificate(pair.ca_file)])
    token = f"{b64url(nested_json())}.e30.AA"
    with pytest.raises(GatewayError):
        if verify == "verify_signed":
            verify_signed(token, typ=SEAL_TYPE, signer=LUZERN, trust=trust, now=clock.now())
        else:
            verify_node_signed(token, typ=HOP_TYPE, trust=trust, now=clock.now())


# --------------------------------------------------------------- a malicious participant's own seal

KEY_RECORD_ATTACKS = {
    # A participant with a valid signing key seals something that is well signed but wrong inside.
    "key-record-for-another-recipient": (dict(key_record_changes={"recipient": KRIENS}), 200, ""),
    "key-record-of-another-message": (dict(key_record_changes={"messageId": "another"}), 200, ""),
    "key-record-of-another-sender": (dict(key_record_changes={"sender": KRIENS}), 200, ""),
    "key-record-with-a-16-byte-key": (dict(key_record_changes={"cek": b64url(b"k" * 16)}), 200, ""),
    "key-record-not-json": (dict(key_record=b"\xff\xfe not json"), 200, ""),
    "no-key-record-for-the-recipient": (dict(manifest=lambda m: m.update(keys={})), 200, ""),
    "nonce-prefix-of-6-bytes": (dict(manifest=lambda m: m["payload"].update(noncePrefix=b64url(b"123456"))), 200, ""),
    "segment-size-zero": (dict(manifest=lambda m: m["payload"].update(segmentSize=0)), 200, ""),
    "segment-size-negative": (dict(manifest=lambda m: m["payload"].update(segmentSize=-16)), 200, ""),
    "ciphertext-length-understated": (dict(manifest=lambda m: m["payload"].update(ciphertextLength=m["payload"]["ciphertextLength"] - 1)), 200, ""),
    "segments-reordered-and-resealed": (dict(segment_size=1024, ciphertext=lambda c: c[1040:2080] + c[:1040] + c[2080:]), 200, ""),
    "cut-at-a-segment-boundary-and-resealed": (dict(segment_size=1024, ciphertext=lambda c: c[:2080]), 200, ""),
    "extra-segment-appended-and-resealed": (dict(segment_size=1024, ciphertext=lambda c: c + c[-1040:]), 200, ""),
    # Threat model F8 (fixed): the key record's shape is checked like anything else the sender signs.
    "key-record-is-a-json-list": (dict(key_record=b'["not", "an", "object"]'), 200, ""),
    "key-record-without-cek": (dict(key_record_changes={"cek": None}), 200, ""),
    "key-record-cek-not-a-string": (dict(key_record_changes={"cek": 12345}), 200, ""),
    # Threat model F10 (fixed): plaintextLength must fit the wire-format formula and the authenticated plaintext.
    "plaintext-length-lies": (dict(manifest=lambda m: m["payload"].update(plaintextLength=1)), 200, ""),
    "plaintext-length-off-by-one": (dict(manifest=lambda m: m["payload"].update(plaintextLength=m["payload"]["plaintextLength"] + 1)), 200, ""),
    "plaintext-length-a-string": (dict(manifest=lambda m: m["payload"].update(plaintextLength=str(m["payload"]["plaintextLength"]))), 200, ""),
    # Threat model F5 (fixed): a segment size outside the wire-format bounds is refused before any ciphertext is read.
    "segment-size-above-the-limit": (dict(segment_size=2 * 1024 * 1024), 200, ""),
    "segment-size-below-the-limit": (dict(segment_size=512), 200, ""),
}  # fmt: skip


def _bent(kind):
    options, code, bug = KEY_RECORD_ATTACKS[kind]
    marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
    return pytest.param(kind, id=kind, marks=marks)


@pytest.mark.parametrize("kind", [_bent(k) for k in KEY_RECORD_ATTACKS])
async def test_a_well_signed_but_bent_seal_from_a_malicious_participant_is_refused_with_200(pair, clock, kind):
    """What a participant signs is still checked: key-record binding, key and nonce sizes, segment framing, lengths."""
    options, code, _ = KEY_RECORD_ATTACKS[kind]
    options = dict(options)
    async with running(pair, clock) as nodes:
        luzern, kanton = nodes["node-luzern"], nodes["node-kanton"]
        message_id, envelope, payload = message(clock)
        changes = options.pop("key_record_changes", None)
        if changes is not None:
            record = {"typ": "drehscheibe-key+json;v=1", "cek": b64url(os.urandom(32)), "sender": LUZERN,
                      "messageId": message_id, "recipient": KANTON, **changes}  # fmt: skip
            options["key_record"] = {k: v for k, v in record.items() if v is not None}
        forged = forge_transfer(luzern, kanton, envelope, message_id, payload * 2, **options)
        receipt = await kanton.receive(forged.header, chunks(forged.ciphertext), peer="node-luzern")
        assert receipt.status == code, receipt.receipt
        assert_nothing_stored(kanton)


async def test_a_sender_declared_segment_size_cannot_make_the_destination_buffer_the_whole_payload(pair, clock):
    """Memory at the destination stays bounded by a sane segment size whatever the seal declares (refused with 200, or streamed)."""
    async with running(pair, clock) as nodes:
        luzern, kanton = nodes["node-luzern"], nodes["node-kanton"]
        message_id, envelope, _ = message(clock)
        big = b"<r>" + b"a" * (32 * 1024 * 1024) + b"</r>"
        forged = forge_transfer(luzern, kanton, envelope, message_id, big, segment_size=2**31)
        tracemalloc.start()
        try:
            receipt = await kanton.receive(forged.header, chunks(forged.ciphertext), peer="node-luzern")
            peak = tracemalloc.get_traced_memory()[1] / 2**20
        finally:
            tracemalloc.stop()
        print(f"segmentSize 2^31, 32 MB payload: receipt {receipt.status}, peak traced memory {peak:.0f} MB")
        assert peak < 16, f"the destination held {peak:.0f} MB"


async def test_a_replayed_transfer_is_delivered_once_and_other_content_under_its_message_id_gets_201(pair, clock):
    """An identical re-send returns the stored receipt without a second copy; a new valid seal for the same messageId is 201."""
    async with running(pair, clock) as nodes:
        luzern, kanton = nodes["node-luzern"], nodes["node-kanton"]
        header, ciphertext, payload = await queued_transfer(pair, clock, luzern)
        first = await kanton.receive(header, chunks(ciphertext), peer="node-luzern")
        again = await kanton.receive(header, chunks(ciphertext), peer="node-luzern")
        assert (first.status, again.status) == (100, 100) and first.signature == again.signature
        other = forge_transfer(luzern, kanton, header.envelope, header.message_id, payload + b"\n")
        assert (await kanton.receive(other.header, chunks(other.ciphertext), peer="node-luzern")).status == 201
        assert len(kanton.store.inbox(KANTON)) == 1
        assert len(ciphertexts(kanton.store)) == 1


# ---------------------------------------------------------------------------------- hop entries


HOP_ATTACKS = {
    "signed-by-a-participant-key": (lambda h, f, r: (hop_entry(identity(f, LUZERN), h.sender, h.message_id, h.recipient),), 200),
    "node-cert-from-a-rogue-ca": (lambda h, f, r: (hop_entry(r.node("node-luzern"), h.sender, h.message_id, h.recipient),), 312),
    "about-another-message": (lambda h, f, r: (hop_entry(identity(f, "node-luzern"), h.sender, "another", h.recipient),), 200),
    "about-another-sender": (lambda h, f, r: (hop_entry(identity(f, "node-luzern"), KRIENS, h.message_id, h.recipient),), 200),
    "claims-another-node-than-its-certificate": (lambda h, f, r: (hop_entry(identity(f, "node-luzern"), h.sender, h.message_id,
                                                                            h.recipient, node="node-x"),), 200),
    "a-receipt-token-posing-as-a-hop": (lambda h, f, r: (identity(f, "node-luzern").sign(RECEIPT_TYPE, {"node": "node-luzern"}),), 200),
    "the-destination-itself-already-passed": (lambda h, f, r: (hop_entry(identity(f, "node-kanton"), h.sender, h.message_id,
                                                                        h.recipient), *h.hops), 301),
    "the-same-node-twice": (lambda h, f, r: (*h.hops, *h.hops), 301),
    "garbage": (lambda h, f, r: ("not.a.jws",), 200),
}  # fmt: skip


@pytest.mark.parametrize("attack", list(HOP_ATTACKS))
async def test_a_forged_hop_entry_is_refused(pair, clock, tmp_path, attack):
    """Hop entries must be node-signed (federation CA, node EKU), about this message, and show no loop."""
    bend, code = HOP_ATTACKS[attack]
    rogue = RogueCA.create(tmp_path / "rogue")
    async with running(pair, clock) as nodes:
        header, ciphertext, _ = await queued_transfer(pair, clock, nodes["node-luzern"])
        forged = TransferHeader(header.sender, header.recipient, header.message_id, header.envelope, header.seal, bend(header, pair, rogue))
        receipt = await nodes["node-kanton"].receive(forged, chunks(ciphertext), peer="node-luzern")
        assert receipt.status == code, receipt.receipt
        assert_nothing_stored(nodes["node-kanton"])


# ----------------------------------------------------------------- receipts and acknowledgements at the origin


def _receipt_xml(header: TransferHeader, status=StatusCode.DELIVERED, clock=None, **changes) -> str:
    envelope = parse_envelope(header.envelope, None)
    receipt = Receipt.for_envelope(envelope, ParticipantId(header.recipient), status, None, clock.now())
    return replace(receipt, **changes).to_xml().decode()


def _signed_receipt(signer, header, clock, *, digest=None, typ=RECEIPT_TYPE, **changes) -> str:
    return signer.sign(typ, {"node": signer.name, "receipt": _receipt_xml(header, clock=clock, **changes),
                             "ciphertextSha256": digest, "events": []})  # fmt: skip


RECEIPT_ATTACKS = {
    # name: (answer(header, federation, rogue, clock, digest) -> (http status, body), bug)
    "receipt-signed-by-the-participant-key": (lambda h, f, r, c, d: (200, {"statusCode": 100, "receipt": _signed_receipt(identity(f, KANTON), h, c, digest=d)}), ""),
    "receipt-signed-by-a-rogue-ca-node": (lambda h, f, r, c, d: (200, {"statusCode": 100, "receipt": _signed_receipt(r.node("node-kanton"), h, c, digest=d)}), ""),
    "receipt-with-alg-none": (lambda h, f, r, c, d: (200, {"statusCode": 100, "receipt": raw_jws({"alg": "none", "typ": RECEIPT_TYPE}, {"node": "node-kanton"})}), ""),
    "receipt-of-type-hop": (lambda h, f, r, c, d: (200, {"statusCode": 100, "receipt": _signed_receipt(identity(f, "node-kanton"), h, c, digest=d, typ=HOP_TYPE)}), ""),
    "receipt-schema-invalid": (lambda h, f, r, c, d: (200, {"statusCode": 100, "receipt": identity(f, "node-kanton").sign(RECEIPT_TYPE, {
        "node": "node-kanton", "receipt": "<receipt/>", "ciphertextSha256": d, "events": []})}), ""),
    "receipt-with-a-doctype": (lambda h, f, r, c, d: (200, {"statusCode": 100, "receipt": identity(f, "node-kanton").sign(RECEIPT_TYPE, {
        "node": "node-kanton", "receipt": '<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + _receipt_xml(h, clock=c).split("?>", 1)[1],
        "ciphertextSha256": d, "events": []})}), ""),
    # Regression (F11, fixed): Node._receipt_rejected backs off and counts the peer failure for these two.
    "receipt-100-bound-to-other-content": (lambda h, f, r, c, d: (200, {"statusCode": 100, "receipt": _signed_receipt(identity(f, "node-kanton"), h, c, digest="0" * 64)}), ""),
    "receipt-for-another-message": (lambda h, f, r, c, d: (200, {"statusCode": 100, "receipt": _signed_receipt(identity(f, "node-kanton"), h, c, digest=d, message_id="another")}), ""),
    "acknowledgement-signed-by-the-participant-key": (lambda h, f, r, c, d: (202, {"statusCode": 601, "relayed": identity(f, KANTON).sign(RELAY_TYPE, {
        "node": KANTON, "kind": "accepted", "sender": h.sender, "messageId": h.message_id, "recipient": h.recipient, "ciphertextSha256": d, "events": []})}), ""),
    "acknowledgement-about-another-message": (lambda h, f, r, c, d: (202, {"statusCode": 601, "relayed": identity(f, "node-kanton").sign(RELAY_TYPE, {
        "node": "node-kanton", "kind": "accepted", "sender": h.sender, "messageId": "another", "recipient": h.recipient, "ciphertextSha256": d, "events": []})}), ""),
    "acknowledgement-for-other-content": (lambda h, f, r, c, d: (202, {"statusCode": 601, "relayed": identity(f, "node-kanton").sign(RELAY_TYPE, {
        "node": "node-kanton", "kind": "accepted", "sender": h.sender, "messageId": h.message_id, "recipient": h.recipient, "ciphertextSha256": "0" * 64, "events": []})}), ""),
    "acknowledgement-of-kind-receipt": (lambda h, f, r, c, d: (202, {"statusCode": 601, "relayed": identity(f, "node-kanton").sign(RELAY_TYPE, {
        "node": "node-kanton", "kind": "receipt", "sender": h.sender, "messageId": h.message_id, "recipient": h.recipient, "ciphertextSha256": d, "events": []})}), ""),
    # Threat model F6 (fixed): a nested JWS header is a SealError like any other bad token.
    "receipt-nested-json": (lambda h, f, r, c, d: (200, {"statusCode": 100, "receipt": f"{b64url(nested_json())}.e30.AA"}), ""),
    "acknowledgement-nested-json": (lambda h, f, r, c, d: (202, {"statusCode": 601, "relayed": f"{b64url(nested_json())}.e30.AA"}), ""),
    # Regression (F19, fixed): an answer that is not JSON, or nested too deep, is a failed attempt that backs off.
    "answer-not-json": (lambda h, f, r, c, d: (200, b"<html>502 Bad Gateway</html>"), ""),
    "answer-nested-json": (lambda h, f, r, c, d: (200, nested_json()), ""),
}  # fmt: skip


def _answer(kind):
    _, bug = RECEIPT_ATTACKS[kind]
    return pytest.param(kind, id=kind, marks=[pytest.mark.xfail(strict=True, reason=bug)] if bug else [])


@pytest.mark.parametrize("kind", [_answer(k) for k in RECEIPT_ATTACKS])
async def test_a_forged_answer_from_a_compromised_peer_never_settles_or_releases_a_message(pair, clock, tmp_path, kind):
    """A receipt or acknowledgement that is not the peer's, not of its type, not about this message and ciphertext, or not
    valid eCH-0090 leaves the message queued with its ciphertext, to be retried later (not at once)."""
    answer, _ = RECEIPT_ATTACKS[kind]
    rogue = RogueCA.create(tmp_path / "rogue")
    async with running(pair, clock, "node-luzern") as nodes:
        luzern = nodes["node-luzern"]
        message_id, envelope, payload = message(clock)
        assert (await submit(pair, LUZERN, envelope, payload))[0] == 202
        (item,) = luzern.store.queued()
        digest = item.ciphertext_sha256
        async with HostilePeer(pair, "node-kanton", lambda h: answer(h, pair, rogue, clock, digest)) as peer:
            await luzern.forward_due()
        assert len(peer.transfers) == 1
        (row,) = luzern.store.outgoing_for(LUZERN, message_id)
        assert row.state is OutgoingState.QUEUED, row.state
        assert row.blob.exists(), "the ciphertext is kept until a verified receipt or acknowledgement"
        assert row.next_attempt > clock.timestamp(), "retried later, not in a tight loop"


async def test_a_peer_that_keeps_answering_with_receipts_for_other_content_opens_its_breaker(pair, clock):
    """Each receipt bound to other content backs the message off further and counts against the peer: after
    breaker_failures (5) such answers the peer's circuit breaker is open and the message stays queued (F11)."""
    answer, _ = RECEIPT_ATTACKS["receipt-100-bound-to-other-content"]
    async with running(pair, clock, "node-luzern") as nodes:
        luzern = nodes["node-luzern"]
        message_id, envelope, payload = message(clock)
        assert (await submit(pair, LUZERN, envelope, payload))[0] == 202
        (item,) = luzern.store.queued()
        delays = []
        async with HostilePeer(pair, "node-kanton", lambda h: answer(h, pair, None, clock, item.ciphertext_sha256)) as peer:
            for _ in range(5):
                (row,) = luzern.store.outgoing_for(LUZERN, message_id)
                clock.advance(seconds=max(0.0, row.next_attempt - clock.timestamp()) + 0.01)  # due, past any rounding
                await luzern.forward_due()
                (after,) = luzern.store.outgoing_for(LUZERN, message_id)
                delays.append(after.next_attempt - clock.timestamp())
        assert len(peer.transfers) == 5, "one transfer per round, none at once"
        assert all(d > 0 for d in delays), delays
        assert luzern.breakers["node-kanton"].state == "open"
        (row,) = luzern.store.outgoing_for(LUZERN, message_id)
        assert row.state is OutgoingState.QUEUED and row.blob.exists()


async def test_a_returned_receipt_for_a_message_not_handed_to_that_peer_is_refused(hub, clock):
    """POST /node/v1/receipts: a relay cannot settle a message it was never given (422), nor with a participant-signed receipt."""
    async with running(hub, clock, "node-luzern", "node-hub") as nodes:
        luzern, hub_node = nodes["node-luzern"], nodes["node-hub"]
        message_id, envelope, payload = message(clock, LUZERN, KRIENS)
        assert (await submit(hub, LUZERN, envelope, payload))[0] == 202
        await luzern.forward_due()
        (row,) = luzern.store.outgoing_for(LUZERN, message_id)
        assert row.state is OutgoingState.HANDED
        header = TransferHeader(row.sender, row.recipient, row.message_id, row.envelope, row.seal)
        final = _signed_receipt(hub_node.node_signer, header, clock, digest=row.ciphertext_sha256)
        for claims in ({"messageId": "another"}, {"ciphertextSha256": "0" * 64}):
            token = hub_node.node_signer.sign(RELAY_TYPE, {"node": "node-hub", "kind": "receipt", "sender": LUZERN, "messageId": message_id,
                                                          "recipient": KRIENS, "ciphertextSha256": row.ciphertext_sha256,
                                                          "receipt": final, "events": [], **claims})  # fmt: skip
            with pytest.raises(GatewayError) as refused:
                await luzern.accept_returned_receipt(token, "node-hub")
            assert refused.value.status == StatusCode.UNKNOWN_RECIPIENT
        participant_final = _signed_receipt(identity(hub, KANTON), header, clock, digest=row.ciphertext_sha256)
        token = hub_node.node_signer.sign(RELAY_TYPE, {"node": "node-hub", "kind": "receipt", "sender": LUZERN, "messageId": message_id,
                                                      "recipient": KRIENS, "ciphertextSha256": row.ciphertext_sha256,
                                                      "receipt": participant_final, "events": []})  # fmt: skip
        with pytest.raises(SealError):
            await luzern.accept_returned_receipt(token, "node-hub")
        (row,) = luzern.store.outgoing_for(LUZERN, message_id)
        assert row.state is OutgoingState.HANDED


# Regression (F12, fixed): Node._refusal_receipt audits every refusal at a destination or relay before it signs it.
async def test_a_forged_transfer_refused_at_the_destination_is_audited_there(pair, clock):
    """The destination's audit log records the refusal (action refused, the receipt code) of a transfer with a forged seal."""
    async with running(pair, clock) as nodes:
        header, ciphertext, _ = await queued_transfer(pair, clock, nodes["node-luzern"])
        forged = TransferHeader(header.sender, header.recipient, header.message_id, header.envelope,
                                SEAL_ATTACKS["alg-none"][0](header.seal, pair, None), header.hops)  # fmt: skip
        receipt = await nodes["node-kanton"].receive(forged, chunks(ciphertext), peer="node-luzern")
        assert receipt.status == 200
        assert (Action.REFUSED, 200) in audit_actions(nodes["node-kanton"], header.message_id)
        (record,) = [r for _, _, r in nodes["node-kanton"].audit.iter_records() if r.message_id == header.message_id]
        assert (record.role, record.actor.id, record.envelope) == (Role.DESTINATION, "node-luzern", None), "unverified: no envelope fields"
        assert record.details == {"verified": "false", "claimed_sender": LUZERN, "claimed_recipient": KANTON}


async def test_a_tampered_ciphertext_refused_at_the_destination_is_audited_with_its_verified_envelope(pair, clock):
    """A transfer whose seal verifies but whose ciphertext was altered is refused (200) and audited with the envelope's fields, never the reason text."""
    async with running(pair, clock) as nodes:
        header, ciphertext, _ = await queued_transfer(pair, clock, nodes["node-luzern"])
        tampered = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
        receipt = await nodes["node-kanton"].receive(header, chunks(tampered), peer="node-luzern")
        assert receipt.status == 200
        (record,) = [r for _, _, r in nodes["node-kanton"].audit.iter_records() if r.message_id == header.message_id]
        assert (record.action, record.role, record.receipt_code) == (Action.REFUSED, Role.DESTINATION, 200)
        assert (record.envelope.sender, record.envelope.recipients, record.details) == (LUZERN, (KANTON,), {})
        assert_nothing_stored(nodes["node-kanton"])


async def test_a_forged_transfer_refused_at_a_relay_is_audited_there_as_relay(hub, clock):
    """The relay's audit log records the refusal of a forged transfer with role relay and the receipt code."""
    async with running(hub, clock) as nodes:
        header, ciphertext, _ = await queued_transfer(hub, clock, nodes["node-luzern"], recipient=KRIENS)
        forged = TransferHeader(header.sender, header.recipient, header.message_id, header.envelope,
                                SEAL_ATTACKS["alg-none"][0](header.seal, hub, None), header.hops)  # fmt: skip
        receipt = await nodes["node-hub"].receive(forged, chunks(ciphertext), peer="node-luzern")
        assert receipt.status == 200
        (record,) = [r for _, _, r in nodes["node-hub"].audit.iter_records() if r.message_id == header.message_id]
        assert (record.action, record.role, record.receipt_code, record.actor.id) == (Action.REFUSED, Role.RELAY, 200, "node-luzern")
        assert nodes["node-hub"].store.queued() == []
