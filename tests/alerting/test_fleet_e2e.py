"""Fleet-wide drift through Prometheus, every part real and on loopback (docs/deploy.md "Fleet").

Three mltapd (own ring namespaces and ports), each with a producer, all configured with the same
reference profile file; a Prometheus scrapes them (the "region"), a global Prometheus federates
from it (/federate, match[], honor_labels) and evaluates packaging/prometheus/mltap.fleet.rules.yml.

  fleet/weak:  every host's `amount` is shifted by 0.7 sd, but each host writes only 8 rows/s:
               no host reaches the 1000 values a 5 minute window needs to decide (nor does its
               own detector window close); the fleet's sum does -> MltapFleetFeatureDrift, and no
               host alert.
  fleet/local: host 2's `amount` is shifted by 1.0 sd (25 rows/s each): per-host PSI ~0.9 on
               host 2, fleet PSI ~0.1 -> MltapFleetHostFeatureDrift for host 2 only, no fleet alert.

Also: the fleet series' edges_id is the same on every host; the recorded PSI equals a Python
computation from the recorded bin counts and reference shares; every panel query of the Grafana
dashboard returns data from the global Prometheus; and, after the producers stop, each host's
counters equal, bin by bin, what an independent Python derivation of the fleet bins from the
profile file counts in the rows the producers logged. Numbers go to <build>/fleet-e2e.json.
"""
import bisect
import json
import math
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
import alerting_stack as alerting  # noqa: E402
from mltap_harness import Agent, BUILD_DIR  # noqa: E402
from mltap_harness import wait_until as _wait_until  # noqa: E402


def wait_until(*args, **kwargs):
    """The harness's wait_until, a poll that times out or is refused counting as "not yet": the
    real Prometheus servers polled here can take longer than one request's timeout to answer
    while the machine is loaded (CI compiles the next stage while these tests run), and one slow
    poll must not fail a wait that has its own deadline."""
    kwargs.setdefault("tolerate", (OSError,))
    return _wait_until(*args, **kwargs)

REPO = os.path.dirname(os.path.dirname(HERE))
FLEET_RULES = os.path.join(REPO, "packaging", "prometheus", "mltap.fleet.rules.yml")
DASHBOARD = os.path.join(REPO, "packaging", "grafana", "mltap.json")
PYTHONPATH = os.environ.get("MLTAP_PYTHONPATH", os.path.join(BUILD_DIR, "python"))
RESULTS = os.path.join(BUILD_DIR, "fleet-e2e.json")
PRODUCER = os.path.join(HERE, "fleet_producer.py")


def producer_env(agent):
    env = agent.env()
    env["PYTHONPATH"] = PYTHONPATH
    return env


def value(sample):
    return float(sample["value"][1])


def by(results, *labels):
    return {tuple(r["metric"].get(l, "") for l in labels): value(r) for r in results}


def alerts(stack, name, state="firing"):
    return [a["labels"] for a in stack.prometheus_alerts()
            if a["labels"].get("alertname") == name and a["state"] == state]


def psi_js_from(stack, stream, feature, instance=None):
    """PSI and JS from the recorded counts and shares, in Python (the rules' definitions)."""
    sel = f'stream="{stream}",feature="{feature}"' + (f',instance="{instance}"' if instance else "")
    rec = "mltap:fleet_host_bin_values:increase5m" if instance else "mltap:fleet_bin_values:increase5m"
    counts = {r["metric"]["bin"]: value(r) for r in stack.query(f"{rec}{{{sel}}}")}
    shares = {r["metric"]["bin"]: value(r)
              for r in stack.query(f'mltap:fleet_reference_share{{stream="{stream}",feature="{feature}"}}')}
    assert counts and set(counts) == set(shares), (counts, shares)
    n, k = sum(counts.values()), len(counts)
    psi = js = 0.0
    for b, q in shares.items():
        p = (counts[b] + 0.5) / (n + 0.5 * k)
        m = (p + q) / 2
        psi += (p - q) * math.log(p / q)
        js += 0.5 * p * math.log2(p / m) + 0.5 * q * math.log2(q / m)
    return psi, math.sqrt(max(js, 0.0)), n


def fleet_bins_from_profile(feature, k=10):
    """The fleet bins of docs/metrics.md ("Fleet"), derived in Python from the profile JSON: a
    function value -> bin."""
    if feature["kind"] == "numeric":
        edges, counts = feature["edges"], feature["counts"]
        n = sum(counts)
        fine_bin, cum, target, nbins = [], 0, 1, 1
        for c in counts:
            fine_bin.append(nbins - 1)
            cum += c
            if cum * k >= target * n and cum < n and nbins < k:
                while target * n <= cum * k:
                    target += 1
                nbins += 1
        def bin_of(x):
            if x < edges[0]:
                return 0
            if x > edges[-1]:
                return nbins - 1
            i = min(bisect.bisect_right(edges, x) - 1, len(counts) - 1)
            return fine_bin[i]
        return bin_of
    cats, counts = feature["categories"], feature["category_counts"]
    order = sorted(range(len(cats)), key=lambda i: -counts[i])  # stable: ties keep the order
    own = {cats[i]: j for j, i in enumerate(order[:k - 1])}
    other = min(k - 1, len(cats))
    return lambda x: own.get(x, other)


