#!/usr/bin/python3
"""Power table: reference size x window size x mean shift, through the real `mltap` CLI.

For each reference size, `reps` references are drawn from one population (x ~ N(0,1) plus three
other features: a normal, a standardized binary column, a 17-valued integer); each is built into
a profile with `mltap profile build`, and windows of each size are checked with `mltap drift
--json`, with x shifted by 0, 0.1, 0.25 and 0.5 sd. Printed per (reference, window): the minimum
detectable W1/sd that mltap reported for x (median over the references) and how many of the
`reps` windows mltap found drifted at each shift, plus any other feature found drifted (false
alarms). Usage:

  /usr/bin/python3 bench/detectors/power_table.py --mltap build/agent/cli/mltap [--reps 10]
"""
import argparse
import json
import os
import subprocess
import tempfile

import numpy as np

SHIFTS = (0.0, 0.1, 0.25, 0.5)
REFS = (100, 500, 2000, 20000)
WINDOWS = (1000, 5000, 50000)
NAMES = "x,x1,binary,int17"


def population(rng, n, shift=0.0):
    p = 0.3
    return np.stack([rng.normal(shift, 1, n), rng.normal(0, 1, n),
                     ((rng.random(n) < p).astype(float) - p) / np.sqrt(p * (1 - p)),
                     rng.binomial(16, 0.4, n).astype(float)], axis=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mltap", required=True)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for n_ref in REFS:
            mde = {w: [] for w in WINDOWS}
            hits = {(w, s): 0 for w in WINDOWS for s in SHIFTS}
            other = {w: 0 for w in WINDOWS}
            for rep in range(a.reps):
                ref = os.path.join(d, "ref.npy")
                prof = os.path.join(d, "ref.profile")
                np.save(ref, population(rng, n_ref))
                subprocess.run([a.mltap, "profile", "build", "-i", ref, "-o", prof, "--features", NAMES],
                               check=True, stdout=subprocess.DEVNULL)
                for w in WINDOWS:
                    for s in SHIFTS:
                        cur = os.path.join(d, "cur.npy")
                        np.save(cur, population(rng, w, s))
                        out = subprocess.run([a.mltap, "drift", "-r", prof, "-c", cur, "--json"], check=True,
                                             capture_output=True, text=True).stdout
                        feats = {f["name"]: f for f in json.loads(out)["stream"]["features"]}
                        hits[(w, s)] += feats["x"]["drifted"]
                        other[w] += sum(feats[k]["drifted"] for k in ("x1", "binary", "int17"))
                        if s == 0.0:
                            mde[w].append(feats["x"]["min_detectable_effect"]["value"])
            for w in WINDOWS:
                rows.append((n_ref, w, float(np.median(mde[w])), [hits[(w, s)] for s in SHIFTS], other[w]))
    print(f"| reference rows | window | reported min. detectable W1/sd (median) | "
          + " | ".join(f"found at {s:g} sd" for s in SHIFTS) + " | other features drifted |")
    print("|---|---|---|" + "---|" * len(SHIFTS) + "---|")
    for n_ref, w, m, h, o in rows:
        print(f"| {n_ref:,} | {w:,} | {m:.3f} | " + " | ".join(f"{k}/{a.reps}" for k in h)
              + f" | {o}/{3 * a.reps * len(SHIFTS)} |")


if __name__ == "__main__":
    main()
