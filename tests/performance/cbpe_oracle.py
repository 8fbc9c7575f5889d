#!/usr/bin/python3
"""Label-free estimates (CBPE) against an independent implementation: numpy, scikit-learn's
IsotonicRegression and metrics.

Two scikit-learn data sets (breast_cancer; make_classification), a model trained on one part, a
labelled reference from a second part, production windows resampled from a third part with
covariate shift (rows drawn with weights exp(alpha * feature), alpha growing window by window:
P(label | features) is unchanged, which is what CBPE assumes). The events go through the agent's
StreamJoin (perf_replay): the reference's predictions and labels first (the first
`reference_pairs` joined pairs fit the calibration), then each window's predictions with their
labels, except the last windows', which get none (estimates without labels).

Checked per window: the agent's estimated accuracy and F1 within 0.01 of the oracle's (in fact to
1e-9), the same withheld decisions, and the realized value (scikit-learn on the window's labels)
inside the agent's band in at least 90% of the labelled windows of each data set.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

S = 1_000_000_000
HOUR = 3600 * S
T0 = 1_700_000_000 * S // HOUR * HOUR
TTL = 7 * 24 * HOUR
GRACE = 300 * S
THRESHOLD = 0.5
BINS = 10
FOLDS = 5
MAX_UNSUPPORTED = 0.05


def ece(p, y):
    """Binned expected calibration error (docs/performance.md), in numpy."""
    p = np.clip(p, 0, 1)
    b = np.minimum((p * BINS).astype(int), BINS - 1)
    n = np.bincount(b, minlength=BINS)
    sp = np.bincount(b, weights=p, minlength=BINS)
    sy = np.bincount(b, weights=y, minlength=BINS)
    m = n > 0
    return float(np.sum(np.abs(sy[m] / n[m] - sp[m] / n[m]) * n[m] / len(p)))


def oracle_calibration(ref_s, ref_y):
    """5 folds (pair i in fold i % 5), isotonic kept only if its held-out ECE is lower."""
    held = np.empty(len(ref_s))
    idx = np.arange(len(ref_s))
    for f in range(FOLDS):
        tr = idx % FOLDS != f
        iso = IsotonicRegression(out_of_bounds="clip").fit(ref_s[tr], ref_y[tr])
        held[~tr] = iso.predict(ref_s[~tr])
    e_raw, e_iso = ece(ref_s, ref_y), ece(held, ref_y)
    full = IsotonicRegression(out_of_bounds="clip").fit(ref_s, ref_y)
    use = e_iso < e_raw
    return (lambda s: np.clip(full.predict(s), 0, 1)) if use else (lambda s: np.clip(s, 0, 1)), use, e_raw, e_iso


def oracle_estimate(calibrate, ref_s, s, min_bin_pairs):
    p = calibrate(s)
    yhat = s >= THRESHOLD
    counts = np.bincount(np.minimum((ref_s[(ref_s >= 0) & (ref_s <= 1)] * BINS).astype(int), BINS - 1),
                         minlength=BINS)
    inside = (s >= 0) & (s <= 1)
    bins = np.minimum((np.clip(s, 0, 1) * BINS).astype(int), BINS - 1)
    unsupported = np.sum(~inside | (counts[bins] < min_bin_pairs))
    if unsupported / len(s) > MAX_UNSUPPORTED:
        return {"withheld": "outside_support"}
    acc = float(np.mean(np.where(yhat, p, 1 - p)))
    tp = float(np.sum(p[yhat]))
    f1 = 2 * tp / (np.sum(yhat) + np.sum(p))
    return {"withheld": None, "accuracy": acc, "f1": f1}


def dataset(name, rng):
    if name == "breast_cancer":
        X, y = load_breast_cancer(return_X_y=True)
        # Strongly regularized: under-confident scores, which isotonic calibration corrects.
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.005, max_iter=1000))
        # 569 rows: a small reference, so its calibration bins need fewer pairs to count as support.
        n_train, n_ref, min_bin_pairs = 150, 250, 3
    else:
        X, y = make_classification(n_samples=12000, n_features=12, n_informative=5, n_redundant=3,
                                   class_sep=0.7, flip_y=0.03, random_state=5)
        # Over-confident on these clusters (raw ECE ~0.08). Not Gaussian naive Bayes: under this
        # shift its P(label | score) moves (a misspecified model), which CBPE does not cover.
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
        n_train, n_ref, min_bin_pairs = 2000, 2000, 10
    order = rng.permutation(len(y))
    X, y = X[order], y[order]
    model.fit(X[:n_train], y[:n_train])
    score = model.predict_proba(X)[:, 1]
    return score, y.astype(float), X, n_train, n_ref, min_bin_pairs


def run(name, args, rng):
    score, y, X, n_train, n_ref, min_bin_pairs = dataset(name, rng)
    ref = slice(n_train, n_train + n_ref)
    pool = np.arange(n_train + n_ref, len(y))
    # Covariate shift by resampling the pool on a feature: P(y | x) is unchanged.
    z = X[pool, 0]
    z = (z - z.mean()) / z.std()
    events, next_id = [], 1

    def emit(kind, ts, value):
        nonlocal next_id
        events.append((kind, next_id if kind == 0 else next_id - 1, ts, value))
        if kind == 0:
            next_id += 1

    # The reference: window 0, each prediction labelled a second later (joined in this order).
    for i, (s, lab) in enumerate(zip(score[ref], y[ref])):
        emit(0, T0 + i * S, s)
        emit(1, T0 + i * S + S, lab)
    windows, unlabelled = [], args.windows - 3
    for w in range(args.windows):
        alpha = 1.6 * w / max(1, args.windows - 1)
        wt = np.exp(alpha * z)
        # Distinct rows when the pool is small (breast_cancer): repeated rows would repeat labels,
        # which are then not the independent draws the band is for.
        size = min(args.window_rows, len(pool) // 2)
        rows = rng.choice(pool, size=size, replace=size == args.window_rows, p=wt / wt.sum())
        start = T0 + (w + 1) * HOUR
        for i, r in enumerate(rows):
            ts = start + i * (HOUR // (2 * len(rows)))
            emit(0, ts, score[r])
            if w < unlabelled:
                emit(1, ts + S, y[r])
        windows.append((start, rows, w < unlabelled, score[rows]))
    # A broken deployment emitting logits instead of probabilities: outside the reference's
    # support, the estimate must be withheld.
    rows = rng.choice(pool, size=min(args.window_rows, len(pool) // 2), replace=False)
    start = T0 + (args.windows + 1) * HOUR
    q = np.clip(score[rows], 1e-6, 1 - 1e-6)
    logits = np.log(q / (1 - q))
    for i, v in enumerate(logits):
        emit(0, start + i * S, v)
    windows.append((start, rows, False, logits))
    # perf_replay's event record (40 bytes; the slice column NaN: not sliced).
    rec = np.zeros(len(events), dtype=[("kind", "u1"), ("pad", "u1", 7), ("id", "<u8"), ("ts", "<i8"),
                                       ("value", "<f8"), ("slice", "<f8")])
    rec["slice"] = np.nan
    ev = np.array(events, dtype=object)
    rec["kind"] = ev[:, 0].astype(np.uint8)
    rec["id"] = ev[:, 1].astype(np.uint64)
    rec["ts"] = ev[:, 2].astype(np.int64)
    rec["value"] = ev[:, 3].astype(float)
    path = os.path.join(args.workdir, f"cbpe-{name}.bin")
    rec.tofile(path)
    out = subprocess.run([args.replay, path, "binary", str(TTL), str(GRACE), str(HOUR), str(10 * len(events)),
                          f"--reference-pairs={n_ref}", f"--min-bin-pairs={min_bin_pairs}",
                          f"--max-unsupported={MAX_UNSUPPORTED}"],
                         check=True, capture_output=True, text=True)
    agent = json.loads(out.stdout.strip().splitlines()[-1])  # after the log lines
    calibrate, use, e_raw, e_iso = oracle_calibration(score[ref], y[ref])
    errors = []
    r = agent.get("reference") or {}
    if not r.get("fitted") or r.get("pairs") != n_ref:
        errors.append(f"reference not fitted as expected: {r}")
    if (r.get("calibration") == "isotonic") != use:
        errors.append(f"calibration choice: agent {r.get('calibration')}, oracle isotonic={use}")
    for key, want in (("ece_raw", e_raw), ("ece_isotonic_held_out", e_iso)):
        if abs(r.get(key, -1) - want) > 1e-9:
            errors.append(f"{key}: agent {r.get(key)}, oracle {want}")
    by_start = {w["start_unix_ns"]: w for w in agent["windows"]}
    inside = {"accuracy": 0, "f1": 0}
    labelled = withheld = 0
    half_widths = []
    max_diff = 0.0
    for start, rows, has_labels, scores in windows:
        w = by_start.get(start)
        if w is None or "estimate" not in w:
            errors.append(f"window {start}: no estimate in the agent's output")
            continue
        est = w["estimate"]
        want = oracle_estimate(calibrate, score[ref], scores, min_bin_pairs)
        if est["withheld"] != want["withheld"]:
            errors.append(f"window {start}: withheld agent {est['withheld']} oracle {want['withheld']}")
            continue
        if want["withheld"]:
            withheld += 1
            continue
        if est["predictions"] != len(rows):
            errors.append(f"window {start}: {est['predictions']} predictions estimated, {len(rows)} made")
        for m in ("accuracy", "f1"):
            diff = abs(est["metrics"][m]["value"] - want[m])
            max_diff = max(max_diff, diff)
            if diff > 0.01:
                errors.append(f"window {start} {m}: agent {est['metrics'][m]['value']} oracle {want[m]}")
        if not has_labels:
            if w["labelled"] != 0 or w["metrics"]["accuracy"] is not None:
                errors.append(f"window {start}: unlabelled window has realized values")
            continue
        labelled += 1
        yhat = scores >= THRESHOLD
        realized = {"accuracy": accuracy_score(y[rows], yhat), "f1": f1_score(y[rows], yhat)}
        for m in ("accuracy", "f1"):
            b = est["metrics"][m]
            if abs(w["metrics"][m] - realized[m]) > 1e-9:
                errors.append(f"window {start} realized {m}: agent {w['metrics'][m]} sklearn {realized[m]}")
            inside[m] += b["lower"] <= realized[m] <= b["upper"]
            if m == "accuracy":
                half_widths.append((b["upper"] - b["lower"]) / 2)
    if withheld == 0:
        errors.append("the window of logits was not withheld")
    for m in ("accuracy", "f1"):
        share = inside[m] / labelled if labelled else 0
        if labelled < args.windows // 2 or share < 0.9:
            errors.append(f"{m}: realized inside the band in {inside[m]} of {labelled} labelled windows")
    print(f"{name}: reference {n_ref} pairs, calibration {'isotonic' if use else 'raw'} (ECE raw {e_raw:.4f}, "
          f"isotonic held-out {e_iso:.4f}); {len(windows)} windows of {len(windows[0][1])}, {withheld} withheld; "
          f"max |agent - oracle| {max_diff:.2e}; median accuracy band +-{np.median(half_widths or [0]):.3f}; realized inside band: accuracy {inside['accuracy']}/{labelled}, "
          f"f1 {inside['f1']}/{labelled}: {'OK' if not errors else f'{len(errors)} problems'}")
    return errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--replay", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--windows", type=int, default=40)
    ap.add_argument("--window-rows", type=int, default=400)
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    errors = []
    for name in ("breast_cancer", "make_classification"):
        errors += run(name, args, rng)
    for e in errors[:40]:
        print("MISMATCH", e)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
