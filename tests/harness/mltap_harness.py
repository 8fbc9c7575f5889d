"""The harness of mltap's Python tests: real mltapd processes on a free loopback port in a private
ring namespace, scrapes of /metrics through the one Prometheus text parser, real producers, and
the process handling the alerting stack (alerting_stack.py) shares.

Used by tests/python (through its conftest.py), tests/integration, tests/ebpf and tests/alerting;
each adds this directory to sys.path. Environment: MLTAP_BUILD_DIR (the CMake build directory)
locates the binaries; MLTAPD, when set, names the mltapd binary itself.
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

MLTAPD = "agent/mltapd/mltapd"
MLTAP_CLI = "agent/cli/mltap"
TEST_PRODUCER = "tests/tools/mltap_test_producer"


def binary(relpath):
    path = os.path.join(BUILD_DIR, relpath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not built (set MLTAP_BUILD_DIR)")
    return path


def mltapd_binary():
    """$MLTAPD if set (the Python tests' CMake entries set it), else the build directory's."""
    return os.environ.get("MLTAPD") or binary(MLTAPD)


def free_port():
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=10.0, interval=0.02, what="condition", tolerate=()):
    """Calls predicate() until it returns a truthy value (returned) or timeout seconds pass
    (AssertionError). Exceptions of the types in `tolerate` count as "not yet" (a server that is
    not up, a partial JSON document)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except tolerate as e:  # noqa: PERF203
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def http_json(url, data=None, method=None, headers=None, timeout=5):
    """GET (or, with data, POST) a JSON document."""
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if body is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        text = r.read()
        return json.loads(text) if text else None


# ---- Prometheus text format -----------------------------------------------------------------

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
    """One scrape, parsed."""

    def __init__(self, samples):
        self.samples = samples

    def get(self, name, default=None, **labels):
        """The one sample of `name` whose labels include `labels`."""
        found = [v for (n, ls), v in self.samples.items()
                 if n == name and all((k, str(v2)) in ls for k, v2 in labels.items())]
        if not found:
            return default
        if len(found) > 1:
            raise AssertionError(f"{name}{labels} matches {len(found)} series")
        return found[0]

    def exact(self, name, **labels):
        """The sample of `name` whose label set is exactly `labels` (None when absent)."""
        return self.samples.get((name, frozenset((k, str(v)) for k, v in labels.items())))

    def sum(self, name, **labels):
        return sum(v for (n, ls), v in self.samples.items()
                   if n == name and all((k, str(v2)) in ls for k, v2 in labels.items()))

    def series(self, name):
        return {ls: v for (n, ls), v in self.samples.items() if n == name}


# ---- processes ------------------------------------------------------------------------------

class Process:
    """A real process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name, argv, log_path, env=None, new_session=False):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=new_session)

    def alive(self):
        return self.proc.poll() is None

    @property
    def returncode(self):
        return self.proc.returncode

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        self._log.close()


def merge_yaml(base, extra):
    """Merges two small YAML documents of sections (top-level keys whose values are mappings)."""
    if not extra.strip():
        return base
    import yaml
    a = yaml.safe_load(base) or {}
    b = yaml.safe_load(extra) or {}
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            a[k].update(v)
        else:
            a[k] = v
    return yaml.safe_dump(a, sort_keys=False)


class Agent:
    """mltapd in a namespace of its own (and the ring directory `shm_dir`, /dev/shm by default) on
    a free loopback port, with short scan and snapshot intervals. `config_yaml` is merged over
    them; `prefix` runs mltapd under another program (e.g. capsh with fewer capabilities); `port`
    fixes the port (one another process must know in advance)."""

    def __init__(self, config_yaml="", extra_args=(), shm_dir=None, namespace=None, prefix=(), port=None,
                 process_env=None):
        self.namespace = namespace or "t" + uuid.uuid4().hex[:12]
        self.tmp = tempfile.mkdtemp(prefix="mltap-it-")
        self.shm_dir = shm_dir or "/dev/shm"
        self._fixed_port = port is not None
        self._pick_port(port)
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
        self.prefix = list(prefix)
        self.process = None
        self.log_path = os.path.join(self.tmp, "mltapd.log")
        # Extra environment of mltapd itself (e.g. NOTIFY_SOCKET), over the test's own.
        self.process_env = dict(os.environ, **process_env) if process_env else None

    def _pick_port(self, port=None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def env(self):
        """The environment of a producer (or the CLI) working with this agent."""
        e = dict(os.environ)
        e["MLTAP_NAMESPACE"] = self.namespace
        e["MLTAP_SHM_DIR"] = self.shm_dir
        e["MLTAP_AGENT"] = self.url
        return e

    def start(self, attempts=5):
        """Starts mltapd and waits for /healthz. A port taken between picking and binding it is
        retried with another; any other early exit fails with mltapd's log."""
        for attempt in range(attempts):
            if attempt > 0:
                self._pick_port()
            self.process = Process("mltapd", self.prefix + [
                mltapd_binary(), "--config", self.config_path, "--listen", f"127.0.0.1:{self.port}"
            ] + self.extra_args, self.log_path, env=self.process_env)
            try:
                wait_until(self._healthy, timeout=15, what="mltapd /healthz")
                return self
            except _PortTaken:
                self.process.stop()
                if self._fixed_port or attempt + 1 == attempts:
                    raise
        return self

    def _healthy(self):
        if not self.process.alive():
            log = self.logs()
            if "cannot listen on" in log or "cannot bind" in log:
                raise _PortTaken(log)
            raise AssertionError(f"mltapd exited with {self.process.returncode}:\n{log}")
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    @property
    def proc(self):
        return self.process.proc if self.process else None

    @property
    def returncode(self):
        return self.process.returncode

    def get(self, path, timeout=5):
        return http_get(self.url + path, timeout=timeout)

    def metrics(self):
        return Metrics(parse_metrics(self.get("/metrics")))

    def streams(self):
        """GET /api/v1/streams with a snapshot taken after the request."""
        return json.loads(self.get("/api/v1/streams?fresh=1"))["streams"]

    def stream(self, name):
        for s in self.streams():
            if s["name"] == name:
                return s
        return None

    def wait_stream(self, name, predicate, timeout=15.0):
        """Polls the stream until predicate(stream) holds; returns it (or the last one seen, for
        the caller's assertions to explain the difference)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.stream(name)
            if last is not None and predicate(last):
                return last
            time.sleep(0.02)
        return last

    def logs(self):
        return self.process.log() if self.process else ""

    def alive(self):
        return self.process is not None and self.process.alive()

    def stop(self):
        """Stops mltapd (SIGTERM) and removes the namespace's rings and the temporary files."""
        if self.process:
            self.process.stop()
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


class _PortTaken(AssertionError):
    pass


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
