#!/usr/bin/python3
"""A small but real ML serving pipeline instrumented with mltap: four processes.

A scikit-learn classifier is trained on the breast-cancer data set that ships with scikit-learn
and saved to a model file. Requests (rows bootstrapped from the held-out set, each from one of
four clinics) flow through three components, each its own process, each writing its own ring, all
tagged with the request's trace id:

  cleaning   (child)  receives the raw measurements, imputes what is missing  -> demo/clean
  featuregen (child)  standardizes them into the model's features             -> demo/features
  model      (this)   scores them: P(malignant), the clinic as the slice      -> demo/predictions
  feedback   (child)  the diagnosis, seconds later (lognormal lag), 20% never -> demo/labels

The predictions stream names its labels stream and task (labels_stream="demo/labels",
task="binary"), so mltapd joins each diagnosis to its prediction by trace id and reports the
realized accuracy, the label coverage and, for the windows whose labels have not arrived yet, an
estimate.

The model file is reloaded when it changes (a deployment), and the model stage switches to a
fallback model while mltapd's `producer-flag` reaction sets the flag `use_fallback`.

After a while, faults are injected, as they happen in production:
  * a model swap: a worse model is renamed onto the served model file (a bad deployment);
  * a unit bug upstream: one clinic's system sends "mean area" in a unit ten times smaller (the
    numbers x 10); cleaning passes it on, and the model calls many of those requests malignant;
  * a NaN burst in "mean texture" (a broken upstream join);
  * a concept shift in one clinic: its diagnoses disagree with the model (labels flip) while its
    inputs are unchanged.
Each fault is printed with its time so you can find it in mltapd's metrics and findings.
"""
import argparse
import atexit
import ctypes
import multiprocessing as mp
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
except ImportError as e:  # pragma: no cover
    sys.exit(f"demo: {e}; run with /usr/bin/python3 (Debian's python3-sklearn)")

import mltap

CLINICS = 4
BATCH = 10  # requests per message between the stages (one every BATCH / rate seconds)


def log(msg):
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def die_with_parent():
    """A stage must not outlive the pipeline (PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:
        os._exit(0)


def stage_signals(stop):
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def train(x, y, seed, label_noise=0.0):
    rng = np.random.default_rng(seed)
    y = y.copy()
    if label_noise:
        flip = rng.random(len(y)) < label_noise
        y[flip] = 1 - y[flip]
    model = make_pipeline(LogisticRegression(max_iter=5000, random_state=seed))
    model.fit(x, y)
    return model


def save_atomically(model, path):
    """What a deployment tool does: write elsewhere, then rename onto the served file."""
    tmp = path + ".new"
    joblib.dump(model, tmp)
    os.rename(tmp, path)


class Faults:
    def __init__(self, start, args):
        self.start = start
        self.args = args
        self.announced = set()

    def t(self):
        return time.time() - self.start

    def active(self, name, at, duration=None, announce=True):
        if at is None or at < 0:
            return False
        t = self.t()
        on = t >= at and (duration is None or t < at + duration)
        if on and announce and name not in self.announced:
            self.announced.add(name)
            log(f"FAULT: {name} (t={t:.0f}s)")
        return on


def cleaning(args, start, x_serve, y_serve, names, out, truth):
    """The source and cleaning stage: paces requests, imputes NaNs, writes demo/clean."""
    die_with_parent()
    stop = [False]
    stage_signals(stop)
    faults = Faults(start, args)
    area, texture = names.index("mean_area"), names.index("mean_texture")
    medians = np.median(x_serve, axis=0).astype(np.float32)
    rng = np.random.default_rng(args.seed)
    clean = mltap.Stream("demo/clean", component="cleaning", features=names + ["clinic"])
    request = 0
    next_t = time.monotonic()
    try:
        while not stop[0] and (args.duration <= 0 or faults.t() < args.duration):
            pick = rng.integers(len(x_serve), size=BATCH)
            rows = x_serve[pick].astype(np.float32)
            rows *= rng.normal(1.0, 0.02, size=rows.shape).astype(np.float32)  # measurement noise
            clinic = rng.integers(CLINICS, size=BATCH).astype(np.float32)
            ids = np.arange(request, request + BATCH, dtype=np.uint64)
            if faults.active(f"unit bug: mean_area x 10 for clinic {args.bug_clinic}", args.unit_change_at):
                rows[clinic == args.bug_clinic, area] *= 10
            if faults.active("NaN burst in mean_texture", args.nan_burst_at, args.nan_burst_for):
                rows[:, texture] = np.nan
            # Cleaning: impute what is missing with the training medians (a NaN burst becomes a
            # spike of one value downstream, as real imputers make it).
            missing = np.isnan(rows)
            rows[missing] = np.take(medians, np.nonzero(missing)[1])
            batch = np.concatenate([rows, clinic[:, None]], axis=1)
            clean.write(batch, trace_ids=ids)
            out.send((ids, batch))
            truth.send((ids, y_serve[pick], clinic, time.time()))
            request += BATCH
            next_t += BATCH / args.rate
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()
    except (BrokenPipeError, EOFError, KeyboardInterrupt):
        pass
    clean.close()
    out.send(None)
    truth.send(None)


def featuregen(mean, sd, names, inp, out):
    """Standardizes the cleaned measurements into the model's features: writes demo/features."""
    die_with_parent()
    stop = [False]
    stage_signals(stop)
    feats = mltap.Stream("demo/features", component="featuregen", features=names, kind="features")
    try:
        while not stop[0]:
            msg = inp.recv()
            if msg is None:
                break
            ids, batch = msg
            x = ((batch[:, :-1] - mean) / sd).astype(np.float32)
            feats.write(x, trace_ids=ids)
            out.send((ids, x, batch[:, -1]))
    except (BrokenPipeError, EOFError, KeyboardInterrupt):
        pass
    feats.close()
    out.send(None)


