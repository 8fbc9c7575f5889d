#!/usr/bin/python3
"""Prints bench/ring/compare.sh's rounds as a Markdown table: per benchmark, the median over the
rounds of each round's median CPU time, the range of those medians, and after / before.
Usage: compare.py <dir with before.<n>.json and after.<n>.json>"""
import collections
import glob
import json
import os
import statistics
import sys


def main():
    d = sys.argv[1]
    res = collections.defaultdict(lambda: collections.defaultdict(list))
    order = []
    for path in sorted(glob.glob(os.path.join(d, "*.json"))):
        side = os.path.basename(path).split(".")[0]
        with open(path) as f:
            for b in json.load(f).get("benchmarks", []):
                if b.get("aggregate_name") != "median":
                    continue
                name = b["run_name"]
                if name not in order:
                    order.append(name)
                res[name][side].append(b["cpu_time"])
    rounds = max((len(v) for r in res.values() for v in r.values()), default=0)
    print(f"| benchmark | before: median of {rounds} rounds (range) | after | after / before |")
    print("|---|---:|---:|---:|")
    for name in order:
        cells, meds = [], {}
        for side in ("before", "after"):
            v = res[name][side]
            if not v:
                cells.append("n/a")
                continue
            meds[side] = statistics.median(v)
            cells.append(f"{meds[side]:.1f} ns ({min(v):.1f}-{max(v):.1f})")
        r = (f"{meds['after'] / meds['before']:.2f}x" if len(meds) == 2 and meds["before"] else "n/a")
        print(f"| {name} | {cells[0]} | {cells[1]} | {r} |")


if __name__ == "__main__":
    main()
