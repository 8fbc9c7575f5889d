#!/usr/bin/python3
"""A producer for the end-to-end alerting tests: writes 8 features at a steady rate, shifts one
feature's mean after --drift-after seconds, and serves with a 'fallback' while the flag
use_fallback is set. Prints one JSON line per event with its wall-clock time."""
import argparse
import json
import sys
import time

import numpy as np

import mltap


def event(kind, **kw):
    print(json.dumps({"event": kind, "t": time.time(), **kw}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stream", default="e2e/features")
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--drift-after", type=float, default=3)
    ap.add_argument("--drift-for", type=float, default=8, help="then the feature is repaired")
    ap.add_argument("--duration", type=float, default=120)
    args = ap.parse_args()
    names = [f"x{i}" for i in range(8)]
    s = mltap.Stream(args.stream, component="e2e-model", features=names)
    rng = np.random.default_rng(1)
    event("started", segment=s.segment_path)
    start = time.monotonic()
    drifting = False
    fallback = False
    n = 0
    next_t = start
    while time.monotonic() - start < args.duration:
        row = rng.normal(0.0, 1.0, size=8).astype(np.float32)
        t = time.monotonic() - start
        if args.drift_after <= t < args.drift_after + args.drift_for:
            if not drifting:
                drifting = True
                event("drift_started", rows=n)
            row[3] += 2.0  # two standard deviations: the upstream feature broke
        elif drifting:
            drifting = False
            event("drift_stopped", rows=n)
        s.write(row, trace_ids=n)
        flag = s.flag("use_fallback")
        if flag != fallback:
            fallback = flag
            event("fallback_on" if flag else "fallback_off", rows=n)
        n += 1
        next_t += 1.0 / args.rate
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    event("done", rows=n)


if __name__ == "__main__":
    sys.exit(main())
