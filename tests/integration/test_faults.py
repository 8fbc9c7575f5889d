"""Fault injection with real processes: real mltapd, real producers (tests/tools/test_producer.cpp),
real rings in /dev/shm or in small tmpfs mounts made by the test (as root).

- producers SIGKILLed at random points, 1,000 times: writes = read + sampled out + dropped by
  cause, exactly, against a truth the producer keeps in a file that outlives the kill
  (test_producer --progress: rows handed to write and rows whose write returned);
- mltapd SIGKILLed and restarted under load 20 times: nothing lost, the final agent's counts exact,
  counting across restarts as Prometheus sees it, and the producers' write latency;
- segments unlinked or partly truncated while both sides have them mapped;
- a full ring directory (/dev/shm full): producers run ring-less, exit 0, leave no file;
- the state directory full or read-only: mltapd keeps running, says so (log and metric), loses
  nothing it holds in memory and writes its state once space returns;
- the retained samples (agent/retention) on a full, then read-only state directory: counts exact,
  rows held in memory and counted, trace answering from memory, writing resumed once space
  returns, a restart after kill -9 loading what the files hold. Read-only is a read-only bind
  mount of the directory over itself: a tmpfs with files open for writing refuses `remount,ro`.

MLTAP_FAULT_KILLS (default 1000) and MLTAP_FAULT_RESTARTS (default 20) scale the first two; the
tallies are printed (pytest -s shows them)."""
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))
from mltap_harness import TEST_PRODUCER, Agent, Producer, binary, http_json, wait_until  # noqa: E402

KILLS = int(os.environ.get("MLTAP_FAULT_KILLS", "1000"))
RESTARTS = int(os.environ.get("MLTAP_FAULT_RESTARTS", "20"))

FAST = """
ingest:
  dead_producer_grace: 100ms
  closed_segment_grace: 100ms
"""

REASONS = ("overwritten", "too_large", "no_lane", "bad_input", "interrupted")


def tally(stream, m):
    """The agent's counts of one stream from one scrape."""
    return {
        "writes": m.get("mltap_stream_writes_total", 0, stream=stream),
        "records": m.get("mltap_stream_records_total", 0, stream=stream),
        "sampled_out": m.get("mltap_stream_sampled_out_records_total", 0, stream=stream),
        "dropped": {r: m.get("mltap_stream_dropped_records_total", 0, stream=stream, reason=r) for r in REASONS},
        "invalid": m.sum("mltap_stream_invalid_records_total", stream=stream),
    }


def namespace_files(agent):
    prefix = f"mltap.{agent.namespace}."
    return sorted(n for n in os.listdir(agent.shm_dir) if n.startswith(prefix) and not n.endswith(".agent"))


def read_progress(path, threads=1):
    """[(intent, done)] per thread; (0, 0) when the producer died before creating the file."""
    try:
        with open(path, "rb") as f:
            data = f.read(16 * threads)
    except FileNotFoundError:
        return [(0, 0)] * threads
    data = data.ljust(16 * threads, b"\0")
    return [struct.unpack_from("<QQ", data, 16 * t) for t in range(threads)]


def bind_read_only(path):
    """A read-only bind mount of `path` over itself (undone by umount)."""
    subprocess.run(["mount", "--bind", path, path], check=True)
    r = subprocess.run(["mount", "-o", "remount,ro,bind", path], capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["umount", path], check=False)
        raise AssertionError(f"remount,ro,bind {path}: {r.stderr}")


class Tmpfs:
    """A tmpfs of `size` mounted on a fresh directory (root only), unmounted lazily at exit."""

    def __init__(self, size, mode="1777"):
        self.dir = tempfile.mkdtemp(prefix="mltap-fault-fs-")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode={mode}", "tmpfs", self.dir],
                           capture_output=True, text=True)
        if r.returncode != 0:
            os.rmdir(self.dir)
            pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")

    def remount(self, opts):
        subprocess.run(["mount", "-o", f"remount,{opts}", self.dir], check=True)

    def fill(self, leave=0):
        """Fills the file system up to `leave` free bytes with a file named .filler."""
        path = os.path.join(self.dir, ".filler")
        with open(path, "ab") as f:
            chunk = b"\0" * 4096
            while os.statvfs(self.dir).f_bavail * os.statvfs(self.dir).f_frsize > leave:
                try:
                    f.write(chunk)
                    f.flush()
                except OSError:
                    break
        return path

    def bind_read_only(self):
        """Read-only without closing anyone's files (a tmpfs with files open for writing refuses
        `remount,ro`): a read-only bind mount of the directory over itself. Files opened before
        stay writable, as the kernel has it; opening, creating and removing fail with EROFS."""
        bind_read_only(self.dir)
        self.bound = True

    def unbind(self):
        subprocess.run(["umount", self.dir], check=True)
        self.bound = False

    def close(self):
        if getattr(self, "bound", False):
            subprocess.run(["umount", "-l", self.dir], check=False)
        subprocess.run(["umount", "-l", self.dir], check=False)
        try:
            os.rmdir(self.dir)
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- 1. producers SIGKILLed at random points ----------------------------------------------------

