"""The cascade of issue 12, with real processes, mltapd's eBPF tracer and fanotify (root): two
replicas serve predictions from a declared model file; a deployment (a script, another process)
replaces the file, the replicas reload it and a prediction-drift finding opens; seconds later one
replica is killed with SIGKILL. `mltap explain` must rank the deployment first, among the events
before the finding's onset, and list the kill (the signal and the exit) after the onset.

What is simulated: the kill. A real OOM kill needs a memory cgroup limit this test does not set up;
the SIGKILL is sent by the test process, as the OOM killer would send it, and the tracer observes
the same signal and exit events (the oom_kill event itself is covered by tests/ebpf's tracer
tests). Everything else is real: processes, rings, the rename seen by fanotify, eBPF events.

Environment (set by tests/ebpf/CMakeLists.txt): MLTAP_BUILD_DIR, PYTHONPATH=<build>/python.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))
from mltap_harness import MLTAP_CLI, Agent, binary, wait_until  # noqa: E402

PYTHON = "/usr/bin/python3"
REPLICA = os.path.join(os.path.dirname(__file__), "cascade_replica.py")
STREAM = "cascade/predictions"

# Small windows: two replicas at 1000 predictions/s each pin in 2 s and close a window per 0.75 s.
FAST_DETECTORS = """
detectors:
  pin_records: 4000
  window_records: 1500
  min_window_records: 500
  window_seconds: 0s
"""

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the eBPF tracer needs root")


def explain(agent, *extra):
    out = subprocess.run([binary(MLTAP_CLI), "explain", STREAM, "--agent", agent.url, *extra],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_deployment_ranks_first_and_the_kill_is_listed_after_the_onset():
    workdir = tempfile.mkdtemp(prefix="mltap-cascade-")
    # A model-named file (ebpf.files.patterns: *.bin, ...); its content is JSON for simplicity.
    model = os.path.join(workdir, "model.bin")
    with open(model, "w") as f:
        json.dump({"bias": 0.0}, f)
    replicas = []
    with Agent(FAST_DETECTORS + f"ingest:\n  artifact_dirs: [{workdir}]\n") as agent:
        try:
            env = agent.env()
            env["PYTHONPATH"] = os.path.join(os.environ["MLTAP_BUILD_DIR"], "python")
            for seed in (1, 2):
                replicas.append(subprocess.Popen([PYTHON, REPLICA, model, str(seed)], env=env,
                                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            wait_until(lambda: agent.metrics().get("mltap_ebpf_probe_up", probe="file_watch") == 1,
                       timeout=30, what="file_watch up on the model directory")
            wait_until(lambda: agent.metrics().get("mltap_stream_reference_info", source="pinned", stream=STREAM) == 1,
                       timeout=30, what="the reference pinned")
            time.sleep(3)  # a few clean windows

            # The deployment: another program renames a new model onto the served file.
            staged = os.path.join(workdir, ".model.bin.new")
            with open(staged, "w") as f:
                json.dump({"bias": 1.5}, f)
            deployed = time.time_ns()
            # A deploy script that renames and lives on a moment: fanotify reports only a pid, and
            # the actor's name is read from /proc while it lives (a bare `mv` is often gone by
            # then, and the event shows no name; the ranking does not depend on it).
            deployer = subprocess.Popen(
                ["/usr/bin/python3", "-c",
                 "import os, sys, time; os.rename(sys.argv[1], sys.argv[2]); time.sleep(3)", staged, model])

            def drift():
                fs = json.loads(agent.get("/api/v1/findings"))
                return [f for f in fs["open"] if f["stream"] == STREAM and f["kind"] == "prediction_drift"]

            finding = wait_until(drift, timeout=30, interval=0.25, what="a prediction-drift finding")[0]
            assert finding["onset_unix_ns"] <= finding["opened_unix_ns"], finding
            assert finding["onset_unix_ns"] >= deployed - 3_000_000_000, (finding, deployed)
            time.sleep(3)
            victim = replicas[1]
            assert victim.poll() is None, victim.stdout.read()
            victim.send_signal(signal.SIGKILL)  # as the OOM killer would
            killed = time.time_ns()
            victim.wait(timeout=10)
            assert killed > finding["opened_unix_ns"]

            def report_with_the_kill():
                r = json.loads(explain(agent, "--json"))
                for f in r["findings"]:
                    if f["id"] != finding["id"]:
                        continue
                    if any(e["kind"] == "exit" and e["subject"]["pid"] == victim.pid for e in f["related"]):
                        return f
                return None

            f = wait_until(report_with_the_kill, timeout=20, interval=0.5, what="the kill among the related events")
            related = f["related"]
            first = related[0]
            assert first["kind"] == "file_change", related
            assert first["path"] == model, first
            assert first["file_op"] == "renamed_onto", first
            assert first["subject"]["comm"] == "python3", first
            deployer.wait()
            assert not first["after_onset"], first
            # Candidate causes first, then everything after the onset; the kill is among the latter.
            flags = [e["after_onset"] for e in related]
            assert flags == sorted(flags), related
            kill_events = [e for e in related if e["subject"]["pid"] == victim.pid and
                           (e["kind"] == "exit" or (e["kind"] == "signal" and e.get("signal") == 9))]
            assert any(e["kind"] == "exit" for e in kill_events), related
            assert all(e["after_onset"] for e in kill_events), kill_events
            assert related.index(first) < min(related.index(e) for e in kill_events)

            text = explain(agent)
            causes = text.index("Possible causes, before the onset, most plausible first:")
            first_line = text[causes:].split("\n")[1]
            assert first_line.startswith("       1. ") and f"model file {model} replaced" in first_line, text
            after = text.index("After the onset (consequences or coincidences, oldest first):", causes)
            assert text.index(f"(pid {victim.pid}) was killed by SIGKILL", after) > after, text
            print(text)
        finally:
            for p in replicas:
                if p.poll() is None:
                    p.terminate()
                    p.wait(timeout=30)
            shutil.rmtree(workdir, ignore_errors=True)
