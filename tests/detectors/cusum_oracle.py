#!/usr/bin/python3
"""Checks the engine's CUSUM against a plain Python CUSUM on the same data (`mltap drift --json`).

The engine runs one two-sided chart per configured shift on u = (x - reference mean) / reference
sd (ddof 0), clipped at +-clip sd and recentred (docs/detectors.md, "Sequential change"). Here
clip is large, so u is exactly the standardized value, and one shift (0.5 sd) gives one chart:
S+ = max(0, S+ + u - k), S- = max(0, S- - u - k), k = 0.25 + reference_sigmas / sqrt(n_ref)
(the reference mean's error), alarm above h, restart; h is solved for the nominal k = 0.25 and
raised by reference_sigmas standard errors of the reference variance,
x (1 + reference_sigmas sqrt((kurtosis - 1) / n_ref)). The oracle recomputes every alarm from the raw rows with the threshold
the engine reports, and checks the strongest one against the engine's: alarm record, onset
record (the record after the statistic's last zero) and statistic value. It also recomputes h
independently from the raw reference sample (exponential tilt root and Siegmund's formula,
scipy.optimize.brentq) and checks the engine's h (computed from the reference's bins) against it,
on a normal, a skewed (exponential) and a discrete feature with ties (Poisson counts).
"""
import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np
from scipy.optimize import brentq

FAILURES = []
SHIFT, REF_SIGMAS, ARL = 0.5, 3.0, 1e9


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what)
    else:
        print("ok:", what)


def plain_cusum(u, k, h):
    """Every alarm of a two-sided CUSUM with restart: (alarm index, onset index, statistic, up)."""
    alarms = []
    hi = lo = 0.0
    hi_start = lo_start = 0
    for i, x in enumerate(u):
        if hi == 0:
            hi_start = i
        if lo == 0:
            lo_start = i
        hi = max(0.0, hi + x - k)
        lo = max(0.0, lo - x - k)
        if hi > h or lo > h:
            up = hi / h >= lo / h
            alarms.append((i, hi_start if up else lo_start, hi if up else lo, up))
            hi = lo = 0.0
    return alarms


