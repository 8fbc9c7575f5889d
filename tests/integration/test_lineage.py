"""Lineage by trace id with real processes: Python SDK producers for cleaning -> features ->
model, and a feedback job writing labels, all with trace ids; mltapd retains their rows. One
upstream feature ("amount" of lin/features) gets a unit bug (x1000) for some ids after the
detectors pinned their reference; the model is wrong for exactly those. `mltap review` must rank
that feature of that stream first, with AUCs equal to scikit-learn's on the same values;
`mltap trace ID` shows the id's record in every component; `mltap flag` needs the webhook token;
everything retained survives a kill -9 of mltapd."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))
from mltap_harness import Agent, binary, http_json, wait_until  # noqa: E402

N = 4000
CLEAN_ROWS = 2000  # the detectors pin their reference from these; the bug starts after them

PRODUCER = r"""
import sys, numpy as np, mltap
n, clean = int(sys.argv[1]), int(sys.argv[2])
ids = np.arange(1, n + 1, dtype=np.uint64)
rng = np.random.default_rng(1)
age = rng.uniform(20, 60, n)
amount = rng.lognormal(3, 0.4, n)
tenure = rng.uniform(0, 10, n)
bugged = (ids > clean) & (ids % 25 == 0)
y = (age > 40).astype(np.float64)
streams = {
  "clean": mltap.Stream("lin/clean", component="cleaning", features=["raw_amount", "raw_age"],
                        sampling_budget=0, ring_bytes=1 << 22),
  "features": mltap.Stream("lin/features", component="features", features=["amount", "age", "tenure"],
                           sampling_budget=0, ring_bytes=1 << 22),
  "model": mltap.Stream("lin/pred", component="model", kind="predictions", features=["score"],
                        labels_stream="lin/labels", task="binary", sampling_budget=0, ring_bytes=1 << 22),
  "labels": mltap.Stream("lin/labels", component="feedback", kind="labels", features=["y"],
                         sampling_budget=0, ring_bytes=1 << 22),
}
feat_amount = np.where(bugged, amount * 1000, amount)  # cents where dollars were meant
score = np.where(bugged, 1 - y, y) * 0.8 + 0.1          # right unless the feature was broken
for i in range(0, n, 500):
    s = slice(i, i + 500)
    streams["clean"].write(np.stack([amount[s], age[s]], 1), trace_ids=ids[s])
    streams["features"].write(np.stack([feat_amount[s], age[s], tenure[s]], 1), trace_ids=ids[s])
    streams["model"].write(score[s].reshape(-1, 1), trace_ids=ids[s])
    streams["labels"].write(y[s].reshape(-1, 1), trace_ids=ids[s])
    if i + 500 == clean:
        print("PINNED?", flush=True)
        sys.stdin.readline()  # the test waits for the detectors' references first
np.save(sys.argv[3], np.stack([ids.astype(np.float64), amount, age, tenure, feat_amount, score, y], 1))
print("DONE", flush=True)
sys.stdin.readline()
"""


def config(state_dir, token):
    return f"""
agent:
  state_dir: {state_dir}
detectors:
  pin_records: {CLEAN_ROWS}
  window_records: 500
  min_window_records: 250
  window_seconds: 0
  staleness: {{enabled: false}}
  throughput: {{enabled: false}}
webhook:
  token_file: {token}
retention:
  bucket: 1m
"""


@pytest.fixture
def setup():
    work = tempfile.mkdtemp(prefix="mltap-lineage-")
    token = os.path.join(work, "token")
    with open(token, "w") as f:
        f.write("lineage-test-token-0123456789\n")
    os.chmod(token, 0o600)
    agent = Agent(config(os.path.join(work, "state"), token))
    yield agent, work, token
    agent.stop()
    subprocess.run(["rm", "-rf", work], check=False)


def retained(agent, stream):
    for s in http_json(agent.url + "/api/v1/retention")["streams"]:
        if s["stream"] == stream:
            return s["records"]
    return 0


def references_pinned(agent):
    doc = http_json(agent.url + "/api/v1/detectors")
    pinned = {s["name"] for s in doc.get("streams", []) if s["reference"]["source"] == "pinned"}
    return {"lin/clean", "lin/features"} <= pinned


def detector_references(agent, stream):
    """The detectors' reference mean of each feature of `stream`, once published (after a window)."""
    for s in http_json(agent.url + "/api/v1/detectors").get("streams", []):
        if s["name"] == stream:
            refs = {f["name"]: f.get("reference_mean") for f in s.get("features", [])}
            return refs if refs and all(v is not None for v in refs.values()) else None
    return None


