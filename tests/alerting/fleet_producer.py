#!/usr/bin/python3
"""Producer for the fleet end-to-end test (test_fleet_e2e.py).

--profile PATH: builds the shared reference profile from the training data and exits.
Otherwise writes two streams at fixed rates, rows [amount, score, segment]:
  fleet/weak   at --weak-rate rows/s, amount shifted by --weak-shift reference sds
  fleet/local  at --local-rate rows/s, amount shifted by --local-shift reference sds
score and segment never shift. Also a model's predictions and their labels (the dashboard's
model-performance row): fleet/predictions (P(positive), binary, labels from fleet/labels) at
--local-rate rows/s, each labelled 2 s later, one in five never.
Prints READY, then runs for --duration seconds."""
import argparse
import signal
import subprocess
import time

import numpy as np

import mltap

FEATURES = ["amount", "score", "segment"]
SEGMENT_P = [0.4, 0.25, 0.15, 0.12, 0.08]


def rows(rng, n, shift=0.0):
    x = np.empty((n, 3))
    x[:, 0] = rng.normal(0.0, 1.0, n) + shift
    x[:, 1] = rng.normal(5.0, 2.0, n)
    x[:, 2] = rng.choice(len(SEGMENT_P), size=n, p=SEGMENT_P)
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--weak-rate", type=float, default=8)
    ap.add_argument("--weak-shift", type=float, default=0.0)
    ap.add_argument("--local-rate", type=float, default=25)
    ap.add_argument("--local-shift", type=float, default=0.0)
    ap.add_argument("--duration", type=float, default=180)
    ap.add_argument("--log")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    if a.profile:
        p = mltap.Profile.from_array(rows(rng, 20000), features=FEATURES, categorical=["segment"])
        p.save(a.profile)
        return
    weak = mltap.Stream("fleet/weak", component="scorer", features=FEATURES)
    local = mltap.Stream("fleet/local", component="scorer", features=FEATURES)
    preds = mltap.Stream("fleet/predictions", component="scorer", kind="predictions", features=["p"],
                         labels_stream="fleet/labels", task="binary", sampling_budget=0)
    labels = mltap.Stream("fleet/labels", component="feedback", kind="labels", features=["y"],
                          sampling_budget=0)
    pending = []  # (due, trace id, label)
    next_id = 0
    logs = {n: open(f"{a.log}.{n}.csv", "w") for n in ("weak", "local")} if a.log else {}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print("READY", flush=True)
    start = time.monotonic()
    written = {"weak": 0, "local": 0}
    next_child = 0.0
    while (t := time.monotonic() - start) < a.duration and not stop:
        for name, stream, rate, shift in (("weak", weak, a.weak_rate, a.weak_shift),
                                          ("local", local, a.local_rate, a.local_shift)):
            due = int(t * rate) + 1 - written[name]
            if due > 0:
                for r in rows(rng, due, shift):
                    stream.write(r)
                    if logs:
                        logs[name].write(",".join(repr(float(v)) for v in r) + "\n")
                written[name] += due
        due = int(t * a.local_rate) + 1 - next_id
        if due > 0:
            y = (rng.random(due) < 0.3).astype(np.float32)
            p = np.clip(0.25 + 0.3 * y + rng.normal(0, 0.12, due), 0.02, 0.98).astype(np.float32)
            ids = np.arange(next_id, next_id + due, dtype=np.uint64)
            preds.write(p, trace_ids=ids)
            pending += [(t + 2.0, i, v) for i, v, keep in zip(ids, y, rng.random(due) >= 0.2) if keep]
            next_id += due
        ready = [e for e in pending if e[0] <= t]
        if ready:
            pending = pending[len(ready):]
            labels.write(np.array([e[2] for e in ready], dtype=np.float32),
                         trace_ids=np.array([e[1] for e in ready], dtype=np.uint64))
        if t >= next_child:
            subprocess.run(["/bin/true"], check=False)
            next_child = t + 5
        for f in logs.values():
            f.flush()
        time.sleep(0.05)


if __name__ == "__main__":
    main()
