#!/usr/bin/python3
"""What 5,000 idle or refused segments cost a real mltapd (issue 10 item 9).

A real mltapd (production intervals: poll 5 ms, scan 250 ms, snapshot 250 ms) in a namespace of
its own, measured over DURATION seconds each:
  baseline  no segment at all (the same agent, same run: the reference);
  idle      N valid 1-lane segments of one real producer process (the Python SDK), verified and
            attached, one row each and then nothing;
  rejected  N files of random bytes under segment names (refused as bad_magic).
CPU share = (utime + stime) delta / (CLK_TCK * seconds) from /proc/<pid>/stat; RSS (and its anon
and shmem parts) from /proc/<pid>/status with the segments present and again after they were
removed (the idle ones closed by their producer and removed by the agent; the rejected ones
unlinked), with the gauges that must follow (mltap_segments{state=...}).

  MLTAP_BUILD_DIR=build PYTHONPATH=build/python /usr/bin/python3 bench/ingest/idle_segments.py \
      [--segments 5000] [--duration 30] [--mltapd PATH]

--mltapd runs another build (e.g. main's) for comparison. Prints one JSON document.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "harness"))
from mltap_harness import Agent, wait_until  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

PRODUCER = r"""
import os, sys, mltap
n, streams = int(sys.argv[1]), int(sys.argv[2])
out = []
for i in range(n):
    s = mltap.Stream(f"bench/idle{i % streams}", component="bench", features=["x"],
                     ring_bytes=65536, lanes=1, sampling_budget=0)
    s.write([float(i)])
    out.append(s)
print("READY", flush=True)
sys.stdin.readline()          # close them all on request
for s in out:
    s.close()
print("CLOSED", flush=True)
sys.stdin.readline()
"""


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def memory(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssShmem"):
                out[key] = int(value.split()[0])  # kB
    return out


def cpu_share(pid, seconds):
    t0, c0 = time.monotonic(), cpu_ticks(pid)
    time.sleep(seconds)
    t1, c1 = time.monotonic(), cpu_ticks(pid)
    return (c1 - c0) / CLK_TCK / (t1 - t0)


def gauge(agent, state):
    return agent.metrics().get("mltap_segments", 0, state=state)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=5000)
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--mltapd", default=None)
    a = ap.parse_args()
    if a.mltapd:
        os.environ["MLTAPD"] = a.mltapd
    n = a.segments
    config = f"""
ingest:
  scan_interval: 250ms
  poll_interval: 5ms
  snapshot_interval: 250ms
  closed_segment_grace: 1s
  max_segments_per_uid: {n + 100}
  max_streams_per_uid: {a.streams + 10}
detectors:
  enabled: false
ebpf:
  enabled: false
"""
    agent = Agent(config)
    agent.start()
    pid = agent.proc.pid
    result = {"segments": n, "duration_s": a.duration, "mltapd": os.environ.get("MLTAPD", "build")}
    try:
        time.sleep(2)
        result["baseline"] = {"cpu": cpu_share(pid, a.duration), "memory_kB": memory(pid)}

        # Idle: one real producer with n verified 1-lane segments.
        env = agent.env()
        producer = subprocess.Popen([sys.executable, "-c", PRODUCER, str(n), str(a.streams)], env=env,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert producer.stdout.readline().strip() == "READY"
        t0 = time.monotonic()
        wait_until(lambda: gauge(agent, "active") == n, timeout=600, interval=0.5,
                   what=f"{n} segments attached")
        attach_s = time.monotonic() - t0
        time.sleep(3)  # idle for more than a second: the idle polling applies
        idle = {"attach_s": attach_s, "cpu": cpu_share(pid, a.duration), "memory_kB": memory(pid)}
        producer.stdin.write("close\n")
        producer.stdin.flush()
        assert producer.stdout.readline().strip() == "CLOSED"
        wait_until(lambda: gauge(agent, "active") + gauge(agent, "draining") == 0, timeout=600,
                   interval=0.5, what="segments removed")
        left = [f for f in os.listdir(agent.shm_dir) if f.startswith(f"mltap.{agent.namespace}.") and
                not f.endswith(".agent")]
        time.sleep(3)
        idle["after_removal"] = {"memory_kB": memory(pid), "files_left": len(left)}
        producer.stdin.close()
        producer.wait(timeout=30)
        result["idle"] = idle

        # Rejected: n files of random bytes.
        rng = random.Random(1)
        paths = []
        for i in range(n):
            p = os.path.join(agent.shm_dir, f"mltap.{agent.namespace}.{3000000 + i}.0")
            with open(p, "wb") as f:
                f.write(rng.randbytes(3 * 4096))
            paths.append(p)
        wait_until(lambda: gauge(agent, "rejected") == n, timeout=600, interval=0.5,
                   what=f"{n} files rejected")
        time.sleep(3)
        rej = {"cpu": cpu_share(pid, a.duration), "memory_kB": memory(pid)}
        for p in paths:
            os.unlink(p)
        t0 = time.monotonic()
        try:
            wait_until(lambda: gauge(agent, "rejected") == 0, timeout=60, interval=0.5,
                       what="the rejected gauge back to 0")
            rej["gauge_zero_after_s"] = time.monotonic() - t0
        except AssertionError:
            rej["gauge_zero_after_s"] = None
        rej["gauge_after_unlink"] = gauge(agent, "rejected")
        time.sleep(3)
        rej["after_removal"] = {"memory_kB": memory(pid)}
        result["rejected"] = rej
    finally:
        for f in os.listdir(agent.shm_dir):
            if f.startswith(f"mltap.{agent.namespace}."):
                try:
                    os.unlink(os.path.join(agent.shm_dir, f))
                except OSError:
                    pass
        agent.stop()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