def oracle_threshold(ref_u, k, arl_side):
    """h from the reference sample itself: theta solves mean(exp(theta (u - k))) = 1, then
    (e^{theta b} - theta b - 1) / (theta k) = arl_side with b = h + 1.166."""
    g = lambda t: np.log(np.mean(np.exp(t * (ref_u - k))))
    theta = brentq(g, 1e-6 + 1e-3 * k, 50 * k + 50)
    f = lambda h: (math.exp(theta * (h + 1.166)) - theta * (h + 1.166) - 1) / (theta * k) - arl_side
    return brentq(f, 0, (math.log(arl_side * theta * k) + 50) / theta), theta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mltap", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    rng = np.random.default_rng(12)
    n_ref, n_cur, start = 50000, 8000, 3000
    names = ["normal", "skewed", "counts"]
    ref = np.stack([rng.normal(size=n_ref), rng.exponential(size=n_ref),
                    rng.poisson(2.0, size=n_ref).astype(float)], axis=1)
    cur = np.stack([rng.normal(size=n_cur), rng.exponential(size=n_cur),
                    rng.poisson(2.0, size=n_cur).astype(float)], axis=1)
    # After `start`: the normal feature +0.5 sd, the counts -0.5 sd (ties: Poisson(2) has sd 1.41).
    cur[start:, 0] += 0.5
    cur[start:, 2] -= 0.5 * math.sqrt(2.0)
    rp, cp = os.path.join(a.workdir, "ref.npy"), os.path.join(a.workdir, "cur.npy")
    np.save(rp, ref)
    np.save(cp, cur)
    prof = os.path.join(a.workdir, "ref.profile")
    subprocess.run([a.mltap, "profile", "build", "-i", rp, "-o", prof, "--features", ",".join(names),
                    "--numeric", "counts"], check=True, stdout=subprocess.DEVNULL)
    cfg = os.path.join(a.workdir, "mltapd.yaml")
    with open(cfg, "w") as f:
        f.write("detectors:\n  sequential: {method: cusum, shifts: [%g], clip: 1000, arl_records: %g,"
                " reference_sigmas: %g}\n" % (SHIFT, ARL, REF_SIGMAS))
    out = subprocess.run([a.mltap, "drift", "-r", prof, "-c", cp, "--json", "--features", ",".join(names),
                          "--config", cfg], check=True, capture_output=True, text=True).stdout
    doc = json.loads(out)
    # One finding, or one superseded by another when the second feature alarms after a window
    # closed (a material change): the strongest CUSUM entry per feature over them.
    seq = [f for f in doc["findings"] if f["kind"] == "sequential_change"]
    check(1 <= len(seq) <= 2, "one or two sequential_change findings (got %d)" % len(seq))
    if not seq:
        return
    effects = {}
    for f in seq:
        for e in f["top"]:
            if e["method"] != "cusum":
                continue
            old = effects.get(e["feature"])
            if old is None or e["score"] / e["threshold"] > old["score"] / old["threshold"]:
                effects[e["feature"]] = e
    check(set(effects) == {"normal", "counts"}, "CUSUM alarms on the shifted features only (got %s)" % sorted(effects))
    # Charts per stream: 3 numeric features x 1 shift; each side gets 2 x arl_records x 3.
    arl_side = 2 * ARL * 3
    for j, name in enumerate(names):
        x_ref = ref[:, j]
        mean, sd = x_ref.mean(), x_ref.std()
        k = SHIFT / 2 + REF_SIGMAS / math.sqrt(n_ref)
        z_ref = (x_ref - mean) / sd
        scale = 1 + REF_SIGMAS * math.sqrt((np.mean(z_ref ** 4) - 1) / n_ref)
        h_up, theta_up = oracle_threshold(z_ref, SHIFT / 2, arl_side)
        h_dn, theta_dn = oracle_threshold(-z_ref, SHIFT / 2, arl_side)
        h_up, h_dn = scale * h_up, scale * h_dn
        print("%s: k=%.6f theta up %.4f down %.4f (normal: %.4f), h up %.3f down %.3f" %
              (name, k, theta_up, theta_dn, SHIFT, h_up, h_dn))
        e = effects.get(name)
        if e is None:
            continue
        h = e["threshold"]
        u = (cur[:, j] - mean) / sd
        alarms = plain_cusum(u, k, h)
        check(len(alarms) > 0, "%s: the oracle alarms too" % name)
        if not alarms:
            continue
        best = max(alarms, key=lambda t: t[2] / h)
        check(best[3] == (name == "normal"), "%s: direction (up: %s)" % (name, best[3]))
        h_oracle = h_up if best[3] else h_dn
        # The engine sees the reference through its quantile bins, values uniform inside a bin:
        # that puts a tail bin's mass further out than a decreasing tail density does, so its h
        # may only be higher (fewer false alarms), by a few percent.
        check(0.99 * h_oracle <= h <= 1.06 * h_oracle,
              "%s: threshold %.4f within -1%%..+6%% of the oracle's %.4f (from the raw reference)" % (name, h, h_oracle))
        check(e["alarm_record"] == best[0], "%s: alarm record %d == oracle %d" % (name, e["alarm_record"], best[0]))
        check(e["onset_record"] == best[1], "%s: onset record %d == oracle %d" % (name, e["onset_record"], best[1]))
        check(abs(e["score"] - best[2]) <= 1e-9 * max(1.0, best[2]),
              "%s: statistic at the alarm %.12g == oracle %.12g" % (name, e["score"], best[2]))
        first = alarms[0]
        check(first[0] >= start and first[1] >= start - 50,
              "%s: first alarm at %d after the change at %d (onset estimate %d)" % (name, first[0], start, first[1]))


if __name__ == "__main__":
    main()
    if FAILURES:
        print("%d failure(s)" % len(FAILURES))
        sys.exit(1)
    print("all CUSUM checks passed")
