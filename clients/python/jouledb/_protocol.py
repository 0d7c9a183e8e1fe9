"""The wire protocol: frames, login, invocations, responses and tables.

All integers are big-endian. A frame is an int32 length and a payload.
Login: version (1), hash scheme (1 = SHA-256), service ("database" unless
given: a joule proxy picks its virtual host by it), user,
the 32-byte SHA-256 of the password. Invocation (version 0): procedure name,
int64 client handle, int16 parameter count, each parameter as a type byte
and a value. Response: version, handle, present-fields byte, status,
[status string], app status, [app status string], round trip int32,
[exception], int16 table count, tables.
"""

import datetime
import decimal
import hashlib
import socket
import struct

NULL, TINYINT, SMALLINT, INTEGER, BIGINT, FLOAT = 1, 3, 4, 5, 6, 8
STRING, TIMESTAMP, DECIMAL, VARBINARY, ARRAY = 9, 11, 22, 25, -99
TYPE_NAMES = {
    TINYINT: "TINYINT", SMALLINT: "SMALLINT", INTEGER: "INTEGER", BIGINT: "BIGINT",
    FLOAT: "FLOAT", STRING: "VARCHAR", TIMESTAMP: "TIMESTAMP", DECIMAL: "DECIMAL",
    VARBINARY: "VARBINARY", NULL: "NULL",
}
NULL_FLOAT = -1.7e308
SUCCESS = 1
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_SCALE = decimal.Decimal(10) ** 12


class JouleError(Exception):
    """A call that did not succeed: `status` is VoltDB's status code."""

    def __init__(self, status, message, app_status=None, app_status_string=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.app_status = app_status
        self.app_status_string = app_status_string


class Table:
    """One result table: column names, type names and rows (tuples)."""

    def __init__(self, columns, types, rows):
        self.columns = columns
        self.types = types
        self.rows = rows

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)

    def __repr__(self):
        return "Table(columns=%r, rows=%r)" % (self.columns, self.rows)


class Result:
    """A successful call: its tables; iterating gives the first table's rows."""

    def __init__(self, tables, app_status, app_status_string):
        self.tables = tables
        self.app_status = app_status
        self.app_status_string = app_status_string

    @property
    def _first(self):
        return self.tables[0] if self.tables else Table([], [], [])

    @property
    def columns(self):
        return self._first.columns

    @property
    def types(self):
        return self._first.types

    @property
    def rows(self):
        return self._first.rows

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)

    def scalar(self):
        """The first column of the first row (None when there is none)."""
        return self.rows[0][0] if self.rows else None

    def __repr__(self):
        return "Result(%r)" % (self.tables,)


class _Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise JouleError(-3, "truncated response from the server")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt):
        size = struct.calcsize(fmt)
        return struct.unpack(">" + fmt, self.take(size))[0]

    def string(self):
        n = self.unpack("i")
        return None if n < 0 else self.take(n).decode("utf-8")

    def value(self, t):
        if t == TINYINT:
            v = self.unpack("b")
            return None if v == -128 else v
        if t == SMALLINT:
            v = self.unpack("h")
            return None if v == -32768 else v
        if t == INTEGER:
            v = self.unpack("i")
            return None if v == -2147483648 else v
        if t == BIGINT:
            v = self.unpack("q")
            return None if v == -9223372036854775808 else v
        if t == FLOAT:
            v = self.unpack("d")
            return None if v <= NULL_FLOAT else v
        if t == STRING:
            return self.string()
        if t == VARBINARY:
            n = self.unpack("i")
            return None if n < 0 else bytes(self.take(n))
        if t == TIMESTAMP:
            v = self.unpack("q")
            if v == -9223372036854775808:
                return None
            return _EPOCH + datetime.timedelta(microseconds=v)
        if t == DECIMAL:
            units = int.from_bytes(self.take(16), "big", signed=True)
            if units == -(1 << 127):
                return None
            return decimal.Decimal(units) / _SCALE
        raise JouleError(-3, "unsupported column type %d in a response" % t)


def _param(value):
    """A parameter's type byte and value bytes."""
    if value is None:
        return struct.pack(">b", NULL)
    if isinstance(value, bool):
        return struct.pack(">bb", TINYINT, int(value))
    if isinstance(value, int):
        return struct.pack(">bq", BIGINT, value)
    if isinstance(value, float):
        return struct.pack(">bd", FLOAT, value)
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return struct.pack(">bi", STRING, len(raw)) + raw
    if isinstance(value, (bytes, bytearray)):
        return struct.pack(">bi", VARBINARY, len(value)) + bytes(value)
    if isinstance(value, decimal.Decimal):
        units = int((value * _SCALE).to_integral_value())
        return struct.pack(">b", DECIMAL) + units.to_bytes(16, "big", signed=True)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        micros = (value - _EPOCH) // datetime.timedelta(microseconds=1)
        return struct.pack(">bq", TIMESTAMP, micros)
    if isinstance(value, (list, tuple)):
        return _array_param(value)
    raise TypeError("cannot send a %s as a parameter" % type(value).__name__)


