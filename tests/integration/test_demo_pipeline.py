"""The demo pipeline (examples/demo/pipeline.py) does what the README says it shows: four real
processes (cleaning -> featuregen -> model, and a feedback process writing the labels late, some
never) into a real mltapd configured with examples/demo/slices.yaml (plus short windows):

  1. a concept shift in clinic 2 (its labels flip, inputs unchanged) opens a performance finding
     whose abnormality level is `concept_shift` and which names `slice:2`;
  2. `mltap status` shows the predictions stream's label coverage, realized accuracy and a
     label-free estimate with its band;
  3. after a unit bug in clinic 1 (mean_area x 10 from cleaning on), `mltap review` ranks
     mean_area first among the features of the wrong predictions.

The timeline is the demo's, compressed: concept shift 30-55 s, unit bug from 65 s.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import yaml
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))
from mltap_harness import MLTAP_CLI, Agent, binary, wait_until  # noqa: E402

SOURCE_DIR = os.path.join(os.path.dirname(__file__), "..", "..")
PIPELINE = os.path.join(SOURCE_DIR, "examples", "demo", "pipeline.py")
SLICES = os.path.join(SOURCE_DIR, "examples", "demo", "slices.yaml")

# slices.yaml, with windows short enough for a test: 5 s performance windows judged from 150
# labels, two reference windows; detector windows of 1,500 records.
EXTRA = """
detectors:
  pin_records: 4000
  window_records: 1500
  min_window_records: 500
  window_seconds: 0s
performance:
  window: 5s
  reference_pairs: 3000
  findings: {min_labels: 150, reference_windows: 2}
"""


def config():
    with open(SLICES) as f:
        cfg = yaml.safe_load(f)
    for section, values in yaml.safe_load(EXTRA).items():
        cfg.setdefault(section, {}).update(values)
    return yaml.safe_dump(cfg)


def mltap(agent, *args, check=True):
    out = subprocess.run([binary(MLTAP_CLI), *args, "--agent", agent.url], capture_output=True, text=True,
                         timeout=60)
    if check:
        assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out


def performance_findings(agent):
    doc = json.loads(agent.get("/api/v1/findings"))
    return [f for f in doc["open"] + doc["closed"] if f["kind"] == "performance"]


def test_demo_shows_concept_shift_by_slice_estimates_and_review_ranks_the_unit_bug():
    workdir = tempfile.mkdtemp(prefix="mltap-demo-test-")
    agent = Agent(config())
    agent.start()
    demo = None
    try:
        env = agent.env()
        env["PYTHONPATH"] = os.environ.get("MLTAP_PYTHONPATH", "")
        demo = subprocess.Popen(
            ["/usr/bin/python3", PIPELINE, "--workdir", workdir, "--slice-clinic", "--rate", "600",
             "--duration", "110", "--model-swap-at", "-1", "--nan-burst-at", "-1",
             "--concept-shift-at", "30", "--concept-shift-for", "25", "--unit-change-at", "65",
             "--label-lag", "1"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        t0 = time.monotonic()

        # 1. The concept shift: a performance finding, level concept_shift, naming clinic 2.
        def concept_shift():
            return [f for f in performance_findings(agent)
                    if f.get("reason") == "concept_shift" and any(t["feature"] == "slice:2" for t in f["top"])]
        found = wait_until(concept_shift, timeout=70, interval=1, what="a concept-shift finding on slice:2")
        assert time.monotonic() - t0 < 65, "found only after the unit bug began"
        assert found[0]["stream"] == "demo/predictions", found[0]

        # 2. mltap status: coverage, realized accuracy and the estimate with its band.
        def status_shows_estimate():
            text = mltap(agent, "status", "--stream", "demo/predictions").stdout
            return text if "estimated accuracy" in text else None
        text = wait_until(status_shows_estimate, timeout=30, interval=1, what="an estimate in mltap status")
        assert "coverage" in text and "accuracy" in text, text
        perf = json.loads(mltap(agent, "performance", "demo/predictions", "--json", "--since", "10m").stdout)
        assert perf["reference"]["fitted"], perf["reference"]
        clinics = {s["slice"] for w in perf["windows"] for s in w.get("slices", [])}
        assert {"0", "1", "2", "3"} <= clinics, clinics

        # 3. The unit bug: the wrong predictions since it began have mean_area out of line.
        time.sleep(max(0.0, 95 - (time.monotonic() - t0)))  # 30 s of the unit bug
        doc = json.loads(mltap(agent, "review", "demo/predictions", "--json", "--since", "25s").stdout)
        assert doc["wrong"] > 50, doc
        top = doc["streams"][0]
        assert top["stream"] in ("demo/clean", "demo/features"), json.dumps(doc, indent=1)[:3000]
        assert top["features"][0]["feature"] == "mean_area", json.dumps(doc, indent=1)[:3000]
        assert demo.poll() is None, demo.stdout.read()
    finally:
        if demo is not None:
            demo.terminate()
            try:
                demo.wait(timeout=30)
            except subprocess.TimeoutExpired:
                demo.kill()
        agent.stop()
        shutil.rmtree(workdir, ignore_errors=True)
