"""RFC 6962 hashing and proofs, checked against known vectors and independent computation."""

from __future__ import annotations

import hashlib

import pytest

from gateway.audit.errors import AuditVerificationError
from gateway.audit.merkle import (
    EMPTY_ROOT, MerkleTree, leaf_hash, node_hash, root_of, verify_consistency, verify_inclusion,
)

# The 8 leaves and roots of the Certificate Transparency reference tests
# (google/certificate-transparency merkle_tree_test, also used by Trillian).
CT_LEAVES = [bytes.fromhex(x) for x in [
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def tree8() -> MerkleTree:
    return MerkleTree([leaf_hash(leaf) for leaf in CT_LEAVES])


def test_empty_tree_hash_is_sha256_of_nothing():
    """The root of the empty tree is SHA-256 of the empty string."""
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_of([]) == EMPTY_ROOT


def test_leaf_and_node_hashes_are_domain_separated():
    """A leaf hash prefixes 0x00 and a node hash prefixes 0x01 before SHA-256."""
    assert leaf_hash(b"abc") == sha(b"\x00abc")
    assert node_hash(b"L" * 32, b"R" * 32) == sha(b"\x01" + b"L" * 32 + b"R" * 32)


def test_small_trees_match_an_independent_computation():
    """Roots of 1 to 5 leaves equal the RFC 6962 split computed by hand."""
    a, b, c, d, e = (sha(b"\x00" + x) for x in (b"a", b"b", b"c", b"d", b"e"))
    n = lambda left, right: sha(b"\x01" + left + right)  # noqa: E731
    assert root_of([a]) == a
    assert root_of([a, b]) == n(a, b)
    assert root_of([a, b, c]) == n(n(a, b), c)
    assert root_of([a, b, c, d]) == n(n(a, b), n(c, d))
    assert root_of([a, b, c, d, e]) == n(n(n(a, b), n(c, d)), e)


def test_roots_match_the_certificate_transparency_vectors():
    """Every prefix of the CT reference tree has the published root."""
    tree = tree8()
    assert [tree.root(size).hex() for size in range(1, 9)] == CT_ROOTS


def test_inclusion_proof_matches_the_ct_vector():
    """The inclusion proof of leaf 0 in the 8-leaf tree is the published path."""
    assert [p.hex() for p in tree8().inclusion_proof(0, 8)] == [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]


def test_every_inclusion_proof_verifies():
    """Each leaf's inclusion proof verifies against every tree size that contains it."""
    tree = MerkleTree([leaf_hash(bytes([i])) for i in range(13)])
    for size in range(1, 14):
        for index in range(size):
            verify_inclusion(leaf_hash(bytes([index])), index, size, tree.inclusion_proof(index, size), tree.root(size))


def test_altered_inclusion_proofs_fail():
    """A proof with a flipped byte, the wrong index, size, leaf or an extra step is refused."""
    tree = MerkleTree([leaf_hash(bytes([i])) for i in range(7)])
    proof, root, leaf = tree.inclusion_proof(3, 7), tree.root(7), leaf_hash(bytes([3]))
    flipped = [bytes([proof[0][0] ^ 1]) + proof[0][1:]] + proof[1:]
    for args in [
        (leaf, 3, 7, flipped, root),
        (leaf, 2, 7, proof, root),
        (leaf, 3, 4, proof, root),
        (leaf_hash(b"x"), 3, 7, proof, root),
        (leaf, 3, 7, proof + [root], root),
        (leaf, 3, 7, proof[:-1], root),
        (leaf, 7, 7, proof, root),
    ]:
        with pytest.raises(AuditVerificationError):
            verify_inclusion(*args)


def test_every_consistency_proof_verifies():
    """Each pair of sizes m <= n has a consistency proof that verifies."""
    tree = MerkleTree([leaf_hash(bytes([i])) for i in range(13)])
    for second in range(1, 14):
        for first in range(1, second + 1):
            verify_consistency(first, second, tree.root(first), tree.root(second), tree.consistency_proof(first, second))


def test_consistency_proof_matches_rfc_structure():
    """PROOF(3, D[8]) is [h(2), h(3), MTH(0:2), MTH(4:8)] as RFC 6962 §2.1.3 illustrates."""
    tree = tree8()
    l = [leaf_hash(x) for x in CT_LEAVES]  # noqa: E741
    expected = [l[2], l[3], node_hash(l[0], l[1]), node_hash(node_hash(l[4], l[5]), node_hash(l[6], l[7]))]
    assert tree.consistency_proof(3, 8) == expected


def test_altered_consistency_proofs_fail():
    """A consistency proof with a changed hash, a wrong old root or a rewritten history is refused."""
    tree = MerkleTree([leaf_hash(bytes([i])) for i in range(10)])
    proof = tree.consistency_proof(6, 10)
    forked = MerkleTree([leaf_hash(bytes([i if i != 2 else 99])) for i in range(10)])
    flipped = [bytes([proof[1][0] ^ 1]) + proof[1][1:]] + [proof[0]] + proof[2:]
    cases = [
        (6, 10, tree.root(6), tree.root(10), [proof[0]] + [bytes(32)] + proof[2:]),
        (6, 10, forked.root(6), tree.root(10), proof),
        (6, 10, tree.root(6), forked.root(10), proof),
        (5, 10, tree.root(6), tree.root(10), proof),
        (6, 10, tree.root(6), tree.root(10), proof[:-1]),
        (6, 10, tree.root(6), tree.root(10), flipped),
    ]
    for case in cases:
        with pytest.raises(AuditVerificationError):
            verify_consistency(*case)
