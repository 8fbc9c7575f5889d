#!/usr/bin/python3
"""mltapd's cost by number of streams: a real mltapd and real producer processes.

N streams of F float64 features (standard normal) at R rows/s each, written by ceil(N / 100)
producer processes (Python SDK, 100 streams each, one write of R/10 rows per stream every 100 ms).
mltapd pins each stream's reference from its first --pin-records records, closes windows of
--window-records, runs every detector (quality, drift, CUSUM/Page-Hinkley) and checkpoints to a
state directory. After the time pinning and two windows take, the script reads mltapd's CPU time
(/proc/PID/stat) over --measure seconds and its memory (/proc/PID/status) at the end, then checks
through /api/v1/detectors that every stream is pinned with a window closed (no API call before:
see below).

    bench/detectors/stream_scale.py --build build [--streams 10,100,1000] [--features 32]
        [--rate 100] [--measure 30]

Prints one line per stream count: CPU share of one core, VmRSS, RssAnon (heap: per-stream
state), RssShmem (ring pages mapped from /dev/shm), the detector engine's own accounting of its
state per stream (the streams' memory_bytes in /api/v1/detectors), and the share of the records
the producers wrote that mltapd analyzed (with the producers' write rate: below N x R when the
producers themselves fell behind).
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

STREAMS_PER_PRODUCER = 100

PRODUCER = r'''
import signal, sys, time
import numpy as np
import mltap
first, count, features, rate = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
names = ["f%d" % i for i in range(features)]
streams = [mltap.Stream("scale/s%04d" % (first + i), component="scale", features=names, dtype="float64",
                        sampling_budget=0, ring_bytes=64 << 10, lanes=1) for i in range(count)]
per_tick = max(1, int(round(rate / 10)))
rng = np.random.default_rng(first)
pool = rng.standard_normal((64 * per_tick + per_tick, features))
print("READY", flush=True)
tick, written = 0, 0
start = time.monotonic()
while not stop:
    for i, s in enumerate(streams):
        off = ((tick * 7 + i * 13) % 64) * per_tick
        s.write(pool[off:off + per_tick])
    written += per_tick * count
    tick += 1
    delay = start + tick * 0.1 - time.monotonic()
    if delay > 0:
        time.sleep(delay)
for s in streams:
    s.close()
print("WRITTEN", written, flush=True)
'''


def http_json(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def http_text(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssShmem", "RssFile"):
                out[k] = int(v.split()[0])
    return out


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(a, n):
    ns = "scale" + uuid.uuid4().hex[:8]
    tmp = tempfile.mkdtemp(prefix="mltap-scale-")
    state = os.path.join(tmp, "state")
    os.makedirs(state)
    port = free_port()
    limit = max(256, n + 16)
    cfg = os.path.join(tmp, "mltapd.yaml")
    with open(cfg, "w") as f:
        f.write(f"""ingest:
  namespace: {ns}
  max_streams: {limit}
  max_streams_per_uid: {limit}
  max_segments_per_uid: {limit}
detectors:
  max_streams: {limit}
  pin_records: {a.pin_records}
  window_records: {a.window_records}
  min_window_records: {min(a.window_records, 1000)}
  window_seconds: 0
