"""Real producer processes and a real mltapd: exact counts and statistics scraped from /metrics,
several producers of one stream, SIGKILL mid-stream, restarts, corrupted segments, truncation."""
import os
import random
import signal
import struct
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))
from mltap_harness import MLTAP_CLI, MLTAPD, Agent, Producer, binary, wait_until  # noqa: E402

FAST = """
ingest:
  dead_producer_grace: 1s
  closed_segment_grace: 200ms
"""


def records(agent, stream):
    return agent.metrics().get("mltap_stream_records_total", 0, stream=stream)


def test_exact_counts_and_first_statistics():
    with Agent(FAST) as agent:
        out = Producer(agent, name="it/exact", rows=20000, features=8, nan_every=100, inf_every=1000,
                       ring=4 << 20, rate=20000).run()
        assert out["rows_written"] == 20000
        m = wait_until(lambda: (lambda m: m if m.get("mltap_stream_records_total", 0, stream="it/exact") == 20000 and
                                m.get("mltap_stream_writes_total", 0, stream="it/exact") == 20000 else None)(agent.metrics()),
                       what="all rows read")
        for reason in ("overwritten", "too_large", "no_lane", "bad_input"):
            assert m.get("mltap_stream_dropped_records_total", stream="it/exact", reason=reason) == 0
        assert m.get("mltap_stream_sampled_out_records_total", stream="it/exact") == 0
        assert m.get("mltap_feature_values_total", stream="it/exact", feature="f0") == 20000
        assert m.get("mltap_feature_nonfinite_total", stream="it/exact", feature="f0", kind="nan") == 200
        assert m.get("mltap_feature_nonfinite_total", stream="it/exact", feature="f1", kind="inf") == 20
        assert m.get("mltap_feature_nonfinite_total", stream="it/exact", feature="f2", kind="nan") == 0
        # f3 = r % 1000 + 1.5 over 20 full cycles of r.
        assert m.get("mltap_feature_mean", stream="it/exact", feature="f3") == pytest.approx(499.5 + 1.5, rel=1e-9)
        assert m.get("mltap_feature_min", stream="it/exact", feature="f3") == 1.5
        assert m.get("mltap_feature_max", stream="it/exact", feature="f3") == 999 + 1.5
        assert m.get("mltap_feature_variance", stream="it/exact", feature="f3") == pytest.approx((1000 ** 2 - 1) / 12, rel=1e-9)
        # f0 without its NaNs (rows 0, 100, 200, ... are NaN, i.e. r % 1000 in {0,100,...,900}).
        kept = [r % 1000 for r in range(20000) if r % 100 != 0]
        assert m.get("mltap_feature_mean", stream="it/exact", feature="f0") == pytest.approx(sum(kept) / len(kept), rel=1e-9)
        # f1's +Inf rows are excluded from the window statistics too.
        assert m.get("mltap_feature_max", stream="it/exact", feature="f1") == 999.5


def test_several_processes_and_threads_are_one_stream():
    with Agent(FAST) as agent:
        procs = [Producer(agent, name="it/shared", component="worker", rows=5000, threads=3, rate=10000,
                          hold_seconds=2).start() for _ in range(3)]
        results = [p.result() for p in procs]
        assert all(r["rows_written"] == 15000 for r in results)
        wait_until(lambda: records(agent, "it/shared") == 45000, what="45000 rows")
        s = agent.stream("it/shared")
        assert len(s["producers"]) == 3
        assert {p["pid"] for p in s["producers"]} == {r["pid"] for r in results}
        assert all(p["rows_written"] == 15000 and p["state"] == "alive" for p in s["producers"])
        assert all(p["lanes_used"] == 3 for p in s["producers"])
        m = agent.metrics()
        assert m.get("mltap_stream_writes_total", stream="it/shared") == 45000
        assert m.get("mltap_stream_producers", stream="it/shared") == 3
        # mltap status shows each producer.
        out = subprocess.run([binary(MLTAP_CLI), "status", "--agent", agent.url], capture_output=True, text=True, check=True).stdout
        for r in results:
            assert str(r["pid"]) in out
        # ... and what each stream's reference can decide (docs/detectors.md, noise floor).
        assert "it/shared  detectors: reference" in out, out
        for p in procs:
            p.wait()


