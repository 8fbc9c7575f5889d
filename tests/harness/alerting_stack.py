#!/usr/bin/python3
"""Real Prometheus and Alertmanager on loopback, for mltap's alerting tests.

Everything lives in a temporary directory (configs, TSDB, Alertmanager storage, logs); ports are
picked free; processes are stopped (SIGTERM, then SIGKILL) when the Stack closes, also when the
test fails. Intervals are short so that a rule fires within seconds.

Library use (from a test run by /usr/bin/python3, with tests/harness on sys.path):

    import alerting_stack
    with alerting_stack.Stack() as stack:
        am = stack.start_alertmanager(webhook_url="http://127.0.0.1:9645/api/v1/alerts/webhook",
                                      bearer_token_file="/path/to/token")
        prom = stack.start_prometheus(targets=["127.0.0.1:9645"])   # shipped rules, for: 0s
        stack.wait_target_up()
        alert = stack.wait_prometheus_alert("MltapStreamDrift", state="firing", timeout=60)
        ...

Command line (manual runs; prints the URLs and waits for Ctrl-C):

    /usr/bin/python3 tests/harness/alerting_stack.py --target 127.0.0.1:9645 \
        --webhook-url http://127.0.0.1:9645/api/v1/alerts/webhook --token-file /etc/mltap/webhook.token

Helpers for tests that need no mltapd: MetricsServer (serves a settable exposition text as a fake
scrape target) and WebhookSink (records Alertmanager's notifications, checks a bearer token).
"""
import argparse
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import yaml

from mltap_harness import Process, free_port, http_json, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHIPPED_RULES = os.path.join(REPO, "packaging", "prometheus", "mltap.rules.yml")
PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


def _wait(predicate, timeout, what):
    # Prometheus and Alertmanager answer errors or partial documents while they start.
    return wait_until(predicate, timeout, interval=0.1, what=what, tolerate=(OSError, ValueError, KeyError))


