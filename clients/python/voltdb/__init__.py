"""A `VoltClient` for programs written against VoltDB's simple Python API:

    from voltdb import VoltClient
    client = VoltClient('localhost', 21212)
    client.execute('CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(255));')
    for row in client.execute('SELECT * FROM users;'):
        print(row)
    client.close()

`execute` runs SQL and returns the rows as tuples (an iterable `Result`);
`call` invokes a procedure. Errors raise `jouledb.JouleError`.
"""

from jouledb import JouleError, Result, connect

__all__ = ["VoltClient", "JouleError"]


class VoltClient:
    def __init__(self, host="localhost", port=21212, user=None, password=None, timeout=30.0):
        self._conn = connect(host, port, user=user, password=password, timeout=timeout)

    def execute(self, sql, *params):
        return self._conn.execute(sql, *params)

    def call(self, procedure, *params):
        return self._conn.call(procedure, *params)

    def close(self):
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
