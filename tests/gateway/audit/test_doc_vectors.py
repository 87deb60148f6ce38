"""The test vectors printed in docs/audit.md, read from the page itself and recomputed.

Each value is recomputed twice: with ``hashlib``/``hmac``/``cryptography`` directly, as an
independent verifier would from the page alone, and with the code. A vector missing from
the page fails the test as surely as a wrong one.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
import re
from datetime import datetime
from functools import cache
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.audit import MerkleTree, person_ref, verify_checkpoint, verify_consistency, verify_inclusion
from gateway.audit.checkpoint import Checkpoint, load_public_key
from gateway.audit.merkle import EMPTY_ROOT, leaf_hash, node_hash
from gateway.audit.record import canonical_json

from .conftest import message_record

DOC = Path(__file__).resolve().parents[3] / "docs" / "audit.md"


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@cache
def section(title: str) -> str:
    """The text of the ``## N. <title>…`` section (exactly one must match)."""
    parts = re.split(r"^## \d+\. ", DOC.read_text("utf-8"), flags=re.MULTILINE)
    found = [p for p in parts[1:] if p.startswith(title)]
    assert len(found) == 1, f"docs/audit.md has no single section {title!r}"
    return found[0]


def one(pattern: str, text: str) -> str:
    found = re.findall(pattern, text, flags=re.DOTALL)
    assert len(found) == 1, f"expected one match of {pattern!r} in docs/audit.md, found {len(found)}"
    return found[0]


def blocks(text: str) -> list[str]:
    return re.findall(r"^```\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def table(text: str) -> dict[str, str]:
    """First column -> second column of the markdown table rows, backticks removed."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 2 and not set(cells[0]) <= set("-"):
            rows[cells[0].replace("\\|", "|")] = cells[1].strip("`")
    return rows


def hexes(text: str) -> dict[str, bytes]:
    return {k: bytes.fromhex(v) for k, v in table(text).items() if re.fullmatch(r"[0-9a-f]{64}", v)}


def test_person_ref_vectors():
    """Each identifier of section 2 gives its printed ref: HMAC-SHA256(secret, normalised identifier)."""
    text = section("Person references")
    secret = one(r"secret = ASCII `([^`]+)`", text).encode("ascii")
    rows = {k: v for k, v in table(text).items() if re.fullmatch(r"[0-9a-f]{64}", v)}
    assert len(rows) == 2
    for cell, ref in rows.items():
        identifier = one(r"^`([^`]+)`", cell)
        normalised = re.search(r"→ `([^`]+)`", cell)
        hashed = (normalised.group(1) if normalised else identifier).encode("utf-8")
        assert hmac.new(secret, hashed, hashlib.sha256).hexdigest() == ref
        assert person_ref(identifier, secret) == ref


def test_empty_tree_vector():
    """The empty tree hash of section 3 is SHA-256 of nothing."""
    printed = one(r"empty tree = `SHA-256\(\"\"\)` =\s+`([0-9a-f]{64})`", section("Hashing"))
    assert bytes.fromhex(printed) == sha(b"") == EMPTY_ROOT


def test_fixed_record_vector():
    """The fixed record's printed bytes are canonical, equal the code's, and hash to the printed leaf."""
    text = section("Test vectors")
    body = blocks(text)[0].rstrip("\n").encode("utf-8")
    assert canonical_json(json.loads(body)) == body
    ref = json.loads(body)["person_refs"][0]
    assert message_record(1, person_refs=(ref,)).canonical_bytes() == body
    printed = one(r"leaf hash `([0-9a-f]{64})`", text)
    assert sha(b"\x00" + body).hex() == leaf_hash(body).hex() == printed


@pytest.fixture
def three() -> tuple[list[bytes], dict[str, bytes]]:
    """The printed 3-record log (as bytes) and the printed hash table."""
    text = section("Test vectors")
    lines = [line.encode("utf-8") for line in blocks(text)[1].splitlines()]
    assert len(lines) == 3
    return lines, hexes(text)


def test_three_record_log_vectors(three):
    """Leaves, node hash, roots and both proofs of the printed 3-record log are what the page says."""
    lines, printed = three
    for i, line in enumerate(lines):
        assert canonical_json(json.loads(line)) == line == message_record(i).canonical_bytes()
    leaves = [sha(b"\x00" + line) for line in lines]
    assert leaves == [printed[f"leaf {i}"] for i in range(3)]
    node01 = sha(b"\x01" + leaves[0] + leaves[1])
    assert node01 == node_hash(leaves[0], leaves[1]) == printed["node(leaf 0, leaf 1) = SHA-256(0x01 || leaf 0 || leaf 1)"]
    assert node01 == printed["root, size 2"]
    root3 = sha(b"\x01" + node01 + leaves[2])
    assert root3 == printed["root, size 3"]
    tree = MerkleTree(leaves)
    assert (tree.root(2), tree.root(3)) == (node01, root3)

    rows = table(section("Test vectors"))
    names = {f"leaf {i}": leaves[i] for i in range(3)}

    def path(cell: str) -> list[bytes]:
        return [names[name.strip()] for name in cell.strip("[]").split(",")]

    inclusion = path(rows["inclusion proof, index 1, size 3"])
    assert tree.inclusion_proof(1, 3) == inclusion
    verify_inclusion(leaves[1], 1, 3, inclusion, root3)
    consistency = path(rows["consistency proof, 2 → 3"])
    assert tree.consistency_proof(2, 3) == consistency
    verify_consistency(2, 3, node01, root3, consistency)


def test_checkpoint_vectors(three):
    """The printed note is the checkpoint of the printed log, and its printed digest is right."""
    _, printed = three
    text = section("Test vectors")
    origin = one(r"Checkpoint of that log, origin `([^`]+)`", text)
    moment = one(r"Checkpoint of that log, origin `[^`]+`, time `([^`]+)`", text)
    note = ast.literal_eval(next(b for b in blocks(text) if b.startswith("b'")).strip())
    when = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    assert Checkpoint(origin, 3, printed["root, size 3"], when).signed_bytes() == note
    lines = note.decode("ascii").split("\n")
    header = blocks(section("Checkpoints"))[0].splitlines()[0]
    assert lines[:3] == [header, origin, "3"]
    assert base64.b64decode(lines[3]) == printed["root, size 3"]
    assert sha(note).hex() == one(r"the digest ECDSA signs\): `([0-9a-f]{64})`", text)


def test_key_and_signature_vectors():
    """The printed scalar gives the printed public key, and the printed signature verifies over the printed note."""
    text = section("Test vectors")
    scalar = int(one(r"private scalar `(0x[0-9A-Fa-f]+)`", text), 16)
    pem = next(b for b in blocks(text) if b.startswith("-----BEGIN PUBLIC KEY-----")).encode("ascii")
    derived = ec.derive_private_key(scalar, ec.SECP256R1()).public_key()
    assert derived.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo) == pem
    note = ast.literal_eval(next(b for b in blocks(text) if b.startswith("b'")).strip())
    signature = bytes.fromhex(next(b for b in blocks(text) if re.fullmatch(r"30[0-9a-f]+\n", b)).strip())
    public = load_public_key(pem)
    public.verify(signature, note, ec.ECDSA(hashes.SHA256()))  # raises if it does not verify
    assert verify_checkpoint(note, signature, public, origin="node-lu-hub").size == 3
