"""Labels joined to predictions across a kill -9 of mltapd, with real processes: a Python
predictions producer (kind="predictions", labels_stream=..., task="binary") writes 100,000
predictions with trace ids; once mltapd holds them pending, it is SIGKILLed and started again on
the same state directory; a labels producer started afterwards (kind="labels") writes their
labels, which must all join, into the predictions' windows, with the realized accuracy the
test computes itself; labels already joined before the kill count as duplicates after it."""
import json
import os
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))
from mltap_harness import Agent, binary, wait_until  # noqa: E402

N = 100_000
CONFIG = """
detectors:
  enabled: false
performance:
  label_ttl: 1h
  grace: 30s
  window: 1h
  max_pending: 200000
"""

PREDICTIONS = r"""
import sys, numpy as np, mltap
n = int(sys.argv[1])
s = mltap.Stream("pr/pred", component="model", kind="predictions", labels_stream="pr/labels",
                 task="binary", features=["score"], sampling_budget=0, ring_bytes=1 << 24)
ids = np.arange(1, n + 1, dtype=np.uint64)
score = ((ids * 7919) % 1000).astype(np.float32) / 1000
for i in range(0, n, 1000):
    s.write(score[i:i + 1000].reshape(-1, 1), trace_ids=ids[i:i + 1000])
print("DONE", flush=True)
sys.stdin.readline()  # stays alive until told: its ring is read while it lives
"""

LABELS = r"""
import sys, numpy as np, mltap
first, last = int(sys.argv[1]), int(sys.argv[2])
s = mltap.Stream("pr/labels", component="feedback", kind="labels", features=["is_fraud"],
                 sampling_budget=0, ring_bytes=1 << 24)
ids = np.arange(first, last + 1, dtype=np.uint64)
y = ((ids % 10) < 4).astype(np.float32)  # 40% positive, independent of the score
for i in range(0, len(ids), 1000):
    s.write(y[i:i + 1000].reshape(-1, 1), trace_ids=ids[i:i + 1000])
print("DONE", flush=True)
sys.stdin.readline()
"""


def expected_accuracy(n):
    ids = list(range(1, n + 1))
    right = sum(1 for i in ids if (((i * 7919) % 1000) / 1000 >= 0.5) == ((i % 10) < 4))
    return right / n


class Producers:
    def __init__(self, agent):
        self.agent = agent
        self.procs = []

    def run(self, code, *args):
        env = self.agent.env()
        env["PYTHONPATH"] = os.environ.get("MLTAP_PYTHONPATH", "")
        p = subprocess.Popen([sys.executable, "-c", code] + [str(a) for a in args], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout.readline().strip() == "DONE"
        return p

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.stdin.close()
                p.wait(timeout=10)


def perf(agent):
    for s in json.loads(agent.get("/api/v1/performance"))["streams"]:
        if s["stream"] == "pr/pred":
            return s
    return None


def pending(agent):
    return (perf(agent) or {}).get("pending", {}).get("predictions", 0)


def joined(agent):
    return (perf(agent) or {}).get("counters", {}).get("joined", 0)


@pytest.fixture
def setup():
    state_dir = tempfile.mkdtemp(prefix="mltap-perf-it-")
    agent = Agent(CONFIG, extra_args=["--state-dir", state_dir])
    producers = Producers(agent)
    yield agent, producers, state_dir
    producers.close()
    agent.stop()
    subprocess.run(["rm", "-rf", state_dir], check=False)


def test_sdk_refuses_labels_stream_on_other_kinds():
    env = dict(os.environ, PYTHONPATH=os.environ.get("MLTAP_PYTHONPATH", ""))
    code = ("import mltap\n"
            "for kw in ({'kind': 'features', 'labels_stream': 'a/b'}, {'kind': 'predictions', 'task': 'ranking'}):\n"
            "    try:\n"
            "        mltap.Stream('x/y', **kw)\n"
            "        print('accepted', kw)\n"
            "    except ValueError as e:\n"
            "        print('refused')\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["refused", "refused"], out.stdout + out.stderr


def test_pending_predictions_survive_kill_9_and_labels_written_afterwards_join(setup):
    agent, producers, state_dir = setup
    agent.start()
    producers.run(PREDICTIONS, N)
    wait_until(lambda: pending(agent) == N, timeout=60, what=f"{N} predictions pending")
    producers.run(LABELS, 1, 1000)  # 1,000 join before the kill
    wait_until(lambda: joined(agent) == 1000, timeout=30, what="1,000 joined before the kill")
    table = [n for n in os.listdir(os.path.join(state_dir, "performance")) if n.endswith(".table")]
    assert len(table) == 1, table

    agent.process.proc.kill()  # SIGKILL: nothing is written on the way out
    agent.process.proc.wait(timeout=10)
    agent.process.stop()
    producers.close()  # the producers end while no agent runs
    producers.procs = []
    agent.start()
    log = agent.logs()
    assert "pending table of 'pr/pred' reopened" in log, log
    s = perf(agent)
    assert s["pending"]["predictions"] == N - 1000 and s["counters"]["joined"] == 1000, s

    # A new labels process, after the restart: the rest join, ten of the first thousand again.
    producers.run(LABELS, 1001, N)
    producers.run(LABELS, 1, 10)
    wait_until(lambda: joined(agent) == N, timeout=60, what="every label joined after the restart")
    wait_until(lambda: perf(agent)["counters"]["duplicate"] == 10, timeout=10, what="10 duplicates")
    s = perf(agent)
    assert s["counters"]["unmatched"] == 0 and s["counters"]["late"] == 0, s
    assert sum(s["counters"]["evicted"].values()) == 0, s

    # The CLI: per window, predictions, labelled, accuracy.
    env = agent.env()
    out = subprocess.run([binary("agent/cli/mltap"), "performance", "pr/pred", "--json", "--since", "2h"],
                         env=env, capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    wins = doc["windows"]
    assert sum(w["predictions"] for w in wins) == N and sum(w["labelled"] for w in wins) == N, wins
    acc = sum(w["metrics"]["accuracy"] * w["labelled"] for w in wins) / N
    assert abs(acc - expected_accuracy(N)) < 1e-12, (acc, expected_accuracy(N))
    text = subprocess.run([binary("agent/cli/mltap"), "performance", "pr/pred"], env=env,
                          capture_output=True, text=True, check=True).stdout
    assert "PREDICTIONS" in text and "roc_auc" in text, text
    m = agent.metrics()
    assert m.get("mltap_performance_labels_total", 0, stream="pr/pred", outcome="joined") == N
    assert m.get("mltap_performance_window_labelled", 0, stream="pr/pred") > 0
