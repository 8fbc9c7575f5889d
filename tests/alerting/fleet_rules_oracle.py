#!/usr/bin/python3
"""Independent oracle for the fleet rules' promtool tests (packaging/prometheus/mltap.fleet.rules.test.yml).

Recomputes, in plain Python from the definitions in docs/metrics.md ("Fleet"), every value the
promtool test expects: counts over the 5 minute window, fleet and per-host PSI and JS. It reads the
test file's input series (linear counters 'a+bxN' sampled every minute: the 5 minute increase is
5b) and checks each promql_expr_test of the forms NAME, NAME{sel}, round(NAME * 10000) and
round(NAME{sel} * 10000), and the PSI printed in the alerts' descriptions. It shares no code with
the PromQL rules, so a wrong rule and a wrong expected value cannot agree by construction.

Usage: fleet_rules_oracle.py TESTS.yml [--print]   (--print: show the computed values)
"""
import math
import re
import sys
from collections import defaultdict

import yaml

SERIES = re.compile(r"^([\w:]+)\{(.*)\}$")
LABEL = re.compile(r'(\w+)="([^"]*)"')
EXPR = re.compile(r"^(round\()?([\w:]+)(\{([^}]*)\})?( \* 10000\))?$")
MIN_VALUES = 1000
PSI_THRESHOLD = 0.2


def parse_series(s):
    m = SERIES.match(s.strip())
    return m.group(1), dict(LABEL.findall(m.group(2)))


def step_of(values):
    m = re.fullmatch(r"\s*([\d.]+)\+([\d.]+)x(\d+)\s*", values)
    if m:
        return float(m.group(2))
    m = re.fullmatch(r"\s*([\d.]+)x(\d+)\s*", values)
    if m:
        return 0.0
    raise ValueError(f"oracle handles only linear series, got {values!r}")


def const_of(values):
    return float(values.split("x")[0].split("+")[0])


def psi(p, q):
    return sum((pb - qb) * math.log(pb / qb) for pb, qb in zip(p, q))


def js(p, q):
    total = 0.0
    for pb, qb in zip(p, q):
        m = (pb + qb) / 2
        total += 0.5 * pb * math.log2(pb / m) + 0.5 * qb * math.log2(qb / m)
    return math.sqrt(max(total, 0.0))


def smoothed(counts):
    n, k = sum(counts), len(counts)
    return [(c + 0.5) / (n + 0.5 * k) for c in counts]


def compute(input_series):
    """All recorded values at an evaluation time with a full 5 minute window."""
    host_counts = defaultdict(dict)  # (instance, stream, feature, edges_id) -> {bin: count}
    shares = defaultdict(dict)       # (stream, feature, edges_id) -> {bin: share}
    for s in input_series:
        name, labels = parse_series(s["series"])
        key = (labels["stream"], labels["feature"], labels["edges_id"])
        b = int(labels["bin"])
        if name == "mltap_fleet_bin_values_total":
            host_counts[(labels["instance"],) + key][b] = 5 * step_of(s["values"])
        elif name == "mltap_fleet_reference_share":
            shares[key][b] = max(shares[key].get(b, 0.0), const_of(s["values"]))
    out = defaultdict(list)  # record name -> [(labels, value)]
    fleet_counts = defaultdict(lambda: defaultdict(float))
    for (inst, *key), counts in host_counts.items():
        key = tuple(key)
        q = [shares[key][b] for b in sorted(shares[key])]
        c = [counts.get(b, 0.0) for b in range(len(q))]
        labels = dict(instance=inst, stream=key[0], feature=key[1], edges_id=key[2])
        out["mltap:fleet_host_feature_values:increase5m"].append((labels, sum(c)))
        p = smoothed(c)
        out["mltap:fleet_host_feature_psi:5m"].append((labels, psi(p, q)))
        out["mltap:fleet_host_feature_js:5m"].append((labels, js(p, q)))
        for b, v in enumerate(c):
            fleet_counts[key][b] += v
    for key, counts in fleet_counts.items():
        q = [shares[key][b] for b in sorted(shares[key])]
        c = [counts[b] for b in range(len(q))]
        labels = dict(stream=key[0], feature=key[1], edges_id=key[2])
        out["mltap:fleet_feature_values:increase5m"].append((labels, sum(c)))
        p = smoothed(c)
        out["mltap:fleet_feature_psi:5m"].append((labels, psi(p, q)))
        out["mltap:fleet_feature_js:5m"].append((labels, js(p, q)))
    return out


def select(values, sel):
    want = dict(LABEL.findall(sel or ""))
    return [(l, v) for l, v in values if all(l.get(k) == x for k, x in want.items())]


def main(path, show):
    with open(path) as f:
        doc = yaml.safe_load(f)
    problems, checked = [], 0
    for t in doc["tests"]:
        rec = compute(t["input_series"])
        if show:
            for name, vals in sorted(rec.items()):
                for l, v in vals:
                    print(f"{name}{l} = {v:.6f}  round*1e4 = {round(v * 10000)}")
        for case in t.get("promql_expr_test", []):
            m = EXPR.match(case["expr"].strip())
            if not m or m.group(2) not in rec:
                continue
            if not m.group(5) and m.group(1):
                continue
            scale = m.group(5) is not None
            got = {}
            for l, v in select(rec[m.group(2)], m.group(4)):
                got[tuple(sorted(l.items()))] = round(v * 10000) if scale else v
            exp = {}
            for s in case.get("exp_samples", []):
                _, l = parse_series("x" + s["labels"]) if s["labels"].startswith("{") else parse_series(s["labels"])
                exp[tuple(sorted(l.items()))] = float(s["value"])
            if got != exp:
                problems.append(f"{case['expr']} at {case['eval_time']}: oracle {got} != test {exp}")
            checked += 1
        for case in t.get("alert_rule_test", []):
            for a in case.get("exp_alerts", []):
                l = a["exp_labels"]
                name = {"MltapFleetFeatureDrift": "mltap:fleet_feature_psi:5m",
                        "MltapFleetHostFeatureDrift": "mltap:fleet_host_feature_psi:5m"}.get(case["alertname"])
                if not name:
                    continue
                keys = ("instance", "stream", "feature", "edges_id") if "host" in name else ("stream", "feature", "edges_id")
                hit = [v for lab, v in rec[name] if all(lab[k] == l[k] for k in keys)]
                text = f"{hit[0]:.3f}" if hit else "?"
                if not hit or hit[0] <= PSI_THRESHOLD or f"PSI of {text}" not in a["exp_annotations"]["description"]:
                    problems.append(f"{case['alertname']} {l}: oracle PSI {text} not in the expected description")
                checked += 1
    for p in problems:
        print("MISMATCH:", p)
    print(f"{checked} expectations checked, {len(problems)} mismatches")
    return 1 if problems or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], "--print" in sys.argv[2:]))
