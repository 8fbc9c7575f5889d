#!/usr/bin/python3
"""`mltap review` over 10^6 retained records, against a baseline in the same run.

Real processes: mltapd (tests/harness) with a state directory; one Python SDK producer writes
250,000 trace ids through four streams (cleaning, features, predictions, labels: 10^6 rows), with
a unit bug in one feature for 2% of the ids. Once all are retained, `mltap review --json` runs
--runs times; reported: its median wall time (CLI, HTTP and the agent's review), the agent's
resident memory before and after the reviews (VmRSS, VmHWM), and as the baseline the same review
computed by pandas + scikit-learn on the same rows in this process (the join of predictions to
labels, |z| against the retained mean and sd, the AUC of every feature): the ratio
review / baseline is what to compare across machines.

    bench/retention/review_1e6.py [--ids 250000] [--runs 7]   (run from the build's parent dir
                                                               or set MLTAP_BUILD_DIR)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "harness"))
from mltap_harness import Agent, binary, http_json, wait_until  # noqa: E402

PRODUCER = r"""
import sys, numpy as np, mltap
n = int(sys.argv[1])
ids = np.arange(1, n + 1, dtype=np.uint64)
rng = np.random.default_rng(1)
age, amount, tenure = rng.uniform(20, 60, n), rng.lognormal(3, 0.4, n), rng.uniform(0, 10, n)
bugged = ids % 50 == 0
y = (age > 40).astype(np.float64)
kw = dict(sampling_budget=0, ring_bytes=1 << 26)
clean = mltap.Stream("b/clean", component="cleaning", features=["raw_amount", "raw_age"], **kw)
feats = mltap.Stream("b/features", component="features", features=["amount", "age", "tenure"], **kw)
model = mltap.Stream("b/pred", component="model", kind="predictions", features=["score"],
                     labels_stream="b/labels", task="binary", **kw)
labels = mltap.Stream("b/labels", component="feedback", kind="labels", features=["y"], **kw)
feat_amount = np.where(bugged, amount * 1000, amount)
score = np.where(bugged, 1 - y, y) * 0.8 + 0.1
for i in range(0, n, 1000):
    s = slice(i, i + 1000)
    clean.write(np.stack([amount[s], age[s]], 1), trace_ids=ids[s])
    feats.write(np.stack([feat_amount[s], age[s], tenure[s]], 1), trace_ids=ids[s])
    model.write(score[s].reshape(-1, 1), trace_ids=ids[s])
    labels.write(y[s].reshape(-1, 1), trace_ids=ids[s])
np.save(sys.argv[2], np.stack([ids.astype(np.float64), amount, age, tenure, feat_amount, score, y], 1))
print("DONE", flush=True)
sys.stdin.readline()
"""


def proc_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def baseline(data):
    ids, amount, age, tenure, feat_amount, score, y = data.T
    pred = pd.DataFrame({"id": ids, "score": score})
    lab = pd.DataFrame({"id": ids, "y": y})
    j = pred.merge(lab, on="id")
    wrong = ((j["score"] >= 0.5) != (j["y"] != 0)).to_numpy()
    out = {}
    for name, col in {"amount": feat_amount, "age": age, "tenure": tenure, "raw_amount": amount,
                      "raw_age": age}.items():
        z = np.abs(col - col.mean()) / col.std(ddof=1)
        out[name] = roc_auc_score(wrong, z)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ids", type=int, default=250_000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="mltap-bench-retention-")
    cfg = (f"agent:\n  state_dir: {work}/state\ndetectors:\n  enabled: false\n"
           "performance:\n  enabled: false\n"
           "retention:\n  max_stream_bytes: 128MiB\n  max_bytes: 512MiB\n")
    agent = Agent(cfg)
    agent.start()
    env = agent.env()
    env["PYTHONPATH"] = os.environ.get("MLTAP_PYTHONPATH", "")
    data_path = os.path.join(work, "data.npy")
    p = subprocess.Popen([sys.executable, "-c", PRODUCER, str(args.ids), data_path], env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "DONE"

        def total():
            return http_json(agent.url + "/api/v1/retention")["records"]
        wait_until(lambda: total() == 4 * args.ids, timeout=300, what="every row retained")
        stats = http_json(agent.url + "/api/v1/retention")
        pid = agent.proc.pid
        rss_before = proc_kib(pid, "VmRSS")
        times = []
        doc = None
        for _ in range(args.runs):
            t = time.perf_counter()
            out = subprocess.run([binary("agent/cli/mltap"), "review", "b/pred", "--json", "--since", "1h"],
                                 env=env, capture_output=True, text=True, check=True)
            times.append(time.perf_counter() - t)
            doc = json.loads(out.stdout)
        hwm = proc_kib(pid, "VmHWM")
        top = doc["streams"][0]["features"][0]
        base_times = []
        data = np.load(data_path)
        for _ in range(args.runs):
            t = time.perf_counter()
            base = baseline(data)
            base_times.append(time.perf_counter() - t)
        med, base_med = statistics.median(times), statistics.median(base_times)
        print(f"retained: {stats['records']} rows, {stats['bytes'] / 2**20:.1f} MiB on disk")
        print(f"mltap review: median {med * 1000:.0f} ms over {args.runs} runs "
              f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}); "
              f"{doc['predictions']} predictions, {doc['wrong']} wrong, {doc['correct']} correct "
              f"({doc['wrong_used']}/{doc['correct_used']} used)")
        print(f"top: {doc['streams'][0]['stream']} {top['feature']} AUC {top['auc']:.4f} "
              f"(pandas+sklearn on all rows: {base['amount']:.4f})")
        print(f"baseline pandas merge + sklearn AUCs: median {base_med * 1000:.0f} ms; "
              f"ratio review/baseline {med / base_med:.2f}")
        print(f"mltapd memory: VmRSS {rss_before / 1024:.0f} MiB before the reviews, peak VmHWM "
              f"{hwm / 1024:.0f} MiB ({(hwm * 1024) / stats['records']:.0f} bytes per retained row)")
    finally:
        p.stdin.close()
        p.wait(timeout=30)
        agent.stop()
        subprocess.run(["rm", "-rf", work], check=False)


if __name__ == "__main__":
    main()
