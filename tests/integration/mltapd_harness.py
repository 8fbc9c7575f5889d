"""Starting real mltap processes for integration tests: mltapd on a free loopback port with its
own ring namespace, and producers. Used by the tests in tests/integration and tests/python.

Environment: MLTAP_BUILD_DIR (the CMake build directory) locates the binaries.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid

BUILD_DIR = os.environ.get("MLTAP_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build"))


def binary(relpath):
    path = os.path.join(BUILD_DIR, relpath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not built (set MLTAP_BUILD_DIR)")
    return path


MLTAPD = "agent/mltapd/mltapd"
MLTAP_CLI = "agent/cli/mltap"
TEST_PRODUCER = "tests/tools/mltap_test_producer"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _unescape(v):
    return v.replace(r"\"", '"').replace(r"\n", "\n").replace("\\\\", "\\")


def parse_metrics(text):
    """Prometheus text format -> {(name, frozenset(labels.items())): float}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ValueError(f"unparseable metrics line: {line!r}")
        labels = frozenset((k, _unescape(v)) for k, v in _LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


class Metrics:
    def __init__(self, samples):
        self.samples = samples

    def get(self, name, default=None, **labels):
        """The one sample of `name` whose labels include `labels`."""
        found = [v for (n, ls), v in self.samples.items() if n == name and all((k, str(v2)) in ls for k, v2 in labels.items())]
        if not found:
            return default
        if len(found) > 1:
            raise AssertionError(f"{name}{labels} matches {len(found)} series")
        return found[0]

    def sum(self, name, **labels):
        return sum(v for (n, ls), v in self.samples.items() if n == name and all((k, str(v2)) in ls for k, v2 in labels.items()))

    def series(self, name):
        return {ls: v for (n, ls), v in self.samples.items() if n == name}


class Agent:
    """mltapd in its own namespace and shm directory, on a free port."""

    def __init__(self, config_yaml="", extra_args=(), shm_dir=None, namespace=None, prefix=()):
        self.namespace = namespace or "t" + uuid.uuid4().hex[:12]
        self.tmp = tempfile.mkdtemp(prefix="mltap-it-")
        self.shm_dir = shm_dir or "/dev/shm"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = os.path.join(self.tmp, "mltapd.yaml")
        base = (
            "ingest:\n"
            f"  namespace: {self.namespace}\n"
            f"  shm_dir: {self.shm_dir}\n"
            "  scan_interval: 50ms\n"
            "  poll_interval: 1ms\n"
            "  snapshot_interval: 50ms\n"
        )
        with open(self.config_path, "w") as f:
            f.write(merge_yaml(base, config_yaml))
        self.extra_args = list(extra_args)
        self.prefix = list(prefix)  # e.g. a capsh command line that runs mltapd with fewer capabilities
        self.proc = None
        self.log_path = os.path.join(self.tmp, "mltapd.log")

    def env(self):
        e = dict(os.environ)
        e["MLTAP_NAMESPACE"] = self.namespace
        e["MLTAP_SHM_DIR"] = self.shm_dir
        e["MLTAP_AGENT"] = self.url
        return e

    def start(self):
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            self.prefix + [binary(MLTAPD), "--config", self.config_path, "--listen", f"127.0.0.1:{self.port}"] + self.extra_args,
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self._healthy, timeout=15, what="mltapd /healthz")
        return self

    def _healthy(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"mltapd exited with {self.proc.returncode}:\n{self.logs()}")
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def get(self, path, timeout=5):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return r.read().decode()

    def metrics(self):
        return Metrics(parse_metrics(self.get("/metrics")))

    def streams(self):
        return json.loads(self.get("/api/v1/streams?fresh=1"))["streams"]

    def stream(self, name):
        for s in self.streams():
            if s["name"] == name:
                return s
        return None

    def logs(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()
        # Remove this namespace's leftovers.
        prefix = f"mltap.{self.namespace}."
        if os.path.isdir(self.shm_dir):
            for n in os.listdir(self.shm_dir):
                if n.startswith(prefix):
                    try:
                        os.unlink(os.path.join(self.shm_dir, n))
                    except OSError:
                        pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def merge_yaml(base, extra):
    """Merges two small YAML documents of sections (top-level keys whose values are mappings)."""
    if not extra.strip():
        return base
    try:
        import yaml
    except ImportError:  # pragma: no cover
        return base + extra
    a = yaml.safe_load(base) or {}
    b = yaml.safe_load(extra) or {}
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            a[k].update(v)
        else:
            a[k] = v
    return yaml.safe_dump(a, sort_keys=False)


class Producer:
    """The C++ test producer as a real process (tests/tools/test_producer.cpp)."""

    def __init__(self, agent, name="test/stream", **opts):
        args = [binary(TEST_PRODUCER), "--name", name]
        for k, v in opts.items():
            flag = "--" + k.replace("_", "-")
            if v is True:
                args.append(flag)
            elif v is not False and v is not None:
                args += [flag, str(v)]
        self.args = args
        self.env = agent.env()
        self.proc = None

    def run(self, timeout=60):
        """Runs to completion; returns the producer's exact counters (its JSON line)."""
        out = subprocess.run(self.args, env=self.env, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise AssertionError(f"producer failed ({out.returncode}): {out.stderr}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def start(self):
        self.proc = subprocess.Popen(self.args + ["--ready-line"], env=self.env, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            raise AssertionError(f"producer did not start: {line!r}")
        self.segment = line.split(" ", 1)[1].strip()
        return self

    def result(self, timeout=60):
        """After start(): waits for the JSON counters line."""
        line = self.proc.stdout.readline()
        return json.loads(line)

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        self.proc.wait(timeout=10)

    def wait(self, timeout=60):
        return self.proc.wait(timeout=timeout)
