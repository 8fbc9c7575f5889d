"""One replica of a model server for the explain cascade test (test_explain_cascade.py): writes a
prediction per request to a shared stream, from the model file it declares as an artifact, and
reloads the model when the file changes (as a deployment replaces it).

Usage: cascade_replica.py MODEL_PATH SEED  (MLTAP_NAMESPACE from the environment; runs until killed)
"""
import json
import math
import os
import signal
import sys
import time

import numpy as np

import mltap


def load(path):
    with open(path) as f:
        return float(json.load(f)["bias"]), os.stat(path).st_mtime_ns


def main():
    model_path, seed = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(seed)
    bias, mtime = load(model_path)
    stream = mltap.Stream("cascade/predictions", component="scorer", features=["p"], kind="predictions",
                          artifacts=[model_path])
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    print(f"replica {os.getpid()} serving {model_path} (bias {bias})", flush=True)
    rate, next_t = 1000.0, time.monotonic()
    while not stop[0]:
        m = os.stat(model_path).st_mtime_ns
        if m != mtime:
            bias, mtime = load(model_path)
            print(f"replica {os.getpid()}: model reloaded (bias {bias})", flush=True)
        for _ in range(10):
            p = 1.0 / (1.0 + math.exp(-(rng.normal() + bias)))
            stream.write(np.array([p], dtype=np.float32))
        next_t += 10 / rate
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_t = time.monotonic()
    stream.close()


if __name__ == "__main__":
    main()