def feedback(args, start, inp):
    """Diagnoses arrive late (lognormal lag, median args.label_lag s), 20% never: demo/labels."""
    die_with_parent()
    stop = [False]
    stage_signals(stop)
    faults = Faults(start, args)
    rng = np.random.default_rng(args.seed + 100)
    labels = mltap.Stream("demo/labels", component="feedback", kind="labels", features=["is_malignant"],
                          sampling_budget=0)
    due_t, due_id, due_y = np.empty(0), np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.float32)
    try:
        while not stop[0]:
            if inp.poll(0.05):
                msg = inp.recv()
                if msg is None:
                    break
                ids, y, clinic, t = msg
                is_malignant = (y == 0).astype(np.float32)  # breast-cancer target 0 = malignant
                if faults.active(f"concept shift: clinic {args.shift_clinic}'s diagnoses disagree with the model",
                                 args.concept_shift_at, args.concept_shift_for or None):
                    flip = clinic == args.shift_clinic
                    is_malignant[flip] = 1 - is_malignant[flip]
                kept = rng.random(len(ids)) >= args.never_labelled
                lag = rng.lognormal(np.log(args.label_lag), 0.8, size=len(ids))
                due_t = np.concatenate([due_t, (t + lag)[kept]])
                due_id = np.concatenate([due_id, ids[kept]])
                due_y = np.concatenate([due_y, is_malignant[kept]])
            ready = due_t <= time.time()
            if ready.any():
                order = np.argsort(due_t[ready], kind="stable")
                labels.write(due_y[ready][order], trace_ids=due_id[ready][order])
                due_t, due_id, due_y = due_t[~ready], due_id[~ready], due_y[~ready]
    except (BrokenPipeError, EOFError, KeyboardInterrupt):
        pass
    labels.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000, help="requests per second")
    ap.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0 = run until killed)")
    ap.add_argument("--model-swap-at", type=float, default=60, help="seconds; negative disables")
    ap.add_argument("--unit-change-at", type=float, default=120, help="seconds; negative disables")
    ap.add_argument("--nan-burst-at", type=float, default=160, help="seconds; negative disables")
    ap.add_argument("--nan-burst-for", type=float, default=15)
    ap.add_argument("--concept-shift-at", type=float, default=200, help="seconds; negative disables")
    ap.add_argument("--concept-shift-for", type=float, default=0, help="seconds; 0 = until the end")
    ap.add_argument("--bug-clinic", type=int, default=1, help="the clinic whose mean_area arrives x 10")
    ap.add_argument("--shift-clinic", type=int, default=2, help="the clinic whose diagnoses flip")
    ap.add_argument("--label-lag", type=float, default=5.0, help="median label lag, seconds")
    ap.add_argument("--never-labelled", type=float, default=0.2, help="share of requests never labelled")
    ap.add_argument("--slice-clinic", action="store_true",
                    help="predictions rows [P(malignant), clinic]: for mltapd configured with "
                         "performance.streams.demo/predictions.slice.column: clinic (per-clinic metrics)")
    ap.add_argument("--workdir", default=None, help="where the model files live")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    data = load_breast_cancer()
    names = [n.replace(" ", "_") for n in data.feature_names]
    x_train, x_serve, y_train, y_serve = train_test_split(
        data.data, data.target, test_size=0.4, random_state=args.seed, stratify=data.target)
    mean, sd = x_train.mean(axis=0).astype(np.float32), x_train.std(axis=0).astype(np.float32)
    z_train = (x_train - mean) / sd
    # Under /var/lib: mltapd watches declared model files only under ingest.artifact_dirs
    # (by default /srv, /opt, /var/lib, /home; never /tmp), so the model swap is attributed.
    if args.workdir is None:
        os.makedirs("/var/lib/mltap-demo", exist_ok=True)
    workdir = args.workdir or tempfile.mkdtemp(prefix="run-", dir="/var/lib/mltap-demo")
    if args.workdir is None:
        atexit.register(shutil.rmtree, workdir, True)
    os.makedirs(workdir, exist_ok=True)
    model_path = os.path.join(workdir, "model.joblib")
    save_atomically(train(z_train, y_train, args.seed), model_path)
    fallback = train(z_train, y_train, args.seed + 1)
    worse = train(z_train, y_train, args.seed + 2, label_noise=0.45)
    log(f"model trained on {len(x_train)} rows, served from {model_path}")

    # The stages are forked before this process opens its own stream; each opens its own.
    ctx = mp.get_context("fork")
    start = time.time()
    clean_rx, clean_tx = ctx.Pipe(duplex=False)
    feat_rx, feat_tx = ctx.Pipe(duplex=False)
    truth_rx, truth_tx = ctx.Pipe(duplex=False)
    stages = [
        ctx.Process(target=cleaning, name="cleaning",
                    args=(args, start, x_serve, y_serve, names, clean_tx, truth_tx)),
        ctx.Process(target=featuregen, name="featuregen", args=(mean, sd, names, clean_rx, feat_tx)),
        ctx.Process(target=feedback, name="feedback", args=(args, start, truth_rx)),
    ]
    for p in stages:
        p.start()

    def stop_stages():
        for p in stages:
            if p.is_alive():
                p.terminate()
        for p in stages:
            p.join(timeout=10)
    atexit.register(stop_stages)

    # The predictions name their labels stream and task: mltapd joins them (docs/performance.md).
    preds = mltap.Stream("demo/predictions", component="model",
                         features=["p_malignant", "clinic"] if args.slice_clinic else ["p_malignant"],
                         kind="predictions", artifacts=[model_path], labels_stream="demo/labels",
                         task="binary")
    log(f"stages: {', '.join(f'{p.name} pid {p.pid}' for p in stages)}, model pid {os.getpid()}")

    model, model_mtime = joblib.load(model_path), os.stat(model_path).st_mtime_ns
    faults = Faults(start, args)
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    swapped = False
    using_fallback = False
    served = 0
    try:
        while not stop[0]:
            if not feat_rx.poll(0.2):
                if not any(p.is_alive() for p in stages[:2]):
                    break
                continue
            msg = feat_rx.recv()
            if msg is None:
                break
            ids, x, clinic = msg

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
            p = (fallback if using_fallback else model).predict_proba(x)[:, 0]  # P(malignant)
            if args.slice_clinic:
                preds.write(np.stack([p, clinic], axis=1).astype(np.float32), trace_ids=ids)
            else:
                preds.write(p.astype(np.float32), trace_ids=ids)

            before = served
            served += len(ids)
            if served // (int(args.rate) * 30 or 1) != before // (int(args.rate) * 30 or 1):
                log(f"{served} requests served")
    except (EOFError, KeyboardInterrupt):
        pass
    log(f"stopped after {served} requests")
    preds.close()
    stop_stages()


if __name__ == "__main__":
    main()
