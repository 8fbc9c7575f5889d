#!/usr/bin/python3
"""Checks every statistic `mltap drift --json` reports against scipy on the same data.

KS and Wasserstein-1 come from binned counts: the exact (scipy) value must lie within the error
bound mltap reports next to it. PSI, Jensen-Shannon and Hellinger are defined on bins fitted on
the reference's quantiles; the oracle rebuilds those bins with numpy from the documented rule
(docs/detectors.md) and must agree to rounding. Chi-squared is compared with chi2_contingency.
"""
import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what)


def make_data(seed):
    rng = np.random.default_rng(seed)
    n_ref, n_cur = 20000, 5000
    cols = {}
    cols["normal"] = (rng.normal(size=n_ref), rng.normal(size=n_cur))
    cols["shifted"] = (rng.normal(size=n_ref), rng.normal(0.3, 1.0, size=n_cur))
    cols["wider"] = (rng.normal(size=n_ref), rng.normal(0.0, 1.5, size=n_cur))
    cols["lognormal"] = (rng.lognormal(0, 1, size=n_ref), rng.lognormal(0.2, 1.2, size=n_cur))
    cols["rounded"] = (np.round(rng.normal(size=n_ref), 1), np.round(rng.normal(0.1, 1, size=n_cur), 1))
    ref_nan, cur_nan = rng.normal(size=n_ref), rng.normal(size=n_cur)
    ref_nan[rng.random(n_ref) < 0.01] = np.nan
    cur_nan[rng.random(n_cur) < 0.05] = np.nan
    cols["with_nan"] = (ref_nan, cur_nan)
    cols["category"] = (rng.choice(6, size=n_ref, p=[.3, .2, .2, .1, .1, .1]).astype(float),
                        rng.choice(6, size=n_cur, p=[.2, .2, .2, .2, .1, .1]).astype(float))
    names = list(cols)
    ref = np.stack([cols[k][0] for k in names], axis=1)
    cur = np.stack([cols[k][1] for k in names], axis=1)
    return names, ref, cur


