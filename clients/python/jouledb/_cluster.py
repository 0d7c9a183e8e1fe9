"""Several hosts of one JouleDB cluster behind one object.

A `Cluster` keeps connections to the cluster's hosts and gives each call to
one of them, chosen by a policy:

* ``round-robin``: in turn;
* ``random``: at random (``seed`` makes the choice repeatable);
* ``weighted``: at random in proportion to ``weights`` (one per server, or a
  dict by ``"host:port"``);
* ``least-outstanding``: the host with the fewest calls in flight from this
  object (it is thread-safe: each call checks a connection out of its host's
  pool, so threads share the hosts);
* ``latency-aware``: the host whose recent round trip (an average over its
  answers, each weighing 1/8), times one more than its calls in flight, is
  the lowest; a host not measured yet goes first, so each is tried.

Any host serves any call (it forwards to the partition's leader), so the
choice is about spreading load and surviving failures:

* With ``discover`` (the default) the first host that answers is asked for the
  cluster's hosts (``@Statistics CLUSTER``); every host that is up joins the
  list, and the list is read again after a host fails — the client follows the
  cluster's topology. A host learned that way which the cluster no longer
  names (it was removed) leaves the list; the servers given never do.
* A host whose connection cannot be opened, or breaks before a request was
  written whole, is set aside for a second and the call goes to another: the
  server never saw it, so sending it again is safe.
* A connection that breaks after the request was written raises `JouleError`
  with status -7 (VoltDB's RESPONSE_UNKNOWN): the call may have run, and it is
  not sent again.

With ``route_to_leaders`` (the default) a single-partition call goes
straight to its partition's leader, saving the host that would forward it a
hop: the client reads each partition's leader (``@Statistics TOPO``) and
which parameter partitions each procedure (``@SystemCatalog PROCEDURES``),
hashes the key as the server does (`_hashinator.py`). Its connections
subscribe to topology notifications (``@Subscribe('TOPOLOGY')``): when one
arrives (read along with the next answer on that connection) the client
reads the topology again before its next call — and every few seconds
regardless. A call it cannot route goes by the policy.
"""

import random as _random
import threading
import time

from ._hashinator import parse_ring, partition_for
from ._protocol import Connection, JouleError

RESPONSE_UNKNOWN = -7
SERVER_UNAVAILABLE = -5
POLICIES = ("round-robin", "random", "weighted", "least-outstanding", "latency-aware")
# How long a host that failed is passed over.
RETRY_AFTER = 1.0
# How often a routing client reads the topology again without being told
# it changed.
TOPOLOGY_EVERY = 5.0


def _address(server):
    if isinstance(server, (tuple, list)):
        return (str(server[0]), int(server[1]))
    host, _, port = str(server).rpartition(":")
    if not host:
        raise ValueError("a server is host:port, not %r" % (server,))
    return (host.strip("[]"), int(port))


class _NotSent(Exception):
    """The request never reached the host: safe to send elsewhere."""


class _Host:
    def __init__(self, address):
        self.address = address
        self.idle = []
        self.outstanding = 0
        self.calls = 0
        self.down_until = 0.0
        # Recent round trips in seconds (0.0: none answered yet).
        self.latency = 0.0

    def measured(self, seconds):
        """Fold one answer's round trip into the average (under the lock)."""
        self.latency = seconds if self.latency == 0.0 else self.latency + (seconds - self.latency) / 8


