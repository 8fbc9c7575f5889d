#!/usr/bin/python3
"""Soak: a real mltapd under 50 streams x 1,000 rows/s for an hour (configurable), with drift
findings opening and closing and reactions firing, sampling mltapd's RSS, open descriptors and
threads every N seconds. Not part of CI (tests/run.sh); run by hand as root:

    /usr/bin/python3 bench/soak/soak.py --build-dir build [--duration 3600] [--streams 50]
        [--rate 1000] [--interval 30] [--warmup 600] [--out soak.json]

What runs:
- mltapd from the build directory, on a free loopback port, in a namespace of its own, with a
  state directory, the webhook on (a token in a temporary file) and three reactions: a producer
  flag, a sampling boost and an incident snapshot (bounded: max_bundles, max_total_bytes);
- one producer process (the Python SDK, float64 rows of 4 features) writing every stream in
  batches of rate/10 rows every 100 ms; every `--drift-period` seconds a fifth of the streams shift
  one feature by 3 sigma and back, so drift findings open and close all run long; a tenth of the
  streams carry NaNs;
- every 5 s the script plays Alertmanager: it posts each open finding to the webhook as a firing
  alert and each finding that closed as resolved, so the reactions act (and undo) all run long.

Each sample splits RSS the kernel's way (/proc/PID/status): anonymous memory (mltapd's heap,
stacks: what a leak grows) and shared memory (the producers' ring pages that mltapd has mapped
and read at least once: they belong to the producers' tmpfs files and are counted in their RSS
too). The shared part grows until every page of every ring has been read once, then stays: lane
0's data (4 MiB) fills in about 2 minutes at 1,000 rows/s, but its index (32,768 entries of 32 B)
takes 55 minutes at 10 records/s, ~1 MiB/min over 50 streams.

Retention is on, as by default, with its caps written out in the configuration (reservoir 1,000
rows without trace id per stream and minute, 16 MiB per stream, 64 MiB in all, in
<state_dir>/retention): the store keeps its rows in mltapd's heap as well as on disk, so the
anonymous memory rises with `mltap_retention_bytes` until the 64 MiB cap is reached (about 3
minutes at 50 streams x 1,000 rows/s: each stream's bucket writes ~5,100 reservoir rows a
minute, ~390 KB) and is flat from then on, evicting the oldest bucket first. The warm-up must
cover that fill (the default, a sixth of the run, does for runs of 30 minutes or more); each
sample records the store's bytes on disk and its heap (`mltap_retention_memory_bytes`) so the
curve shows it. (Until 2026-12-02 a replaced reservoir row stayed in memory: 64 MiB of heap for
the 170,000 live rows; now ~11 MiB.)

Each sample is taken before the script's own requests of that round, 5 s after the previous
ones: the findings listing it polls every 5 s (open findings and up to 256 closed ones, each
with its related events) takes mltapd's anonymous memory up by ~12 MiB for a second or two,
until mltapd's 5-second malloc_trim, and that transient grows with the closed findings until
their cap (about 17 minutes in). The reading right after the poll is kept apart
(anon_after_poll_kib, "anon+p" in the curve) and not judged.

What is checked at the end (exit status 1 if any fails): mltapd alive; its private (anonymous)
memory growth after warm-up under 5% of its RSS (median of the last 3 samples against the median
of the first 3 after warm-up), and the shared part never above the rings' ceiling (lane 0's data
and index plus the segment's header pages, per stream); descriptors and threads flat after
warm-up (max - min <= --fd-slack, threads equal); the accounting of every stream exact (writes =
records + sampled out + dropped). The total RSS growth is printed too. The curve is printed and
written to --out as JSON.
"""
import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))
from mltap_harness import Metrics, parse_metrics  # noqa: E402

TOKEN = "soak-token-0123456789abcdef"
RING_BYTES = 4 << 20  # the SDK's default data bytes per lane (StreamOptions::ring_bytes)

