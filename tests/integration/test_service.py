"""mltapd and its service manager, without systemd: the sd_notify protocol read from a real
notify socket (READY, STATUS, WATCHDOG, RELOADING), and SIGHUP reloads with a good and a bad
configuration. tests/systemd runs the same under a real systemd with the packaged unit."""
import os
import re
import signal
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))
from mltap_harness import Agent, Producer, wait_until  # noqa: E402


class NotifySocket:
    """What systemd listens on: a datagram socket whose messages are KEY=VALUE lines."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mltap-notify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.messages = []  # (monotonic time, {key: value})

    def drain(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def with_key(self, key):
        return [(t, m) for t, m in self.drain() if key in m]

    def close(self):
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


def test_ready_status_and_watchdog_pings():
    notify = NotifySocket()
    try:
        # systemd's WatchdogSec=1s: pings are expected at least every 500 ms.
        with Agent(process_env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"}) as agent:
            ready = wait_until(lambda: notify.with_key("READY"), timeout=10, what="READY=1")
            assert ready[0][1]["READY"] == "1"
            assert re.match(r"\d+ streams?, \d+ live producers?, \d+ open findings?$",
                            ready[0][1].get("STATUS", "")), ready
            p = Producer(agent, name="svc/status", rows=20000, features=2, rate=10000).start()
            wait_until(lambda: any(m["STATUS"].startswith("1 stream, 1 live producer")
                                   for _, m in notify.with_key("STATUS")), timeout=10,
                       what="STATUS= naming the stream and its producer")
            p.result()
            t0 = time.monotonic()
            time.sleep(3)
            pings = [t for t, m in notify.with_key("WATCHDOG") if t >= t0 and m["WATCHDOG"] == "1"]
            gaps = [b - a for a, b in zip(pings, pings[1:])]
            assert len(pings) >= 6, pings
            assert max(gaps) < 0.5, gaps
            assert "watchdog: WATCHDOG=1 every 250 ms" in agent.logs()
            # Stopped, mltapd stops pinging; resumed, it pings again (from its main loop).
            os.kill(agent.proc.pid, signal.SIGSTOP)
            time.sleep(1)
            notify.drain()
            n = len(notify.with_key("WATCHDOG"))
            time.sleep(0.6)
            assert len(notify.with_key("WATCHDOG")) == n
            os.kill(agent.proc.pid, signal.SIGCONT)
            wait_until(lambda: len(notify.with_key("WATCHDOG")) > n, timeout=5, what="pings resumed")
            agent.process.stop()
            assert any(m.get("STOPPING") == "1" for _, m in notify.drain())
    finally:
        notify.close()


def test_without_watchdog_no_pings():
    notify = NotifySocket()
    try:
        with Agent(process_env={"NOTIFY_SOCKET": notify.path}) as agent:
            wait_until(lambda: notify.with_key("READY"), timeout=10, what="READY=1")
            time.sleep(1.5)
            assert notify.with_key("WATCHDOG") == []
            assert "watchdog:" not in agent.logs()
    finally:
        notify.close()


def test_sighup_reload_good_and_bad_configuration():
    notify = NotifySocket()
    try:
        with Agent(process_env={"NOTIFY_SOCKET": notify.path}) as agent:
            wait_until(lambda: notify.with_key("READY"), timeout=10, what="READY=1")
            p = Producer(agent, name="svc/reload", rows=3000, features=2, rate=20000).start()
            p.result()
            wait_until(lambda: agent.metrics().get("mltap_stream_records_total", 0, stream="svc/reload") == 3000,
                       what="all rows read")
            pid = agent.proc.pid
            original = open(agent.config_path).read()

            # A good configuration: the log level and the detectors' settings apply at once, a
            # changed section that needs a restart is named.
            with open(agent.config_path, "w") as f:
                f.write(original + "agent:\n  log_level: debug\ndetectors:\n  top_features: 3\n"
                        "  drift:\n    thresholds: {psi: 0.3}\nreactions:\n  queue_capacity: 512\n")
            notify.drain()
            os.kill(pid, signal.SIGHUP)
            wait_until(lambda: "reload: done" in agent.logs(), timeout=10, what="reload logged")
            log = agent.logs()
            assert "applied agent.log_level: info -> debug" in log, log
            assert "stream 'svc/reload': settings changed" in log, log
            assert "changed settings in reactions take effect at the next restart" in log, log
            assert "changed settings in detectors" not in log, log
            msgs = [m for _, m in notify.drain()]
            i = next(i for i, m in enumerate(msgs) if m.get("RELOADING") == "1")
            assert any(m.get("READY") == "1" for m in msgs[i:]), msgs
            assert any("restart pending for reactions" in m.get("STATUS", "") for m in msgs[i:]), msgs
            assert agent.alive() and agent.proc.pid == pid
            # Nothing lost: the stream and its counters are still there, not reset.
            assert agent.metrics().get("mltap_stream_records_total", 0, stream="svc/reload") == 3000

            # A configuration with an error: refused with file:line:column, the running one kept.
            with open(agent.config_path, "w") as f:
                f.write(original + "agent:\n  log_level: loud\n")
            os.kill(pid, signal.SIGHUP)
            wait_until(lambda: "reload refused" in agent.logs(), timeout=10, what="refusal logged")
            log = agent.logs()
            assert re.search(r"reload refused, keeping the running configuration: .*mltapd\.yaml:\d+:\d+: ",
                             log), log
            time.sleep(0.3)
            assert agent.alive() and agent.proc.pid == pid
            assert agent.metrics().get("mltap_stream_records_total", 0, stream="svc/reload") == 3000
            # A duplicate section is an error too (yaml-cpp would otherwise take the first).
            with open(agent.config_path, "w") as f:
                f.write(original + "agent:\n  log_level: info\nagent:\n  log_level: warn\n")
            os.kill(pid, signal.SIGHUP)
            wait_until(lambda: "duplicate key 'agent'" in agent.logs(), timeout=10, what="duplicate refused")
            assert agent.alive()
    finally:
        notify.close()
