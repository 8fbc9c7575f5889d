#!/usr/bin/python3
"""Producers' write latency while mltapd is SIGKILLed and restarted, against the same producers
with mltapd left alone, in the same run (alternating rounds; medians over rounds). Not in CI;
tests/integration/test_faults.py holds only a sanity bound on the same measurement.

    MLTAP_BUILD_DIR=build /usr/bin/python3 bench/faults/restart_latency.py [--rounds 5]
        [--seconds 4] [--rate 20000] [--kill-every 0.2]

Each round runs one producer (tests/tools/test_producer, batch 1, --latency-out: every
write_batch call's duration) for --seconds at --rate rows/s, once with the agent alive ("base")
and once with the agent SIGKILLed and restarted every --kill-every seconds ("kill"). Prints
p50/p99/p99.9/max per kind (median over rounds) and the kill/base ratios.
"""
import argparse
import os
import random
import signal
import statistics
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "harness"))
from mltap_harness import Agent, Producer  # noqa: E402


def pct(v, q):
    return v[min(len(v) - 1, int(q * len(v)))]


def run(agent, tmp, kind, i, args):
    path = os.path.join(tmp, f"{kind}.{i}")
    rows = int(args.rate * args.seconds)
    p = Producer(agent, name=f"bench/{kind}{i}", rows=rows, features=8, rate=args.rate, batch=1,
                 lanes=1, ring=16 << 20, latency_out=path, hold=True).start()
    restarts = 0
    if kind == "kill":
        rng = random.Random(i)
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            time.sleep(rng.uniform(0.5, 1.5) * args.kill_every)
            agent.proc.send_signal(signal.SIGKILL)
            agent.proc.wait(timeout=10)
            agent.process.stop()
            agent.start()
            restarts += 1
    p.result(timeout=args.seconds * 10 + 60)
    p.kill()
    with open(path, "rb") as f:
        data = f.read()
    v = sorted(struct.unpack(f"<{len(data) // 4}I", data))
    return {"p50": pct(v, 0.5), "p99": pct(v, 0.99), "p999": pct(v, 0.999), "max": v[-1],
            "n": len(v), "restarts": restarts}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--rate", type=float, default=20000)
    ap.add_argument("--kill-every", type=float, default=0.2)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mltap-bench-faults-")
    res = {"base": [], "kill": []}
    agent = Agent("ingest:\n  dead_producer_grace: 100ms\n").start()
    try:
        for i in range(args.rounds):
            for kind in ("base", "kill"):
                res[kind].append(run(agent, tmp, kind, i, args))
    finally:
        agent.stop()
    print(f"{args.rounds} rounds x {args.seconds}s at {args.rate:.0f} rows/s, batch 1; ns, median over rounds")
    med = {k: {q: statistics.median(r[q] for r in res[k]) for q in ("p50", "p99", "p999", "max")} for k in res}
    for k in ("base", "kill"):
        print(f"{k:5s} p50 {med[k]['p50']:8.0f}  p99 {med[k]['p99']:8.0f}  p99.9 {med[k]['p999']:8.0f}  "
              f"max {med[k]['max']:10.0f}  (restarts per round: {res[k][0]['restarts']})")
    print("ratio kill/base: " + "  ".join(f"{q} {med['kill'][q] / max(1, med['base'][q]):.2f}x"
                                          for q in ("p50", "p99", "p999")))


if __name__ == "__main__":
    main()
