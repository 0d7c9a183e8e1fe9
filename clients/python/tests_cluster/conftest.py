"""Forms a real 3-host, k=1 JouleDB cluster (ports chosen at run time) for
the cluster client's tests. The binary comes from $JOULE_BIN, else the
workspace's target/debug/joule."""

import os
import pathlib
import queue
import re
import shutil
import subprocess
import tempfile
import threading

import pytest


def _binary():
    if os.environ.get("JOULE_BIN"):
        return os.environ["JOULE_BIN"]
    return str(pathlib.Path(__file__).resolve().parents[3] / "target" / "debug" / "joule")


class Host:
    def __init__(self, args):
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True).start()
        self.client = None

    def _drain(self, stream):
        for line in stream:
            self.lines.put(line)

    def wait_for(self, needle, timeout=30):
        while True:
            line = self.lines.get(timeout=timeout)
            if needle in line:
                return line

    def ready(self):
        line = self.proc.stdout.readline()
        assert line.startswith("JouleDB ready"), line
        self.client = "127.0.0.1:" + re.search(r"client \S+:(\d+)", line).group(1)
        self.admin = "127.0.0.1:" + re.search(r"admin \S+:(\d+)", line).group(1)
        return self

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster():
    root = tempfile.mkdtemp(prefix="joule-pycluster-")
    common = ["start", "--client-port", "0", "--admin-port", "0", "--http-port", "0", "--internal-port", "0",
              "--sites", "2", "--host-count", "3", "--kfactor", "1"]
    first = Host([_binary()] + common + ["--dir", os.path.join(root, "0")])
    port = re.search(r"internal port (\d+)", first.wait_for("forming a cluster")).group(1)
    hosts = [first]
    for i in (1, 2):
        hosts.append(Host([_binary()] + common + ["--dir", os.path.join(root, str(i)), "--join", "127.0.0.1:" + port]))
        first.wait_for("host %d joined" % i)
    for h in hosts:
        h.ready()
    yield hosts
    for h in hosts:
        h.kill()
    shutil.rmtree(root, ignore_errors=True)