class Cluster:
    """Connections to several hosts, one per call chosen by `policy`."""

    def __init__(self, servers, policy="round-robin", weights=None, seed=None, user=None, password=None,
                 timeout=30.0, discover=True, route_to_leaders=True):
        if policy not in POLICIES:
            raise ValueError("policy must be one of %s, not %r" % (", ".join(POLICIES), policy))
        addresses = [_address(s) for s in servers]
        if not addresses:
            raise ValueError("at least one server is needed")
        self._policy = policy
        self._rng = _random.Random(seed)
        self._login = (user, password, timeout)
        self._lock = threading.Lock()
        self._hosts = {a: _Host(a) for a in addresses}
        # The hosts given (never dropped: a host may advertise another
        # address than the one dialled); the others were learned.
        self._given = set(addresses)
        self._next = 0
        self._route = route_to_leaders
        # Routing: partition count, leader address per partition, and the
        # partition parameter of each single-partition procedure.
        self._partitions = 0
        self._leaders = {}
        self._partition_params = {}
        self._ring = None
        self._read_at = 0.0
        # A host said the topology changed: read it before the next call.
        self._stale = False
        self._weights = {}
        if weights is not None:
            if isinstance(weights, dict):
                self._weights = {_address(k): float(v) for k, v in weights.items()}
            else:
                self._weights = {a: float(w) for a, w in zip(addresses, weights)}
        if discover:
            self.refresh()

    # -- topology --

    def refresh(self):
        """Ask a host for the cluster's hosts and use every one that is up."""
        try:
            result = self._call_once("@Statistics", ("CLUSTER", 0))
        except JouleError:
            return
        clients = {}
        members = set()
        unreadable = False
        with self._lock:
            for row in result.rows:
                state, client = row[3], row[2]
                if client:
                    try:
                        members.add(_address(client))
                    except ValueError:
                        unreadable = True
                if state != "UP" or not client:
                    continue
                address = _address(client)
                if address[0] in ("0.0.0.0", "::"):
                    continue
                clients[str(row[0])] = address
                if address not in self._hosts:
                    self._hosts[address] = _Host(address)
            # A learned host the cluster no longer names was removed: no
            # call goes there any more (calls in flight there finish).
            if members and not unreadable:
                for address in [a for a in self._hosts if a not in self._given and a not in members]:
                    for connection in self._hosts.pop(address).idle:
                        connection.close()
        self._read_at = time.monotonic()
        if self._route:
            self._read_routes(clients)

    def _topology_changed(self):
        self._stale = True

    def _read_routes(self, clients):
        """Each partition's leader and each procedure's partition parameter."""
        try:
            topo = self._call_once("@Statistics", ("TOPO", 0))
            procedures = self._call_once("@SystemCatalog", ("PROCEDURES",))
        except JouleError:
            return
        rows = topo.rows[:-1]  # the last row is the multi-partition initiator's
        # The ring the hosts route by (TOPO's second table), if sent.
        ring = None
        if len(topo.tables) > 1 and topo.tables[1].rows:
            columns = [c.upper() for c in topo.tables[1].columns]
            if "HASHCONFIG" in columns:
                ring = parse_ring(topo.tables[1].rows[0][columns.index("HASHCONFIG")])
        leaders = {}
        for row in rows:
            host = str(row[2]).split(":")[0]
            if host in clients:
                leaders[int(row[0])] = clients[host]
        columns = [c.upper() for c in procedures.columns]
        name, remarks = columns.index("PROCEDURE_NAME"), columns.index("REMARKS")
        params = {}
        for row in procedures.rows:
            text = row[remarks] or ""
            if '"singlePartition":true' in text and '"partitionParameter":' in text:
                digits = text.split('"partitionParameter":', 1)[1].lstrip().split(",", 1)[0].split("}", 1)[0]
                if digits.strip().isdigit():
                    params[row[name]] = int(digits)
        with self._lock:
            self._partitions, self._leaders, self._partition_params = len(rows), leaders, params
            self._ring = ring

    def _leader_for(self, procedure, params):
        """The address of the host leading the call's partition, if known."""
        index = self._partition_params.get(procedure)
        if index is None or index >= len(params):
            return None
        partition = partition_for(params[index], self._partitions, self._ring)
        return None if partition is None else self._leaders.get(partition)

    def hosts(self):
        """The hosts known, as ``"host:port"`` strings."""
        with self._lock:
            return ["%s:%d" % a for a in self._hosts]

    def calls_per_host(self):
        """How many calls each host has answered through this object."""
        with self._lock:
            return {"%s:%d" % a: h.calls for a, h in self._hosts.items()}

    # -- calls --

    def call(self, procedure, *params):
        """Invoke a procedure on one host; another if that one cannot take it."""
        try:
            return self._call_once(procedure, params)
        except JouleError as e:
            if e.status != SERVER_UNAVAILABLE:
                raise
            # Every host was passed over or failed: the topology may have
            # changed (a host rejoined elsewhere); look again once.
            self.refresh()
            return self._call_once(procedure, params)

    def execute(self, sql, *params):
        """Run SQL through @AdHoc on one host."""
        return self.call("@AdHoc", sql, *params)

    def _call_once(self, procedure, params):
        tried = set()
        last = None
        if self._route and self._read_at and (self._stale or time.monotonic() - self._read_at > TOPOLOGY_EVERY):
            self._read_at = time.monotonic()
            self._stale = False
            self.refresh()
        preferred = self._leader_for(procedure, params) if self._route else None
        while True:
            host = self._pick(tried, preferred)
            if host is None:
                raise JouleError(SERVER_UNAVAILABLE, "no host of the cluster can take the call: %s" % (last,))
            tried.add(host.address)
            try:
                return self._call_on(host, procedure, params)
            except _NotSent as e:
                last = e
                with self._lock:
                    host.down_until = time.monotonic() + RETRY_AFTER

    def _pick(self, tried, preferred=None):
        now = time.monotonic()
        with self._lock:
            live = [h for a, h in self._hosts.items() if a not in tried and h.down_until <= now]
            if not live:
                return None
            leader = self._hosts.get(preferred)
            if leader is not None and leader in live:
                host = leader
            elif self._policy == "round-robin":
                host = live[self._next % len(live)]
                self._next += 1
            elif self._policy == "random":
                host = self._rng.choice(live)
            elif self._policy == "weighted":
                weights = [self._weights.get(h.address, 1.0) for h in live]
                host = self._rng.choices(live, weights=weights)[0] if sum(weights) > 0 else live[0]
            elif self._policy == "latency-aware":
                host = min(live, key=lambda h: (h.latency * (h.outstanding + 1), h.calls))
            else:
                host = min(live, key=lambda h: (h.outstanding, h.calls))
            host.outstanding += 1
            return host

    def _call_on(self, host, procedure, params):
        user, password, timeout = self._login
        try:
            with self._lock:
                connection = host.idle.pop() if host.idle else None
            if connection is None:
                try:
                    connection = Connection(host.address[0], host.address[1], user=user, password=password,
                                            timeout=timeout, on_topology=self._topology_changed)
                    if self._route:
                        try:
                            connection.call("@Subscribe", "TOPOLOGY")
                        except JouleError:
                            pass  # a server without notifications: read on the schedule alone
                except OSError as e:
                    raise _NotSent("cannot reach %s:%d: %s" % (host.address + (e,)))
                except JouleError as e:
                    if e.status == -3:
                        raise
                    raise _NotSent("cannot reach %s:%d: %s" % (host.address + (e,)))
            sent = time.monotonic()
            try:
                connection.send_call(procedure, *params)
            except OSError as e:
                connection.close()
                raise _NotSent("%s:%d: %s" % (host.address + (e,)))
            try:
                result = connection.receive_result()
            except (OSError, JouleError) as e:
                if isinstance(e, JouleError) and e.status not in (-4,):
                    # An answer: the call failed on the server.
                    with self._lock:
                        self._park(host, connection)
                        host.calls += 1
                    raise
                connection.close()
                raise JouleError(RESPONSE_UNKNOWN,
                                 "the connection to %s:%d broke after the call was sent: it may or may not have "
                                 "run (%s)" % (host.address + (e,)))
            with self._lock:
                self._park(host, connection)
                host.calls += 1
                host.measured(time.monotonic() - sent)
            return result
        finally:
            with self._lock:
                host.outstanding -= 1

    def _park(self, host, connection):
        """Keep `connection` for `host`'s next call (under the lock), or close
        it if the host was dropped meanwhile (removed from the cluster)."""
        if self._hosts.get(host.address) is host:
            host.idle.append(connection)
        else:
            connection.close()

    def close(self):
        with self._lock:
            for h in self._hosts.values():
                for c in h.idle:
                    c.close()
                h.idle = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
