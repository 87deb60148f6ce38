"""Bounded fuzzing of the parsers and verifiers: only documented refusals come out, quickly, in bounded memory.

Inside ``make test`` each target runs ``fuzzing.QUICK_EXAMPLES`` derandomised examples. A campaign:

    FUZZ_SECONDS=1800 .venv/bin/pytest -q -p no:cacheprovider tests/hostile/test_fuzz.py

(see tests/hostile/fuzzing.py and docs/security-tests.md).
"""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import strategies as st
from lxml import etree

from adapters.sedex_folder import FolderInterface, FolderPaths
from gateway.config import PayloadAcceptance
from gateway.crypto import primitives
from gateway.crypto.seal import (
    HOP_TYPE, RECEIPT_TYPE, RELAY_TYPE, SEAL_TYPE, RecipientKey, Sealing, SigningIdentity, TrustStore, verify_node_signed,
    verify_seal, verify_signed,
)  # fmt: skip
from gateway.envelope import Envelope, parse_envelope
from gateway.ids import GatewayError, ParticipantId, StatusCode
from gateway.payload import PayloadCheck
from gateway.pki import DevelopmentCA, load_certificate, load_private_key
from gateway.policy.loader import PolicyLoadError, load_policy_set
from gateway.policy.model import Effect
from gateway.receipt import Receipt, parse_receipt
from gateway.safexml import XmlLimits, parse_xml
from gateway.schemas import SchemaCatalog
from gateway.transport import TransferHeader

from ..conftest import SAMPLES, XSD
from . import fuzzing
from .fuzzing import JSON_TOKENS, XML_TOKENS, documented, label, mutated, reencoded
from .hostile import KANTON, LUZERN, b64url
from .xml_bombs import CASES, Canaries

pytestmark = pytest.mark.timeout(fuzzing.timeout_seconds())

POLICIES = Path(__file__).resolve().parents[2] / "policies" / "demo"

LIMITS = XmlLimits(max_bytes=4 * 1024 * 1024, max_depth=64, max_elements=100_000)
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)


@lru_cache(maxsize=1)
def catalog() -> SchemaCatalog:
    return SchemaCatalog(XSD)


# ------------------------------------------------------------------------------------------ seeds


