"""RFC 6962 Merkle tree hashing, inclusion and consistency proofs.

Leaf hash ``SHA-256(0x00 || leaf)``, node hash ``SHA-256(0x01 || left || right)``; the
tree hash of ``n`` leaves splits at the largest power of two smaller than ``n``
(RFC 6962 §2.1). Verifiers follow RFC 9162 §2.1.3.2 and §2.1.4.2 and raise
:class:`AuditVerificationError` instead of returning a bool.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from .errors import AuditVerificationError

_sha256 = hashlib.sha256
EMPTY_ROOT = _sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    """Return ``SHA-256(0x00 || leaf)``."""
    return _sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return ``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """A tree over stored leaf hashes, with every perfect level kept in memory.

    Building costs ``n - 1`` node hashes once; any subtree hash, root at an earlier
    size, inclusion or consistency proof then costs O(log n) lookups. This is what
    makes whole-log verification and exports with a proof per record fast.
    """

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        levels = [list(leaf_hashes)]
        while len(levels[-1]) > 1:
            below = levels[-1]
            levels.append(
                [_sha256(b"\x01" + a + b).digest() for a, b in zip(below[0::2], below[1::2])]
            )
        self._levels = levels

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def leaf(self, index: int) -> bytes:
        """The stored leaf hash at ``index``."""
        return self._levels[0][index]

    def _hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]); ``start`` is always aligned to the left subtree sizes."""
        n = end - start
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and start % n == 0:
            return self._levels[n.bit_length() - 1][start // n]
        k = _split(n)
        return node_hash(self._hash(start, start + k), self._hash(start + k, end))

    def root(self, size: int | None = None) -> bytes:
        """The RFC 6962 tree hash of the first ``size`` leaves (all by default)."""
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} outside 0..{self.size}")
        return self._hash(0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[0:size]) of RFC 6962 §2.1.1."""
        if not 0 <= index < size <= self.size:
            raise ValueError(f"no inclusion proof for index {index} in size {size}")
        proof: list[bytes] = []
        start, end = 0, size
        while end - start > 1:
            k = _split(end - start)
            if index < start + k:
                proof.append(self._hash(start + k, end))
                end = start + k
            else:
                proof.append(self._hash(start, start + k))
                start += k
        proof.reverse()  # RFC order: from the leaf upwards
        return proof

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """PROOF(first, D[0:second]) of RFC 6962 §2.1.2."""
        if not 0 < first <= second <= self.size:
            raise ValueError(f"no consistency proof from size {first} to {second}")
        proof: list[bytes] = []
        start, end, m, complete = 0, second, first, True
        while True:
            n = end - start
            if m == n:
                if not complete:
                    proof.append(self._hash(start, end))
                break
            k = _split(n)
            if m <= k:
                proof.append(self._hash(start + k, end))
                end = start + k
            else:
                proof.append(self._hash(start, start + k))
                start, m, complete = start + k, m - k, False
        proof.reverse()
        return proof


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """The RFC 6962 tree hash over ``leaf_hashes``."""
    return MerkleTree(leaf_hashes).root()


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that leaf hash ``leaf`` sits at ``index`` of the tree of ``size`` with ``root``.

    A verifier MUST hash the record bytes itself (never trust a supplied leaf hash) and
    MUST take ``root`` and ``size`` from a checkpoint whose signature it verified.
    """
    if not 0 <= index < size:
        raise AuditVerificationError("inclusion proof index outside tree", index=index)
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise AuditVerificationError("inclusion proof too long", index=index)
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0 or r != root:
        raise AuditVerificationError("inclusion proof does not lead to the root", index=index)


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of size ``second`` extends the tree of size ``first`` unchanged.

    A verifier MUST take both roots from checkpoints whose signatures it verified.
    """
    if not 0 <= first <= second:
        raise AuditVerificationError("consistency sizes out of order")
    if first == second:
        if proof or first_root != second_root:
            raise AuditVerificationError("equal sizes need equal roots and an empty proof")
        return
    if first == 0:
        if proof:
            raise AuditVerificationError("consistency from the empty tree needs an empty proof")
        return
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    if not path:
        raise AuditVerificationError("consistency proof is empty")
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise AuditVerificationError("consistency proof too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != first_root or sr != second_root:
        raise AuditVerificationError("consistency proof does not match the roots")
