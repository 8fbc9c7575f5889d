"""Fixtures for the Python SDK tests: a private ring directory and namespace per test, and a
real mltapd reading them on a free loopback port.

Environment (set by tests/python/CMakeLists.txt; needed when running pytest by hand):
  PYTHONPATH   <build>/python (the built `mltap` package)
  MLTAPD       path of the mltapd binary
"""

import itertools
import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))
from mltap_harness import Agent  # noqa: E402  (the harness every Python test uses)

_counter = itertools.count()

# A one-hour statistics window: the gauges show the running window, i.e. every value the test
# wrote, so they can be compared with NumPy on the same data.
AGENT_CONFIG = """\
ingest:
  stats_window: 1h
  scan_interval: 20ms
  snapshot_interval: 20ms
"""


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


@pytest.fixture
def agent(namespace, shm_dir):
    """A real mltapd reading the test's namespace and ring directory."""
    if not os.access(os.environ.get("MLTAPD", ""), os.X_OK):
        pytest.skip("MLTAPD does not name an mltapd binary (run through ctest)")
    a = Agent(AGENT_CONFIG, extra_args=["--log-level", "warn"], shm_dir=shm_dir, namespace=namespace)
    a.start()
    yield a
    log = a.logs()
    a.stop()
    assert a.returncode == 0, f"mltapd exited with {a.returncode}:\n{log}"
