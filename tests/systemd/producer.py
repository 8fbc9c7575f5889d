"""A producer for tests/systemd, run inside the test root with Debian's python3 and the mltap
module installed by the .deb (no NumPy there: array.array is a buffer-protocol tensor).

    producer.py STREAM [ROWS_PER_SECOND]

Writes rows of 3 float32 features until SIGTERM. The harness finds the ring as the file in
/dev/shm owned by the producer's user."""
import array
import math
import signal
import sys
import time

import mltap

stream, rate = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 200.0
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
s = mltap.Stream(stream, component="systemd-test", features=["a", "b", "c"])
print("producing", stream, flush=True)
i = 0
while not stop:
    s.write(array.array("f", [math.sin(i / 50.0), (i % 7) / 7.0, 1.0]))
    i += 1
    time.sleep(1.0 / rate)
print("written:", i, flush=True)