def mltap(agent, *args, check=True):
    return subprocess.run([binary("agent/cli/mltap"), *args], env=agent.env(), capture_output=True,
                          text=True, check=check, timeout=30)


def test_review_ranks_the_broken_feature_and_trace_shows_every_component(setup):
    agent, work, token = setup
    agent.start()
    env = agent.env()
    env["PYTHONPATH"] = os.environ.get("MLTAP_PYTHONPATH", "")
    data_path = os.path.join(work, "data.npy")
    p = subprocess.Popen([sys.executable, "-c", PRODUCER, str(N), str(CLEAN_ROWS), data_path], env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "PINNED?"
        wait_until(lambda: references_pinned(agent), timeout=20, what="references pinned")
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "DONE"
        for s in ("lin/clean", "lin/features", "lin/pred", "lin/labels"):
            wait_until(lambda: retained(agent, s) == N, timeout=20, what=f"{N} rows of {s} retained")

        wait_until(lambda: detector_references(agent, "lin/features"), timeout=20,
                   what="the detectors' references published")
        ids, amount, age, tenure, feat_amount, score, y = np.load(data_path).T
        wrong = ((score >= 0.5) != (y != 0))
        assert wrong.sum() == ((ids > CLEAN_ROWS) & (ids % 25 == 0)).sum() > 50

        doc = json.loads(mltap(agent, "review", "lin/pred", "--json", "--since", "1h").stdout)
        assert doc["predictions"] == N and doc["labelled"] == N, doc
        assert doc["wrong"] == wrong.sum() and doc["correct"] == N - wrong.sum(), doc
        top = doc["streams"][0]
        assert top["stream"] == "lin/features" and top["features"][0]["feature"] == "amount", \
            json.dumps(doc, indent=1)[:3000]
        assert top["features"][0]["reference"]["source"] == "detectors (pinned)", top["features"][0]
        # ...the detectors' reference, pinned from the clean rows, not one the bug inflated.
        assert top["features"][0]["reference"]["mean"] == pytest.approx(
            detector_references(agent, "lin/features")["amount"], rel=1e-9)
        assert top["features"][0]["reference"]["mean"] < 2 * amount.mean()
        # The cleaning stream holds the same ids, but its raw amount is fine: ranked below.
        assert doc["streams"][1]["stream"] == "lin/clean"
        assert doc["streams"][1]["score"] < 0.75, doc["streams"][1]
        # Every feature's AUC against scikit-learn on the same values and the same reference.
        columns = {"lin/features": {"amount": feat_amount, "age": age, "tenure": tenure},
                   "lin/clean": {"raw_amount": amount, "raw_age": age}}
        for s in doc["streams"]:
            for f in s["features"]:
                ref = f["reference"]
                z = np.abs(columns[s["stream"]][f["feature"]] - ref["mean"]) / ref["sd"]
                assert f["auc"] == pytest.approx(roc_auc_score(wrong, z), abs=1e-9), (s["stream"], f)
                assert f["wrong_mean_abs_z"] == pytest.approx(z[wrong].mean(), rel=1e-9)
        text = mltap(agent, "review", "lin/pred", "--since", "1h").stdout
        assert "lin/features" in text and "amount" in text and "why:" in text, text

        # trace: the id's record in every component, values as written.
        bad_id = int(ids[wrong][0])
        tr = json.loads(mltap(agent, "trace", str(bad_id), "--json").stdout)
        by_stream = {r["stream"]: r for r in tr["records"]}
        assert set(by_stream) == {"lin/clean", "lin/features", "lin/pred", "lin/labels"}, tr
        assert {r["component"] for r in tr["records"]} == {"cleaning", "features", "model", "feedback"}
        assert by_stream["lin/features"]["values"]["amount"] == pytest.approx(feat_amount[bad_id - 1], rel=1e-6)
        assert "lin/features" in mltap(agent, "trace", str(bad_id)).stdout
        missing = mltap(agent, "trace", str(10 * N), check=False)
        assert missing.returncode == 1 and "no retained record" in missing.stderr

        # backfill: a detectors configuration run over the retained rows finds the broken feature.
        bf_cfg = os.path.join(work, "backfill.yaml")
        with open(bf_cfg, "w") as f:
            f.write(f"detectors:\n  pin_records: {CLEAN_ROWS}\n  window_records: 500\n"
                    "  min_window_records: 250\n  window_seconds: 0\n")
        om = os.path.join(work, "backfill.om")
        bf = mltap(agent, "backfill", "lin/features", "--config", bf_cfg, "--since", "1h", "--json",
                   "--openmetrics", om, check=False)
        assert bf.returncode == 3, bf.stdout[-2000:] + bf.stderr
        bfd = json.loads(bf.stdout)
        assert bfd["rows"] == N and not bfd["truncated"], bfd
        assert len(bfd["windows"]) == (N - CLEAN_ROWS) // 500, bfd["windows"]
        # 4% of values x1000: out of the reference's range in every window (a quality finding).
        named = {t["feature"] for f in bfd["findings"] for t in f["top"]}
        assert named == {"amount"}, bfd["findings"]
        # ...and exported for Prometheus' own backfill: promtool turns the file into TSDB blocks.
        with open(om) as f:
            text = f.read()
        assert text.endswith("# EOF\n") and "mltap_backfill_feature_drift_ratio" in text, text[:2000]
        records = [l for l in text.splitlines() if l.startswith("mltap_backfill_window_records{")]
        assert len(records) == len(bfd["windows"]), records[:5]
        blocks = subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", om,
                                 os.path.join(work, "blocks")], capture_output=True, text=True, timeout=60)
        assert blocks.returncode == 0, blocks.stdout + blocks.stderr
        assert any(os.scandir(os.path.join(work, "blocks"))), "no block written"

        # flag: a state change, refused without the webhook token, counted as wrong with it.
        refused = mltap(agent, "flag", "lin/pred", "7", check=False)
        assert refused.returncode == 2 and "token" in refused.stderr, refused.stderr
        other = os.path.join(work, "wrong-token")
        with open(other, "w") as f:
            f.write("not-the-right-token-0123456789\n")
        refused = mltap(agent, "flag", "lin/pred", "7", "--token-file", other, check=False)
        assert refused.returncode == 2 and "403" in refused.stderr, refused.stderr
        assert "1 flagged" in mltap(agent, "flag", "lin/pred", "7", "--token-file", token).stdout
        doc = json.loads(mltap(agent, "review", "lin/pred", "--json").stdout)
        assert doc["flagged"] == 1 and doc["wrong"] == wrong.sum() + 1, doc

        m = agent.metrics()
        assert m.get("mltap_retention_records", stream="lin/features") == N
        assert m.get("mltap_retention_bytes", stream="lin/features") > N * 24
        assert m.get("mltap_retention_dropped_total", cause="stream_cap") == 0

        # kill -9: the retained rows and the flag are back after the restart.
        agent.process.proc.kill()
        agent.process.proc.wait(timeout=10)
        agent.process.stop()
        agent.start()
        tr = json.loads(mltap(agent, "trace", str(bad_id), "--json").stdout)
        assert len(tr["records"]) == 4, tr
        doc = json.loads(mltap(agent, "review", "lin/pred", "--json").stdout)
        assert doc["flagged"] == 1 and doc["predictions"] == N, doc
    finally:
        p.stdin.close()
        p.wait(timeout=10)