def test_producers_sigkilled_at_random_points_are_counted_exactly(tmp_path):
    slots = 8  # producers alive at once; one stream per slot, its producers one after another
    per_slot = KILLS // slots
    truth = [{"intent": 0, "done": 0, "kills": 0, "mid_write": 0, "before_ready": 0, "no_write": 0}
             for _ in range(slots)]
    errors = []
    with Agent(FAST) as agent:
        def worker(slot):
            rng = random.Random(7919 * slot + 1)
            t = truth[slot]
            try:
                for i in range(per_slot):
                    progress = str(tmp_path / f"p{slot}.{i}")
                    args = [binary(TEST_PRODUCER), "--name", f"kill/s{slot}", "--rows", str(10 ** 12),
                            "--features", "4", "--lanes", "1", "--ring", "65536",
                            "--batch", str(rng.choice((1, 1, 3, 64, 600))), "--progress", progress,
                            "--ready-line"]
                    if rng.random() < 0.25:
                        args += ["--budget", "20000"]  # sampled out rows, counted by the producer
                    p = subprocess.Popen(args, env=agent.env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                    if rng.random() < 0.1:
                        # Anywhere in start-up, the ring's creation included.
                        time.sleep(rng.uniform(0, 0.004))
                        t["before_ready"] += 1
                    else:
                        line = p.stdout.readline()
                        assert line.startswith(b"READY"), line
                        time.sleep(rng.expovariate(1 / 0.008))
                    p.send_signal(signal.SIGKILL)
                    p.wait(timeout=10)
                    p.stdout.close()
                    (intent, done), = read_progress(progress)
                    t["kills"] += 1
                    t["intent"] += intent
                    t["done"] += done
                    t["mid_write"] += intent > done
                    t["no_write"] += intent == 0
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(e)

        started = time.monotonic()
        threads = [threading.Thread(target=worker, args=(s,)) for s in range(slots)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        killing = time.monotonic() - started
        assert not errors, errors
        # Every ring of a dead producer is drained, accounted and removed; nothing stays behind.
        # A producer killed while creating its ring leaves no file at all (the SDK names a ring
        # only once its header is complete: O_TMPFILE + linkat, shm/FORMAT.md); before, 23-28
        # per 1,000 kills stayed as half-created files (no magic). Counted, must be none.
        def half_created(name):
            try:
                with open(os.path.join(agent.shm_dir, name), "rb") as f:
                    magic = f.read(8)
            except FileNotFoundError:
                return True  # removed meanwhile: nothing to wait for
            return len(magic) < 8 or magic == b"\0" * 8
        try:
            wait_until(lambda: not [n for n in namespace_files(agent) if not half_created(n)] and
                       agent.metrics().get("mltap_segments", 0, state="pending") == 0,
                       timeout=30, what="every complete segment removed")
        except AssertionError:
            left = [n for n in namespace_files(agent) if not half_created(n)]
            raise AssertionError(f"{len(left)} segments left: {left[:5]}\n" + agent.logs()[-3000:])
        leftovers = [n for n in namespace_files(agent) if half_created(n)]
        for n in leftovers:
            os.unlink(os.path.join(agent.shm_dir, n))
        m = wait_until(lambda: (lambda m: m if m.get("mltap_segments", 0, state="active") == 0 and
                                m.get("mltap_segments", 0, state="draining") == 0 else None)(agent.metrics()),
                       timeout=30, what="no segment left")
        assert agent.alive()
        totals = {"kills": 0, "mid_write": 0, "before_ready": 0, "no_write": 0, "writes": 0, "records": 0,
                  "sampled_out": 0, "dropped": {r: 0 for r in REASONS}}
        for slot in range(slots):
            t = truth[slot]
            got = tally(f"kill/s{slot}", m)
            # The truth is an interval: a producer killed inside write_batch may or may not have
            # counted the rows of that call.
            assert t["done"] <= got["writes"] <= t["intent"], (slot, t, got)
            # Every row the producers counted is read, sampled out or dropped by a cause, exactly.
            assert got["records"] + got["sampled_out"] + sum(got["dropped"].values()) == got["writes"], (slot, t, got)
            assert got["invalid"] == 0, (slot, got)
            assert got["dropped"]["too_large"] == got["dropped"]["bad_input"] == got["dropped"]["no_lane"] == 0
            for k in ("kills", "mid_write", "before_ready", "no_write"):
                totals[k] += t[k]
            for k in ("writes", "records", "sampled_out"):
                totals[k] += got[k]
            for r in REASONS:
                totals["dropped"][r] += got["dropped"][r]
        removed = m.get("mltap_segments_removed_total", 0, reason="producer_dead")
        totals["segments_removed"] = removed
        totals["half_created_left"] = len(leftovers)
        totals["seconds"] = round(killing, 1)
        print("\nSIGKILL tallies:", json.dumps(totals))
        assert totals["kills"] == per_slot * slots
        # Each producer that printed READY had a ring, which the agent removed as a dead producer's.
        assert removed >= totals["kills"] - totals["before_ready"]
        assert not leftovers, f"{len(leftovers)} half-created rings left: {leftovers[:5]}"
        assert totals["records"] > 0 and totals["mid_write"] > 0  # the faults did happen mid-write
        assert "faulted" not in agent.logs()


# ---- 2. mltapd SIGKILLed and restarted under load -----------------------------------------------

def percentile(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0


def read_latencies(path):
    with open(path, "rb") as f:
        data = f.read()
    return list(struct.unpack(f"<{len(data) // 4}I", data))


def counted_like_prometheus(samples):
    """increase() over a counter's scraped values, a drop being a reset (as Prometheus does)."""
    total, prev = 0, None
    for v in samples:
        total += v if prev is None or v < prev else v - prev
        prev = v
    return total


def test_agent_sigkilled_and_restarted_under_load(tmp_path):
    streams = ("restart/a", "restart/b")
    rate, seconds = 5000, 8  # rows/s per producer
    rows = rate * seconds
    opts = dict(rows=rows, features=4, rate=rate, batch=1, lanes=1, ring=16 << 20)
    state = tmp_path / "state"
    agent = Agent(FAST + "agent:\n  checkpoint_interval: 200ms\n", extra_args=["--state-dir", str(state)])
    agent.start()
    try:
        # Baseline: the same producers with the agent left alone.
        base = [Producer(agent, name=f"{s}-base", latency_out=str(tmp_path / f"{i}.base"), hold=True, **opts).start()
                for i, s in enumerate(streams)]
        for p in base:
            assert p.result()["rows_written"] == rows
            p.kill()
        # Under restarts.
        prods = [Producer(agent, name=s, latency_out=str(tmp_path / f"{i}.kill"), hold=True, **opts).start()
                 for i, s in enumerate(streams)]
        rng = random.Random(11)
        scraped = {s: [] for s in streams}
        restarts, down = 0, []

        def scrape():
            try:
                m = agent.metrics()
            except OSError:
                return
            for s in streams:
                # A series absent from a scrape (the agent just started) is no sample at all for
                # Prometheus, not a 0.
                v = m.get("mltap_stream_records_total", None, stream=s)
                if v is not None:
                    scraped[s].append(v)

        while restarts < RESTARTS:
            until = time.monotonic() + rng.uniform(0.05, 0.3)
            while time.monotonic() < until:
                scrape()
                time.sleep(0.03)
            scrape()
            t0 = time.monotonic()
            agent.proc.send_signal(signal.SIGKILL)
            agent.proc.wait(timeout=10)
            agent.process.stop()
            agent.start()
            down.append(time.monotonic() - t0)
            restarts += 1
            scrape()
        results = [p.result(timeout=120) for p in prods]
        def settled():
            m = agent.metrics()
            ok = all(m.get("mltap_stream_writes_total", 0, stream=s) == rows and
                     (lambda t: t["records"] + t["sampled_out"] + sum(t["dropped"].values()) == rows)(tally(s, m))
                     for s in streams)
            return m if ok else None
        m = wait_until(settled, timeout=30, what="final agent caught up")
        scrape()
        assert agent.alive()
        report = {"restarts": restarts, "agent_down_ms_median": round(1000 * percentile(down, 0.5)),
                  "agent_down_ms_max": round(1000 * max(down))}
        for s, r in zip(streams, results):
            assert r["rows_written"] == r["rows_committed"] == rows
            got = tally(s, m)
            # Nothing is lost: the ring holds the whole run, and the final agent's accounting of it
            # is exact (writes come from the producer's own counters in the ring).
            assert got["writes"] == rows and got["records"] == rows, got
            assert sum(got["dropped"].values()) == 0 and got["invalid"] == 0, got
            report[s] = {"written": rows, "final_records": got["records"],
                         "counted_across_restarts": counted_like_prometheus(scraped[s])}
        # Producers' write latency: a write touches only the mapping, so an agent that is killed
        # and restarted cannot slow it. What the machine's scheduling does to the tail is common to
        # both runs; the bound is a sanity bound (bench/faults has the measurement).
        lat = {}
        for kind in ("base", "kill"):
            v = []
            for i in range(len(streams)):
                v += read_latencies(tmp_path / f"{i}.{kind}")
            lat[kind] = {"n": len(v), "p50_ns": percentile(v, 0.5), "p99_ns": percentile(v, 0.99),
                         "p999_ns": percentile(v, 0.999)}
        report["write_latency"] = lat
        print("\nagent restart tallies:", json.dumps(report))
        assert lat["kill"]["n"] == lat["base"]["n"] == rows * len(streams)
        assert lat["kill"]["p50_ns"] <= 4 * lat["base"]["p50_ns"] + 1000
        assert lat["kill"]["p999_ns"] <= 10 * lat["base"]["p999_ns"] + 200_000
        for p in prods:
            p.kill()
        # No double counting across restarts, as Prometheus counts (increase() over the scrapes,
        # a decrease taken as a reset): read positions and stream counters are kept in the state
        # directory, so a restarted agent resumes where its last checkpoint left it and its
        # counters continue from the same instant. Measured 2026-12-02: 40,000 counted for 40,000
        # written on each stream over 20 kills (370,952 before positions were kept).
        over = {s: report[s]["counted_across_restarts"] - rows for s in streams}
        # A scrape between a restart and the re-read of the records after the checkpoint could
        # still see a smaller value (never observed): 1% slack, the measured figure is printed.
        assert all(o <= rows // 100 for o in over.values()), f"rows counted again across restarts: {over}"
    finally:
        agent.stop()


# ---- 3. segments unlinked or truncated while mapped ---------------------------------------------

def mapped(pid, path):
    with open(f"/proc/{pid}/maps") as f:
        return any(line.rstrip().endswith(path) or line.rstrip().endswith(path + " (deleted)") for line in f)


def test_a_segment_unlinked_while_mapped_is_read_to_its_end_and_its_memory_returned():
    with Agent(FAST) as agent:
        rows = 20000
        p = Producer(agent, name="fault/unlinked", rows=rows, features=4, rate=20000, batch=4, ring=4 << 20,
                     hold=True).start()
        wait_until(lambda: tally("fault/unlinked", agent.metrics())["records"] > 1000, what="reading")
        assert mapped(agent.proc.pid, p.segment)
        os.unlink(p.segment)  # what `rm /dev/shm/mltap.*` does under a running pipeline
        out = p.result()
        assert out["rows_written"] == out["rows_committed"] == rows
        # Both sides keep the mapping: the agent reads the file to its end, exactly.
        m = wait_until(lambda: (lambda m: m if tally("fault/unlinked", m)["records"] == rows else None)(agent.metrics()),
                       what="every row read from the unlinked ring")
        got = tally("fault/unlinked", m)
        assert got["writes"] == rows and sum(got["dropped"].values()) == 0 and got["invalid"] == 0, got
        p.kill()
        # Once the producer is gone the agent lets the mapping go: a deleted file's pages would
        # otherwise stay allocated in /dev/shm for as long as mltapd runs.
        wait_until(lambda: agent.metrics().get("mltap_segments", 0, state="draining") == 0 and
                   agent.metrics().get("mltap_segments", 0, state="active") == 0, what="segment retired")
        # The gauges come from the last snapshot; the unmapping is the ingest thread's, a poll later.
        wait_until(lambda: not mapped(agent.proc.pid, p.segment), timeout=10, what="the mapping released")
        assert agent.alive()


def test_a_segment_truncated_mid_lane_under_both_sides():
    with Agent(FAST) as agent:
        other = Producer(agent, name="fault/other", rows=10 ** 9, rate=2000).start()
        p = Producer(agent, name="fault/cut", rows=40000, features=4, rate=20000, ring=1 << 20, hold=True).start()
        wait_until(lambda: tally("fault/cut", agent.metrics())["records"] > 1000, what="reading")
        # Keep the header, control block and schema, cut into lane 0's header: the next access of
        # either side to the lanes faults.
        with open(p.segment, "rb") as f:
            head = f.read(4096)
        lanes_offset = struct.unpack_from("<Q", head, 64)[0]  # SegmentHeader.lanes_offset
        size = os.path.getsize(p.segment)
        assert 0 < lanes_offset < size
        os.truncate(p.segment, lanes_offset + 64)
        # The producer survives, runs ring-less after the loss and counts those rows. (Its own stats
        # of the rows before the loss are gone with the lane headers: a known SDK gap, left.)
        out = p.result()
        assert 0 < out["rows_no_ring"] <= out["rows_written"] <= 40000, out
        assert p.proc.poll() is None  # still alive (holding)
        wait_until(lambda: agent.metrics().get("mltap_segments_rejected_total", 0, reason="truncated") >= 1,
                   what="truncation noticed")
        got = tally("fault/cut", agent.metrics())
        assert 1000 < got["records"] <= 40000 - out["rows_no_ring"] and got["invalid"] == 0, (got, out)
        before = tally("fault/other", agent.metrics())["records"]
        wait_until(lambda: tally("fault/other", agent.metrics())["records"] > before + 200, what="others flowing")
        p.kill()
        other.kill()
        wait_until(lambda: not mapped(agent.proc.pid, p.segment), what="truncated ring unmapped")
        assert agent.alive()


# ---- 4. a full ring directory -------------------------------------------------------------------

def test_a_full_ring_directory_producers_run_ring_less_and_leave_nothing():
    with Tmpfs("8m") as fs, Agent(FAST, shm_dir=fs.dir) as agent:
        filler = fs.fill(leave=32 << 10)
        outs = [Producer(agent, name=f"full/p{i}", rows=5000, features=4, threads=2, ring=1 << 20).run()
                for i in range(4)]
        for out in outs:  # exit status 0 (run() checks it), every row counted as never reaching a ring
            assert out["rows_written"] == 10000 and out["rows_committed"] == 0, out
            assert out["rows_no_ring"] == 10000, out
        assert namespace_files(agent) == []
        assert agent.alive()
        m = agent.metrics()
        assert all(m.get("mltap_stream_writes_total", None, stream=f"full/p{i}") is None for i in range(4))
        # Space returns: the next producer has its ring and is counted exactly.
        os.unlink(filler)
        out = Producer(agent, name="full/after", rows=5000, features=4, ring=1 << 20).run()
        assert out["rows_committed"] == 5000
        wait_until(lambda: tally("full/after", agent.metrics())["records"] == 5000, what="rows after space returned")
        wait_until(lambda: namespace_files(agent) == [], what="closed ring removed")
        assert agent.alive()


def test_a_ring_directory_filling_up_under_a_running_producer():
    opts = dict(rows=3000, features=4, ring=1 << 20, lanes=4, rate=1000, hold=True)
    with Tmpfs("8m") as fs, Agent(FAST, shm_dir=fs.dir) as agent:
        # What a stream reserves when it opens (header pages and lane 0), measured on a probe.
        probe = Producer(agent, name="full/probe", **dict(opts, rows=1)).start()
        reserved = os.stat(probe.segment).st_blocks * 512
        probe.kill()
        wait_until(lambda: namespace_files(agent) == [], what="probe's ring removed")
        # Room for that and no more: lane 0 works, the other threads' lanes find no room.
        fs.fill(leave=reserved + 8192)
        p = Producer(agent, name="full/live", threads=4, **opts).start()
        out = p.result()
        assert out["rows_written"] == 12000
        assert out["rows_committed"] + out["rows_no_lane"] == 12000 and out["rows_no_lane"] > 0, out
        assert out["rows_committed"] > 0, out
        m = wait_until(lambda: (lambda m: m if tally("full/live", m)["writes"] == 12000 and
                                tally("full/live", m)["records"] == out["rows_committed"] else None)(agent.metrics()),
                       what="exact counts")
        assert tally("full/live", m)["dropped"]["no_lane"] == out["rows_no_lane"]
        p.kill()
        wait_until(lambda: namespace_files(agent) == [], what="dead producer's ring removed")
        assert agent.alive()


# ---- 5. the state directory and the snapshot folder full or read-only -----------------------------

STATE_STREAM = "fault/state"
DRIFT_PRODUCER = os.path.join(os.path.dirname(__file__), "drift_producer.py")
TOKEN = "faults-token-0123456789abcdef"
STATE_CONFIG = """
agent:
  checkpoint_interval: 100ms
detectors:
  pin_records: 2000
  window_records: 1000
  min_window_records: 500
  window_seconds: 0
  confirm_windows: 1
  clear_windows: 2
  staleness: {{enabled: false}}
  throughput: {{enabled: false}}
  sequential: {{enabled: false}}
# The retained samples too, small (rows without trace ids: a reservoir per 1 s bucket; a cap far
# below the 2 MiB file system) so that the faults are the test's, not their own.
retention: {{bucket: 1s, reservoir: 20, max_stream_bytes: 256KiB, max_bytes: 256KiB}}
webhook:
  token_file: {token}
reactions:
  actions:
    incident:
      type: snapshot
      matchers: ['alertname = "FaultTest"']
      directory: {incidents}
      cooldown: 1s
      rate_limit: {{max: 0, per: 1h}}
"""


def open_findings(agent):
    return [f for f in http_json(agent.url + "/api/v1/findings")["open"] if f["stream"] == STATE_STREAM]


def saved_open_ids(state_dir):
    ids = set()
    if not os.path.isdir(state_dir):
        return ids
    for name in os.listdir(state_dir):
        if name.startswith("detectors.stream-") and name.endswith(".json"):
            with open(os.path.join(state_dir, name)) as f:
                doc = json.load(f)
            if doc["data"]["stream"] == STATE_STREAM:
                ids |= {x["id"] for x in doc["data"]["findings"]}
    return ids


def post_alert(agent, fingerprint):
    alert = {"status": "firing", "labels": {"alertname": "FaultTest", "stream": STATE_STREAM},
             "annotations": {}, "startsAt": "2026-12-01T12:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "http://prometheus/x", "fingerprint": fingerprint}
    payload = {"version": "4", "groupKey": "{}:{alertname=\"FaultTest\"}", "status": "firing",
               "receiver": "mltapd", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
               "externalURL": "http://alertmanager", "alerts": [alert]}
    http_json(agent.url + "/api/v1/alerts/webhook", data=payload, method="POST",
              headers={"Authorization": f"Bearer {TOKEN}"})


def state_metrics(agent):
    m = agent.metrics()
    return {"failing": m.get("mltap_state_write_failing"), "ok": m.get("mltap_state_writes_total", result="ok"),
            "failed": m.get("mltap_state_writes_total", result="failed"),
            "pending": m.get("mltap_state_pending_documents"),
            "snap_ok": m.get("mltap_reactions_total", 0, reaction="incident", result="ok"),
            "snap_failed": m.get("mltap_reactions_total", 0, reaction="incident", result="failed")}


def test_state_and_snapshot_folders_full_then_read_only(tmp_path):
    if not os.environ.get("MLTAP_PYTHONPATH"):
        pytest.skip("needs the Python SDK (MLTAP_PYTHONPATH)")
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    with Tmpfs("2m", mode="0700") as fs:
        state, incidents = os.path.join(fs.dir, "state"), os.path.join(fs.dir, "incidents")
        os.mkdir(incidents, 0o700)
        agent = Agent(STATE_CONFIG.format(token=token, incidents=incidents), extra_args=["--state-dir", state])
        mode = tmp_path / "mode"
        mode.write_text("0")
        producer = None
        try:
            agent.start()
            env = agent.env()
            env["PYTHONPATH"] = os.environ.get("MLTAP_PYTHONPATH", "")
            producer = subprocess.Popen([sys.executable, DRIFT_PRODUCER, STATE_STREAM, str(mode)], env=env,
                                        stdout=subprocess.PIPE, text=True)
            assert producer.stdout.readline().strip() == "READY"
            wait_until(lambda: any(n.startswith("detectors.reference-") for n in os.listdir(state))
                       if os.path.isdir(state) else False, timeout=30, what="reference written")
            assert state_metrics(agent)["failing"] == 0
            # Full: a drift finding opens in memory, its document cannot be written.
            filler = fs.fill(leave=0)
            mode.write_text("4")
            finding = wait_until(lambda: (open_findings(agent) or [None])[0], timeout=30, what="drift finding")
            s = wait_until(lambda: (lambda s: s if s["failing"] == 1 and s["failed"] > 0 and s["pending"] >= 1 else None)(
                state_metrics(agent)), timeout=10, what="state write failure reported")
            assert "No space left on device" in agent.logs()
            assert finding["id"] not in saved_open_ids(state)
            post_alert(agent, "00000000000000a1")  # a snapshot bundle cannot be written either
            wait_until(lambda: state_metrics(agent)["snap_failed"] == 1, what="snapshot failure counted")
            assert os.listdir(incidents) == []  # no partial bundle left to eat the space
            assert agent.alive() and open_findings(agent)[0]["id"] == finding["id"]
            # The retained samples' next write is refused too. Not at once: appends that fit in the
            # last page of a tmpfs file need no new page, so the first refusal comes when a page
            # fills or the next minute's bucket opens its file (at most ~60 s).
            wait_until(lambda: retention_metrics(agent)["no_space"] > 0, timeout=90,
                       what="a retained-sample write refused")
            # Space returns: the document held in memory is written, the next bundle too.
            os.unlink(filler)
            wait_until(lambda: finding["id"] in saved_open_ids(state), timeout=10, what="finding written")
            wait_until(lambda: state_metrics(agent)["failing"] == 0 and state_metrics(agent)["pending"] == 0,
                       what="state writing recovered")
            assert "works again" in agent.logs()
            time.sleep(1.1)  # the reaction's cooldown
            post_alert(agent, "00000000000000a2")
            wait_until(lambda: state_metrics(agent)["snap_ok"] == 1, what="snapshot after space returned")
            assert any(not n.startswith(".") for n in os.listdir(incidents))
            # The retained samples were held in memory while full, and written since.
            r = retention_metrics(agent)
            assert r["no_space"] > 0 and r["write_error"] > 0, r
            wait_until(lambda: retention_metrics(agent)["failing"] == 0, what="retention writing again")
            # Read-only: the finding closes in memory; the closing cannot be written.
            failed_before = state_metrics(agent)["failed"]
            fs.bind_read_only()
            mode.write_text("0")
            wait_until(lambda: not open_findings(agent), timeout=30, what="finding closed")
            wait_until(lambda: state_metrics(agent)["failing"] == 1 and state_metrics(agent)["failed"] > failed_before,
                       timeout=10, what="read-only reported")
            assert "Read-only file system" in agent.logs()
            assert finding["id"] in saved_open_ids(state)  # the disk still says open
            time.sleep(1.1)
            post_alert(agent, "00000000000000a3")
            wait_until(lambda: state_metrics(agent)["snap_failed"] == 2, what="read-only snapshot failure")
            wait_until(lambda: (lambda r: r["failing"] == 1 and r["read_only"] > 0)(retention_metrics(agent)),
                       what="retention's read-only failure reported")
            assert agent.alive()
            fs.unbind()
            wait_until(lambda: finding["id"] not in saved_open_ids(state), timeout=10, what="closing written")
            wait_until(lambda: state_metrics(agent)["failing"] == 0, what="recovered again")
            wait_until(lambda: (lambda r: r["failing"] == 0 and r["unwritten"] == 0)(retention_metrics(agent)),
                       what="retention recovered again")
            # Through both faults, every row the producer wrote is counted: read or dropped by cause.
            producer.send_signal(signal.SIGTERM)
            written = int(producer.communicate(timeout=10)[0].split()[-1])
            def exact(m):
                t = tally(STATE_STREAM, m)
                return m if t["writes"] == written and \
                    t["records"] + t["sampled_out"] + sum(t["dropped"].values()) == written else None
            m = wait_until(lambda: exact(agent.metrics()), timeout=15, what="exact counts")
            assert tally(STATE_STREAM, m)["invalid"] == 0
            # What was written is what a restarted agent starts from: nothing open.
            agent.proc.kill()
            agent.proc.wait(timeout=10)
            agent.process.stop()
            agent.start()
            assert open_findings(agent) == []
            assert state_metrics(agent)["failing"] == 0
        finally:
            if producer and producer.poll() is None:
                producer.send_signal(signal.SIGTERM)
                producer.wait(timeout=10)
            agent.stop()


# ---- 6. the retained samples (agent/retention) on a full, then read-only state directory ----------

RET_CONFIG = """
agent:
  checkpoint_interval: 100ms
ingest:
  dead_producer_grace: 100ms
  closed_segment_grace: 100ms
retention:
  bucket: 1s
"""
RET_FEATURES = 4


def retention_metrics(agent):
    m = agent.metrics()
    return {"failing": m.get("mltap_retention_write_failing"),
            "unwritten": m.get("mltap_retention_unwritten_bytes"),
            "no_space": m.get("mltap_retention_write_failures_total", 0, error="no_space"),
            "read_only": m.get("mltap_retention_write_failures_total", 0, error="read_only"),
            "write_error": m.get("mltap_retention_dropped_total", 0, cause="write_error"),
            "torn": m.get("mltap_retention_torn_bytes_total"),
            "records": m.sum("mltap_retention_records"), "bytes": m.sum("mltap_retention_bytes")}


def retention_producer(agent, name, rows, rate, tmp_path):
    """The C++ test producer with trace ids (id = row, feature f = row % 1000 + f / 2)."""
    return subprocess.Popen([binary(TEST_PRODUCER), "--name", name, "--rows", str(rows), "--rate", str(rate),
                             "--batch", "20", "--features", str(RET_FEATURES), "--trace-ids", "--lanes", "1",
                             "--ring", str(1 << 20), "--ready-line"],
                            env=agent.env(), stdout=subprocess.PIPE, text=True)


def producer_done(p):
    out = p.communicate(timeout=60)[0].strip().splitlines()
    assert p.returncode == 0, out
    return json.loads(out[-1])


def exact_counts(agent, stream, out):
    """writes = read + sampled out + dropped by cause, and the producer's own count, exactly."""
    def settled(m):
        t = tally(stream, m)
        return m if t["writes"] == out["rows_committed"] and \
            t["records"] + t["sampled_out"] + sum(t["dropped"].values()) == t["writes"] else None
    m = wait_until(lambda: settled(agent.metrics()), timeout=15, what=f"exact counts of {stream}")
    assert tally(stream, m)["invalid"] == 0
    return tally(stream, m)


def traced(agent, trace_id):
    """`mltap trace ID --json`: {stream: values} (empty when nothing is retained)."""
    r = subprocess.run([binary("agent/cli/mltap"), "trace", str(int(trace_id)), "--json"], env=agent.env(),
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        assert "no retained record" in r.stderr, r.stderr
        return {}
    return {rec["stream"]: rec["values"] for rec in json.loads(r.stdout)["records"]}


def expect_row(agent, stream, trace_id):
    trace_id = int(trace_id)
    got = traced(agent, trace_id).get(stream)
    assert got == {f"f{f}": trace_id % 1000 + 0.5 * f for f in range(RET_FEATURES)}, (trace_id, got)


def test_retained_samples_on_a_full_then_read_only_state_directory(tmp_path):
    with Tmpfs("8m", mode="0700") as fs:
        state = os.path.join(fs.dir, "state")
        agent = Agent(RET_CONFIG, extra_args=["--state-dir", state])
        p1 = p2 = None
        try:
            agent.start()
            # Room first: rows go to their bucket files.
            p1 = retention_producer(agent, "fault/ret1", rows=60_000, rate=6000, tmp_path=tmp_path)
            assert p1.stdout.readline().startswith("READY")
            wait_until(lambda: retention_metrics(agent)["records"] > 3000, timeout=15, what="rows retained")
            assert retention_metrics(agent)["failing"] == 0
            # Full: ingest and counting go on; retained rows are held in memory, counted, logged once.
            filler = fs.fill(leave=0)
            wait_until(lambda: (lambda r: r["failing"] == 1 and r["no_space"] > 0 and r["write_error"] > 1000
                                and r["unwritten"] > 0)(retention_metrics(agent)), timeout=15,
                       what="full disk reported by the retention store")
            assert agent.alive()
            assert agent.logs().count("retention: cannot write") == 1, agent.logs()[-3000:]
            failures = retention_metrics(agent)["no_space"]
            time.sleep(1.5)
            # At most one failed retry a second plus one per new (1 s) bucket, not one per row.
            assert retention_metrics(agent)["no_space"] - failures <= 6
            # Trace answers from memory meanwhile.
            read = tally("fault/ret1", agent.metrics())["records"]
            expect_row(agent, "fault/ret1", read - 100)
            # Space returns: what the files lack is written, rows go to their files again.
            os.unlink(filler)
            wait_until(lambda: (lambda r: r["failing"] == 0 and r["unwritten"] == 0)(retention_metrics(agent)),
                       timeout=10, what="retention writing again")
            assert "retention: writing to" in agent.logs() and "works again" in agent.logs()
            on_disk = int(tally("fault/ret1", agent.metrics())["records"]) - 100  # every id below is written
            held = retention_metrics(agent)["write_error"]
            wait_until(lambda: tally("fault/ret1", agent.metrics())["records"] > on_disk + 3000, timeout=15,
                       what="more rows")
            r = retention_metrics(agent)
            assert r["failing"] == 0 and r["write_error"] == held  # rows since went straight to disk
            # Full again, till the producer is done: its counts are exact all the same.
            filler = fs.fill(leave=0)
            out1 = producer_done(p1)
            t1 = exact_counts(agent, "fault/ret1", out1)
            assert t1["records"] == out1["rows_committed"] == 60_000  # nothing dropped, nothing sampled
            wait_until(lambda: retention_metrics(agent)["failing"] == 1, what="full again")
            assert agent.logs().count("retention: cannot write") == 2  # once per episode
            expect_row(agent, "fault/ret1", 59_999)  # from memory
            # kill -9 on the full disk, space freed, a restart on the same directory: it loads what
            # is there (cutting a torn tail, if any) and trace answers from it.
            agent.proc.kill()
            agent.proc.wait(timeout=10)
            agent.process.stop()
            os.unlink(filler)
            agent.start()
            r = retention_metrics(agent)
            assert r["failing"] == 0 and r["records"] >= on_disk, (r, on_disk)
            for trace_id in (0, on_disk // 2, on_disk - 1):
                expect_row(agent, "fault/ret1", trace_id)

            # Read-only (a bind mount over the state directory): the same, with EROFS.
            p2 = retention_producer(agent, "fault/ret2", rows=30_000, rate=6000, tmp_path=tmp_path)
            assert p2.stdout.readline().startswith("READY")
            wait_until(lambda: retention_metrics(agent)["records"] > r["records"] + 3000, timeout=15,
                       what="rows of the second producer retained")
            bind_read_only(state)
            try:
                wait_until(lambda: (lambda m: m["failing"] == 1 and m["read_only"] > 0 and m["unwritten"] > 0)(
                    retention_metrics(agent)), timeout=15, what="read-only reported by the retention store")
                assert any("retention: cannot write" in line and "Read-only file system" in line
                           for line in agent.logs().splitlines()), agent.logs()[-3000:]
                assert agent.alive()
                read = tally("fault/ret2", agent.metrics())["records"]
                expect_row(agent, "fault/ret2", read - 100)
            finally:
                subprocess.run(["umount", state], check=True)
            wait_until(lambda: (lambda m: m["failing"] == 0 and m["unwritten"] == 0)(retention_metrics(agent)),
                       timeout=10, what="retention writing after the read-only mount is gone")
            out2 = producer_done(p2)
            t2 = exact_counts(agent, "fault/ret2", out2)
            assert t2["records"] == 30_000
            wait_until(lambda: retention_metrics(agent)["unwritten"] == 0, what="everything written")
            # What a clean restart finds: every row of the second producer.
            agent.process.stop()
            agent.start()
            for trace_id in (0, 15_000, 29_999):
                expect_row(agent, "fault/ret2", trace_id)
            assert retention_metrics(agent)["torn"] == 0
            print("\nretention faults:", json.dumps({"held_while_full": held, "ret1_on_disk_after_kill": on_disk,
                                                     "torn_after_kill": r["torn"],
                                                     "final": retention_metrics(agent)}))
        finally:
            for p in (p1, p2):
                if p and p.poll() is None:
                    p.kill()
                    p.wait(timeout=10)
            agent.stop()
