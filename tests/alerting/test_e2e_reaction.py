"""End to end, every part real and on loopback: a producer's feature drifts; mltapd's detectors
open a finding; (a) Prometheus scrapes mltapd, the shipped rule fires, Alertmanager calls mltapd's
webhook, or (b) mltapd pushes the finding to Alertmanager itself, which calls the webhook; the
producer-flag reaction sets use_fallback and the producer process switches. Then the drift stops,
the alert resolves and the flag is cleared. Times from drift onset to the switch are printed and
written to <build>/e2e-reaction-times.json."""
import json
import os
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
import alerting_stack as alerting  # noqa: E402
from mltap_harness import Agent, BUILD_DIR, free_port, wait_until  # noqa: E402

PYTHONPATH = os.environ.get("MLTAP_PYTHONPATH", os.path.join(BUILD_DIR, "python"))
RESULTS = os.path.join(BUILD_DIR, "e2e-reaction-times.json")


def agent_config(token_file, extra=""):
    return f"""
detectors:
  pin_records: 2000
  window_records: 500
  window_seconds: 0s
  min_window_records: 250
  clear_windows: 2
webhook:
  token_file: {token_file}
reactions:
  actions:
    fallback:
      type: producer-flag
      matchers: ['alertname = "MltapStreamDrift"']
      flag: use_fallback
      value: 1
      cooldown: 1s
{extra}"""


class ProducerProcess:
    def __init__(self, agent, drift_after, duration):
        env = agent.env()
        env["PYTHONPATH"] = PYTHONPATH
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", os.path.join(HERE, "e2e_producer.py"), "--drift-after", str(drift_after),
             "--duration", str(duration)], env=env, stdout=subprocess.PIPE, text=True)
        self.events = []

    def wait_event(self, name, timeout):
        deadline = time.monotonic() + timeout
        for e in self.events:
            if e["event"] == name:
                return e
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            e = json.loads(line)
            self.events.append(e)
            if e["event"] == name:
                return e
        raise AssertionError(f"producer event {name!r} not seen in {timeout}s; saw {self.events}")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def record(path_name, times):
    data = {}
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            data = json.load(f)
    data[path_name] = times
    with open(RESULTS, "w") as f:
        json.dump(data, f, indent=2)
    print(f"\n{path_name}: " + ", ".join(f"{k}={v:.2f}s" for k, v in times.items()), flush=True)


@pytest.fixture
def token_file(tmp_path):
    p = tmp_path / "webhook.token"
    p.write_text("e2e-token-0123456789abcdef\n")
    os.chmod(p, 0o600)
    return str(p)


def test_prometheus_rule_alertmanager_webhook_flips_the_producer_flag(token_file):
    with Agent(agent_config(token_file)) as agent, alerting.Stack() as stack:
        stack.start_alertmanager(webhook_url=agent.url + "/api/v1/alerts/webhook", bearer_token_file=token_file)
        stack.start_prometheus(targets=[f"127.0.0.1:{agent.port}"])
        stack.wait_target_up()
        producer = ProducerProcess(agent, drift_after=4, duration=40)
        try:
            onset = producer.wait_event("drift_started", 30)["t"]
            switched = producer.wait_event("fallback_on", 40)["t"]
            finding = wait_until(lambda: [f for f in json.loads(agent.get("/api/v1/findings"))["open"] +
                                          json.loads(agent.get("/api/v1/findings"))["closed"]
                                          if f["kind"] == "drift"], what="drift finding")[0]
            opened = finding["opened_unix_ns"] / 1e9
            assert "x3" in [t["feature"] for t in finding["top"]], finding
            alert = stack.wait_prometheus_alert("MltapStreamDrift", labels={"stream": "e2e/features"})
            assert "x3" in alert["annotations"]["description"], alert
            m = agent.metrics()
            assert m.get("mltap_reactions_total", reaction="fallback", result="ok") >= 1
            # The feature is repaired: the finding clears, the alert resolves, the flag is cleared.
            repaired = producer.wait_event("drift_stopped", 30)["t"]
            off = producer.wait_event("fallback_off", 60)
            record("prometheus_path", {"onset_to_finding": opened - onset, "onset_to_switch": switched - onset,
                                       "repair_to_undo": off["t"] - repaired})
            assert switched - onset < 30
        finally:
            producer.stop()


def test_direct_push_alertmanager_webhook_flips_the_producer_flag(token_file):
    with alerting.Stack() as stack:
        # Alertmanager first (mltapd pushes to it), then mltapd (Alertmanager calls it back).
        port = free_port()
        stack.start_alertmanager(webhook_url=f"http://127.0.0.1:{port}/api/v1/alerts/webhook",
                                 bearer_token_file=token_file)
        extra = f"alertmanager:\n  url: {stack.alertmanager_url}\n  interval: 2s\n"
        with Agent(agent_config(token_file, extra), port=port) as agent:
            producer = ProducerProcess(agent, drift_after=4, duration=40)
            try:
                onset = producer.wait_event("drift_started", 30)["t"]
                switched = producer.wait_event("fallback_on", 40)["t"]
                alert = stack.wait_alertmanager_alert("MltapStreamDrift", labels={"stream": "e2e/features"})
                assert alert["annotations"].get("finding_url", "").startswith(agent.url + "/api/v1/findings/")
                m = agent.metrics()
                assert m.get("mltap_alertmanager_pushes_total", result="ok") >= 1
                repaired = producer.wait_event("drift_stopped", 30)["t"]
                off = producer.wait_event("fallback_off", 60)
                record("direct_push_path", {"onset_to_switch": switched - onset,
                                            "repair_to_undo": off["t"] - repaired})
                assert switched - onset < 20
            finally:
                producer.stop()
