#!/usr/bin/python3
"""ctest adapter for one step of tests/systemd/harness.py's results: exit 0 if the step passed,
77 (ctest SKIP_RETURN_CODE) if it was skipped because mltapd lacks the feature (the reason is
printed), 1 if it failed or did not run.

    pending.py RESULTS.json STEP"""
import json
import sys

results, name = sys.argv[1], sys.argv[2]
try:
    with open(results) as f:
        steps = {s["name"]: s for s in json.load(f)["steps"]}
except (OSError, ValueError, KeyError) as e:
    print(f"no results from tests/systemd/harness.py ({results}): {e}")
    sys.exit(1)
s = steps.get(name)
if s is None:
    print(f"step {name} did not run (an earlier step aborted the harness)")
    sys.exit(1)
print(f"{name}: {s['status']} ({s['seconds']} s) {s['detail']}")
sys.exit({"pass": 0, "skip": 77}.get(s["status"], 1))