def test_sigkill_mid_stream_keeps_the_agent_serving_and_cleans_up():
    with Agent(FAST) as agent:
        healthy = Producer(agent, name="it/healthy", rows=100000, rate=2000, hold=True).start()
        victim = Producer(agent, name="it/victim", rows=10 ** 9, rate=50000).start()
        wait_until(lambda: records(agent, "it/victim") > 5000, what="victim writing")
        victim.kill(signal.SIGKILL)
        assert os.path.exists(victim.segment)
        wait_until(lambda: (agent.stream("it/victim") or {}).get("producers", [{}])[0].get("state") == "dead",
                   what="victim seen dead")
        wait_until(lambda: not os.path.exists(victim.segment), timeout=10, what="segment removed after grace")
        m = wait_until(lambda: (lambda m: m if m.get("mltap_segments_removed_total", reason="producer_dead") == 1 else None)(agent.metrics()),
                       what="removal counted")
        assert m.get("mltap_stream_producers", stream="it/victim") == 0
        # Everything the victim committed was read or counted as lost; nothing invented.
        writes = m.get("mltap_stream_writes_total", stream="it/victim")
        got = m.get("mltap_stream_records_total", stream="it/victim")
        lost = m.get("mltap_stream_dropped_records_total", stream="it/victim", reason="overwritten")
        assert got > 0 and got + lost == writes
        assert agent.alive()
        assert records(agent, "it/healthy") > 0
        healthy.kill()


def test_restarted_producer_is_picked_up_without_restarting_the_agent():
    with Agent(FAST) as agent:
        first = Producer(agent, name="it/restart", rows=10 ** 9, rate=1000).start()
        wait_until(lambda: records(agent, "it/restart") > 100, what="first producer")
        first.kill()
        wait_until(lambda: agent.metrics().get("mltap_stream_producers", stream="it/restart") == 0, what="seen dead")
        second = Producer(agent, name="it/restart", rows=500, rate=5000, hold=True).start()
        wait_until(lambda: agent.metrics().get("mltap_stream_producers", stream="it/restart") == 1, what="second seen")
        before = records(agent, "it/restart")
        wait_until(lambda: records(agent, "it/restart") >= before + 1, what="second's rows")
        assert agent.metrics().get("mltap_stream_producer_restarts_total", stream="it/restart") == 1
        second.kill()


def write_garbage(agent, name, data):
    path = os.path.join(agent.shm_dir, f"mltap.{agent.namespace}.{name}")
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_corrupted_segments_cost_a_counter_not_the_healthy_streams():
    with Agent(FAST + "ingest:\n  max_segment_bytes: 64MiB\n") as agent:
        rng = random.Random(5)
        header_ok = None
        p = Producer(agent, name="it/ok", rows=30000, features=4, rate=30000, hold=True).start()
        # A copy of a real header with absurd sizes, wrong magic, truncated, random bytes.
        with open(p.segment, "rb") as f:
            header_ok = bytearray(f.read(3 * 4096))
        wrong_magic = bytearray(header_ok)
        wrong_magic[0:8] = b"NOTMLTAP"
        absurd = bytearray(header_ok)
        struct.pack_into("<Q", absurd, 24, 1 << 60)  # segment_bytes
        paths = [
            write_garbage(agent, "900001.0", bytes(rng.getrandbits(8) for _ in range(65536))),
            write_garbage(agent, "900002.0", bytes(header_ok[:100])),
            write_garbage(agent, "900003.0", bytes(wrong_magic)),
            write_garbage(agent, "900004.0", bytes(absurd)),
        ]
        big = os.path.join(agent.shm_dir, f"mltap.{agent.namespace}.900005.0")
        with open(big, "wb") as f:
            f.truncate(128 << 20)  # over max_segment_bytes
        paths.append(big)
        try:
            p.result()
            wait_until(lambda: records(agent, "it/ok") == 30000, what="healthy stream complete")
            m = wait_until(lambda: (lambda m: m if m.sum("mltap_segments_rejected_total") >= 5 else None)(agent.metrics()),
                           what="garbage rejected")
            assert m.get("mltap_segments_rejected_total", reason="bad_magic") == 2
            assert m.get("mltap_segments_rejected_total", reason="too_small") == 1  # 100-byte header
            assert m.get("mltap_segments_rejected_total", reason="bad_layout") == 1  # absurd size
            assert m.get("mltap_segments_rejected_total", reason="too_large") == 1
            assert m.get("mltap_stream_writes_total", stream="it/ok") == 30000
            assert m.get("mltap_feature_values_total", stream="it/ok", feature="f2") == 30000
            assert agent.alive()
            # Rejected files are not re-read on every scan: the count stays put.
            time.sleep(0.5)
            assert agent.metrics().sum("mltap_segments_rejected_total") == m.sum("mltap_segments_rejected_total")
            assert agent.logs().count("refused") == 5
        finally:
            for path in paths:
                os.unlink(path)
            p.kill()