@lru_cache(maxsize=1)
def xml_seeds() -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(envelopes, receipts, payloads): real files from ../shared/ech/samples, small ones, plus generated envelopes."""
    envelopes, receipts, payloads = [], [], []
    for path in sorted(SAMPLES.rglob("*.xml")):
        data = path.read_bytes()
        if len(data) > 24_000:
            continue
        if path.name.startswith(("envl", "envelope")):
            envelopes.append(data)
        elif "receipt" in path.name:
            receipts.append(data)
        elif len(payloads) < 12:
            payloads.append(data)
    now = NOW
    generated = Envelope("m-1", 20001, 0, ParticipantId(LUZERN), (ParticipantId(KANTON),), now, now)
    envelopes.append(generated.to_xml())
    receipts.append(Receipt.for_envelope(generated, ParticipantId(KANTON), StatusCode.DELIVERED, None, now).to_xml())
    small_bombs = [c.build(Canaries("http://127.0.0.1:9/x.dtd", "/etc/hostname")) for c in CASES]
    payloads.extend(b for b in small_bombs if len(b) < 24_000)
    return envelopes, receipts, payloads


# --------------------------------------------------------------------------------- XML parsers


def test_fuzz_parse_xml():
    """safexml.parse_xml refuses with UnsafeXml (sedex 200) or returns a tree without any DTD."""
    envelopes, receipts, payloads = xml_seeds()

    def check(data: bytes) -> str:
        try:
            tree = parse_xml(data, LIMITS)
        except GatewayError as error:
            assert documented(error), error
            return label(error)
        assert not tree.docinfo.doctype and tree.docinfo.internalDTD is None
        return "accepted"

    fuzzing.run("parse_xml", reencoded(mutated(envelopes + receipts + payloads, XML_TOKENS)), check)


# The check_* functions are the fuzz targets' properties, shared by the hypothesis tests here and the
# coverage-guided atheris targets (atheris_targets.py): each returns an outcome label or raises.


def check_parse_envelope(data: bytes) -> str:
    """parse_envelope refuses with a documented GatewayError or returns a fully typed envelope."""
    try:
        envelope = parse_envelope(data, catalog(), LIMITS)
    except GatewayError as error:
        assert documented(error), error
        return label(error)
    assert isinstance(envelope.sender, ParticipantId) and envelope.recipients
    assert all(isinstance(r, ParticipantId) for r in envelope.recipients)
    assert envelope.message_date.tzinfo is not None and envelope.event_date.tzinfo is not None
    return "accepted"


def test_fuzz_parse_envelope():
    """parse_envelope refuses with InvalidEnvelope (200) or returns a fully typed envelope."""
    envelopes, _, _ = xml_seeds()
    fuzzing.run("parse_envelope", reencoded(mutated(envelopes, XML_TOKENS)), check_parse_envelope)


def test_fuzz_parse_receipt():
    """parse_receipt (schema-validated, as the forwarder reads receipts) refuses with a GatewayError or returns a typed receipt."""
    _, receipts, _ = xml_seeds()

    def check(data: bytes) -> str:
        try:
            receipt = parse_receipt(data, catalog())
        except GatewayError as error:
            assert documented(error), error
            return label(error)
        assert isinstance(receipt.sender, ParticipantId) and isinstance(receipt.recipient, ParticipantId)
        return "accepted"

    fuzzing.run("parse_receipt", mutated(receipts, XML_TOKENS), check)


def test_fuzz_payload_check():
    """The streaming payload check, fed in chunks of any size, refuses with a GatewayError or accepts a document that
    carries no DTD (threat model F3)."""
    _, _, payloads = xml_seeds()
    strategy = st.tuples(reencoded(mutated(payloads, XML_TOKENS)), st.integers(1, 5000),
                         st.sampled_from([PayloadAcceptance.WELL_FORMED, PayloadAcceptance.SCHEMA_VALID]))  # fmt: skip
    fuzzing.run("payload_check", strategy, check_payload_check)


_LENIENT = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def check_payload_check(example: tuple[bytes, int, PayloadAcceptance]) -> str:
    """The streaming payload check, fed in chunks of the given size, refuses with a GatewayError or accepts a document
    without a DTD."""
    data, chunk, acceptance = example
    check = PayloadCheck(acceptance, catalog(), LIMITS)
    try:
        for start in range(0, len(data), chunk):
            check.feed(data[start : start + chunk])
        check.finish()
    except GatewayError as error:
        assert documented(error), error
        return label(error)
    try:
        has_dtd = bool(etree.fromstring(data, _LENIENT).getroottree().docinfo.doctype)
    except etree.XMLSyntaxError:
        has_dtd = False
    assert not has_dtd, "a payload with a DTD was accepted"
    return f"accepted ({acceptance.value})"


# ------------------------------------------------------------------------------ wire format


@lru_cache(maxsize=1)
def pki() -> dict:
    """A throw-away federation PKI: CA, a participant, a node and a rogue CA of the same name."""
    directory = Path(tempfile.mkdtemp(prefix="fuzz-pki-"))
    ca, rogue = DevelopmentCA(directory / "ca"), DevelopmentCA(directory / "rogue")

    def signer(issuer: DevelopmentCA, name: str, node: bool) -> SigningIdentity:
        if node:
            issued = issuer.issue_node(name, directory / "out" / str(id(issuer)))
        else:
            issued, _ = issuer.issue_participant(ParticipantId(name), directory / "out" / str(id(issuer)))
        return SigningIdentity.from_key(name, load_private_key(issued.private_key), load_certificate(issued.certificate))

    _, encryption = ca.issue_participant(ParticipantId(KANTON), directory / "enc")
    trust = TrustStore([ca.certificate])
    recipient = RecipientKey.from_certificate(KANTON, load_certificate(encryption.certificate), trust, datetime.now(timezone.utc))
    return {"trust": trust, "participant": signer(ca, LUZERN, False), "node": signer(ca, "node-a", True),
            "other_node": signer(ca, "node-b", True), "rogue_node": signer(rogue, "node-a", True), "recipient": recipient}  # fmt: skip


@lru_cache(maxsize=1)
def sealed() -> tuple[str, bytes, bytes]:
    """A genuine seal, its envelope and its ciphertext."""
    material = pki()
    envelope = xml_seeds()[0][-1]
    sealing = Sealing(sender=ParticipantId(LUZERN), message_id="m-1", envelope_xml=envelope, payload_name="data.xml",
                      recipients=[material["recipient"]], node="node-a", segment_size=1024)  # fmt: skip
    ciphertext = b"".join(sealing.encrypt([b"<r>" + b"x" * 3000 + b"</r>"]))
    return sealing.seal(material["participant"], datetime.now(timezone.utc)), envelope, ciphertext


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12,
)


def test_fuzz_transfer_header():
    """TransferHeader.decode refuses with TransferRefused or returns string fields, envelope bytes and a tuple of hops."""
    genuine = genuine_transfer_header()
    as_dict = json.loads(genuine)
    structural = st.builds(lambda key, value: json.dumps({**as_dict, key: value}).encode(),
                           st.sampled_from([*as_dict, "extra"]), json_values)  # fmt: skip
    strategy = st.one_of(mutated([genuine], JSON_TOKENS + [b'"', b"=", b"A"]), structural, st.binary(max_size=64))
    fuzzing.run("transfer_header", strategy, check_transfer_header)


def genuine_transfer_header() -> bytes:
    """The JSON of a genuine transfer header (without its length prefix): a seed."""
    seal, envelope, _ = sealed()
    return TransferHeader(LUZERN, KANTON, "m-1", envelope, seal, ("a.b.c",)).encode()[4:]


def check_transfer_header(body: bytes) -> str:
    """TransferHeader.decode refuses with TransferRefused or returns string fields, envelope bytes and a tuple of hops."""
    try:
        header = TransferHeader.decode(body)
    except GatewayError as error:
        assert documented(error), error
        return label(error)
    assert all(isinstance(v, str) for v in (header.sender, header.recipient, header.message_id, header.seal))
    assert isinstance(header.envelope, bytes) and all(isinstance(h, str) for h in header.hops)
    return "accepted"


def _segments(token: str) -> tuple[str, str]:
    head, body = token.split(".")[:2]
    return head, body


def test_fuzz_verify_seal():
    """verify_seal raises SealError/CertificateError, or it verified exactly the genuine header, manifest and envelope bytes."""
    token, envelope, _ = sealed()
    head, body, signature = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))

    def replace_header(changes: dict) -> str:
        return f"{b64url(json.dumps({**header, **changes}).encode())}.{body}.{signature}"

    token_variants = st.one_of(
        mutated([token.encode()], [b".", b"=", b"A", b"-", b"_", b"eyJ", b"e30"]).map(lambda b: b.decode("latin-1")),
        st.dictionaries(st.sampled_from(["alg", "typ", "x5c", "jwk", "jku", "kid", "crit", "b64", "zip"]), json_values, max_size=3)
        .map(replace_header),
        st.sampled_from(["none", "HS256", "ES384", "RS256", "EdDSA", "es256"]).map(lambda alg: replace_header({"alg": alg})),
    )  # fmt: skip
    strategy = st.tuples(token_variants, st.one_of(st.just(envelope), mutated([envelope], XML_TOKENS, max_operations=2)),
                         st.sampled_from([LUZERN, KANTON]))  # fmt: skip
    fuzzing.run("verify_seal", strategy, check_verify_seal)


def check_verify_seal(example: tuple[str, bytes, str]) -> str:
    """verify_seal raises a documented GatewayError, or it verified exactly the genuine seal and envelope."""
    candidate, candidate_envelope, sender = example
    token, envelope, _ = sealed()
    try:
        verified = verify_seal(candidate, candidate_envelope, sender=ParticipantId(sender), trust=pki()["trust"], now=datetime.now(timezone.utc))
    except GatewayError as error:
        assert documented(error), error
        return label(error)
    assert _segments(candidate) == _segments(token), "a bent token verified"
    assert candidate_envelope == envelope and sender == LUZERN
    assert verified.message_id == "m-1"
    return "accepted (genuine)"


_CLAIMS = {"node": "node-a", "receipt": "<r/>", "ciphertextSha256": None, "events": []}
VERIFY_TYPES = (RECEIPT_TYPE, HOP_TYPE, RELAY_TYPE)
VERIFY_SIGNERS = ("node-a", "node-b", LUZERN, None)  # None: verify_node_signed


@lru_cache(maxsize=1)
def signed_tokens() -> dict[tuple[str, str], tuple[str, str, str]]:
    """Genuine tokens by every test signer and of every type: their (header, claims) segments -> (typ, signer, kind)."""
    material = pki()
    genuine = {}
    for signer_name in ("node", "other_node", "rogue_node", "participant"):
        for typ in (RECEIPT_TYPE, HOP_TYPE, RELAY_TYPE, SEAL_TYPE):
            token = material[signer_name].sign(typ, _CLAIMS)
            genuine[_segments(token)] = (typ, material[signer_name].name, signer_name)
    return genuine


def seed_tokens() -> list[str]:
    """Genuine receipts and hop entries of every test signer: seeds."""
    material = pki()
    return [material[s].sign(typ, _CLAIMS) for s in ("node", "other_node", "rogue_node", "participant") for typ in (RECEIPT_TYPE, HOP_TYPE)]


def check_verify_signed(example: tuple[str, str, str | None]) -> str:
    """Only a genuine token of the expected type, by the expected signer (any node for ``None``), verifies, with its claims."""
    token, typ, signer = example
    trust = pki()["trust"]
    try:
        if signer is None:
            node, verified = verify_node_signed(token, typ=typ, trust=trust, now=datetime.now(timezone.utc))
            signer = node
        else:
            verified = verify_signed(token, typ=typ, signer=signer, trust=trust, now=datetime.now(timezone.utc))
    except GatewayError as error:
        assert documented(error), error
        return label(error)
    origin = signed_tokens().get(_segments(token))
    assert origin is not None, "a token that was never signed verified"
    real_typ, real_signer, kind = origin
    assert (real_typ, real_signer) == (typ, signer) and kind in ("node", "other_node", "participant"), origin
    assert verified == _CLAIMS
    return f"accepted ({kind})"


def test_fuzz_verify_signed():
    """Receipts, hop entries and relay acknowledgements: only a genuine token of the expected type, by the expected signer,
    with a federation certificate (node EKU for verify_node_signed) verifies, and then with exactly its claims."""
    tokens = seed_tokens()
    raw = st.builds(lambda h, c, s: f"{b64url(json.dumps(h).encode())}.{b64url(json.dumps(c).encode())}.{b64url(s)}",
                    st.dictionaries(st.sampled_from(["alg", "typ", "x5c", "kid"]), json_values, max_size=4), json_values,
                    st.binary(max_size=70))  # fmt: skip
    strategy = st.tuples(st.one_of(st.sampled_from(tokens), mutated([t.encode() for t in tokens], [b".", b"A", b"="]).map(
        lambda b: b.decode("latin-1")), raw), st.sampled_from(VERIFY_TYPES), st.sampled_from(VERIFY_SIGNERS))  # fmt: skip
    fuzzing.run("verify_signed", strategy, check_verify_signed)


def test_fuzz_segment_stream():
    """The segmented AES-GCM stream: any change to the ciphertext, in any chunking, raises StreamError; nothing else decrypts."""
    key, prefix, aad = bytes(range(32)), bytes(7), b"aad"
    strategy = st.tuples(st.binary(max_size=3000), st.sampled_from([16, 64, 1024]), st.lists(
        st.tuples(st.sampled_from(["flip", "delete", "insert", "repeat", "truncate", "swap"]), st.floats(0, 1), st.integers(1, 40)),
        max_size=3), st.integers(1, 2000))  # fmt: skip

    def bend(data: bytearray, operations) -> bytes:
        for kind, where, amount in operations:
            position = int(where * len(data))
            if kind == "flip" and data:
                data[min(position, len(data) - 1)] ^= 1 << (amount % 8)
            elif kind == "delete":
                del data[position : position + amount]
            elif kind == "insert":
                data[position:position] = bytes(amount)
            elif kind == "repeat":
                data[position:position] = data[position : position + amount]
            elif kind == "truncate":
                del data[position:]
            elif kind == "swap" and len(data) > 2 * amount:
                data[:amount], data[amount : 2 * amount] = data[amount : 2 * amount], data[:amount]
        return bytes(data)

    def check(example) -> str:
        plaintext, size, operations, chunk = example
        ciphertext = b"".join(primitives.SegmentEncryptor(key, prefix, aad, size).encrypt([plaintext]))
        candidate = bend(bytearray(ciphertext), operations)
        decryptor = primitives.SegmentDecryptor(key, prefix, aad, size)
        out = bytearray()
        try:
            for start in range(0, len(candidate), chunk):
                out += decryptor.feed(candidate[start : start + chunk])
            out += decryptor.finish()
        except primitives.StreamError as error:
            assert candidate != ciphertext, "the genuine stream was refused"
            return label(error)
        assert candidate == ciphertext and bytes(out) == plaintext, "an altered stream decrypted"
        return "accepted (genuine)"

    fuzzing.run("segment_stream", strategy, check)


# --------------------------------------------------------------------------------- folder names

_NAME_CHARS = st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",))
_IDS = st.from_regex(r"[a-zA-Z0-9-]{1,36}", fullmatch=True)
names = st.one_of(
    st.text(_NAME_CHARS, min_size=1, max_size=40),
    st.builds(lambda i: f"envl_{i}.xml", _IDS),
    st.builds(lambda i, e: f"data_{i}.{e}", _IDS, st.sampled_from(["xml", "zip", "x_y", "", "ä"])),
    st.builds(lambda p, i, s: f"{p}{i}{s}", st.sampled_from(["envl_", "data_", ".", "~", "ENVL_"]), st.text(_NAME_CHARS, max_size=12),
              st.sampled_from([".xml", ".tmp", ".part", "", ".xml.exe"])),
).filter(lambda n: n not in (".", "..") and len(n.encode("utf-8", "surrogatepass")) <= 255)  # fmt: skip


def test_fuzz_folder_names():
    """Whatever names appear in the outbox, a scan never raises, never submits a path outside the outbox, and every file
    ends in outbox/, processed/ or failed/; every receipt it writes is an eCH-0090 receipt."""
    single = st.tuples(names, st.sampled_from(["envelope", "payload", "empty"])).map(lambda item: [item])
    pair = st.builds(lambda i, e: [(f"envl_{i}.xml", "envelope"), (f"data_{i}.{e}", "payload")], _IDS, st.sampled_from(["xml", "zip", "x_y"]))
    strategy = st.lists(st.one_of(single, pair), min_size=1, max_size=4).map(
        lambda groups: list({name: content for group in groups for name, content in group}.items()))  # fmt: skip
    fuzzing.run("folder_names", strategy, check_folder_names)


FOLDER_CONTENTS = ("envelope", "payload", "empty")


def check_folder_names(files: list[tuple[str, str]]) -> str:
    """Files of these (single-component) names and contents in an outbox: one scan never raises, never submits a path
    outside the outbox, leaves every file in outbox/, processed/ or failed/ and writes only eCH-0090 receipts."""
    envelope = xml_seeds()[0][-1]
    assert all("/" not in name and name not in (".", "..") for name, _ in files), "the target takes file names, not paths"
    with tempfile.TemporaryDirectory(prefix="fuzz-outbox-") as base:
        paths = FolderPaths.under(Path(base))
        paths.create()
        submitted: list[Path] = []

        async def accept(envelope_bytes: bytes, data_path: Path) -> None:
            submitted.append(data_path)

        interface = FolderInterface(ParticipantId(LUZERN), paths, accept, catalog=catalog(), now=lambda: NOW,
                                    settle=0, data_grace=0, notifications=False)  # fmt: skip
        for name, content in files:
            try:
                (paths.outbox / name).write_bytes({"envelope": envelope, "payload": b"<r/>", "empty": b""}[content])
            except (OSError, ValueError):  # ValueError: a NUL in the name
                return "name refused by the file system"
        asyncio.run(interface.scan_once())
        assert all(p.parent == paths.outbox for p in submitted)
        left = sum(1 for folder in (paths.outbox, paths.processed, paths.failed) for _ in folder.iterdir())
        assert left == len(files), "a file disappeared or was duplicated"
        for receipt in paths.receipts.iterdir():
            parse_receipt(receipt.read_bytes(), catalog())
        refused = sum(1 for _ in paths.failed.iterdir())
        return f"submitted={min(len(submitted), 2)}{'+' if len(submitted) > 2 else ''} refused={min(refused, 3)}{'+' if refused > 3 else ''}"


# ------------------------------------------------------------------------------- policy loader

POLICY_TOKENS = [b"[[rule]]\n", b"[policy]\n", b"[groups]\n", b"[namespaces]\n", b'effect = "permit"\n', b'effect = "forbid"\n',
                 b'senders = ["*"]\n', b'recipients = ["T?-*-*"]\n', b'redact = ["//e20:a/b"]\n', b"max_payload_size = -1\n",
                 b"valid_from = 2024-01-01\n", b'valid_until = "1970-01-01T00:00:00"\n', b'id = "x"\n', b"=", b'"', b'"""',
                 b"[", b"]", b"{", b"}", b"\\u0000", b"1e999", b"nan", b"inf", b"\xff", b"{http://x}a", b"sedex://", b"0-sedex-0"]  # fmt: skip


