"""The cluster client's choice of host, without a server: the latency-aware
policy weighs each host's recent round trip by its calls in flight."""

import random
import threading

from jouledb import _cluster


def _cluster_of(policy, latencies):
    c = _cluster.Cluster.__new__(_cluster.Cluster)
    c._lock = threading.Lock()
    c._policy = policy
    c._next = 0
    c._rng = random.Random(1)
    c._weights = {}
    hosts = []
    for i, latency in enumerate(latencies):
        h = _cluster._Host(("h%d" % i, 21212))
        h.latency = latency
        hosts.append(h)
    c._hosts = {h.address: h for h in hosts}
    return c, hosts


def _pick(c):
    host = c._pick(set())
    host.outstanding -= 1  # as a finished call would
    return host


def test_latency_aware_prefers_the_quick_host_unless_it_is_busy():
    c, (slow, quick, middle) = _cluster_of("latency-aware", [0.009, 0.002, 0.004])
    assert all(_pick(c) is quick for _ in range(10))
    # 2 ms with 3 calls in flight (8 ms) loses to 4 ms with none.
    quick.outstanding = 3
    assert _pick(c) is middle
    quick.outstanding = 0
    # A host not measured yet is tried first; a host passed over is not.
    slow.latency = 0.0
    assert _pick(c) is slow
    assert c._pick({slow.address, quick.address}) is middle


def test_round_trips_are_averaged():
    h = _cluster._Host(("h", 21212))
    h.measured(0.008)
    assert h.latency == 0.008
    h.measured(0.0)
    assert abs(h.latency - 0.007) < 1e-9


def test_a_learned_host_the_cluster_no_longer_names_is_dropped_but_a_given_one_stays():
    import types

    c, hosts = _cluster_of("round-robin", [0.0, 0.0, 0.0])
    c._given = {hosts[0].address}
    c._route = False
    listed = [("h0", "UP"), ("h1", "UP")]
    rows = lambda: [[i, "internal", "%s:21212" % h, s] for i, (h, s) in enumerate(listed)]
    c._call_once = lambda procedure, params: types.SimpleNamespace(rows=rows())
    c.refresh()
    assert sorted(c._hosts) == [("h0", 21212), ("h1", 21212)], "h2 was removed from the cluster"
    # A host that is down is still a member: it stays.
    listed = [("h1", "FAILED")]
    c.refresh()
    assert sorted(c._hosts) == [("h0", 21212), ("h1", 21212)], "h0 was given, h1 is only down"
