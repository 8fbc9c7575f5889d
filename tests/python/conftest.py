"""Fixtures for the Python SDK tests: a private ring directory and namespace per test, and a
real mltapd reading them on a free loopback port.

Environment (set by tests/python/CMakeLists.txt; needed when running pytest by hand):
  PYTHONPATH   <build>/python (the built `mltap` package)
  MLTAPD       path of the mltapd binary
"""

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from mltapd_harness import free_port, parse_metrics  # noqa: E402  (shared with tests/integration)

_counter = itertools.count()


def _mltapd_path():
    path = os.environ.get("MLTAPD")
    if not path or not os.access(path, os.X_OK):
        pytest.skip("MLTAPD does not name an mltapd binary (run through ctest)")
    return path


@pytest.fixture
def shm_dir():
    # tmpfs like /dev/shm, but private: the tests never see other rings nor leave files behind.
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    d = tempfile.mkdtemp(prefix="mltap-pytest-", dir=base)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def namespace():
    return f"pyt{os.getpid()}-{next(_counter)}"


@pytest.fixture
def make_stream(shm_dir, namespace):
    """mltap.Stream bound to the test's namespace and ring directory; closed at teardown."""
    import mltap

    made = []

    def make(name, **kw):
        kw.setdefault("namespace", namespace)
        kw.setdefault("shm_dir", shm_dir)
        s = mltap.Stream(name, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


class Agent:
    def __init__(self, binary, namespace, shm_dir, workdir):
        self.namespace = namespace
        self.shm_dir = shm_dir
        config = os.path.join(workdir, "mltapd.yaml")
        with open(config, "w") as f:
            # A one-hour statistics window: the gauges show the running window, i.e. every
            # value the test wrote, so they can be compared with NumPy on the same data.
            f.write("ingest:\n"
                    "  stats_window: 1h\n"
                    "  scan_interval: 20ms\n"
                    "  poll_interval: 1ms\n"
                    "  snapshot_interval: 20ms\n")
        self.log_path = os.path.join(workdir, "mltapd.log")
        last_error = ""
        for _attempt in range(5):
            self.port = free_port()
            self.log = open(self.log_path, "w")
            self.proc = subprocess.Popen(
                [binary, "--config", config, "--namespace", namespace, "--shm-dir", shm_dir,
                 "--listen", f"127.0.0.1:{self.port}", "--log-level", "warn"],
                stdout=self.log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    self.get("/metrics")
                    return
                except OSError:
                    time.sleep(0.05)
            self.stop()
            with open(self.log_path) as f:
                last_error = f.read()
        raise RuntimeError(f"mltapd did not start: {last_error}")

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return r.read().decode()

    def metrics(self):
        return parse_metrics(self.get("/metrics"))

    def streams(self):
        return {s["name"]: s for s in json.loads(self.get("/api/v1/streams"))["streams"]}

    def wait_stream(self, name, predicate, timeout=15.0):
        """Polls /api/v1/streams until predicate(stream) holds; returns the stream (or the last
        one seen, for the caller's assertions to explain the difference)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.streams().get(name)
            if last is not None and predicate(last):
                return last
            time.sleep(0.02)
        return last

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def agent(namespace, shm_dir, tmp_path):
    a = Agent(_mltapd_path(), namespace, shm_dir, str(tmp_path))
    yield a
    a.stop()
    assert a.proc.returncode == 0, f"mltapd exited with {a.proc.returncode}: see {a.log_path}"


def metric(metrics, name, **labels):
    """Value of one series (None when absent)."""
    return metrics.get((name, frozenset(labels.items())))
