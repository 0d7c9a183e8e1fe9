"""The Python client against a real server."""

import datetime
import decimal
import pathlib
import subprocess
import sys

import pytest

import jouledb
from voltdb import VoltClient


def test_voltclient_example_program(server):
    # The program from the issue, with the port the test server got.
    program = """
from voltdb import VoltClient
client = VoltClient('localhost', 21212)
client.execute('CREATE DATABASE testdb;')
client.execute('CREATE TABLE testdb.users (id INT PRIMARY KEY, name VARCHAR(255));')
client.execute('INSERT INTO testdb.users (id, name) VALUES (1, \\'Alice\\');')
client.execute('INSERT INTO testdb.users (id, name) VALUES (2, \\'Bob\\');')
result = client.execute('SELECT * FROM testdb.users;')
for row in result:
    print(row)
client.close()
""".replace("21212", str(server))
    root = pathlib.Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         env={"PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr
    assert out.stdout == "(1, 'Alice')\n(2, 'Bob')\n"


def test_calls_types_and_results(server):
    with jouledb.connect("127.0.0.1", server) as db:
        db.execute("CREATE TABLE kinds (id BIGINT NOT NULL PRIMARY KEY, f FLOAT, s VARCHAR(10), "
                   "b VARBINARY(4), d DECIMAL, t TIMESTAMP, n INTEGER)")
        at = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.timezone.utc)
        db.call("KINDS.insert", 1, 2.5, "héllo", b"\x01\x02", decimal.Decimal("12.345"), at, None)
        r = db.execute("SELECT * FROM kinds WHERE id = ?", 1)
        assert r.columns == ["ID", "F", "S", "B", "D", "T", "N"]
        assert r.types == ["BIGINT", "FLOAT", "VARCHAR", "VARBINARY", "DECIMAL", "TIMESTAMP", "INTEGER"]
        assert list(r) == [(1, 2.5, "héllo", b"\x01\x02", decimal.Decimal("12.345"), at, None)]
        assert db.execute("SELECT COUNT(*) FROM kinds").scalar() == 1
        assert db.call("@Ping").tables == []


def test_array_parameters(server):
    with jouledb.connect("127.0.0.1", server) as db:
        db.execute("CREATE TABLE arr (id BIGINT NOT NULL PRIMARY KEY, s VARCHAR(10))")
        for i in range(10):
            db.call("ARR.insert", i, "s%d" % i)
        r = db.execute("SELECT id FROM arr WHERE id IN ? ORDER BY id", [7, 2, None, 99])
        assert list(r) == [(2,), (7,)]
        r = db.execute("SELECT id FROM arr WHERE s IN ? ORDER BY id", ("s1", "s3"))
        assert list(r) == [(1,), (3,)]
        with pytest.raises(TypeError):
            db.execute("SELECT id FROM arr WHERE id IN ?", [1, "two"])


def test_errors_raise_with_status_and_code(server):
    with jouledb.connect("127.0.0.1", server) as db:
        db.execute("CREATE TABLE uniq (id INT NOT NULL PRIMARY KEY)")
        db.execute("INSERT INTO uniq VALUES (1)")
        with pytest.raises(jouledb.JouleError) as e:
            db.execute("INSERT INTO uniq VALUES (1)")
        assert e.value.status == -2
        assert "J2007" in e.value.message
        with pytest.raises(jouledb.JouleError) as e:
            db.call("NoSuchProcedure")
        assert "J4001" in e.value.message
        # The connection is still usable after errors.
        assert db.execute("SELECT COUNT(*) FROM uniq").scalar() == 1


def test_through_a_proxy_the_service_picks_the_virtual_host(server, proxy):
    with jouledb.connect("127.0.0.1", server) as db:
        db.execute("CREATE DATABASE IF NOT EXISTS pysales")
        db.execute("CREATE TABLE IF NOT EXISTS pysales.orders (id INT NOT NULL PRIMARY KEY, item VARCHAR(10))")
        db.execute("INSERT INTO pysales.orders VALUES (1, 'lamp')")
    # `pysales` resolves unqualified names in PYSALES; the default group in DEFAULT.
    with jouledb.connect("127.0.0.1", proxy, service="pysales") as sales:
        assert list(sales.execute("SELECT item FROM orders")) == [("lamp",)]
        with pytest.raises(jouledb.JouleError) as e:
            sales.execute("USE DEFAULT")
        assert "J1002" in e.value.message
    with jouledb.connect("127.0.0.1", proxy) as plain:
        with pytest.raises(jouledb.JouleError):
            plain.execute("SELECT item FROM orders")
        assert list(plain.execute("SELECT item FROM pysales.orders")) == [("lamp",)]
    with pytest.raises(jouledb.JouleError) as e:
        jouledb.connect("127.0.0.1", proxy, service="nosuch")
    assert "login refused" in e.value.message
