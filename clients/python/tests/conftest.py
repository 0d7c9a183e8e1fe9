"""Starts a real `joule` server on free ports for the tests.

The binary comes from $JOULE_BIN, else the workspace's target/debug/joule.
"""

import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest


def _binary():
    if os.environ.get("JOULE_BIN"):
        return os.environ["JOULE_BIN"]
    root = pathlib.Path(__file__).resolve().parents[3]
    return str(root / "target" / "debug" / "joule")


@pytest.fixture(scope="module")
def server():
    data = tempfile.mkdtemp(prefix="joule-pytest-")
    proc = subprocess.Popen(
        [_binary(), "start", "--client-port", "0", "--admin-port", "0", "--http-port", "0",
         "--sites", "2", "--dir", data],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("JouleDB ready"), line + proc.stderr.read()
    port = int(line.split("client ")[1].split()[0].rsplit(":", 1)[1])
    yield port
    proc.terminate()
    proc.wait(timeout=30)
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def proxy(server):
    """A `joule proxy` in front of the server: the group `database`, and
    `pysales` whose names resolve in database PYSALES (which the test creates
    before it logs in there). Yields the proxy's port."""
    backend = "127.0.0.1:%d" % server
    proc = subprocess.Popen(
        [_binary(), "proxy", "--listen", "127.0.0.1:0", "--servers", backend,
         "--vhost", "pysales@PYSALES=" + backend],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("JouleDB proxy ready"), line + proc.stderr.read()
    port = int(line.split("listening on ")[1].split(";")[0].rsplit(":", 1)[1])
    yield port
    proc.terminate()
    proc.wait(timeout=30)
