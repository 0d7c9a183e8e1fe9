"""JouleDB's Python client: VoltDB's binary client protocol, standard library only.

    import jouledb
    with jouledb.connect("localhost", 21212) as db:
        db.execute("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20))")
        db.call("T.insert", 1, "Alice")
        for row in db.execute("SELECT * FROM t WHERE id = ?", 1):
            print(row)          # (1, 'Alice')

`call(procedure, *params)` invokes any procedure (user, CRUD or system);
`execute(sql, *params)` runs SQL through `@AdHoc`, binding `?` in order.
Both return a `Result`: it iterates the first table's rows as tuples and has
`columns`, `types`, `rows` and `tables`. A failed call raises `JouleError`
with the response's `status` and `message` (which starts with JouleDB's error
code, e.g. `[J2007 23505]`).

For a cluster, `connect_cluster(["db1:21212", "db2:21212"])` sends each
single-partition call to its partition's leader and spreads the others over
the hosts by a policy, learns the other hosts from the first that answers,
moves on from a host that fails, and sends a call again only if it never
reached the host it was sent to (otherwise it raises `JouleError` with
status -7: the call may or may not have run).
"""

from ._cluster import POLICIES, Cluster
from ._protocol import Connection, JouleError, Result, Table

__all__ = ["connect", "connect_cluster", "Cluster", "Connection", "JouleError", "Result", "Table", "POLICIES"]


def connect(host="localhost", port=21212, user=None, password=None, timeout=30.0, service="database"):
    """Open a connection and log in (any name works when the server has no users).
    ``service`` names the virtual host when connecting through a ``joule proxy``."""
    return Connection(host, port, user=user, password=password, timeout=timeout, service=service)


def connect_cluster(servers, policy="round-robin", **options):
    """Several hosts of a cluster (``["db1:21212", "db2:21212"]``), one chosen
    per call by ``policy`` (round-robin, random, weighted, least-outstanding,
    latency-aware);
    see `Cluster`."""
    return Cluster(servers, policy=policy, **options)