""")
    log = open(os.path.join(tmp, "mltapd.log"), "wb")
    agent = subprocess.Popen(a.agent_prefix.split() + [os.path.join(a.build, "agent/mltapd/mltapd"), "--config", cfg, "--listen",
                              f"127.0.0.1:{port}", "--state-dir", state], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    producers = []
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                http_text(url + "/healthz")
                break
            except OSError:
                if time.monotonic() > deadline or agent.poll() is not None:
                    raise SystemExit("mltapd did not start; see " + log.name)
                time.sleep(0.1)
        env = dict(os.environ, MLTAP_NAMESPACE=ns, PYTHONPATH=os.path.join(a.build, "python"))
        for first in range(0, n, STREAMS_PER_PRODUCER):
            count = min(STREAMS_PER_PRODUCER, n - first)
            p = subprocess.Popen([sys.executable, "-c", PRODUCER, str(first), str(count), str(a.features),
                                  str(a.rate)], env=env, stdout=subprocess.PIPE, text=True)
            producers.append(p)
        for p in producers:
            if p.stdout.readline().strip() != "READY":
                raise SystemExit("a producer failed to start")
        started = time.monotonic()
        # Every stream pinned and windows closing: the state measured is the steady one. No API
        # call until the measurement is over: building /api/v1/detectors for 1,000 streams
        # allocates tens of MiB that the allocator keeps, which would be counted as RSS.
        time.sleep(a.pin_records / a.rate + 2 * a.window_records / a.rate + 10)
        c0, t0 = cpu_seconds(agent.pid), time.monotonic()
        time.sleep(a.measure)
        c1, t1 = cpu_seconds(agent.pid), time.monotonic()
        mem = memory_kib(agent.pid)
        t_api = time.monotonic()
        streams = http_json(url + "/api/v1/detectors")["streams"]
        t2 = time.monotonic()
        ready = sum(1 for s in streams if s.get("reference", {}).get("source") == "pinned"
                    and s.get("windows_closed", 0) >= 1)
        if ready < n:
            raise SystemExit(f"only {ready} of {n} streams pinned with a window closed; see --keep")
        records = sum(s["records_total"] for s in streams)
        state_bytes = sum(s["memory_bytes"] for s in streams)
        # The ingest side's own counts at one instant: rows the producers counted as written, rows
        # read and accepted, rows lost by cause (e.g. overwritten before the agent read them).
        ingest = {"writes": 0.0, "read": 0.0}
        with urllib.request.urlopen(url + "/metrics", timeout=120) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("mltap_stream_writes_total{"):
                    ingest["writes"] += float(line.rsplit(" ", 1)[1])
                elif line.startswith("mltap_stream_records_total{"):
                    ingest["read"] += float(line.rsplit(" ", 1)[1])
                elif line.startswith("mltap_stream_dropped_records_total{"):
                    cause = line.split('reason="', 1)[1].split('"', 1)[0] if 'reason="' in line else "?"
                    ingest["dropped " + cause] = ingest.get("dropped " + cause, 0.0) + float(line.rsplit(" ", 1)[1])
        # What the producers wrote (each prints its count when stopped, after the read above; the
        # JSON of 1,000 streams takes seconds to build, so the rows written after the read began
        # are subtracted at the producers' average rate).
        written = 0
        t_stop = time.monotonic()
        for p in producers:
            p.send_signal(signal.SIGTERM)
        for p in producers:
            out, _ = p.communicate(timeout=60)
            for line in out.splitlines():
                if line.startswith("WRITTEN"):
                    written += int(line.split()[1])
        return {
            "streams": n,
            "cpu_share": (c1 - c0) / (t1 - t0),
            "rss_mib": mem.get("VmRSS", 0) / 1024,
            "anon_mib": mem.get("RssAnon", 0) / 1024,
            "shmem_mib": mem.get("RssShmem", 0) / 1024,
            "state_kib_per_stream": state_bytes / n / 1024,
            "records": records,
            "written": written - written / (t_stop - started) * (t_stop - t_api),
            "written_per_s": written / (t_stop - started),
            "ingest": ingest,
        }
    finally:
        for p in producers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in producers:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=20)
        except subprocess.TimeoutExpired:
            agent.kill()
        log.close()
        for name in os.listdir("/dev/shm"):
            if name.startswith(f"mltap.{ns}."):
                try:
                    os.unlink(os.path.join("/dev/shm", name))
                except OSError:
                    pass
        if a.keep:
            print("kept", tmp, file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True, help="build directory (mltapd, the Python module)")
    ap.add_argument("--streams", default="10,100,1000")
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--rate", type=float, default=100, help="rows/s per stream")
    ap.add_argument("--pin-records", type=int, default=2000)
    ap.add_argument("--window-records", type=int, default=1000)
    ap.add_argument("--measure", type=float, default=30, help="seconds of CPU measurement")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    ap.add_argument("--agent-prefix", default="", help="run mltapd under this command (e.g. heaptrack)")
    a = ap.parse_args()
    print(f"{a.features} float64 features per stream, {a.rate:g} rows/s per stream, pin {a.pin_records} "
          f"records, windows of {a.window_records}, CPU over {a.measure:g} s", flush=True)
    print("| streams | mltapd CPU (share of one core) | VmRSS MiB | RssAnon MiB | RssShmem MiB "
          "| engine state KiB/stream | records analyzed / written (rows/s written) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in [int(x) for x in a.streams.split(",")]:
        r = run(a, n)
        print(f"| {r['streams']} | {100 * r['cpu_share']:.1f}% | {r['rss_mib']:.1f} | {r['anon_mib']:.1f} | "
              f"{r['shmem_mib']:.1f} | {r['state_kib_per_stream']:.1f} | "
              f"{100 * r['records'] / max(1, r['written']):.1f}% ({r['written_per_s']:.0f}) |", flush=True)
        print("    ingest counters: " + ", ".join(f"{k} {v:.0f}" for k, v in r["ingest"].items()), flush=True)


if __name__ == "__main__":
    main()