def host_fleet_counts(agent, stream):
    """{(feature, bin): count} of the stream from the host's own /metrics."""
    out = {}
    for labels, v in agent.metrics().series("mltap_fleet_bin_values_total").items():
        labels = dict(labels)
        if labels["stream"] == stream:
            out[(labels["feature"], int(labels["bin"]))] = v
    return out


def panel_queries():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((p.get("title"), t["expr"]))
            walk(p.get("panels", []))
    walk(dash["panels"])
    return out


def test_fleet_drift_found_fleet_wide_and_attributed_to_one_host(tmp_path):
    t0 = time.monotonic()
    profile = str(tmp_path / "fleet.profile.json")
    subprocess.run(["/usr/bin/python3", PRODUCER, "--profile", profile],
                   env=dict(os.environ, PYTHONPATH=PYTHONPATH), check=True, timeout=60)
    config = f"""
detectors:
  streams:
    fleet/weak: {{reference: {profile}}}
    # Windows of 500 rows: host 2's own detector decides too (and the dashboard's per-window
    # panels have data); fleet/weak keeps the defaults (1000 rows or 60 s with at least 1000).
    fleet/local: {{reference: {profile}, window_records: 500, min_window_records: 250}}
# fleet/predictions: the dashboard's model-performance row; estimates from the first 300 labels.
performance:
  reference_pairs: 300
"""
    agents = [Agent(config) for _ in range(3)]
    producers = []
    stacks = []
    numbers = {}
    try:
        for a in agents:
            a.start()
        for i, a in enumerate(agents):
            p = subprocess.Popen(["/usr/bin/python3", PRODUCER, "--seed", str(10 + i), "--weak-shift", "0.7",
                                  "--local-shift", "1.0" if i == 1 else "0.0", "--duration", "170",
                                  "--log", str(tmp_path / f"rows{i}")],
                                 env=producer_env(a), stdout=subprocess.PIPE, text=True)
            producers.append(p)
            assert p.stdout.readline().strip() == "READY"
        region, world = alerting.Stack(), alerting.Stack()
        stacks += [region, world]
        region.start_prometheus([f"127.0.0.1:{a.port}" for a in agents])
        world.start_prometheus([region.prometheus_url.split("://", 1)[1]], job="federate",
                               rule_files=[FLEET_RULES],
                               scrape_extra={"metrics_path": "/federate", "honor_labels": True,
                                             "params": {"match[]": ['{job="mltapd"}']}})
        instances = [f"127.0.0.1:{a.port}" for a in agents]
        host2 = instances[1]

        # Same file, same bins: one edges_id per feature across the hosts.
        def ids():
            res = world.query('count by (stream, feature) (count by (stream, feature, edges_id) '
                              '(mltap_fleet_reference_share))')
            return res if len(res) == 6 else None
        assert all(value(r) == 1 for r in wait_until(ids, timeout=60, interval=1, what="fleet series federated"))
        shares = wait_until(lambda: world.query('mltap:fleet_reference_share{stream="fleet/weak",feature="amount"}'),
                            timeout=30, interval=1, what="fleet rules evaluated")
        assert len(shares) == 10 and all(0.09 < value(s) < 0.11 for s in shares), shares

        # (1) fleet/weak: the fleet decides, no host can.
        fleet_alert = wait_until(
            lambda: [a for a in alerts(world, "MltapFleetFeatureDrift") if a["stream"] == "fleet/weak"],
            timeout=120, interval=1, what="MltapFleetFeatureDrift for fleet/weak")
        numbers["fleet_weak_alert_after_s"] = round(time.monotonic() - t0, 1)
        assert [a["feature"] for a in fleet_alert] == ["amount"], fleet_alert
        host_values = by(world.query('mltap:fleet_host_feature_values:increase5m{stream="fleet/weak",feature="amount"}'),
                         "instance")
        assert sorted(i for (i,) in host_values) == sorted(instances), host_values
        assert all(v < 1000 for v in host_values.values()), host_values
        assert not [a for a in alerts(world, "MltapFleetHostFeatureDrift", state="firing") if a["stream"] == "fleet/weak"]
        psi, js, n = psi_js_from(world, "fleet/weak", "amount")
        recorded = by(world.query('mltap:fleet_feature_psi:5m{stream="fleet/weak"}'), "feature")
        recorded_js = by(world.query('mltap:fleet_feature_js:5m{stream="fleet/weak"}'), "feature")
        assert n >= 1000
        assert abs(recorded[("amount",)] - psi) < 1e-6 * max(1, psi), (recorded, psi)
        assert abs(recorded_js[("amount",)] - js) < 1e-6, (recorded_js, js)
        assert recorded[("amount",)] > 0.2 and recorded[("score",)] < 0.2 and recorded[("segment",)] < 0.2, recorded
        host_psi = by(world.query('mltap:fleet_host_feature_psi:5m{stream="fleet/weak",feature="amount"}'), "instance")
        numbers.update(fleet_weak_psi=recorded, fleet_weak_js=recorded_js[("amount",)], fleet_weak_values=n,
                       fleet_weak_host_values=host_values, fleet_weak_host_psi=host_psi)
        for a in agents:  # no host's own detector had a full window either
            s = a.stream("fleet/weak")
            assert s is not None and s.get("windows_closed", 0) == 0, s

        # (2) fleet/local: host 2 alone.
        host_alert = wait_until(
            lambda: [a for a in alerts(world, "MltapFleetHostFeatureDrift") if a["stream"] == "fleet/local"],
            timeout=90, interval=1, what="MltapFleetHostFeatureDrift for fleet/local")
        numbers["fleet_local_alert_after_s"] = round(time.monotonic() - t0, 1)
        assert [(a["instance"], a["feature"]) for a in host_alert] == [(host2, "amount")], host_alert
        assert not [a for a in alerts(world, "MltapFleetFeatureDrift") if a["stream"] == "fleet/local"]
        local_psi = by(world.query('mltap:fleet_host_feature_psi:5m{stream="fleet/local",feature="amount"}'), "instance")
        fleet_local = by(world.query('mltap:fleet_feature_psi:5m{stream="fleet/local",feature="amount"}'), "feature")
        assert local_psi[(host2,)] > 0.2 and all(v < 0.2 for (i,), v in local_psi.items() if i != host2), local_psi
        assert fleet_local[("amount",)] < 0.2, fleet_local
        p2, _, _ = psi_js_from(world, "fleet/local", "amount", instance=host2)
        assert abs(local_psi[(host2,)] - p2) < 1e-6 * max(1, p2), (local_psi, p2)
        numbers.update(fleet_local_host_psi=local_psi, fleet_local_fleet_psi=fleet_local[("amount",)])

        # (3) every dashboard panel query returns data from the global Prometheus.
        empty = []
        for title, expr in panel_queries():
            q = (expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
                 .replace("$stream", ".*").replace("$feature", ".*"))
            if not world.query(q):
                empty.append((title, q))
        assert not empty, "panels without data:\n" + "\n".join(f"{t}: {q}" for t, q in empty) + \
            f"\nprobes up: {world.query('mltap_ebpf_probe_up == 1')}"
        numbers["panel_queries"] = len(panel_queries())

        # (4) Oracle: stop the producers, let each mltapd read its rings to the end, then its
        # counters must equal Python's counts of the logged rows in bins derived from the file.
        with open(profile) as f:
            features = json.load(f)["features"]
        bin_fns = {feat["name"]: fleet_bins_from_profile(feat) for feat in features}
        for p in producers:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=20)
        checked = 0
        for i, a in enumerate(agents):
            for stream, short in (("fleet/weak", "weak"), ("fleet/local", "local")):
                with open(tmp_path / f"rows{i}.{short}.csv") as f:
                    logged = [[float(v) for v in line.split(",")] for line in f]
                wait_until(lambda: a.metrics().sum("mltap_stream_records_total", stream=stream) == len(logged),
                           timeout=20, interval=0.1, what=f"{stream} drained on host {i}")
                time.sleep(0.5)  # a snapshot after the last rows
                got = host_fleet_counts(a, stream)
                for col, feat in enumerate(features):
                    counted = int(sum(v for (fname, _), v in got.items() if fname == feat["name"]))
                    # Rows still staged (less than one 64-row chunk) are not counted yet.
                    assert 0 <= len(logged) - counted < 64, (stream, feat["name"], len(logged), counted)
                    expect = {}
                    for row in logged[:counted]:
                        b = bin_fns[feat["name"]](row[col])
                        expect[b] = expect.get(b, 0) + 1
                    mine = {b: int(v) for (fname, b), v in got.items() if fname == feat["name"] and v}
                    assert mine == expect, (i, stream, feat["name"], mine, expect)
                    checked += counted
        numbers["oracle_values_checked"] = checked
        numbers["duration_s"] = round(time.monotonic() - t0, 1)
        numbers = {k: ({",".join(kk): vv for kk, vv in v.items()} if isinstance(v, dict) else v)
                   for k, v in numbers.items()}
        print("\nfleet e2e: " + json.dumps(numbers, indent=1), flush=True)
        with open(RESULTS, "w") as f:
            json.dump(numbers, f, indent=1)
    except BaseException:
        for s in stacks:
            s.dump_logs()
        for a in agents:
            print(a.logs()[-3000:], file=sys.stderr)
        raise
    finally:
        for p in producers:
            p.kill()
            p.wait(timeout=10)
        for s in stacks:
            s.stop()
        for a in agents:
            a.stop()
