#!/usr/bin/python3
"""`mltap drift` against scipy's ks_2samp + wasserstein_distance on the same 10^6 x 30 data.

Both sides compare a current file with a reference and produce KS and Wasserstein-1 per feature.
mltap: `mltap profile build` once (reference -> profile), then `mltap drift` (which also computes
PSI, JS, Hellinger, quality checks and the decision). scipy: ks_2samp + wasserstein_distance per
feature on the raw arrays (loaded in-process, load time excluded). Medians of --repeat runs.

    bench/detectors/drift_vs_scipy.py --mltap build/agent/cli/mltap [--rows 1000000] [--repeat 3]
"""
import argparse
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np
from scipy import stats


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mltap", required=True)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(a.rows, a.cols))
    cur = rng.normal(size=(a.rows, a.cols))
    cur[:, 3] += 0.1
    with tempfile.TemporaryDirectory() as d:
        rp, cp, pp = os.path.join(d, "ref.npy"), os.path.join(d, "cur.npy"), os.path.join(d, "ref.profile")
        np.save(rp, ref)
        np.save(cp, cur)
        build = [timed(lambda: subprocess.run([a.mltap, "profile", "build", "-i", rp, "-o", pp], check=True,
                                               stdout=subprocess.DEVNULL)) for _ in range(a.repeat)]
        drift = [timed(lambda: subprocess.run([a.mltap, "drift", "-r", pp, "-c", cp, "--json"], check=True,
                                               stdout=subprocess.DEVNULL)) for _ in range(a.repeat)]

        def scipy_all():
            for j in range(a.cols):
                stats.ks_2samp(ref[:, j], cur[:, j])
                stats.wasserstein_distance(ref[:, j], cur[:, j])

        sp = [timed(scipy_all) for _ in range(a.repeat)]
    mb, md, ms = statistics.median(build), statistics.median(drift), statistics.median(sp)
    print(f"data: {a.rows} x {a.cols} float64, reference and current")
    print(f"mltap profile build (once per reference): {mb:.2f} s")
    print(f"mltap drift (file read + all detectors):  {md:.2f} s")
    print(f"scipy ks_2samp + wasserstein_distance:    {ms:.2f} s (arrays already in memory)")
    print(f"ratio scipy / mltap drift: {ms / md:.1f}x; scipy / (build + drift): {ms / (mb + md):.1f}x")


if __name__ == "__main__":
    main()
