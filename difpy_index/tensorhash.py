"""Exact content digests of a difPy tensor: what ``-s duplicates`` groups by in SQL.

Under difPy's semantics a pair is a duplicate when its MSE is exactly 0, i.e. when the two
tensors are equal byte for byte (with ``rotate``: one of the four 90-degree rotations of
the second equals the first). So every tensor gets two signed 64-bit digests (BLAKE2b of
its bytes): ``plain``, of the tensor as stored, and ``turned``, the smallest of the
digests of its four rotations, equal for every rotation of one tensor. Equal tensors have
equal digests, so grouping rows by a digest (and by dimensions when ``same_dim``) finds a
superset of every duplicate class; the search verifies each class byte for byte (a 64-bit
collision costs a comparison, never a wrong group).

Computed by the decode workers (``pool.decode_task``), stored in ``tensors.digest`` and
``tensors.turned_digest`` (schema 0005, which fills them for existing rows).
"""

from __future__ import annotations

import hashlib

__all__ = ["tensor_digests"]

#: bytes of a digest: a signed 64-bit integer, so a BigInteger column holds it anywhere
DIGEST_BYTES = 8


def _digest(data: bytes) -> int:
    h = hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()
    return int.from_bytes(h, "little", signed=True)


def tensor_digests(blob: bytes, px_size: int) -> tuple[int, int]:
    """(plain, turned) digests of a ``(px, px, 3)`` uint8 tensor's bytes: the digest of
    the bytes, and the smallest digest over the tensor's four rotations (``np.rot90``)."""
    import numpy as np

    t = np.frombuffer(blob, dtype=np.uint8).reshape(px_size, px_size, 3)
    plain = _digest(blob)
    turned = min(plain, *(_digest(np.rot90(t, k).tobytes()) for k in (1, 2, 3)))
    return plain, turned
