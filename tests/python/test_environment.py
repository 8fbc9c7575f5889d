"""A Python producer never crashes because of its environment: a full shm file system (a real
1 MiB tmpfs mounted by the test, as root) and a ring file truncated by another process while the
producer writes. Each producer runs in a child process, so that a crash (SIGBUS, before the SDK
reserved its pages) fails the test instead of killing pytest."""

import json
import os
import signal
import subprocess
import sys
import tempfile

import pytest

PRODUCER = r"""
import json, sys
import numpy as np
import mltap
shm, ns, name, rows = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s = mltap.Stream(name, namespace=ns, shm_dir=shm, features=["a", "b", "c", "d"])
x = np.arange(4, dtype=np.float32)
batch = np.ones((3, 4), dtype=np.float32)
for i in range(rows):
    s.write(x)
    s.write(x, trace_ids=i)
    s.write(batch)
print(json.dumps({"has_ring": s.has_ring, "stats": s.stats()}))
"""


@pytest.fixture
def tiny_tmpfs():
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = tempfile.mkdtemp(prefix="mltap-tinyfs-")
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=1777", "tmpfs", d],
                         capture_output=True, text=True)
    if out.returncode != 0:
        os.rmdir(d)
        pytest.skip(f"cannot mount a tmpfs: {out.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", d], check=False)
        os.rmdir(d)


def run_producer(shm, ns, name, rows):
    out = subprocess.run([sys.executable, "-c", PRODUCER, shm, ns, name, str(rows)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"producer died ({out.returncode}): {out.stderr}"
    return json.loads(out.stdout), out.stderr


def test_producers_on_a_full_shm_run_ring_less_and_leave_nothing(tiny_tmpfs):
    for producer in range(2):  # the second finds the file system just as full
        result, err = run_producer(tiny_tmpfs, "full", f"full/p{producer}", 1000)
        assert result["has_ring"] is False
        st = result["stats"]
        assert st["rows_written"] == 5 * 1000
        assert st["rows_no_ring"] == st["rows_written"]
        assert st["rows_committed"] == 0
        assert "No space left on device" in err and err.count("\n") == 1  # one line
        assert os.listdir(tiny_tmpfs) == []


def test_a_producer_whose_ring_is_truncated_by_another_process_keeps_running(shm_dir):
    code = r"""
import json, sys
import numpy as np
import mltap
s = mltap.Stream("trunc/x", namespace="trunc", shm_dir=sys.argv[1], features=["a", "b", "c", "d"],
                 ring_bytes=64 << 10, sampling_budget=0)
x = np.arange(4, dtype=np.float32)
s.write(x)
print(s.segment_path, flush=True)
sys.stdin.readline()                 # the test truncates the file meanwhile
for i in range(20000):
    s.write(x)
    s.write(np.ones((3, 4), dtype=np.float32), trace_ids=[i, i + 1, i + 2])
print(json.dumps({"has_ring": s.has_ring, "stats": s.stats()}), flush=True)
s.close()
"""
    p = subprocess.Popen([sys.executable, "-c", code, shm_dir], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        path = p.stdout.readline().strip()
        assert path.startswith(shm_dir)
        os.truncate(path, 0)            # another process cuts the ring under the producer
        out, err = p.communicate("go\n", timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, f"producer died ({p.returncode}, SIGBUS is {-signal.SIGBUS}): {err}"
    result = json.loads(out)
    assert result["has_ring"] is False
    assert result["stats"]["rows_no_ring"] >= 4 * 20000 - 4
    assert "truncated" in err
    assert os.listdir(shm_dir) == []   # closed without an agent: the file is removed
