"""Which partition owns a partition key — the server's rule, so the client
can send a single-partition call straight to its partition's leader.

MurmurHash3 x64-128 (seed 0) of the key's bytes: an integer as its 8
little-endian bytes, a string as UTF-8, bytes as they are. The token is the
high 32 bits of the first 64-bit half, as a signed integer; a cluster's ring
splits the token space evenly, partition ``i`` owning the ``i``-th slice,
and a token belongs to the largest ring token at or below it.
"""

import bisect
import struct

_MASK = (1 << 64) - 1
_C1 = 0x87C37B91114253D5
_C2 = 0x4CF5AD432745937F


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & _MASK


def _fmix(k):
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _MASK
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _MASK
    return k ^ (k >> 33)


def murmur3_x64_128(data, seed=0):
    """The two 64-bit halves of MurmurHash3 x64-128 of ``data``."""
    h1 = h2 = seed
    n = len(data) // 16
    for i in range(n):
        k1, k2 = struct.unpack_from("<QQ", data, 16 * i)
        h1 ^= _rotl((k1 * _C1) & _MASK, 31) * _C2 & _MASK
        h1 = (_rotl(h1, 27) + h2) & _MASK
        h1 = (h1 * 5 + 0x52DCE729) & _MASK
        h2 ^= _rotl((k2 * _C2) & _MASK, 33) * _C1 & _MASK
        h2 = (_rotl(h2, 31) + h1) & _MASK
        h2 = (h2 * 5 + 0x38495AB5) & _MASK
    tail = data[16 * n:]
    k1 = int.from_bytes(tail[:8], "little")
    k2 = int.from_bytes(tail[8:], "little")
    if len(tail) > 8:
        h2 ^= _rotl((k2 * _C2) & _MASK, 33) * _C1 & _MASK
    if tail:
        h1 ^= _rotl((k1 * _C1) & _MASK, 31) * _C2 & _MASK
    h1 ^= len(data)
    h2 ^= len(data)
    h1 = (h1 + h2) & _MASK
    h2 = (h2 + h1) & _MASK
    h1, h2 = _fmix(h1), _fmix(h2)
    h1 = (h1 + h2) & _MASK
    h2 = (h2 + h1) & _MASK
    return h1, h2


def key_bytes(key):
    """The bytes a key hashes as, or None if it cannot be routed."""
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        if not -(1 << 63) <= key < (1 << 63):
            return None
        return struct.pack("<q", key)
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytes, bytearray)):
        return bytes(key)
    return None


def parse_ring(config):
    """The ring in ``@Statistics TOPO``'s second table (``HASHCONFIG``: a
    big-endian 32-bit count, then each entry's token and partition) as a
    sorted list of (token, partition), or None if it is malformed."""
    if not isinstance(config, (bytes, bytearray)) or len(config) < 4:
        return None
    (count,) = struct.unpack(">i", config[:4])
    if count <= 0 or len(config) != 4 + 8 * count:
        return None
    ring = [struct.unpack(">ii", config[4 + 8 * i:12 + 8 * i]) for i in range(count)]
    if any(p < 0 for _, p in ring) or any(a[0] >= b[0] for a, b in zip(ring, ring[1:])):
        return None
    return ring


def partition_for(key, partitions, ring=None):
    """The partition owning ``key`` — by ``ring`` (sorted (token, partition)
    pairs, as ``parse_ring`` gives) if given, else by the even ring over
    ``partitions`` — or None if the key cannot be routed."""
    data = key_bytes(key)
    if data is None or partitions <= 0:
        return None
    h1 = murmur3_x64_128(data)[0]
    token = h1 >> 32
    if token >= 1 << 31:
        token -= 1 << 32
    if ring:
        # The entry at or below the token; below the first, the last.
        i = bisect.bisect_right([t for t, _ in ring], token) - 1
        return ring[i][1]
    span = (1 << 32) // partitions
    # Ring token of partition p: -2**31 + p * span.
    p = (token + (1 << 31)) // span
    return min(p, partitions - 1)