_NULL_VALUES = {
    BIGINT: struct.pack(">q", -(2**63)), TIMESTAMP: struct.pack(">q", -(2**63)),
    FLOAT: struct.pack(">d", NULL_FLOAT), STRING: struct.pack(">i", -1),
    VARBINARY: struct.pack(">i", -1), DECIMAL: (-(2**127)).to_bytes(16, "big", signed=True),
}


def _array_param(values):
    """An array parameter (as for `IN ?`): every element of one type, the
    first non-None element's; None elements are that type's NULL."""
    encoded = [None if v is None else _param(v) for v in values]
    kinds = {e[0] for e in encoded if e is not None}
    if len(values) > 32767:
        raise ValueError("an array parameter holds at most 32767 values")
    if len(kinds) > 1:
        raise TypeError("an array parameter's elements must all have one type")
    kind = kinds.pop() if kinds else BIGINT
    if kind not in _NULL_VALUES:
        raise TypeError("cannot send an array of %s" % TYPE_NAMES.get(kind, kind))
    body = b"".join(_NULL_VALUES[kind] if e is None else e[1:] for e in encoded)
    return struct.pack(">bbh", ARRAY, kind, len(values)) + body


# The handle of a topology notification: an unsolicited response a server
# sends, after ``@Subscribe('TOPOLOGY')``, whenever the cluster's topology
# changes (VoltDB's value).
TOPOLOGY_HANDLE = (1 << 63) - 2


class Connection:
    """One connection to a JouleDB server (not shared between threads).

    ``on_topology``, if given, is called (with no arguments) for each
    topology notification read on the connection; notifications arrive
    between answers and are read along with them."""

    def __init__(self, host, port, user=None, password=None, timeout=30.0, on_topology=None, service="database"):
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._handle = 0
        self._on_topology = on_topology
        digest = hashlib.sha256((password or "").encode("utf-8")).digest()
        user_bytes = (user or "").encode("utf-8")
        service_bytes = service.encode("utf-8")
        login = (struct.pack(">bb", 1, 1) + struct.pack(">i", len(service_bytes)) + service_bytes
                 + struct.pack(">i", len(user_bytes)) + user_bytes + digest)
        self._send(login)
        r = _Reader(self._recv())
        r.unpack("b")
        result = r.unpack("b")
        if result != 0:
            self.close()
            raise JouleError(-3, "login refused (result %d): wrong user name or password, or (through a "
                                 "joule proxy) an unknown service or no backend answering" % result)

    def _send(self, payload):
        self._sock.sendall(struct.pack(">i", len(payload)) + payload)

    def _recv_exact(self, n):
        chunks = []
        while n > 0:
            chunk = self._sock.recv(n)
            if not chunk:
                raise JouleError(-4, "connection lost")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _recv(self):
        (n,) = struct.unpack(">i", self._recv_exact(4))
        return self._recv_exact(n)

    def call(self, procedure, *params):
        """Invoke a procedure and wait for its answer."""
        self.send_call(procedure, *params)
        return self.receive_result()

    def send_call(self, procedure, *params):
        """Send an invocation (its answer comes from `receive_result`). An
        `OSError` here means the request was not written whole: the server
        never ran it."""
        self._handle += 1
        name = procedure.encode("utf-8")
        body = [struct.pack(">bi", 0, len(name)), name, struct.pack(">qh", self._handle, len(params))]
        body.extend(_param(p) for p in params)
        self._send(b"".join(body))

    def receive_result(self):
        """Wait for the answer to the last `send_call`."""
        return self._response(self._handle)

    def execute(self, sql, *params):
        """Run SQL (`?` bound to `params` in order) through @AdHoc."""
        return self.call("@AdHoc", sql, *params)

    def _response(self, handle):
        while True:
            r = _Reader(self._recv())
            r.unpack("b")
            got = r.unpack("q")
            if got != TOPOLOGY_HANDLE:
                break
            if self._on_topology is not None:
                self._on_topology()
        fields = r.unpack("B")
        status = r.unpack("b")
        status_string = r.string() if fields & (1 << 5) else None
        app_status = r.unpack("b")
        app_status_string = r.string() if fields & (1 << 7) else None
        r.unpack("i")
        if fields & (1 << 6):
            r.take(r.unpack("i"))
        tables = []
        for _ in range(r.unpack("h")):
            r.unpack("i")
            r.unpack("i")
            r.unpack("b")
            count = r.unpack("h")
            types = [r.unpack("b") for _ in range(count)]
            names = [r.string() for _ in range(count)]
            rows = []
            for _ in range(r.unpack("i")):
                r.unpack("i")
                rows.append(tuple(r.value(t) for t in types))
            tables.append(Table(names, [TYPE_NAMES.get(t, str(t)) for t in types], rows))
        if got != handle:
            raise JouleError(-3, "response for request %d arrived for %d" % (got, handle))
        if status != SUCCESS:
            raise JouleError(status, status_string or "failed with status %d" % status, app_status, app_status_string)
        return Result(tables, app_status, app_status_string)

    def close(self):
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
