#!/usr/bin/python3
"""The label join against an independent oracle: pandas merges and scikit-learn metrics.

Generates predictions and labels with heavy-tailed label lags (Pareto), 30% never labelled,
duplicate labels and predictions, out-of-order arrival (jitter), labels read before their
predictions, labels after the TTL (late, and later than TTL + grace), labels for unknown ids;
replays them in arrival order through the agent's StreamJoin (perf_replay) and checks every
count and every metric per prediction-time window against what pandas and scikit-learn compute
from the same events (AUC to 1e-9). The stream is sliced (8 slice values, 1% NaN, a cap of
SLICE_CAP values: the rest go to "other"), and per window every slice's counts and metrics are
checked against a pandas groupby of the same joined pairs.

The rules the oracle encodes are docs/performance.md's ("The join"). Event times are drawn so that
no outcome depends on when the agent's clock passes a deadline within the arrival jitter (lags
within 4 jitters of TTL + grace are redrawn): then every outcome is a function of the events.
"""
import argparse
import os
import subprocess
import sys
import json

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

S = 1_000_000_000
T0 = 1_700_000_000 * S
TTL = 3600 * S
GRACE = 60 * S
JITTER = 5 * S
WINDOW = 600 * S
SPAN = 6000 * S
LAG_BOUNDS = [1, 10, 60, 600, 3600, 21600, 86400, 604800, 2592000]
SLICE_VALUES = 8
SLICE_CAP = 5


def generate(rng, n, task):
    ids = rng.choice(np.iinfo(np.int64).max, size=n, replace=False).astype(np.uint64)
    pts = T0 + rng.integers(0, SPAN, n)
    if task == "binary":
        truth = rng.random(n)
        score = np.round(np.clip(truth + rng.normal(0, 0.25, n), 0, 1), 3)  # rounded: ties
        y = (rng.random(n) < truth).astype(float)
    elif task == "multiclass":
        y = rng.integers(0, 4, n).astype(float)
        score = np.where(rng.random(n) < 0.7, y, rng.integers(0, 4, n)).astype(float)
    else:
        y = rng.normal(10, 3, n)
        score = y + rng.normal(0, 1, n)
    sl = rng.integers(0, SLICE_VALUES, n).astype(float)
    sl[rng.random(n) < 0.01] = np.nan
    preds = [pd.DataFrame({"id": ids, "ts": pts, "value": score, "slice": sl})]
    # 1% predicted twice, J..2J later (the first arrival wins).
    d = rng.random(n) < 0.01
    preds.append(pd.DataFrame({"id": ids[d], "ts": pts[d] + rng.integers(JITTER, 2 * JITTER, d.sum()),
                               "value": score[d], "slice": sl[d]}))
    labelled = rng.random(n) < 0.70
    kind = rng.random(n)
    lag = (rng.pareto(1.1, n) * 120 * S).astype(np.int64)            # heavy tail: some past TTL
    lag = np.where(kind < 0.05, rng.integers(0, JITTER, n), lag)      # read before the prediction
    lag = np.where((kind >= 0.05) & (kind < 0.08), TTL + rng.integers(1, GRACE - 4 * JITTER, n), lag)  # late
    band = (lag > TTL + GRACE - 4 * JITTER) & (lag < TTL + GRACE + 4 * JITTER)
    lag = np.where(band, TTL + GRACE + 4 * JITTER + rng.integers(0, 3600 * S, n), lag)
    li = np.flatnonzero(labelled)
    labels = [pd.DataFrame({"id": ids[li], "ts": pts[li] + lag[li], "value": y[li]})]
    dup = li[rng.random(li.size) < 0.03]                              # labelled twice, J..2J later
    flipped = 1 - y[dup] if task == "binary" else y[dup] + 1
    labels.append(pd.DataFrame({"id": ids[dup], "ts": pts[dup] + lag[dup] + rng.integers(JITTER, 2 * JITTER, dup.size),
                                "value": flipped}))
    m = n // 50                                                        # labels of unknown ids
    labels.append(pd.DataFrame({"id": rng.choice(np.iinfo(np.int64).max, size=m).astype(np.uint64),
                                "ts": T0 + rng.integers(0, SPAN, m), "value": np.ones(m)}))
    p = pd.concat(preds, ignore_index=True)
    lab = pd.concat(labels, ignore_index=True)
    p["kind"] = 0
    lab["kind"] = 1
    ev = pd.concat([p, lab], ignore_index=True)
    ev["arrival"] = ev["ts"] + rng.integers(0, JITTER, len(ev))       # out of order within J
    ev = ev.sort_values("arrival", kind="stable").reset_index(drop=True)
    ev["seq"] = np.arange(len(ev))
    return ev