class Stack:
    """Prometheus + Alertmanager in a temporary directory. Use as a context manager."""

    def __init__(self, keep=False):
        self.dir = tempfile.mkdtemp(prefix="mltap-alerting-")
        self.keep = keep or bool(os.environ.get("MLTAP_KEEP_HARNESS"))
        self.prometheus = None
        self.alertmanager = None
        self.prometheus_url = None
        self.alertmanager_url = None
        self.job = "mltapd"

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.dump_logs()
        self.stop(remove=exc_type is None and not self.keep)
        return False

    # -- Alertmanager ------------------------------------------------------------------------
    def start_alertmanager(self, webhook_url=None, bearer_token_file=None, group_wait="0s",
                           group_interval="1s", repeat_interval="1h", send_resolved=True,
                           max_alerts=1000, config=None):
        """Starts Alertmanager routing everything to webhook_url (if given) and returns its URL.

        `config` replaces the generated configuration entirely (a dict, written as YAML).
        """
        if config is None:
            receiver = {"name": "mltapd"}
            if webhook_url:
                hook = {"url": webhook_url, "send_resolved": send_resolved, "max_alerts": max_alerts}
                if bearer_token_file:
                    hook["http_config"] = {"authorization": {"type": "Bearer",
                                                             "credentials_file": bearer_token_file}}
                receiver["webhook_configs"] = [hook]
            config = {
                "route": {"receiver": "mltapd", "group_by": ["alertname", "stream"],
                          "group_wait": group_wait, "group_interval": group_interval,
                          "repeat_interval": repeat_interval},
                "receivers": [receiver],
            }
        path = os.path.join(self.dir, "alertmanager.yml")
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        for _ in range(3):
            port = free_port()
            proc = Process("alertmanager", [
                ALERTMANAGER, f"--config.file={path}",
                f"--storage.path={os.path.join(self.dir, 'alertmanager-data')}",
                f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                "--log.level=debug",
            ], os.path.join(self.dir, "alertmanager.log"), new_session=True)
            url = f"http://127.0.0.1:{port}"
            if self._wait_ready(proc, url):
                self.alertmanager, self.alertmanager_url = proc, url
                return url
            proc.stop(timeout=5)
        raise RuntimeError("Alertmanager did not start:\n" + proc.log())

    # -- Prometheus --------------------------------------------------------------------------
    def start_prometheus(self, targets, job="mltapd", rule_files=None, for_override="0s",
                         for_keep=("MltapAgentAbsent",), scrape_interval="1s",
                         evaluation_interval="1s", alertmanager_url=None, scrape_extra=None):
        """Starts Prometheus scraping `targets` (host:port) as `job`, with the shipped rules.

        for_override: every rule's `for:` becomes this duration (None keeps the shipped ones),
        except the rules named in for_keep (MltapAgentAbsent would fire before the first scrape).
        Alerts go to alertmanager_url, or to the Alertmanager this Stack started. scrape_extra:
        keys merged into the scrape job (e.g. a global Prometheus federating from another one:
        metrics_path /federate, params match[], honor_labels).
        """
        self.job = job
        rules_dir = os.path.join(self.dir, "rules")
        os.makedirs(rules_dir, exist_ok=True)
        written = []
        for src in rule_files or [SHIPPED_RULES]:
            with open(src) as f:
                doc = yaml.safe_load(f)
            if for_override is not None:
                for group in doc["groups"]:
                    for rule in group["rules"]:
                        if "alert" in rule and rule["alert"] not in for_keep:
                            rule["for"] = for_override
            dst = os.path.join(rules_dir, os.path.basename(src))
            with open(dst, "w") as f:
                yaml.safe_dump(doc, f, sort_keys=False)
            written.append(dst)
        am = alertmanager_url or self.alertmanager_url
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval,
                       "scrape_timeout": scrape_interval},
            "rule_files": written,
            "scrape_configs": [dict({"job_name": job, "static_configs": [{"targets": list(targets)}]},
                                    **(scrape_extra or {}))],
        }
        if am:
            config["alerting"] = {"alertmanagers": [{"static_configs": [
                {"targets": [am.split("://", 1)[1]]}]}]}
        path = os.path.join(self.dir, "prometheus.yml")
        with open(path, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
        check = subprocess.run(["promtool", "check", "config", path], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError("generated Prometheus config is invalid:\n" + check.stdout + check.stderr)
        for _ in range(3):
            port = free_port()
            proc = Process("prometheus", [
                PROMETHEUS, f"--config.file={path}",
                f"--storage.tsdb.path={os.path.join(self.dir, 'prometheus-data')}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--rules.alert.resend-delay=1s", "--log.level=info",
            ], os.path.join(self.dir, "prometheus.log"), new_session=True)
            url = f"http://127.0.0.1:{port}"
            if self._wait_ready(proc, url):
                self.prometheus, self.prometheus_url = proc, url
                if am:
                    # Prometheus's service discovery hands it the Alertmanager only after a few
                    # seconds; an alert firing before that would be sent late.
                    _wait(lambda: http_json(url + "/api/v1/alertmanagers")["data"]["activeAlertmanagers"],
                          30, what="Prometheus to discover Alertmanager")
                return url
            proc.stop(timeout=5)
        raise RuntimeError("Prometheus did not start:\n" + proc.log())

    # -- Queries -----------------------------------------------------------------------------
    def query(self, expr):
        """Instant query; returns the result list."""
        url = self.prometheus_url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        return http_json(url)["data"]["result"]

    def prometheus_alerts(self):
        """Alerts Prometheus holds (pending and firing)."""
        return http_json(self.prometheus_url + "/api/v1/alerts")["data"]["alerts"]

    def rules(self):
        groups = http_json(self.prometheus_url + "/api/v1/rules")["data"]["groups"]
        return [r for g in groups for r in g["rules"]]

    def alertmanager_alerts(self):
        """Active alerts in Alertmanager (resolved ones are not listed)."""
        return http_json(self.alertmanager_url + "/api/v2/alerts")

    def post_alertmanager_alerts(self, alerts):
        """POST /api/v2/alerts (what mltapd's direct push does)."""
        return http_json(self.alertmanager_url + "/api/v2/alerts", data=alerts, method="POST")

    def wait_target_up(self, timeout=30):
        return _wait(lambda: any(s["value"][1] == "1" for s in self.query(f'up{{job="{self.job}"}}')),
                     timeout, what=f"job {self.job} up")

    def wait_prometheus_alert(self, alertname, state="firing", labels=None, timeout=60):
        """Waits until Prometheus has `alertname` in `state` with `labels`; returns the alert."""
        def find():
            for a in self.prometheus_alerts():
                if a["labels"].get("alertname") == alertname and a["state"] == state and \
                        all(a["labels"].get(k) == v for k, v in (labels or {}).items()):
                    return a
            return None
        return _wait(find, timeout, what=f"{alertname} {state} in Prometheus")

    def wait_alertmanager_alert(self, alertname, labels=None, timeout=60, present=True):
        def find():
            hits = [a for a in self.alertmanager_alerts()
                    if a["labels"].get("alertname") == alertname and
                    all(a["labels"].get(k) == v for k, v in (labels or {}).items())]
            return (hits[0] if hits else None) if present else (not hits)
        return _wait(find, timeout, what=f"{alertname} {'in' if present else 'gone from'} Alertmanager")

    # -- Teardown ----------------------------------------------------------------------------
    def dump_logs(self, out=sys.stderr):
        for p in (self.prometheus, self.alertmanager):
            if p:
                print(f"----- {p.name} log ({p.log_path}) -----", file=out)
                print(p.log()[-8000:], file=out)

    def stop(self, remove=True):
        for p in (self.prometheus, self.alertmanager):
            if p:
                p.stop(timeout=5)
        self.prometheus = self.alertmanager = None
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"harness files kept in {self.dir}", file=sys.stderr)

    @staticmethod
    def _wait_ready(proc, url, timeout=30):
        def ready():
            if not proc.alive():
                return "dead"
            with urllib.request.urlopen(url + "/-/ready", timeout=1) as r:
                return "ready" if r.status == 200 else None
        try:
            return _wait(ready, timeout, what=f"{proc.name} ready") == "ready"
        except AssertionError:
            return False


class MetricsServer:
    """Serves `text` (Prometheus exposition format) on /metrics; set_text() changes it."""

    def __init__(self, text=""):
        self._text = text
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                with outer._lock:
                    body = outer._text.encode()
                self.send_response(200 if self.path.startswith("/metrics") else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def set_text(self, text):
        with self._lock:
            self._text = text

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class WebhookSink:
    """Records Alertmanager webhook notifications; answers 401/403 unless the token matches."""

    def __init__(self, token=None):
        self.notifications = []
        self.refused = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                auth = self.headers.get("Authorization", "")
                if token is not None and auth != f"Bearer {token}":
                    with outer._lock:
                        outer.refused += 1
                    self.send_response(401 if not auth else 403)
                    self.end_headers()
                    return
                with outer._lock:
                    outer.notifications.append((time.monotonic(), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/alerts/webhook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def find(self, alertname, status):
        """(time, alert, payload) of the first notification carrying alertname in status."""
        with self._lock:
            for t, payload in self.notifications:
                for a in payload["alerts"]:
                    if a["labels"].get("alertname") == alertname and a["status"] == status:
                        return t, a, payload
        return None

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", action="append", default=[], help="mltapd host:port to scrape (repeatable)")
    ap.add_argument("--job", default="mltapd")
    ap.add_argument("--webhook-url", help="where Alertmanager sends notifications")
    ap.add_argument("--token-file", help="bearer token file for the webhook")
    ap.add_argument("--for", dest="for_override", default="0s",
                    help="override every rule's for: (use 'keep' for the shipped durations)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    with Stack(keep=args.keep) as stack:
        am = stack.start_alertmanager(webhook_url=args.webhook_url, bearer_token_file=args.token_file)
        prom = stack.start_prometheus(targets=args.target or ["127.0.0.1:9645"], job=args.job,
                                      for_override=None if args.for_override == "keep" else args.for_override)
        print(f"Prometheus:   {prom}\nAlertmanager: {am}\nfiles:        {stack.dir}\nCtrl-C stops both.")
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