PRODUCER = r'''
import os, signal, sys, time
import numpy as np
import mltap
streams, rate, drift_period = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
out = [mltap.Stream(f"soak/s{i:02d}", component="soak", features=["a", "b", "c", "d"], dtype="float64",
                    sampling_budget=0) for i in range(streams)]
rng = np.random.default_rng(1)
batch = max(1, int(rate / 10))
start = time.monotonic()
tick = 0
print("READY", flush=True)
while not stop:
    phase = int((time.monotonic() - start) / drift_period) % 2
    for i, s in enumerate(out):
        rows = rng.standard_normal((batch, 4))
        if i % 5 == 0 and phase == 1:
            rows[:, 1] += 3.0
        if i % 10 == 3:
            rows[::50, 2] = np.nan
        s.write(rows)
    tick += 1
    delay = start + tick * 0.1 - time.monotonic()
    if delay > 0:
        time.sleep(delay)
for s in out:
    s.close()
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, data=None, headers=None, timeout=10):
    req = urllib.request.Request(url, data=data, headers=dict(headers or {}), method="POST" if data else "GET")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode()


def proc_sample(pid):
    """RSS split the kernel's way: anonymous memory (the heap: what a leak grows) and shared memory
    (the producers' rings mapped by the agent: grows until every ring page has been touched once,
    then stays), plus descriptors, threads and mappings."""
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    with open(f"/proc/{pid}/smaps_rollup") as f:
        rollup = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f if ":" in line and "[" not in line)}
    with open(f"/proc/{pid}/maps") as f:
        maps = sum(1 for _ in f)
    return {"rss_kib": int(status["VmRSS"].split()[0]), "anon_kib": int(status["RssAnon"].split()[0]),
            "shmem_kib": int(status["RssShmem"].split()[0]), "file_kib": int(status["RssFile"].split()[0]),
            "pss_kib": rollup.get("Pss", 0), "maps": maps, "threads": int(status["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def rfc3339(ns):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns / 1e9)) + "Z"


class Alertmanager:
    """Posts open findings as firing alerts and closed ones as resolved, like Alertmanager would."""

    def __init__(self, url):
        self.url = url
        self.firing = {}  # fingerprint -> alert
        self.posted = 0

    def sync(self, findings):
        now = {}
        for f in findings:
            fp = hashlib.sha256(f"{f['stream']}/{f['kind']}/{f['id']}".encode()).hexdigest()[:16]
            now[fp] = {"status": "firing",
                       "labels": {"alertname": "MltapStreamDrift" if f["kind"] == "drift" else "MltapStreamDataQuality",
                                  "stream": f["stream"], "severity": "critical"},
                       "annotations": {}, "startsAt": rfc3339(f["opened_unix_ns"]),
                       "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://soak/", "fingerprint": fp}
        alerts = list(now.values())
        for fp, a in self.firing.items():
            if fp not in now:
                alerts.append(dict(a, status="resolved", endsAt=rfc3339(time.time_ns())))
        self.firing = now
        for i in range(0, len(alerts), 100):
            chunk = alerts[i:i + 100]
            payload = {"version": "4", "groupKey": "{}:{}", "status": "firing", "receiver": "mltapd",
                       "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
                       "externalURL": "http://soak", "alerts": chunk}
            http(self.url, json.dumps(payload).encode(),
                 {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
            self.posted += len(chunk)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build"))
    ap.add_argument("--duration", type=float, default=3600, help="seconds (default: an hour)")
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--rate", type=float, default=1000, help="rows/s per stream")
    ap.add_argument("--interval", type=float, default=30, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=None, help="seconds (default: a sixth of the run)")
    ap.add_argument("--drift-period", type=float, default=60)
    ap.add_argument("--fd-slack", type=int, default=2, help="descriptors allowed to come and go")
    ap.add_argument("--out", help="write the curve and verdict as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    warmup = args.warmup if args.warmup is not None else args.duration / 6

    mltapd = os.path.join(args.build_dir, "agent/mltapd/mltapd")
    pythonpath = os.path.join(args.build_dir, "python")
    tmp = tempfile.mkdtemp(prefix="mltap-soak-")
    ns = "soak" + str(os.getpid())
    port = free_port()
    token = os.path.join(tmp, "token")
    with open(token, "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(token, 0o600)
    incidents = os.path.join(tmp, "incidents")
    os.mkdir(incidents, 0o700)
    config = os.path.join(tmp, "mltapd.yaml")
    with open(config, "w") as f:
        f.write(textwrap.dedent(f"""\
            agent:
              state_dir: {tmp}/state
              checkpoint_interval: 2s
            ingest:
              namespace: {ns}
              dead_producer_grace: 1s
            detectors:
              pin_records: 5000
              window_records: 5000
              min_window_records: 2000
              window_seconds: 0
              confirm_windows: 1
              clear_windows: 2
            retention:
              reservoir: 1000
              max_stream_bytes: 16MiB
              max_bytes: 64MiB
            webhook:
              token_file: {token}
            reactions:
              actions:
                fallback:
                  type: producer-flag
                  matchers: ['alertname = "MltapStreamDrift"']
                  flag: use_fallback
                  value: 1
                  cooldown: 1s
                  rate_limit: {{max: 0, per: 1h}}
                diagnose:
                  type: sampling
                  matchers: ['alertname =~ "MltapStream(Drift|DataQuality)"']
                  permille: 1000
                  duration: 30s
                  cooldown: 1s
                  rate_limit: {{max: 0, per: 1h}}
                incident:
                  type: snapshot
                  matchers: ['severity = "critical"']
                  directory: {incidents}
                  max_records: 200
                  max_bundles: 5
                  max_total_bytes: 64MiB
                  cooldown: 30s
                  rate_limit: {{max: 0, per: 1h}}
            """))
    log = open(os.path.join(tmp, "mltapd.log"), "wb")
    agent = subprocess.Popen([mltapd, "--config", config, "--listen", f"127.0.0.1:{port}"],
                             stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            http(url + "/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    env = dict(os.environ, MLTAP_NAMESPACE=ns, PYTHONPATH=pythonpath)
    producer = subprocess.Popen([sys.executable, "-c", PRODUCER, str(args.streams), str(args.rate),
                                 str(args.drift_period)], env=env, stdout=subprocess.PIPE, text=True)
    assert producer.stdout.readline().strip() == "READY", "producer did not start"
    am = Alertmanager(url + "/api/v1/alerts/webhook")
    samples, failures = [], []
    start = time.monotonic()
    next_sample = start
    max_open = 0
    try:
        while time.monotonic() - start < args.duration:
            if agent.poll() is not None:
                failures.append(f"mltapd exited with {agent.returncode}")
                break
            if producer.poll() is not None:
                failures.append(f"producer exited with {producer.returncode}")
                break
            # The sample is taken before this round's requests, 5 s after the last ones: building
            # the findings listing (open and up to 256 closed, each with its related events:
            # 1.3 MB at 120 closed) takes mltapd's heap up by ~12 MiB for a second or two, until
            # its 5-second malloc_trim. Sampled right after the request, that transient (which
            # grows with the closed findings until their cap) read as growth; it is recorded
            # apart as anon_after_poll_kib.
            sample = proc_sample(agent.pid) if time.monotonic() >= next_sample else None
            findings = json.loads(http(url + "/api/v1/findings"))["open"]
            max_open = max(max_open, len(findings))
            am.sync(findings)
            if sample is not None:
                s = sample
                s["anon_after_poll_kib"] = proc_sample(agent.pid)["anon_kib"]
                m = Metrics(parse_metrics(http(url + "/metrics")))
                s["t"] = round(time.monotonic() - start)
                s["open_findings"] = len(findings)
                s["records"] = m.sum("mltap_stream_records_total")
                s["reactions_ok"] = m.sum("mltap_reactions_total", result="ok")
                s["retention_kib"] = int(m.sum("mltap_retention_bytes") // 1024)
                s["retention_heap_kib"] = int(m.sum("mltap_retention_memory_bytes") // 1024)
                samples.append(s)
                print(f"t={s['t']:>5}s rss={s['rss_kib'] / 1024:7.1f} MiB (anon {s['anon_kib'] / 1024:6.1f} "
                      f"[after poll {s['anon_after_poll_kib'] / 1024:5.1f}] "
                      f"shmem {s['shmem_kib'] / 1024:6.1f} file {s['file_kib'] / 1024:5.1f}) maps={s['maps']:4d} "
                      f"fds={s['fds']:3d} threads={s['threads']:3d} retention={s['retention_kib'] / 1024:5.1f} MiB "
                      f"(heap {s['retention_heap_kib'] / 1024:5.1f}) "
                      f"open_findings={s['open_findings']:3d} records={int(s['records']):>10d} "
                      f"reactions_ok={int(s['reactions_ok'])}", flush=True)
                next_sample += args.interval
            time.sleep(5)
        # Accounting at the end, with the producer stopped and its rings drained.
        producer.send_signal(signal.SIGTERM)
        producer.wait(timeout=30)
        time.sleep(2)
        m = Metrics(parse_metrics(http(url + "/metrics")))
        bad = []
        for i in range(args.streams):
            st = f"soak/s{i:02d}"
            w = m.get("mltap_stream_writes_total", 0, stream=st)
            got = (m.get("mltap_stream_records_total", 0, stream=st) + m.get("mltap_stream_sampled_out_records_total", 0, stream=st)
                   + m.sum("mltap_stream_dropped_records_total", stream=st))
            if w == 0 or got != w:
                bad.append((st, w, got))
        if bad:
            failures.append(f"accounting off for {bad[:5]}")
        reactions = {r: m.get("mltap_reactions_total", 0, reaction=r, result="ok")
                     for r in ("fallback", "diagnose", "incident")}
    finally:
        if producer.poll() is None:
            producer.kill()
        alive = agent.poll() is None
        if alive:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=30)
        log.close()

    after = [s for s in samples if s["t"] >= warmup]
    verdict = {"duration_s": args.duration, "warmup_s": warmup, "streams": args.streams, "rate": args.rate,
               "samples": samples, "max_open_findings": max_open, "alerts_posted": am.posted}
    if len(after) >= 6:
        first = statistics.median(s["rss_kib"] for s in after[:3])
        last = statistics.median(s["rss_kib"] for s in after[-3:])
        growth = (last - first) / first
        fds = [s["fds"] for s in after]
        threads = [s["threads"] for s in after]
        verdict.update(rss_growth=round(growth, 4), rss_first_kib=first, rss_last_kib=last,
                       fds_range=[min(fds), max(fds)], threads_range=[min(threads), max(threads)])
        # Which part grew: the heap (anon: a leak, unbounded state, fragmentation) or the rings
        # mapped from the producers (shmem: pages the agent touched for the first time).
        for part in ("anon", "shmem"):
            a = statistics.median(s[f"{part}_kib"] for s in after[:3])
            b = statistics.median(s[f"{part}_kib"] for s in after[-3:])
            verdict[f"{part}_first_kib"], verdict[f"{part}_last_kib"] = a, b
            verdict[f"{part}_growth_kib"] = b - a
        print("\ncurve after warm-up (MiB):")
        print("  t(s)    " + " ".join(f"{s['t']:>6}" for s in after))
        for key, label in (("rss_kib", "rss"), ("anon_kib", "anon"), ("anon_after_poll_kib", "anon+p"),
                           ("shmem_kib", "shmem"),
                           ("retention_kib", "ret"), ("retention_heap_kib", "retheap")):
            print(f"  {label:<7} " + " ".join(f"{s[key] / 1024:6.1f}" for s in after))
        print("  fds     " + " ".join(f"{s['fds']:>6}" for s in after))
        print("  thr     " + " ".join(f"{s['threads']:>6}" for s in after))
        print(f"RSS growth after warm-up: {growth:+.2%} ({first} -> {last} KiB; anon "
              f"{verdict['anon_growth_kib']:+} KiB, shmem {verdict['shmem_growth_kib']:+} KiB)")
        # The agent's own memory is the anonymous part. The shared part is the producers' ring
        # pages (tmpfs, allocated by the producers and counted in their RSS and in /dev/shm too)
        # that the agent has mapped and read at least once: it grows until every page of every
        # ring has been read once, then stays. The index of a 4 MiB lane (32,768 entries of 32 B)
        # at 10 records/s takes 55 minutes to wrap, so within the first hour the shared part
        # grows by ~1 MiB/min at 50 streams without any leak. It is checked against its ceiling
        # instead: lane 0's index and data plus the header pages of each stream's segment.
        private_growth = (verdict["anon_last_kib"] - verdict["anon_first_kib"]) / first
        verdict["private_growth"] = round(private_growth, 4)
        ceiling_kib = args.streams * (RING_BYTES + RING_BYTES // 128 * 32 + 16 * 4096 + 3 * 4096) // 1024
        verdict["shmem_ceiling_kib"] = ceiling_kib
        print(f"private (anon) growth after warm-up: {private_growth:+.2%} of RSS; shared ring pages "
              f"{verdict['shmem_last_kib']} KiB of at most {ceiling_kib} KiB")
        if private_growth >= 0.05:
            failures.append(f"private memory grew {private_growth:.1%} of RSS after warm-up "
                            f"({verdict['anon_first_kib']} -> {verdict['anon_last_kib']} KiB anon)")
        if max(s["shmem_kib"] for s in samples) > ceiling_kib * 1.02:
            failures.append(f"shared ring pages over their ceiling: {max(s['shmem_kib'] for s in samples)} "
                            f"> {ceiling_kib} KiB")
        if max(fds) - min(fds) > args.fd_slack:
            failures.append(f"descriptors not flat after warm-up: {min(fds)}..{max(fds)}")
        if max(threads) != min(threads):
            failures.append(f"threads not flat after warm-up: {min(threads)}..{max(threads)}")
    else:
        failures.append(f"only {len(after)} samples after warm-up: run longer or sample more often")
    if not reactions or not all(reactions.values()):
        failures.append(f"not every reaction acted: {reactions}")
    if max_open == 0:
        failures.append("no finding ever opened")
    verdict["reactions_ok"] = reactions
    verdict["failures"] = failures
    print(json.dumps({k: v for k, v in verdict.items() if k != "samples"}, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(verdict, f, indent=1)
    if args.keep or failures:
        print(f"files kept in {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print("PASS" if not failures else "FAIL: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
