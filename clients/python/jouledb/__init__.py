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
"""

from ._protocol import Connection, JouleError, Result, Table

__all__ = ["connect", "Connection", "JouleError", "Result", "Table"]


def connect(host="localhost", port=21212, user=None, password=None, timeout=30.0):
    """Open a connection and log in (any name works when the server has no users)."""
    return Connection(host, port, user=user, password=password, timeout=timeout)