def quantile_edges(x, bins):
    """The documented fine-bin rule: sorted[floor(i*n/bins)] for i < bins, then the maximum;
    a value hit by several quantiles (an atom) also gets the next larger value as an edge."""
    s = np.sort(x)
    n = len(s)
    picked = [s[(i * n) // bins] for i in range(bins)] + [s[-1]]
    extra = []
    for i in range(1, len(picked)):
        if picked[i] == picked[i - 1]:
            k = np.searchsorted(s, picked[i], side="right")
            if k < n:
                extra.append(s[k])
    return np.unique(np.array(picked + extra))


def slot_counts(x, edges):
    """Counts in slots: below edges[0], each bin [e_i, e_i+1) (last closed), above edges[-1]."""
    under = np.sum(x < edges[0])
    over = np.sum(x > edges[-1])
    inside = x[(x >= edges[0]) & (x <= edges[-1])]
    idx = np.searchsorted(edges, inside, side="right") - 1
    idx = np.minimum(idx, len(edges) - 2)
    return under, np.bincount(idx, minlength=len(edges) - 1), over


def coarse_groups(ref_counts, target=16):
    cum = np.concatenate([[0], np.cumsum(ref_counts)]) / np.sum(ref_counts)
    mid = 0.5 * (cum[:-1] + cum[1:])
    g = np.minimum(target - 1, np.floor(mid * target)).astype(int)
    _, inverse = np.unique(g, return_inverse=True)
    return inverse  # 0-based coarse index per fine bin (groups are contiguous)


def psi(p, q):
    return float(np.sum((q - p) * np.log(q / p)))


def discrete_checks(a):
    """Discrete and tied data, small samples: low-cardinality features of any dtype are value
    counts, and KS, chi-squared, JS, PSI and L-inf on them equal scipy / plain Python to 1e-9;
    a tied feature forced numeric keeps scipy's KS within the stated bound."""
    rng = np.random.default_rng(21)
    n_ref, n_cur = 300, 700
    p = 0.3
    cols = {
        # a standardized binary column: two float values
        "binary": lambda n, s: ((rng.random(n) < p + s).astype(float) - p) / np.sqrt(p * (1 - p)),
        "int17": lambda n, s: rng.binomial(16, 0.4 + s, size=n).astype(float),
        "likert": lambda n, s: rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], size=n, p=[.1, .2 - s, .3, .25 + s, .15]),
        # the window holds a value the reference never saw (2.5): still exact
        "with_new": lambda n, s: rng.choice([0.25, 1.5, 2.5] if s else [0.25, 1.5], size=n),
        # ties, forced numeric: binned KS with its bound
        "tied_numeric": lambda n, s: np.round(rng.normal(s, 1, size=n) * 2) / 2,
        "binary_numeric": lambda n, s: ((rng.random(n) < p + s).astype(float) - p) / np.sqrt(p * (1 - p)),
    }
    names = list(cols)
    for shift in (0.0, 0.05):
        ref = np.stack([cols[k](n_ref, 0.0) for k in names], axis=1)
        cur = np.stack([cols[k](n_cur, shift) for k in names], axis=1)
        tag0 = f"discrete shift {shift}"
        rp, cp = os.path.join(a.workdir, "dref.npy"), os.path.join(a.workdir, "dcur.npy")
        prof = os.path.join(a.workdir, "dref.profile")
        np.save(rp, ref)
        np.save(cp, cur)
        subprocess.run([a.mltap, "profile", "build", "-i", rp, "-o", prof, "--features", ",".join(names),
                        "--numeric", "tied_numeric,binary_numeric"], check=True, stdout=subprocess.DEVNULL)
        res = json.loads(subprocess.run([a.mltap, "drift", "-r", prof, "-c", cp, "--json"], check=True,
                                        capture_output=True, text=True).stdout)
        feats = {f["name"]: f for f in res["stream"]["features"]}
        for j, name in enumerate(names):
            f = feats[name]
            sc = {m["method"]: m for m in f["scores"]}
            r, c = ref[:, j], cur[:, j]
            tag = f"{tag0} {name}"
            ks = stats.ks_2samp(r, c, method="exact" if name != "tied_numeric" else "auto").statistic
            if name.endswith("_numeric"):
                check(f["kind"] == "numeric", tag + " forced numeric")
                mk, bound = sc["ks"]["score"], sc["ks"]["error_bound"]
                check(mk <= ks + 1e-12 and ks <= mk + bound + 1e-12, f"{tag} ks {mk} (+{bound}) vs scipy {ks}")
                print(f"{tag}: binned ks {mk:.6f} bound {bound:.6f} scipy {ks:.6f}")
                continue
            check(f["kind"] == "categorical", f"{tag} is low-cardinality (value counts), got {f['kind']}")
            check(abs(sc["ks"]["score"] - ks) < 1e-9 and sc["ks"]["error_bound"] == 0,
                  f"{tag} ks {sc['ks']['score']} (bound {sc['ks']['error_bound']}) vs scipy exact {ks}")
            cats = sorted(set(r))
            rc = np.array([np.sum(r == v) for v in cats] + [0], dtype=float)
            cc = np.array([np.sum(c == v) for v in cats] + [np.sum(~np.isin(c, cats))], dtype=float)
            keep = (rc + cc) > 0
            chi = stats.chi2_contingency(np.stack([rc[keep], cc[keep]]))
            check(abs(sc["chi2"]["score"] - chi[0]) <= 1e-9 * max(1, chi[0]), f"{tag} chi2 {sc['chi2']['score']} vs {chi[0]}")
            if sc["chi2"]["p_value"] is not None:
                check(abs(sc["chi2"]["p_value"] - chi[1]) <= 1e-9 + 1e-6 * chi[1], f"{tag} chi2 p {sc['chi2']['p_value']} vs {chi[1]}")
            pr, qr = rc / rc.sum(), cc / cc.sum()
            check(abs(sc["js"]["score"] - jensenshannon(pr, qr, base=2)) < 1e-9, f"{tag} js vs scipy")
            check(abs(sc["linf"]["score"] - np.max(np.abs(pr - qr))) < 1e-12, f"{tag} linf")
            ps, qs = (rc + .5) / (rc.sum() + .5 * len(rc)), (cc + .5) / (cc.sum() + .5 * len(cc))
            want = sum((qi - pi) * math.log(qi / pi) for pi, qi in zip(ps, qs))  # plain Python PSI
            check(abs(sc["psi"]["score"] - want) < 1e-9, f"{tag} psi {sc['psi']['score']} vs {want}")
            # Every decision score carries its noise floor and decision level.
            for m in ("linf", "js"):
                lvl = sc[m]["decision_level"]
                check(lvl is not None and lvl >= sc[m]["threshold"], f"{tag} {m} decision level {lvl}")
            check(f["min_detectable_effect"]["method"] == "linf", f"{tag} min detectable method")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mltap", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    for seed in (1, 2):
        names, ref, cur = make_data(seed)
        rp = os.path.join(a.workdir, f"ref{seed}.npy")
        cp = os.path.join(a.workdir, f"cur{seed}.npy")
        prof = os.path.join(a.workdir, f"ref{seed}.profile")
        np.save(rp, ref)
        np.save(cp, cur)
        subprocess.run([a.mltap, "profile", "build", "-i", rp, "-o", prof, "--features", ",".join(names)],
                       check=True, stdout=subprocess.DEVNULL)
        out = subprocess.run([a.mltap, "drift", "-r", prof, "-c", cp, "--json"], check=True,
                             capture_output=True, text=True).stdout
        res = json.loads(out)
        feats = {f["name"]: f for f in res["stream"]["features"]}
        for j, name in enumerate(names):
            f = feats[name]
            sc = {m["method"]: m for m in f["scores"]}
            r = ref[:, j][np.isfinite(ref[:, j])]
            c = cur[:, j][np.isfinite(cur[:, j])]
            tag = f"seed {seed} {name}"
            check(abs(f["quality"]["nan_ratio"] - np.mean(np.isnan(cur[:, j]))) < 1e-12, tag + " nan ratio")
            if f["kind"] == "categorical":
                cats = sorted(set(r))
                rc = np.array([np.sum(r == v) for v in cats] + [0], dtype=float)
                cc = np.array([np.sum(c == v) for v in cats] + [np.sum(~np.isin(c, cats))], dtype=float)
                keep = (rc + cc) > 0
                chi = stats.chi2_contingency(np.stack([rc[keep], cc[keep]]))
                check(abs(sc["chi2"]["score"] - chi[0]) <= 1e-6 * max(1, chi[0]), f"{tag} chi2 {sc['chi2']['score']} vs {chi[0]}")
                if sc["chi2"]["p_value"] is not None:
                    check(abs(sc["chi2"]["p_value"] - chi[1]) <= 1e-6 + 1e-6 * chi[1], f"{tag} chi2 p {sc['chi2']['p_value']} vs {chi[1]}")
                p, q = rc / rc.sum(), cc / cc.sum()
                check(abs(sc["js"]["score"] - jensenshannon(p, q, base=2)) < 1e-9, f"{tag} categorical js")
                check(abs(sc["linf"]["score"] - np.max(np.abs(p - q))) < 1e-12, f"{tag} linf")
                ps, qs = (rc + .5) / (rc.sum() + .5 * len(rc)), (cc + .5) / (cc.sum() + .5 * len(cc))
                check(abs(sc["psi"]["score"] - psi(ps, qs)) < 1e-9, f"{tag} categorical psi")
                continue
            # KS: scipy's exact statistic lies in [binned, binned + bound].
            ks = stats.ks_2samp(r, c)
            mk, bound = sc["ks"]["score"], sc["ks"]["error_bound"]
            check(mk <= ks.statistic + 1e-12 and ks.statistic <= mk + bound + 1e-12,
                  f"{tag} ks {mk} (+{bound}) vs scipy {ks.statistic}")
            if sc["ks"]["p_value"] is not None:
                # Same asymptotic distribution at mltap's (lower-bound) statistic.
                en = len(r) * len(c) / (len(r) + len(c))
                want = stats.kstwo.sf(mk, int(round(en)))
                check(abs(sc["ks"]["p_value"] - want) <= 0.01 + 0.05 * want, f"{tag} ks p {sc['ks']['p_value']} vs {want}")
                check(sc["ks"]["p_value"] >= ks.pvalue * 0.5 - 1e-12, f"{tag} ks p not conservative: {sc['ks']['p_value']} vs {ks.pvalue}")
            # Wasserstein-1 normalized by the reference sd (population sd).
            w = stats.wasserstein_distance(c, r) / np.std(r)
            check(abs(sc["wasserstein"]["score"] - w) <= sc["wasserstein"]["error_bound"] + 1e-9,
                  f"{tag} w1 {sc['wasserstein']['score']} (+-{sc['wasserstein']['error_bound']}) vs scipy {w}")
            # PSI / JS / Hellinger on coarse bins rebuilt by the documented rule.
            edges = quantile_edges(r, 256)
            _, ref_fine, _ = slot_counts(r, edges)
            under, cur_fine, over = slot_counts(c, edges)
            groups = coarse_groups(ref_fine)
            k = groups.max() + 1
            ref_coarse = np.concatenate([[0], np.bincount(groups, ref_fine, minlength=k), [0]])
            cur_coarse = np.concatenate([[under], np.bincount(groups, cur_fine, minlength=k), [over]])
            pr, qr = ref_coarse / ref_coarse.sum(), cur_coarse / cur_coarse.sum()
            check(abs(sc["js"]["score"] - jensenshannon(pr, qr, base=2)) < 1e-9,
                  f"{tag} js {sc['js']['score']} vs {jensenshannon(pr, qr, base=2)}")
            hel = np.sqrt(max(0.0, 1 - np.sum(np.sqrt(pr * qr))))
            check(abs(sc["hellinger"]["score"] - hel) < 1e-9, f"{tag} hellinger {sc['hellinger']['score']} vs {hel}")
            ps = (ref_coarse + .5) / (ref_coarse.sum() + .5 * len(ref_coarse))
            qs = (cur_coarse + .5) / (cur_coarse.sum() + .5 * len(cur_coarse))
            check(abs(sc["psi"]["score"] - psi(ps, qs)) < 1e-9, f"{tag} psi {sc['psi']['score']} vs {psi(ps, qs)}")
        # Decisions: the shifted features drift, the identical ones do not.
        check(feats["shifted"]["drifted"] and feats["wider"]["drifted"] and feats["category"]["drifted"], f"seed {seed} decisions (moved)")
        check(not feats["normal"]["drifted"] and not feats["with_nan"]["drifted"], f"seed {seed} decisions (same)")
        check(any(fd["kind"] == "data_quality" and fd["open"] for fd in res["findings"]), f"seed {seed} NaN 1% -> 5% is a quality finding")
    discrete_checks(a)
    # Identical large samples do not alarm; the exit code reflects drift.
    rng = np.random.default_rng(9)
    big_ref, big_cur = rng.normal(size=(200000, 5)), rng.normal(size=(200000, 5))
    np.save(os.path.join(a.workdir, "big_ref.npy"), big_ref)
    np.save(os.path.join(a.workdir, "big_cur.npy"), big_cur)
    rc = subprocess.run([a.mltap, "drift", "-r", os.path.join(a.workdir, "big_ref.npy"), "-c",
                         os.path.join(a.workdir, "big_cur.npy"), "--fail-on-drift"], capture_output=True, text=True)
    check(rc.returncode == 0, "identical 200k samples: no drift, exit 0:\n" + rc.stdout)
    big_cur[:, 1] += 0.2
    np.save(os.path.join(a.workdir, "big_cur.npy"), big_cur)
    rc = subprocess.run([a.mltap, "drift", "-r", os.path.join(a.workdir, "big_ref.npy"), "-c",
                         os.path.join(a.workdir, "big_cur.npy"), "--fail-on-drift"], capture_output=True, text=True)
    check(rc.returncode == 3, f"shift 0.2 sd: exit 3, got {rc.returncode}")
    # A hostile input gives a clear error and exit 1.
    bad = os.path.join(a.workdir, "bad.npy")
    with open(bad, "wb") as fh:
        fh.write(b"\x93NUMPY\x01\x00\x40\x00{'descr': '<f8', 'fortran_order': False, 'shape': (99, 2), }" + b" " * 10)
    rc = subprocess.run([a.mltap, "drift", "-r", os.path.join(a.workdir, "big_ref.npy"), "-c", bad], capture_output=True, text=True)
    check(rc.returncode == 1 and "bad.npy" in rc.stderr, "hostile .npy: exit 1 naming the file: " + rc.stderr)
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed")
        sys.exit(1)
    print("all scipy oracle checks passed")


if __name__ == "__main__":
    main()
