"""A producer for test_state_restart.py: writes rows of 3 float64 features (standard normal) at a
steady rate until SIGTERM; feature "b" is shifted by the number in MODE_FILE (read every batch),
so the test moves the stream away from its reference and back without restarting the producer.

    drift_producer.py STREAM MODE_FILE [ROWS_PER_SECOND]

Environment: MLTAP_NAMESPACE, MLTAP_SHM_DIR (the agent's), PYTHONPATH (the built mltap)."""
import signal
import sys
import time

import numpy as np

import mltap

stream, mode_file = sys.argv[1], sys.argv[2]
rate = float(sys.argv[3]) if len(sys.argv) > 3 else 4000.0
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
s = mltap.Stream(stream, component="state-test", features=["a", "b", "c"], dtype="float64",
                 sampling_budget=0)
rng = np.random.default_rng(5)
batch = 50
print("READY", flush=True)
written = 0
start = time.monotonic()
while not stop:
    try:
        with open(mode_file) as f:
            shift = float(f.read().strip() or 0)
    except (OSError, ValueError):
        shift = 0.0
    rows = rng.standard_normal((batch, 3))
    rows[:, 1] += shift
    s.write(rows)
    written += batch
    # Keep the rate whatever the time a write takes.
    delay = start + written / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
s.close()
print("written", written, flush=True)
