#!/usr/bin/python3
"""Checks that the promtool unit tests cover every alert rule both ways.

Usage: check_rule_coverage.py RULES.yml TESTS.yml
Every alert in RULES must appear in TESTS in at least one alert_rule_test that expects it to fire
(non-empty exp_alerts) and one that expects it not to fire (empty exp_alerts). Exit 1 otherwise.
"""
import sys

import yaml


def main(rules_path, tests_path):
    with open(rules_path) as f:
        rules = yaml.safe_load(f)
    with open(tests_path) as f:
        tests = yaml.safe_load(f)
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    fires, silent = set(), set()
    for t in tests.get("tests", []):
        for case in t.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    problems = []
    for a in alerts:
        if a not in fires:
            problems.append(f"{a}: no test where it fires")
        if a not in silent:
            problems.append(f"{a}: no test where it must not fire")
    unknown = (fires | silent) - set(alerts)
    problems += [f"{a}: tested but not defined" for a in sorted(unknown)]
    if len(alerts) != len(set(alerts)):
        problems.append("duplicate alert names")
    for p in problems:
        print(p, file=sys.stderr)
    print(f"{len(alerts)} rules, {len(fires)} with firing tests, {len(silent)} with non-firing tests")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
