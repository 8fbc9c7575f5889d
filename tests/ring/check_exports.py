#!/usr/bin/python3
"""Fails unless libmltap.so exports exactly the C ABI of mltap.h and the documented C++ API
(mltap::Stream and mltap::set_sdk_name), all versioned MLTAP_1.0.

    check_exports.py <libmltap.so> <mltap.h>
"""
import re
import subprocess
import sys

CXX_API = (re.compile(r"^mltap::Stream::"), re.compile(r"^mltap::set_sdk_name\("))


def main():
    lib, header = sys.argv[1], sys.argv[2]
    with open(header) as f:
        c_api = set(re.findall(r"\b(mltap_\w+)\s*\(", f.read()))
    out = subprocess.run(["nm", "-D", "--defined-only", "-C", lib], capture_output=True,
                         text=True, check=True).stdout
    bad, seen = [], set()
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3:
            continue
        kind, name = parts[1], parts[2]
        if kind == "A" and name == "MLTAP_1.0":  # the version node itself
            continue
        base, _, version = name.partition("@@")
        if version != "MLTAP_1.0":
            bad.append(f"{name}: not versioned MLTAP_1.0")
        elif base in c_api:
            seen.add(base)
        elif not any(p.match(base) for p in CXX_API):
            bad.append(f"{name}: neither the C ABI nor the documented C++ API")
    missing = sorted(c_api - seen)
    for m in missing:
        bad.append(f"{m}: declared in {header} but not exported")
    if bad:
        print(f"{lib}: unexpected dynamic symbols:", *bad, sep="\n  ")
        return 1
    print(f"{lib}: {len(seen)} C functions and the C++ API exported, nothing else")
    return 0


if __name__ == "__main__":
    sys.exit(main())
