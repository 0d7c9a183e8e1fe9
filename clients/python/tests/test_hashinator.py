"""The client's hashinator hashes keys exactly as the server does (the same
vectors the server's tests check, from an independent MurmurHash3)."""

import struct

from jouledb._hashinator import murmur3_x64_128, parse_ring, partition_for


def test_murmur3_matches_the_servers_vectors():
    ints = [(0, 2945182322382062539, 17462001654787800658), (1, 19144387141682250, 4434582959624657926),
            (-1, 11593587578262711667, 7575356704511641263), (42, 13163110875106803192, 2646172625393561472),
            (1234567890123, 15506224910913890035, 17379845352513669601)]
    for i, h1, h2 in ints:
        assert murmur3_x64_128(struct.pack("<q", i)) == (h1, h2), i
    strings = [("", 0, 0), ("a", 9607679276477937801, 16624257681780017498),
               ("hello world", 5998619086395760910, 12364428806279881649),
               ("ünïcödé", 894021159702796914, 18151888875458398312),
               ("xxxxxxxxxxxxxxxxx", 16327912387190054547, 11263429666212951403),
               ("0123456789abcdef", 5467490433528156583, 9782763267945859290)]
    for s, h1, h2 in strings:
        assert murmur3_x64_128(s.encode("utf-8")) == (h1, h2), s


def test_partitions_cover_the_ring_and_refuse_what_cannot_be_routed():
    seen = {partition_for(k, 3) for k in range(300)}
    assert seen == {0, 1, 2}
    assert partition_for(5, 1) == 0
    assert partition_for(None, 3) is None
    assert partition_for(1.5, 3) is None
    assert partition_for(True, 3) is None
    assert partition_for(1 << 70, 3) is None
    assert partition_for("abc", 3) == partition_for(b"abc", 3)


def test_a_ring_from_the_server_places_keys_by_its_entries():
    # Partition 1's slice of an even 3-partition ring given to partition 0.
    span = (1 << 32) // 3
    even = [(-(1 << 31) + p * span, p) for p in range(3)]
    moved = [even[0], even[2]]
    config = struct.pack(">i", len(moved)) + b"".join(struct.pack(">ii", t, p) for t, p in moved)
    ring = parse_ring(config)
    assert ring == moved
    for k in range(300):
        even_p = partition_for(k, 3)
        assert partition_for(k, 3, ring) == (0 if even_p == 1 else even_p), k
    # The even ring, as entries, places keys as the even arithmetic does.
    config = struct.pack(">i", 3) + b"".join(struct.pack(">ii", t, p) for t, p in even)
    assert all(partition_for(k, 3, parse_ring(config)) == partition_for(k, 3) for k in range(300))
    # Malformed rings are refused (the client then uses the even ring).
    assert parse_ring(config[:-1]) is None
    assert parse_ring(struct.pack(">i", 0)) is None
    assert parse_ring(struct.pack(">iiiii", 2, 5, 0, 5, 1)) is None
    assert parse_ring(None) is None