@lru_cache(maxsize=1)
def policy_seeds() -> list[bytes]:
    """The demo policy files (policies/demo), each alone and all three as one file."""
    files = [POLICIES / name for name in ("participants.toml", "einwohnerregister.toml", "statistik.toml")]
    return [f.read_bytes() for f in files] + [b"\n".join(f.read_bytes() for f in files)]


@lru_cache(maxsize=1)
def _policy_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="fuzz-policy-"))


def check_policy_file(data: bytes) -> str:
    """load_policy_set refuses a policy file with PolicyLoadError (naming the file) or returns a PolicySet whose rules are
    all typed, named and from that file."""
    path = _policy_dir() / "policy.toml"
    path.write_bytes(data)
    try:
        policy_set = load_policy_set([path])
    except PolicyLoadError as error:
        assert str(path) in str(error), error
        return f"PolicyLoadError({error.field})"
    assert all(isinstance(rule.effect, Effect) and rule.id and rule.source == str(path) for rule in policy_set.rules)
    return f"accepted ({min(len(policy_set.rules), 3)} rules)"


def test_fuzz_policy_loader():
    """The policy loader refuses a bent policy file with PolicyLoadError or loads a well-typed PolicySet; never anything else."""
    fuzzing.run("policy_loader", mutated(policy_seeds(), POLICY_TOKENS), check_policy_file)
