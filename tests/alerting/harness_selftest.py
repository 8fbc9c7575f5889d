#!/usr/bin/python3
"""End to end through real Prometheus and Alertmanager with the shipped rules, no mltapd needed.

A fake scrape target exposes an open drift finding (mltapd's metric names, docs/metrics.md);
Prometheus scrapes it with the rules from packaging/prometheus (for: overridden to 0s), the rule
fires, Alertmanager sends a version-4 webhook with the bearer token to a recording sink. The
description must carry the top features, which Prometheus fills in with a query at evaluation
time. Then the finding closes and the resolved notification must follow. Prints the timings.
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
import alerting_stack  # noqa: E402
from mltap_harness import wait_until  # noqa: E402

TOKEN = "selftest-token-0123456789abcdef"

OPEN = """\
# TYPE mltap_stream_finding_active gauge
mltap_stream_finding_active{stream="fraud",component="scorer",kind="drift",severity="critical"} 1
# TYPE mltap_stream_finding_info gauge
mltap_stream_finding_info{stream="fraud",component="scorer",kind="drift",top_features="amount,age"} 1
# TYPE mltap_stream_producers gauge
mltap_stream_producers{stream="fraud",component="scorer"} 1
"""
CLOSED = """\
# TYPE mltap_stream_finding_active gauge
mltap_stream_finding_active{stream="fraud",component="scorer",kind="drift",severity="critical"} 0
# TYPE mltap_stream_producers gauge
mltap_stream_producers{stream="fraud",component="scorer"} 1
"""


def main():
    metrics = alerting_stack.MetricsServer(CLOSED)
    sink = alerting_stack.WebhookSink(token=TOKEN)
    token_dir = tempfile.mkdtemp(prefix="mltap-token-")
    token_file = os.path.join(token_dir, "token")
    with open(token_file, "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(token_file, 0o600)
    try:
        with alerting_stack.Stack() as stack:
            stack.start_alertmanager(webhook_url=sink.url, bearer_token_file=token_file)
            stack.start_prometheus(targets=[metrics.address])
            n_rules = len([r for r in stack.rules() if r["type"] == "alerting"])
            assert n_rules == 23, f"Prometheus loaded {n_rules} alert rules"
            stack.wait_target_up()
            metrics.set_text(OPEN)  # the finding opens now
            t0 = time.monotonic()
            stack.wait_prometheus_alert("MltapStreamDrift", "firing", {"stream": "fraud"}, timeout=60)
            t_fire, alert, payload = wait_until(lambda: sink.find("MltapStreamDrift", "firing"), 60,
                                                interval=0.1, what="firing notification")
            assert payload["version"] == "4", payload
            assert alert["labels"]["severity"] == "critical", alert
            assert alert["labels"]["job"] == "mltapd", alert
            desc = alert["annotations"]["description"]
            assert "Top features: amount,age." in desc, desc
            assert "stream fraud (component scorer)" in desc, desc
            assert sink.refused == 0, "Alertmanager must send the bearer token"
            # No other rule fires for a healthy target.
            firing = {a["labels"]["alertname"] for a in stack.prometheus_alerts() if a["state"] == "firing"}
            assert firing == {"MltapStreamDrift"}, firing

            metrics.set_text(CLOSED)
            t_close = time.monotonic()
            t_resolved, _, _ = wait_until(lambda: sink.find("MltapStreamDrift", "resolved"), 60,
                                          interval=0.1, what="resolved notification")
            print(f"harness selftest: finding opened -> firing webhook {t_fire - t0:.1f} s; "
                  f"finding closed -> resolved webhook {t_resolved - t_close:.1f} s")
    finally:
        metrics.close()
        sink.close()
        os.remove(token_file)
        os.rmdir(token_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
