#!/usr/bin/python3
"""A small but real ML serving pipeline instrumented with mltap.

A scikit-learn classifier is trained on the breast-cancer data set that ships with scikit-learn
and saved to a model file. Requests (rows bootstrapped from the held-out set) are served one by
one: the feature generator writes each request's 30 features into the ring "demo/features", the
model writes its score into "demo/predictions", both tagged with the request's trace id.

The model file is reloaded when it changes (a deployment), and the model stage switches to a
fallback model while mltapd's `producer-flag` reaction sets the flag `use_fallback`.

After a while, faults are injected, as they happen in production:
  * a model swap: a worse model is renamed onto the served model file (a bad deployment);
  * a unit change upstream: "mean area" arrives in cm^2 instead of mm^2 (x 0.01);
  * a NaN burst in "mean texture" (a broken upstream join).
Each fault is printed with its time so you can find it in mltapd's metrics and findings.
"""
import argparse
import atexit
import os
import shutil
import signal
import sys
import tempfile
import time

import numpy as np

try:
    import joblib
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
except ImportError as e:  # pragma: no cover
    sys.exit(f"demo: {e}; run with /usr/bin/python3 (Debian's python3-sklearn)")

import mltap


def log(msg):
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train(x, y, seed, label_noise=0.0):
    rng = np.random.default_rng(seed)
    y = y.copy()
    if label_noise:
        flip = rng.random(len(y)) < label_noise
        y[flip] = 1 - y[flip]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    model.fit(x, y)
    return model


def save_atomically(model, path):
    """What a deployment tool does: write elsewhere, then rename onto the served file."""
    tmp = path + ".new"
    joblib.dump(model, tmp)
    os.rename(tmp, path)


class Faults:
    def __init__(self, start, unit_change_at, nan_burst_at, nan_burst_for, model_swap_at):
        self.start = start
        self.unit_change_at = unit_change_at
        self.nan_burst_at = nan_burst_at
        self.nan_burst_for = nan_burst_for
        self.model_swap_at = model_swap_at
        self.announced = set()

    def t(self):
        return time.monotonic() - self.start

    def active(self, name, at, duration=None):
        if at is None or at < 0:
            return False
        t = self.t()
        on = t >= at and (duration is None or t < at + duration)
        if on and name not in self.announced:
            self.announced.add(name)
            log(f"FAULT: {name} (t={t:.0f}s)")
        return on


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000, help="requests per second")
    ap.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0 = run until killed)")
    ap.add_argument("--model-swap-at", type=float, default=60, help="seconds; negative disables")
    ap.add_argument("--unit-change-at", type=float, default=120, help="seconds; negative disables")
    ap.add_argument("--nan-burst-at", type=float, default=160, help="seconds; negative disables")
    ap.add_argument("--nan-burst-for", type=float, default=15)
    ap.add_argument("--workdir", default=None, help="where the model files live")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    data = load_breast_cancer()
    features = [n.replace(" ", "_") for n in data.feature_names]
    x_train, x_serve, y_train, y_serve = train_test_split(
        data.data, data.target, test_size=0.4, random_state=args.seed, stratify=data.target)
    # Under /var/lib: mltapd watches declared model files only under ingest.artifact_dirs
    # (by default /srv, /opt, /var/lib, /home; never /tmp), so the model swap is attributed.
    if args.workdir is None:
        os.makedirs("/var/lib/mltap-demo", exist_ok=True)
    workdir = args.workdir or tempfile.mkdtemp(prefix="run-", dir="/var/lib/mltap-demo")
    if args.workdir is None:
        atexit.register(shutil.rmtree, workdir, True)
    os.makedirs(workdir, exist_ok=True)
    model_path = os.path.join(workdir, "model.joblib")
    save_atomically(train(x_train, y_train, args.seed), model_path)
    fallback = train(x_train, y_train, args.seed + 1)
    worse = train(x_train, y_train, args.seed + 2, label_noise=0.45)
    log(f"model trained on {len(x_train)} rows, served from {model_path}")

    feats = mltap.Stream("demo/features", component="featuregen", features=features, kind="features")
    # The model file is declared as this stream's artifact: mltapd watches it.
    preds = mltap.Stream("demo/predictions", component="model", features=["p_malignant"], kind="predictions",
                         artifacts=[model_path])
    log(f"writing rings {feats.segment_path} and {preds.segment_path}")

    model, model_mtime = joblib.load(model_path), os.stat(model_path).st_mtime_ns
    faults = Faults(time.monotonic(), args.unit_change_at, args.nan_burst_at, args.nan_burst_for, args.model_swap_at)
    area = features.index("mean_area")
    texture = features.index("mean_texture")
    rng = np.random.default_rng(args.seed)
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    swapped = False
    using_fallback = False
    request = 0
    next_t = time.monotonic()
    try:
        while not stop[0] and (args.duration <= 0 or faults.t() < args.duration):
            # Feature generation (with whatever is broken upstream right now).
            row = x_serve[rng.integers(len(x_serve))].astype(np.float32)
            row = row * rng.normal(1.0, 0.02, size=row.shape).astype(np.float32)  # measurement noise
            if faults.active("unit change: mean_area now in cm^2", args.unit_change_at):
                row[area] *= 0.01
            if faults.active("NaN burst in mean_texture", args.nan_burst_at, args.nan_burst_for):
                row[texture] = np.nan
            feats.write(row, trace_ids=request)

            # A deployment renames a worse model onto the served file.
            if not swapped and faults.active("model swap: a worse model renamed onto model.joblib", args.model_swap_at):
                save_atomically(worse, model_path)
                swapped = True
            mtime = os.stat(model_path).st_mtime_ns
            if mtime != model_mtime:
                model, model_mtime = joblib.load(model_path), mtime
                log("model file changed: reloaded")

            # Inference: the fallback model while mltapd's reaction asks for it.
            fb = preds.flag("use_fallback")
            if fb != using_fallback:
                using_fallback = fb
                log("flag use_fallback=%d: serving the %s model" % (fb, "fallback" if fb else "primary"))
            clean = np.nan_to_num(row, nan=0.0).reshape(1, -1)
            p = (fallback if using_fallback else model).predict_proba(clean)[0, 0]
            preds.write(np.array([p], dtype=np.float32), trace_ids=request)

            request += 1
            if request % (int(args.rate) * 30 or 1) == 0:
                log(f"{request} requests served")
            next_t += 1.0 / args.rate
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()
    except KeyboardInterrupt:
        pass
    log(f"stopped after {request} requests")
    feats.close()
    preds.close()


if __name__ == "__main__":
    main()
