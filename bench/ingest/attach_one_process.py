#!/usr/bin/python3
"""What attaching N segments of ONE producer process costs a real mltapd (issue 10, hardening).

Each segment is verified against the kernel before it is read (docs/security.md): among others,
/proc/<pid>/maps must show that the producer maps the file's inode. One process with N segments
has N mappings, so a fresh read of its maps per segment costs O(N) and attaching N segments
O(N^2). mltapd parses a process's maps once per scan and reuses the parse within that scan
(agent/ingest/trust.cpp, MapsCache).

How: a real producer (the Python SDK) opens N 1-lane streams while no agent runs (a presence
file written by this script keeps the SDK from cleaning up, which would itself cost O(N^2)), one
row each, and stays alive. Then mltapd starts; the first scan finds all N at once. Measured:
wall seconds from mltapd's start to mltap_segments{state="active"} == N, and mltapd's CPU
seconds over that time (utime + stime from /proc/<pid>/stat). Median of --repeat runs.

  PYTHONPATH=build/python /usr/bin/python3 bench/ingest/attach_one_process.py \
      [--segments 5000] [--repeat 3] [--mltapd PATH]

--mltapd runs another build (e.g. one without the cache) for comparison. Prints one JSON document.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "harness"))
from mltap_harness import Agent, wait_until  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

PRODUCER = r"""
import sys, mltap
n = int(sys.argv[1])
out = []
for i in range(n):
    s = mltap.Stream(f"bench/attach{i % 50}", component="bench", features=["x"],
                     ring_bytes=65536, lanes=1, sampling_budget=0)
    s.write([float(i)])
    out.append(s)
print("READY", flush=True)
sys.stdin.readline()
"""


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def one_run(n):
    config = f"""
ingest:
  scan_interval: 250ms
  poll_interval: 5ms
  snapshot_interval: 250ms
  max_segments_per_uid: {n + 100}
  max_streams_per_uid: 100
detectors:
  enabled: false
ebpf:
  enabled: false
"""
    agent = Agent(config)
    presence = os.path.join(agent.shm_dir, f"mltap.{agent.namespace}.agent")
    stop = threading.Event()

    def pretend_agent():  # an agent "present": producers leave cleanup to it
        while not stop.is_set():
            with open(presence, "a"):
                os.utime(presence)
            stop.wait(1)

    toucher = threading.Thread(target=pretend_agent)
    toucher.start()
    producer = subprocess.Popen([sys.executable, "-c", PRODUCER, str(n)], env=agent.env(),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert producer.stdout.readline().strip() == "READY", "producer did not start"
        stop.set()
        toucher.join()
        os.unlink(presence)
        t0 = time.monotonic()
        agent.start()
        pid = agent.proc.pid
        wait_until(lambda: agent.metrics().get("mltap_segments", 0, state="active") == n, timeout=1800,
                   interval=0.2, what=f"{n} segments attached")
        wall = time.monotonic() - t0
        cpu = cpu_seconds(pid)
        return {"attach_wall_s": round(wall, 2), "mltapd_cpu_s": round(cpu, 2)}
    finally:
        stop.set()
        producer.kill()
        producer.wait()
        agent.stop()
        for f in os.listdir(agent.shm_dir):
            if f.startswith(f"mltap.{agent.namespace}."):
                try:
                    os.unlink(os.path.join(agent.shm_dir, f))
                except OSError:
                    pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mltapd", default=None)
    a = ap.parse_args()
    if a.mltapd:
        os.environ["MLTAPD"] = a.mltapd
    runs = [one_run(a.segments) for _ in range(a.repeat)]
    print(json.dumps({"segments": a.segments, "mltapd": os.environ.get("MLTAPD", "build"), "runs": runs,
                      "median_attach_wall_s": statistics.median(r["attach_wall_s"] for r in runs),
                      "median_mltapd_cpu_s": statistics.median(r["mltapd_cpu_s"] for r in runs)}, indent=1))


if __name__ == "__main__":
    main()
