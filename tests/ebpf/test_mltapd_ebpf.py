"""mltapd with its eBPF tracer, end to end (root): the demo pipeline's model swap is found by the
detectors and `mltap explain` names the model file replacement as the most likely cause; and
mltapd started without the BPF capabilities still ingests rings and says which probes are down.

Environment (set by tests/ebpf/CMakeLists.txt): MLTAP_BUILD_DIR, PYTHONPATH=<build>/python,
MLTAP_SOURCE_DIR.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))
from mltap_harness import MLTAP_CLI, Agent, Producer, binary, wait_until  # noqa: E402

SOURCE_DIR = os.environ.get("MLTAP_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
PYTHON = "/usr/bin/python3"

# Small detector windows so that a swap 8 s in is found within seconds (defaults need minutes).
FAST_DETECTORS = """
detectors:
  pin_records: 4000
  window_records: 1500
  min_window_records: 500
  window_seconds: 0s
"""

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the eBPF tracer needs root")


def explain(agent, stream, *extra):
    out = subprocess.run([binary(MLTAP_CLI), "explain", stream, "--agent", agent.url, *extra],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_model_swap_is_named_as_the_cause_of_the_prediction_drift():
    workdir = tempfile.mkdtemp(prefix="mltap-ebpf-demo-")
    model_path = os.path.join(workdir, "model.joblib")
    # Declared artifacts are watched only under ingest.artifact_dirs (docs/security.md).
    with Agent(FAST_DETECTORS + f"ingest:\n  artifact_dirs: [{workdir}]\n") as agent:
        m = agent.metrics()
        for probe in ("exec", "exit", "signal", "oom_kill", "runqueue"):
            assert m.get("mltap_ebpf_probe_up", probe=probe) == 1, (probe, agent.logs())
        env = agent.env()
        env["PYTHONPATH"] = os.path.join(os.environ["MLTAP_BUILD_DIR"], "python")
        demo = subprocess.Popen(
            [PYTHON, os.path.join(SOURCE_DIR, "examples/demo/pipeline.py"), "--workdir", workdir,
             "--model-swap-at", "8", "--unit-change-at", "-1", "--nan-burst-at", "-1", "--duration", "90"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            # The declared artifact's directory is watched once the producer is seen.
            wait_until(lambda: agent.metrics().get("mltap_ebpf_probe_up", probe="file_watch") == 1,
                       timeout=30, what="file_watch up on the demo's model directory")
            def prediction_finding():
                fs = json.loads(agent.get("/api/v1/findings"))
                return [f for f in fs["open"] + fs["closed"] if f["stream"] == "demo/predictions"]

            found = wait_until(prediction_finding, timeout=60, interval=0.5, what="a finding on demo/predictions")
            assert demo.poll() is None, demo.stdout.read()
            report = json.loads(explain(agent, "demo/predictions", "--json"))
            assert report["findings"], report
            top = report["findings"][0]["related"][0]
            assert top["kind"] == "file_change", top
            assert top["path"] == model_path, top
            assert top["file_op"] == "renamed_onto", top
            assert top["subject"]["pid"] == demo.pid, top
            assert top["relation"] == "producer", top
            # The swap was made by the producer itself, before the finding.
            assert top["time_unix_ns"] <= found[0]["opened_unix_ns"], (top, found[0])
            text = explain(agent, "demo/predictions")
            assert f"model file {model_path} replaced" in text, text
            # The events are counted per component. The demo is one process writing two components'
            # streams: a process is counted under the component it was first tracked for.
            events = agent.metrics().series("mltap_ebpf_events_total")
            counted = sum(events.get(frozenset({("component", c), ("kind", "file_change")}), 0)
                          for c in ("featuregen", "model"))
            assert counted >= 1, events
        finally:
            demo.terminate()
            demo.wait(timeout=30)
            shutil.rmtree(workdir, ignore_errors=True)


def test_without_bpf_capabilities_mltapd_ingests_and_reports_probes_down():
    capsh = shutil.which("capsh") or "/usr/sbin/capsh"
    assert os.access(capsh, os.X_OK), "capsh (libcap2-bin) is needed"
    drop = ["cap_bpf", "cap_perfmon", "cap_sys_admin"]
    prefix = [capsh, f"--drop={','.join(drop)}", "--", "-c", 'exec "$0" "$@"']
    with Agent(prefix=prefix) as agent:
        # mltapd itself runs without them (the drop is inherited: checked in /proc).
        with open(f"/proc/{agent.proc.pid}/status") as f:
            eff = int(next(line for line in f if line.startswith("CapEff:")).split()[1], 16)
        assert not eff & (1 << 39), "CAP_BPF still effective"
        assert not eff & (1 << 38), "CAP_PERFMON still effective"
        assert not eff & (1 << 21), "CAP_SYS_ADMIN still effective"

        result = Producer(agent, name="caps/stream", rows=5000, features=4, rate=20000).run()
        assert result["rows_written"] == 5000, result

        def ingested():
            return agent.metrics().get("mltap_stream_records_total", 0, stream="caps/stream") == 5000

        wait_until(ingested, timeout=20, what="the records read without BPF capabilities")
        m = agent.metrics()
        for probe in ("exec", "fork", "exit", "signal", "oom_kill", "runqueue", "block_io",
                      "tcp_retransmit", "tcp_connect"):
            assert m.get("mltap_ebpf_probe_up", probe=probe) == 0, probe
        # Each down probe is logged once with the reason.
        logs = agent.logs()
        assert "missing CAP_BPF and CAP_PERFMON" in logs, logs
        assert agent.alive()
        # The events API still answers (empty timeline, no error).
        report = json.loads(agent.get("/api/v1/events?stream=caps/stream"))
        assert report["events"] == [], report


# One process writing two streams closes one: it stays traced for the other.
TWO_STREAMS = r"""
import subprocess, sys, time
import numpy as np
import mltap
a = mltap.Stream("two/a", component="c", features=["x"])
b = mltap.Stream("two/b", component="c", features=["x"])
a.write(np.array([1.0], dtype=np.float32)); b.write(np.array([1.0], dtype=np.float32))
print("OPEN", flush=True)
sys.stdin.readline()
a.close()
print("CLOSED", flush=True)
sys.stdin.readline()
subprocess.run(["/bin/sh", "-c", "exit 3"])
print("RAN", flush=True)
sys.stdin.readline()
"""


def test_closing_one_of_two_streams_keeps_the_process_traced():
    with Agent() as agent:
        env = agent.env()
        env["PYTHONPATH"] = os.path.join(os.environ["MLTAP_BUILD_DIR"], "python")
        p = subprocess.Popen([PYTHON, "-c", TWO_STREAMS], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        try:
            assert p.stdout.readline().strip() == "OPEN"

            def both_attached():
                names = {s["name"] for s in agent.streams()}
                return {"two/a", "two/b"} <= names

            wait_until(both_attached, timeout=10, what="both streams attached")
            p.stdin.write("\n")
            p.stdin.flush()
            assert p.stdout.readline().strip() == "CLOSED"
            wait_until(lambda: "closed its stream" in agent.logs(), timeout=10, what="the close seen")
            p.stdin.write("\n")
            p.stdin.flush()
            assert p.stdout.readline().strip() == "RAN"

            def child_exit_3():
                events = json.loads(agent.get("/api/v1/events?stream=two/b"))["events"]
                return [e for e in events if e["kind"] == "exit" and e.get("exit_code") == 3]

            wait_until(child_exit_3, timeout=10, what="the child's exit code 3 on the open stream")
            assert agent.metrics().get("mltap_ebpf_tracked_processes") >= 1
        finally:
            p.stdin.write("\n")
            p.stdin.flush()
            p.wait(timeout=10)