def test_a_segment_truncated_under_the_agent_is_dropped_others_keep_flowing():
    with Agent(FAST) as agent:
        a = Producer(agent, name="it/a", rows=10 ** 9, rate=2000).start()
        b = Producer(agent, name="it/b", rows=10 ** 9, rate=2000).start()
        wait_until(lambda: records(agent, "it/a") > 100 and records(agent, "it/b") > 100, what="both flowing")
        os.truncate(b.segment, 0)  # what a hostile or broken producer could do
        wait_until(lambda: agent.metrics().get("mltap_segments_rejected_total", 0, reason="truncated") >= 1,
                   what="truncation noticed")
        before = records(agent, "it/a")
        wait_until(lambda: records(agent, "it/a") > before + 200, what="stream a still flowing")
        assert agent.alive()
        a.kill()
        b.kill()


def test_sampling_and_overwrite_losses_are_exact():
    with Agent(FAST) as agent:
        out = Producer(agent, name="it/sampled", rows=200000, features=4, budget=2000).run()
        assert out["rows_sampled_out"] > 100000
        burst = Producer(agent, name="it/burst", rows=300000, features=4, ring=65536, batch=1).run()
        def settled():
            m = agent.metrics()
            ok = all(m.get("mltap_stream_writes_total", 0, stream=s) == n for s, n in (("it/sampled", 200000), ("it/burst", 300000)))
            return m if ok and m.get("mltap_segments", 0, state="active") == 0 else None
        m = wait_until(settled, timeout=15, what="both producers closed and drained")
        s_rec = m.get("mltap_stream_records_total", stream="it/sampled")
        s_out = m.get("mltap_stream_sampled_out_records_total", stream="it/sampled")
        assert s_out == out["rows_sampled_out"]
        assert s_rec + s_out + m.sum("mltap_stream_dropped_records_total", stream="it/sampled") == 200000
        b_rec = m.get("mltap_stream_records_total", stream="it/burst")
        b_lost = m.get("mltap_stream_dropped_records_total", stream="it/burst", reason="overwritten")
        assert b_lost > 0, "a 64 KiB ring cannot hold a 300000-row burst"
        assert b_rec + b_lost == 300000 == burst["rows_committed"]


def test_check_config_reports_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent:\n  listen: 127.0.0.1:9645\ningest:\n  scan_interval: 5 parsecs\n  colour: blue\n")
    r = subprocess.run([binary(MLTAPD), "--check-config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1
    assert f"{bad}:4:18:" in r.stderr and "scan_interval" in r.stderr
    bad.write_text("ingest:\n  colour: blue\n")
    r = subprocess.run([binary(MLTAPD), "--check-config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and f"{bad}:2:3: unknown key 'colour' in 'ingest'" in r.stderr
    bad.write_text("ingest: [unclosed\n")
    r = subprocess.run([binary(MLTAPD), "--check-config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and str(bad) + ":" in r.stderr
    good = tmp_path / "good.yaml"
    good.write_text("agent:\n  listen: 127.0.0.1:9999\n")
    r = subprocess.run([binary(MLTAPD), "--check-config", str(good)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # Bad flags are refused with a message, not a crash.
    r = subprocess.run([binary(MLTAPD), "--namespace", "Bad NS"], capture_output=True, text=True)
    assert r.returncode == 2 and "--namespace" in r.stderr
    r = subprocess.run([binary(MLTAPD), "--listen", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and "--listen" in r.stderr
