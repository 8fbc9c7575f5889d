#!/usr/bin/python3
"""mltapd's cost by number of streams: a real mltapd and real producer processes.

N streams of F float64 features (standard normal) at R rows/s each, written by ceil(N / 500)
producer processes (bench/detectors/scale_producer.cpp, the C++ SDK: one write_batch of R/10
rows per stream every 100 ms, the streams' writes spread over the 100 ms; rings of 64 KiB, one
lane). A C++ producer because at 1,000 streams Python producers took more CPU than the agent on
a 2-core machine and could not deliver the load. mltapd pins each stream's reference from its
first --pin-records records, closes windows of --window-records, runs every detector (quality,
drift, CUSUM/Page-Hinkley) and checkpoints to a state directory.

After the time pinning and two windows take, once mltapd keeps up (a 5 s interval with nothing
overwritten and 95% of the asked rows read), plus --warmup seconds, the script reads mltapd's
counters (/metrics), its CPU time (/proc/PID/stat) over --measure seconds, its memory
(/proc/PID/status and smaps_rollup) at the end, and the counters again; then checks through
/api/v1/detectors that every stream is pinned with a window closed.

    bench/detectors/stream_scale.py --build build [--streams 10,100,1000] [--features 32]
        [--rate 100] [--measure 60]

Prints one line per stream count: the rows/s mltapd read and accepted over the interval (its own
mltap_stream_records_total) beside the rows/s asked for, its CPU share of one core, and its memory
the kernel's way: RssAnon (mltapd's own memory: heap, stacks), RssShmem + RssFile (the producers'
ring pages and the binary's pages it has mapped and touched: shared with the producers, counted in
full in every process that maps them), VmRSS (their sum) and PSS (shared pages divided among the
processes mapping them). Also the detector engine's own accounting of its state per stream
(memory_bytes in /api/v1/detectors).
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

STREAMS_PER_PRODUCER = 500


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
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Pss", "Pss_Anon", "Pss_Shmem", "Pss_File"):
                out[k] = int(v.split()[0])
    return out


def ingest_counters(url):
    """The ingest side's own counts, summed over streams: rows the producers counted as written,
    rows mltapd read and accepted, rows lost by cause (e.g. overwritten before it read them)."""
    out = {"writes": 0.0, "read": 0.0}
    with urllib.request.urlopen(url + "/metrics", timeout=120) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("mltap_stream_writes_total{"):
                out["writes"] += float(line.rsplit(" ", 1)[1])
            elif line.startswith("mltap_stream_records_total{"):
                out["read"] += float(line.rsplit(" ", 1)[1])
            elif line.startswith("mltap_stream_dropped_records_total{"):
                cause = line.split('reason="', 1)[1].split('"', 1)[0] if 'reason="' in line else "?"
                out["dropped " + cause] = out.get("dropped " + cause, 0.0) + float(line.rsplit(" ", 1)[1])
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
""" + "".join(f"  {k}: {v}\n" for k, v in (o.split("=", 1) for o in a.ingest)) + f"""detectors:
  max_streams: {limit}
  pin_records: {a.pin_records}
  window_records: {a.window_records}
  min_window_records: {min(a.window_records, 1000)}
  window_seconds: 0
""")
        if a.no_retention:
            f.write("retention:\n  enabled: false\n")
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
        env = dict(os.environ, MLTAP_NAMESPACE=ns)
        for first in range(0, n, STREAMS_PER_PRODUCER):
            count = min(STREAMS_PER_PRODUCER, n - first)
            p = subprocess.Popen([os.path.join(a.build, "bench/detectors/scale_producer"), str(first), str(count),
                                  str(a.features), str(a.rate), str(a.ring_bytes)], env=env,
                                 stdout=subprocess.PIPE, text=True)
            producers.append(p)
        for p in producers:
            if p.stdout.readline().strip() != "READY":
                raise SystemExit("a producer failed to start")
        started = time.monotonic()
        # Every stream pinned and windows closing: the state measured is the steady one. No API
        # call until then (building /api/v1/detectors for 1,000 streams allocates tens of MiB
        # that the allocator keeps); /metrics is read on either side of the CPU interval, as a
        # Prometheus scrape would.
        time.sleep(a.pin_records / a.rate + 2 * a.window_records / a.rate)
        # Pinning 1,000 references can take longer than the records it needs (noise floors are
        # estimated on the ingest thread, docs/benchmarks.md): wait until mltapd keeps up, i.e. a
        # 5 s interval with nothing overwritten and at least 95% of the asked rows read.
        steady_by = time.monotonic() + 900
        prev = ingest_counters(url)
        while True:
            time.sleep(5)
            cur = ingest_counters(url)
            lost = cur.get("dropped overwritten", 0.0) - prev.get("dropped overwritten", 0.0)
            if lost == 0 and cur["read"] - prev["read"] >= 0.95 * 5 * n * a.rate:
                break
            if time.monotonic() > steady_by:
                raise SystemExit(f"{n} streams: mltapd did not keep up within 15 minutes")
            prev = cur
        steady_s = time.monotonic() - started
        lost_before_steady = cur.get("dropped overwritten", 0.0)
        time.sleep(a.warmup)
        m0, tm0 = ingest_counters(url), time.monotonic()
        c0, t0 = cpu_seconds(agent.pid), time.monotonic()
        p0 = sum(cpu_seconds(p.pid) for p in producers)
        time.sleep(a.measure)
        c1, t1 = cpu_seconds(agent.pid), time.monotonic()
        p1 = sum(cpu_seconds(p.pid) for p in producers)
        mem = memory_kib(agent.pid)
        m1, tm1 = ingest_counters(url), time.monotonic()
        streams = http_json(url + "/api/v1/detectors")["streams"]
        ready = sum(1 for s in streams if s.get("reference", {}).get("source") == "pinned"
                    and s.get("windows_closed", 0) >= 1)
        sample = streams[0] if streams else {}
        not_ready = "" if ready == n else (
            f"only {ready} of {n} streams pinned with a window closed ({len(streams)} in the API; first: "
            f"reference {sample.get('reference')}, windows_closed {sample.get('windows_closed')})")
        state_bytes = sum(s["memory_bytes"] for s in streams)
        for p in producers:
            p.send_signal(signal.SIGTERM)
        written = committed = 0
        for p in producers:
            out, _ = p.communicate(timeout=60)
            for line in out.splitlines():
                if line.startswith("WRITTEN"):
                    written += int(line.split()[1])
                    committed += int(line.split()[2])
        delta = {k: m1.get(k, 0.0) - m0.get(k, 0.0) for k in set(m0) | set(m1)}
        return {
            "streams": n,
            "cpu_share": (c1 - c0) / (t1 - t0),
            "producer_cpu_share": (p1 - p0) / (t1 - t0),
            "read_per_s": delta.get("read", 0.0) / (tm1 - tm0),
            "writes_per_s": delta.get("writes", 0.0) / (tm1 - tm0),
            "counter_s": tm1 - tm0,
            "mem": mem,
            "state_kib_per_stream": state_bytes / n / 1024,
            "delta": delta,
            "written": written,
            "committed": committed,
            "not_ready": not_ready,
            "steady_s": steady_s,
            "lost_before_steady": lost_before_steady,
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
    ap.add_argument("--build", required=True, help="build directory (mltapd, scale_producer)")
    ap.add_argument("--streams", default="10,100,1000")
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--rate", type=float, default=100, help="rows/s per stream")
    ap.add_argument("--ring-bytes", type=int, default=64 << 10, help="producers' ring bytes per lane")
    ap.add_argument("--pin-records", type=int, default=2000)
    ap.add_argument("--window-records", type=int, default=1000)
    ap.add_argument("--warmup", type=float, default=10, help="seconds after pinning and two windows")
    ap.add_argument("--measure", type=float, default=60, help="seconds of CPU measurement")
    ap.add_argument("--no-retention", action="store_true",
                    help="turn mltapd's retention store off (to see its share of the cost)")
    ap.add_argument("--ingest", action="append", default=[], metavar="KEY=VALUE",
                    help="an ingest setting for mltapd (e.g. poll_interval=200ms), repeatable")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    ap.add_argument("--agent-prefix", default="", help="run mltapd under this command (e.g. heaptrack)")
    a = ap.parse_args()
    print(f"{a.features} float64 features per stream, {a.rate:g} rows/s per stream, rings of "
          f"{a.ring_bytes >> 10} KiB, pin {a.pin_records} records, windows of {a.window_records}, "
          f"CPU over {a.measure:g} s{', retention off' if a.no_retention else ''}; load average {os.getloadavg()[0]:.1f}", flush=True)
    print("| streams | rows/s read by mltapd (asked) | mltapd CPU (share of one core) | RssAnon MiB "
          "| RssShmem + RssFile MiB | VmRSS MiB | PSS MiB | engine state KiB/stream |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in [int(x) for x in a.streams.split(",")]:
        r = run(a, n)
        m = r["mem"]
        print(f"| {r['streams']:,} | {r['read_per_s']:,.0f} ({n * a.rate:,.0f}) | {100 * r['cpu_share']:.1f}% "
              f"| {m.get('RssAnon', 0) / 1024:.1f} | {(m.get('RssShmem', 0) + m.get('RssFile', 0)) / 1024:.1f} "
              f"| {m.get('VmRSS', 0) / 1024:.1f} | {m.get('Pss', 0) / 1024:.1f} "
              f"| {r['state_kib_per_stream']:.1f} |", flush=True)
        print("    over the interval, rows/s: " + ", ".join(f"{k} {v / r['counter_s']:,.0f}" for k, v in
              sorted(r["delta"].items())) + f"; producers' totals: written {r['written']:,}, committed "
              f"{r['committed']:,}; RssShmem {m.get('RssShmem', 0) / 1024:.1f} MiB, RssFile "
              f"{m.get('RssFile', 0) / 1024:.1f} MiB; producers' CPU {100 * r['producer_cpu_share']:.1f}%; "
              f"kept up {r['steady_s']:.0f} s after the producers started ({r['lost_before_steady']:,.0f} rows "
              f"overwritten before)", flush=True)
        if r["not_ready"]:
            print("    NOT STEADY: " + r["not_ready"], flush=True)


if __name__ == "__main__":
    main()