def write_events(ev, path):
    rec = np.zeros(len(ev), dtype=[("kind", "u1"), ("pad", "u1", 7), ("id", "<u8"), ("ts", "<i8"), ("value", "<f8"),
                                   ("slice", "<f8")])
    rec["kind"] = ev["kind"].to_numpy()
    rec["id"] = ev["id"].to_numpy()
    rec["ts"] = ev["ts"].to_numpy()
    rec["value"] = ev["value"].to_numpy()
    rec["slice"] = ev["slice"].fillna(np.nan).to_numpy(float) if "slice" in ev else np.nan
    rec.tofile(path)


def oracle(ev, task):
    preds = ev[ev.kind == 0]
    labels = ev[ev.kind == 1]
    winners = preds.drop_duplicates("id", keep="first")                # arrival order
    first = labels.drop_duplicates("id", keep="first")
    later = labels[labels.duplicated("id", keep="first")]
    m = first.drop(columns=["slice"]).merge(winners[["id", "ts", "value", "slice"]], on="id", how="left",
                                            suffixes=("_l", "_p"))
    m["lag"] = m["ts_l"] - m["ts_p"]
    has = m["ts_p"].notna()
    joined = m[has & (m.lag <= TTL)].copy()
    late = m[has & (m.lag > TTL) & (m.lag <= TTL + GRACE)]
    unmatched = m[~has | (m.lag > TTL + GRACE)]
    later_of_late = later[later.id.isin(late.id)]
    counts = {
        "predictions": len(winners),
        "predictions_duplicate": len(preds) - len(winners),
        "labels": len(labels),
        "joined": len(joined),
        "late": len(late) + len(later_of_late),
        "unmatched": len(unmatched),
        "duplicate": len(later) - len(later_of_late),
        "expired_unlabelled": len(winners) - len(joined),
    }
    windows = {}
    winners = winners.assign(w=(winners.ts // WINDOW) * WINDOW)
    joined["w"] = (joined.ts_p.astype(np.int64) // WINDOW) * WINDOW
    for w, g in winners.groupby("w"):
        windows[int(w)] = {"predictions": len(g), "labelled": 0, "metrics": {}, "label_lag_buckets": [0] * 10}
    # Slices: values in arrival order of the prediction rows, the first SLICE_CAP get their own.
    order = [v for v in preds["slice"].dropna().drop_duplicates().tolist()]
    own = {v: str(int(v)) for v in order[:SLICE_CAP]}
    name = lambda v: own.get(v, "other") if v == v else "other"
    winners = winners.assign(s=winners["slice"].map(name))
    joined["s"] = joined["slice"].map(name)
    for w, g in winners.groupby("w"):
        windows[int(w)]["slices"] = {k: {"predictions": len(gs), "labelled": 0, "metrics": {}}
                                     for k, gs in g.groupby("s")}
    for (w, k), g in joined.groupby(["w", "s"]):
        sl = windows[int(w)]["slices"].setdefault(k, {"predictions": 0, "labelled": 0, "metrics": {}})
        sl["labelled"] = len(g)
        sl["metrics"] = metrics(task, g.value_p.to_numpy(float), g.value_l.to_numpy(float))
    counts["slice_other_rows"] = int(preds["slice"].notna().sum() - preds["slice"].isin(order[:SLICE_CAP]).sum())
    counts["slice_invalid_rows"] = int(preds["slice"].isna().sum())
    for w, g in joined.groupby("w"):
        p = g.value_p.to_numpy(float)
        y = g.value_l.to_numpy(float)
        lag_s = np.maximum(0, g.lag.to_numpy(np.int64)).astype(float) / 1e9
        buckets = np.bincount(np.searchsorted(LAG_BOUNDS, lag_s, side="left"), minlength=10)
        met = metrics(task, p, y)
        windows[int(w)].update({"labelled": len(g), "metrics": met, "label_lag_buckets": buckets.tolist()})
    return counts, windows


def metrics(task, p, y):
        met = {}
        if task == "binary":
            yb = y != 0
            yhat = p >= 0.5
            tp, fp, fn = (yb & yhat).sum(), (~yb & yhat).sum(), (yb & ~yhat).sum()
            met["accuracy"] = accuracy_score(yb, yhat)
            met["precision"] = precision_score(yb, yhat) if tp + fp > 0 else None
            met["recall"] = recall_score(yb, yhat) if tp + fn > 0 else None
            met["f1"] = f1_score(yb, yhat) if tp + fp + fn > 0 else None
            met["roc_auc"] = roc_auc_score(yb, p) if 0 < yb.sum() < len(yb) else None
            q = np.clip(p, 1e-15, 1 - 1e-15)
            met["log_loss"] = float(np.mean(-(yb * np.log(q) + (~yb) * np.log1p(-q))))
            c = np.clip(p, 0, 1)
            b = np.minimum(9, (c * 10).astype(int))
            ece = 0.0
            for k in range(10):
                sel = b == k
                if sel.any():
                    ece += abs(yb[sel].mean() - c[sel].mean()) * sel.sum() / len(p)
            met["calibration_error"] = ece
        elif task == "multiclass":
            met["accuracy"] = float(np.mean(np.rint(p) == np.rint(y)))
        else:
            met["mae"] = float(np.mean(np.abs(p - y)))
            met["rmse"] = float(np.sqrt(np.mean((p - y) ** 2)))
        return met


def compare(task, agent, counts, windows):
    errors = []
    for k in ("slice_other_rows", "slice_invalid_rows"):
        got_k = agent["slices"]["rows_over_cap" if k == "slice_other_rows" else "rows_invalid"]
        if got_k != counts[k]:
            errors.append(f"{task}: {k}: agent {got_k}, oracle {counts[k]}")
    for k, v in counts.items():
        if k.startswith("slice_"):
            continue
        if agent["counters"][k] != v:
            errors.append(f"{task}: counter {k}: agent {agent['counters'][k]}, oracle {v}")
    got = {w["start_unix_ns"]: w for w in agent["windows"]}
    if sorted(got) != sorted(windows):
        errors.append(f"{task}: windows differ: agent {sorted(got)}, oracle {sorted(windows)}")
    for w, o in windows.items():
        a = got.get(w)
        if a is None:
            continue
        for k in ("predictions", "labelled", "label_lag_buckets"):
            if a[k] != o[k]:
                errors.append(f"{task}: window {w} {k}: agent {a[k]}, oracle {o[k]}")
        for k, v in o["metrics"].items():
            av = a["metrics"][k]
            if (v is None) != (av is None) or (v is not None and abs(av - v) > 1e-9):
                errors.append(f"{task}: window {w} {k}: agent {av}, oracle {v}")
        got_slices = {x["slice"]: x for x in a.get("slices", [])}
        if sorted(got_slices) != sorted(o["slices"]):
            errors.append(f"{task}: window {w} slices: agent {sorted(got_slices)}, oracle {sorted(o['slices'])}")
        for k, os_ in o["slices"].items():
            ag = got_slices.get(k)
            if ag is None:
                continue
            for f in ("predictions", "labelled"):
                if ag[f] != os_[f]:
                    errors.append(f"{task}: window {w} slice {k} {f}: agent {ag[f]}, oracle {os_[f]}")
            for mk, v in os_["metrics"].items():
                av = ag["metrics"][mk]
                if (v is None) != (av is None) or (v is not None and abs(av - v) > 1e-9):
                    errors.append(f"{task}: window {w} slice {k} {mk}: agent {av}, oracle {v}")
        if a["evicted"] != 0:
            errors.append(f"{task}: window {w}: evicted {a['evicted']} (the table was sized not to)")
    return errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--replay", required=True)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    errors = []
    for task, n in (("binary", args.rows), ("multiclass", max(1000, args.rows // 10)),
                    ("regression", max(1000, args.rows // 10))):
        ev = generate(rng, n, task)
        path = os.path.join(args.workdir, f"events-{task}.bin")
        write_events(ev, path)
        out = subprocess.run([args.replay, path, task, str(TTL), str(GRACE), str(WINDOW), str(2 * n), "-",
                              str(SLICE_CAP)],
                             check=True, capture_output=True, text=True)
        agent = json.loads(out.stdout)
        counts, windows = oracle(ev, task)
        e = compare(task, agent, counts, windows)
        errors += e
        print(f"{task}: {len(ev)} events, {counts['predictions']} predictions, {counts['joined']} joined, "
              f"{counts['late']} late, {counts['unmatched']} unmatched, {counts['duplicate']} duplicate, "
              f"{len(windows)} windows: {'OK' if not e else f'{len(e)} differences'}")
    for e in errors[:40]:
        print("MISMATCH", e)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
