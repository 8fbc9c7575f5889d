#!/usr/bin/python3
"""The layering of docs/architecture.md, checked over the include graph.

Every C/C++ file belongs to the component its path names (COMPONENTS); every quoted include is
resolved as the compiler does (the includer's directory, then the project root and
shm/include) and mapped to the component of the file it names. An edge the rules (ALLOWED)
do not permit, a library header outside the components allowed to include it (EXTERNAL), a
private header used from outside its component, an include not relative to the project root,
or a cycle between components or top-level folders fails with file:line and the rule.

    check_layering.py [ROOT]              check the tree (exit 1 on a violation)
    check_layering.py --self-test [ROOT]  inject violations into a copy and expect each caught
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

SOURCE_DIRS = ("shm", "core", "agent", "bpf", "exporters", "tests", "bench", "examples")
EXTENSIONS = (".c", ".h", ".cpp", ".hpp")
# Made by the build, not in the tree.
GENERATED = {"vmlinux.h", "mltap.skel.h", "floor.skel.h"}
# Extra include directories of a folder (path prefix -> directories relative to the root), as
# the CMake targets there set them: tests/alerting uses tests/reactions' helpers
# (mltap_reactions_testing).
EXTRA_INCLUDE_DIRS = {"tests/alerting/": ["tests/reactions"]}

# Path prefix -> component, most specific first.
COMPONENTS = [
    ("shm/", "shm"),
    ("core/", "core"),
    ("agent/ingest/", "ingest"),
    ("agent/detectors/", "detectors"),
    ("agent/correlator/", "correlator"),
    ("agent/reactions/", "reactions"),
    ("agent/performance/", "performance"),
    ("agent/retention/", "retention"),
    ("bpf/", "bpf"),
    ("exporters/metrics/", "metrics"),
    ("exporters/alertmanager/", "alertmanager"),
    ("exporters/webhook/", "webhook"),
    ("agent/api/", "api"),
    ("agent/mltapd/", "mltapd"),
    ("agent/cli/", "cli"),
    ("agent/python/", "python"),
    ("tests/", "tests"),
    ("bench/", "bench"),
    ("examples/", "examples"),
]

LAYER = {
    "shm": "L0 shm", "core": "L1 core",
    "ingest": "L2 domain", "detectors": "L2 domain", "correlator": "L2 domain", "reactions": "L2 domain",
    "performance": "L2 domain", "retention": "L2 domain", "bpf": "L2 domain", "metrics": "L3 adapter", "alertmanager": "L3 adapter", "webhook": "L3 adapter",
    "api": "L4 api", "mltapd": "L5 root", "cli": "L5 root", "python": "L5 root",
    "tests": "tests", "bench": "benchmarks", "examples": "examples",
}
_DOMAIN = {"ingest", "detectors", "correlator", "reactions", "performance", "retention", "bpf"}
_ADAPTERS = {"metrics", "alertmanager", "webhook"}
_LIBRARIES = {"shm", "core"} | _DOMAIN | _ADAPTERS | {"api"}
ALLOWED = {
    "shm": set(),
    "core": {"shm"},
    **{c: {"core", "shm"} for c in _DOMAIN | _ADAPTERS},
    "api": {"core", "shm"} | _DOMAIN | _ADAPTERS,
    "mltapd": _LIBRARIES,
    "cli": _LIBRARIES,
    "python": _LIBRARIES,
    "tests": None,  # anything
    "bench": None,
    "examples": None,
}
# The SDK headers other components may include ("mltap/stream.hpp" and "mltap/mltap.h" are for
# producers: the SDK itself, tests, benchmarks, examples).
SHM_PUBLIC = {"shm/include/mltap/format.hpp", "shm/include/mltap/naming.hpp"}
_ANYWHERE = {"tests", "bench", "examples"}
# <library/...> headers and the components that may include them (tests, benchmarks, examples
# may include anything). Everything not listed is unrestricted (the standard library, libc...).
EXTERNAL = [
    (re.compile(r"yaml-cpp/"), {"core/config_reader.cpp"}, "yaml-cpp is read only by core/config_reader.cpp"),
    (re.compile(r"httplib\.h$"), {"api", "cli"},
     "cpp-httplib only in agent/api (the server, the adapters' client) and the CLI's client"),
    (re.compile(r"boost/(beast|asio)"), {"api"}, "Boost.Beast/Asio (the HTTP server) only in agent/api"),
    (re.compile(r"prometheus/"), {"metrics", "api"}, "prometheus-cpp only in exporters/metrics and agent/api"),
    (re.compile(r"CLI/"), {"cli", "mltapd"}, "CLI11 only in the composition roots"),
    (re.compile(r"pybind11/"), {"shm", "python"}, "pybind11 only in the Python extensions"),
]
# Components whose quoted includes must be relative to the project root (or "mltap/..." for the
# SDK's public headers). shm builds standalone; the BPF kernel side is compiled with -I bpf/.
ROOT_RELATIVE = {"core", "ingest", "detectors", "correlator", "reactions", "performance", "metrics", "alertmanager",
                 "webhook", "api", "mltapd", "cli", "python"}

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


def component_of(path):
    for prefix, comp in COMPONENTS:
        if path.startswith(prefix):
            return comp
    return None


def is_bpf_kernel(path):
    return path.startswith("bpf/") and (path.endswith((".bpf.c", ".bpf.h")) or path == "bpf/mltap_events.h")


def source_files(root):
    for top in SOURCE_DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames[:] = [d for d in dirnames if not d.startswith((".", "build")) and d != "__pycache__"]
            for name in filenames:
                if name.endswith(EXTENSIONS):
                    yield os.path.relpath(os.path.join(dirpath, name), root)


def resolve(root, includer, target):
    """The repository path the quoted include names, how it was found, or None."""
    here = os.path.dirname(includer)
    candidates = [(os.path.normpath(os.path.join(here, target)), "relative")]
    candidates.append((os.path.normpath(target), "root"))
    candidates.append((os.path.normpath(os.path.join("shm/include", target)), "sdk"))
    for prefix, dirs in EXTRA_INCLUDE_DIRS.items():
        if includer.startswith(prefix):
            candidates += [(os.path.normpath(os.path.join(d, target)), "extra") for d in dirs]
    for path, how in candidates:
        if not path.startswith("..") and os.path.isfile(os.path.join(root, path)):
            return path, how
    return None, None


def private_owner(path):
    """A header under <component>/src/ (other than shm's) is private to that component."""
    comp = component_of(path)
    if comp and comp != "shm" and "/src/" in path:
        return comp
    return None


def check(root):
    errors = []
    edges = {}         # (from component, to component) -> first "file:line"
    folder_edges = {}  # (from top folder, to top folder) -> first "file:line"
    for f in sorted(source_files(root)):
        comp = component_of(f)
        if comp is None:
            continue
        try:
            with open(os.path.join(root, f), encoding="utf-8", errors="replace") as fh:
                lines = fh.read().split("\n")
        except OSError as e:
            errors.append(f"{f}: cannot read: {e}")
            continue
        for n, line in enumerate(lines, 1):
            m = INCLUDE.match(line)
            if not m:
                continue
            where = f"{f}:{n}"
            kind, target = m.groups()
            if kind == "<":
                for pattern, allowed, rule in EXTERNAL:
                    if pattern.search(target) and comp not in _ANYWHERE and comp not in allowed and f not in allowed:
                        errors.append(f'{where}: includes <{target}>: {rule}')
                continue
            if os.path.basename(target) in GENERATED:
                continue
            path, how = resolve(root, f, target)
            if path is None:
                errors.append(f'{where}: includes "{target}", which names no file of the tree')
                continue
            dep = component_of(path)
            if dep is None:
                continue
            if comp in ROOT_RELATIVE and how == "relative" and os.path.normpath(target) != path:
                errors.append(f'{where}: includes "{target}": include project headers relative to the '
                              f'project root ("{path}")')
            owner = private_owner(path)
            if owner and owner != comp and comp not in _ANYWHERE:
                errors.append(f'{where}: includes "{target}": {path} is private to {owner}')
            if dep == "shm" and comp not in ("shm",) and comp not in _ANYWHERE and path not in SHM_PUBLIC:
                errors.append(f'{where}: includes "{target}": outside shm only mltap/format.hpp and '
                              f'mltap/naming.hpp may be used (the rest is the producer SDK)')
            if dep != comp:
                allowed = ALLOWED[comp]
                if allowed is not None and dep not in allowed:
                    may = ", ".join(sorted(allowed)) if allowed else "nothing of the project"
                    errors.append(f'{where}: includes "{target}" ({dep}, {LAYER[dep]}): {comp} '
                                  f'({LAYER[comp]}) may use {may}')
                edges.setdefault((comp, dep), where)
            top_from, top_to = f.split("/", 1)[0], path.split("/", 1)[0]
            if top_from != top_to:
                folder_edges.setdefault((top_from, top_to), where)
    errors += cycles(edges, "components", skip=_ANYWHERE)
    errors += cycles(folder_edges, "top-level folders", skip={"tests", "bench", "examples"})
    return errors


def cycles(edges, what, skip):
    """Strongly connected components of more than one node (Tarjan), each named with its edges."""
    graph = {}
    for (a, b) in edges:
        if a in skip or b in skip:
            continue
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                members = set(scc)
                how = "; ".join(f"{a} -> {b} at {edges[(a, b)]}" for (a, b) in sorted(edges)
                                if a in members and b in members)
                out.append(f"cycle between {what} {', '.join(sorted(scc))}: {how}")

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def self_test(root):
    """Copies the sources, then injects one violation at a time and expects it caught."""
    cases = [
        ("agent/ingest/ingest.cpp", '#include "agent/detectors/engine.hpp"\n',
         ["agent/ingest/ingest.cpp:", "ingest (L2 domain) may use core, shm"]),
        ("exporters/metrics/ingest_metrics.cpp", '#include "agent/ingest/ingest.hpp"\n',
         ["exporters/metrics/ingest_metrics.cpp:", "metrics (L3 adapter) may use core, shm"]),
        ("core/batch.hpp", "#include <yaml-cpp/yaml.h>\n",
         ["core/batch.hpp:", "yaml-cpp is read only by core/config_reader.cpp"]),
        ("agent/correlator/correlator.hpp", "#include <httplib.h>\n",
         ["agent/correlator/correlator.hpp:", "cpp-httplib only in agent/api"]),
        ("agent/api/routes.cpp", '#include "bpf/src/loader.hpp"\n',
         ["agent/api/routes.cpp:", "private to bpf"]),
        ("agent/ingest/decode.cpp", '#include "guarded_memory.hpp"\n',
         ["agent/ingest/decode.cpp:", "relative to the project root"]),
        ("shm/src/naming.cpp", '#include "core/time.hpp"\n',
         ["shm/src/naming.cpp:", "shm (L0 shm) may use nothing of the project",
          "cycle between top-level folders core, shm"]),
    ]
    tmp = tempfile.mkdtemp(prefix="mltap-layering-")
    failures = []
    try:
        for top in SOURCE_DIRS:
            src = os.path.join(root, top)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(tmp, top), symlinks=True,
                                ignore=shutil.ignore_patterns("build*", "__pycache__", ".*"))
        clean = check(tmp)
        if clean:
            failures.append("the unmodified copy already fails:\n  " + "\n  ".join(clean))
        for path, line, expected in cases:
            full = os.path.join(tmp, path)
            with open(full) as fh:
                original = fh.read()
            # After the last include, so the line number is one the message must name.
            lines = original.split("\n")
            last = max(i for i, l in enumerate(lines) if INCLUDE.match(l))
            lines.insert(last + 1, line.rstrip("\n"))
            with open(full, "w") as fh:
                fh.write("\n".join(lines))
            found = check(tmp)
            text = "\n".join(found)
            missing = [e for e in expected if e not in text]
            where = f"{path}:{last + 2}:"
            if missing or where not in text:
                failures.append(f"injected {line.strip()} into {path}: expected {expected + [where]} in:\n  "
                                + "\n  ".join(found or ["(nothing reported)"]))
            else:
                print(f"caught: {line.strip()} in {path} -> {found[0]}")
            with open(full, "w") as fh:
                fh.write(original)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for f in failures:
        print("SELF-TEST FAILED: " + f, file=sys.stderr)
    return 1 if failures else 0


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    root = os.path.abspath(args[0] if args else os.path.join(os.path.dirname(__file__), "..", ".."))
    if "--self-test" in argv:
        return self_test(root)
    errors = check(root)
    for e in errors:
        print(e)
    if errors:
        print(f"{len(errors)} layering violation(s); the rules are in docs/architecture.md and "
              f"tests/lint/check_layering.py", file=sys.stderr)
        return 1
    print("layering: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
