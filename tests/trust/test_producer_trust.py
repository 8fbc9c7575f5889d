"""The producer trust model (docs/security.md) against real processes: mltapd runs as root, the
producers and the forger run as unprivileged accounts (created with `useradd -r` if missing).

- A segment forged by an unprivileged user naming a root process (a `sleep` root started, and
  pid 1) is refused, counted by cause, and the `signal` reaction cannot reach that process.
- A segment of the forger's uid naming the forger's own process that does not map it is refused
  (`not_mapped`): owning the file is not enough, the named process must hold the ring.
- Another uid's segment for an existing stream is refused and counted by uid; the stream keeps
  exactly its owner's records.
- A legitimate producer running as an unprivileged user is accepted, its stream works, and the
  `signal` reaction reaches it (through the pidfd taken at verification).
- `ingest.stream_owners` gives a stream to the configured uid even if another uid comes first.
- Without CAP_SYS_PTRACE the check cannot read other uids' maps: refused (`proc_unreadable`),
  counted and logged once, retried with backoff.
"""
import json
import os
import pwd
import struct
import subprocess
import sys
import time
import urllib.request

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))
from mltap_harness import TEST_PRODUCER, Agent, binary, wait_until  # noqa: E402

PYTHON = "/usr/bin/python3"
TOKEN = "trust-test-token-0123456789abcdef"
INTRUDER = "mltap-test-intruder"
PRODUCER = "mltap-test-producer"

# SegmentHeader (shm/include/mltap/format.hpp, ABI 2) offsets of the producer identity.
OFF_PID, OFF_UID, OFF_TICKS = 120, 124, 128
OFF_STATE, STATE_CLOSED = 28, 2  # SegmentHeader.state, SegmentState::closed

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create and switch to test accounts")


def account(name):
    """uid, gid of a system account, created when missing."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-r", "-M", "-s", "/usr/sbin/nologin", name], check=True)
        pw = pwd.getpwnam(name)
    return pw.pw_uid, pw.pw_gid


def as_user(name):
    uid, gid = account(name)
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]


def start_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


class HeldProducer:
    """The C++ test producer: writes `rows` rows, prints its counters, then holds its ring until
    stopped; optionally as another user."""

    def __init__(self, agent, name, rows=1000, user=None):
        argv = (as_user(user) if user else []) + [
            binary(TEST_PRODUCER), "--name", name, "--rows", str(rows), "--features", "3",
            "--ready-line", "--hold"]
        self.proc = subprocess.Popen(argv, env=agent.env(), stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("READY"), f"producer did not start: {line!r}"
        self.segment = line.split(" ", 1)[1].strip()
        self.counters = json.loads(self.proc.stdout.readline())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def forge(user, source, target, pid, uid, ticks, closed=False):
    """As `user`: copies `source` (a segment that user owns) to the new file `target`, naming
    `pid`/`uid`/`ticks` as its producer (and marking it closed): what an attacker writes into
    /dev/shm."""
    script = (
        "import os, struct, sys\n"
        "src, dst, pid, uid, ticks, closed = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])\n"
        "data = bytearray(open(src, 'rb').read())\n"
        f"struct.pack_into('<IIQ', data, {OFF_PID}, pid, uid, ticks)\n"
        f"if closed: struct.pack_into('<I', data, {OFF_STATE}, {STATE_CLOSED})\n"
        "fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)\n"
        "os.write(fd, data)\n"
        "os.close(fd)\n")
    subprocess.run(as_user(user) + [PYTHON, "-c", script, source, target, str(pid), str(uid), str(ticks),
                                    str(int(closed))],
                   check=True, timeout=30)


def post_alert(agent, stream, fingerprint):
    alert = {"status": "firing", "labels": {"alertname": "TrustTest", "stream": stream},
             "annotations": {}, "startsAt": "2026-12-01T12:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "http://prometheus/x", "fingerprint": fingerprint}
    payload = {"version": "4", "groupKey": "{}:{alertname=\"TrustTest\"}", "status": "firing",
               "receiver": "mltapd", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
               "externalURL": "http://alertmanager", "alerts": [alert]}
    req = urllib.request.Request(agent.url + "/api/v1/alerts/webhook", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {TOKEN}"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


def audit_records(path, stream):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [r for r in map(json.loads, f) if r.get("target") == stream and r.get("reaction") == "stop"]


def wait_audit(path, stream, n=1):
    wait_until(lambda: len(audit_records(path, stream)) >= n, timeout=15, what=f"audit record for {stream}")
    return audit_records(path, stream)[-1]


@pytest.fixture
def agent(tmp_path):
    tmp_path.chmod(0o755)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    audit = tmp_path / "audit.jsonl"
    config = f"""
webhook:
  token_file: {token}
reactions:
  audit_log: {audit}
  actions:
    stop:
      type: signal
      matchers: ['alertname = "TrustTest"']
      signal: SIGTERM
      cooldown: 0s
"""
    with Agent(config) as a:
        a.audit_path = str(audit)
        yield a


def forged_name(agent, pid, n):
    return os.path.join(agent.shm_dir, f"mltap.{agent.namespace}.{pid}.{n}")


def test_forged_segment_naming_a_root_process_is_refused_and_cannot_be_signalled(agent):
    victim = subprocess.Popen(["sleep", "600"])  # a root process that never touches mltap
    try:
        own = HeldProducer(agent, "evil/own", rows=10, user=INTRUDER)
        try:
            intruder_uid, _ = account(INTRUDER)
            with open(own.segment, "rb") as f:
                head = f.read(OFF_TICKS + 8)
            assert struct.unpack_from("<I", head, OFF_PID)[0] == own.proc.pid, "header layout changed"
            # Header names the root process and claims uid 0 (or the forger's uid: both refused).
            forge(INTRUDER, own.segment, forged_name(agent, victim.pid, 900), victim.pid, 0, start_ticks(victim.pid))
            forge(INTRUDER, own.segment, forged_name(agent, victim.pid, 901), victim.pid, intruder_uid,
                  start_ticks(victim.pid))
            forge(INTRUDER, own.segment, forged_name(agent, 1, 902), 1, 0, start_ticks(1))
            wait_until(lambda: agent.metrics().get("mltap_segments_unverified_total", cause="owner_mismatch") == 3,
                       timeout=15, what="3 forged segments refused as owner_mismatch")
            # The forger's own process, which does not map the forged file: not_mapped.
            own_sleep = subprocess.Popen(as_user(INTRUDER) + ["sleep", "600"])
            try:
                wait_until(lambda: pwd.getpwuid(os.stat(f"/proc/{own_sleep.pid}").st_uid).pw_name == INTRUDER,
                           timeout=10, what="setpriv switched user")
                forge(INTRUDER, own.segment, forged_name(agent, own_sleep.pid, 903), own_sleep.pid,
                      intruder_uid, start_ticks(own_sleep.pid))
                wait_until(lambda: agent.metrics().get("mltap_segments_unverified_total", cause="not_mapped") == 1,
                           timeout=15, what="forged segment refused as not_mapped")
            finally:
                own_sleep.kill()
                own_sleep.wait()
            # A forged *closed* ring naming the root process: read as the forger's own history,
            # with no process identity, so nothing can reach the victim through it.
            forge(INTRUDER, own.segment, forged_name(agent, victim.pid, 904), victim.pid, intruder_uid,
                  start_ticks(victim.pid), closed=True)
            hist = agent.wait_stream("evil/own", lambda s: len(s["producers"]) == 2)
            assert hist is not None and sorted(p["pid"] for p in hist["producers"]) == sorted([0, own.proc.pid]), hist
            m = agent.metrics()
            # The forger's own legitimate stream is accepted; the forged copies are not read.
            stream = agent.wait_stream("evil/own", lambda s: s["records"] == 20)
            assert stream is not None and stream["records"] == 20, stream  # 10 live + 10 history
            live = [p for p in stream["producers"] if p["state"] == "alive"]
            assert [p["pid"] for p in live] == [own.proc.pid], stream
            assert m.get("mltap_segments", state="rejected") == 4
            logs = agent.logs()
            assert logs.count("producer not verified (owner_mismatch)") == 3, logs  # logged once each
            # Refused files are not re-read on every scan: the counters stay put.
            time.sleep(0.5)
            assert agent.metrics().get("mltap_segments_unverified_total", cause="owner_mismatch") == 3
            assert agent.logs().count("producer not verified") == 4

            # The forger's own stream has a producer (its own process); an alert on it can only reach
            # that process. The forged files were never attached, so the victim is out of reach:
            # the reaction signals evil/own's verified producer only.
            post_alert(agent, "evil/own", "a1")
            rec = wait_audit(agent.audit_path, "evil/own")
            assert rec["result"] == "ok", rec
            assert f"pid {own.proc.pid} signalled" in rec["detail"], rec
            assert str(victim.pid) not in rec["detail"], rec
            own.proc.wait(timeout=10)
            assert own.proc.returncode == -15
        finally:
            own.stop()
        time.sleep(0.3)
        assert victim.poll() is None, "the root process was signalled"
    finally:
        victim.kill()
        victim.wait()


def test_another_uids_segment_for_an_existing_stream_is_refused_and_counted_by_uid(agent):
    owner = HeldProducer(agent, "shared/stream", rows=500, user=PRODUCER)
    intruder = None
    try:
        agent.wait_stream("shared/stream", lambda s: s["records"] == 500)
        intruder = HeldProducer(agent, "shared/stream", rows=300, user=INTRUDER)
        intruder_uid, _ = account(INTRUDER)
        producer_uid, _ = account(PRODUCER)
        wait_until(lambda: agent.metrics().get("mltap_segments_stream_owner_refused_total", uid=intruder_uid) == 1,
                   timeout=15, what="intruder's segment refused, counted under its uid")
        m = agent.metrics()
        assert m.get("mltap_segments_unverified_total", cause="stream_owner") == 1
        assert m.get("mltap_segments_stream_owner_refused_total", uid=producer_uid) is None
        time.sleep(0.5)
        s = agent.stream("shared/stream")
        assert s["records"] == 500, s  # only the owner's rows
        assert [p["pid"] for p in s["producers"]] == [owner.proc.pid], s
        assert [p["uid"] for p in s["producers"]] == [producer_uid], s
        assert "belongs to another uid" in agent.logs()
    finally:
        owner.stop()
        if intruder:
            intruder.stop()


def test_a_legitimate_unprivileged_producer_is_accepted_and_the_signal_reaction_reaches_it(agent):
    p = HeldProducer(agent, "legit/stream", rows=2000, user=PRODUCER)
    try:
        assert p.counters["rows_written"] == 2000 if "rows_written" in p.counters else True
        s = agent.wait_stream("legit/stream", lambda s: s["records"] == 2000)
        assert s is not None and s["records"] == 2000, s
        producer_uid, _ = account(PRODUCER)
        assert s["producers"][0]["uid"] == producer_uid
        m = agent.metrics()
        assert m.sum("mltap_segments_unverified_total") == 0, agent.logs()
        post_alert(agent, "legit/stream", "b2")
        rec = wait_audit(agent.audit_path, "legit/stream")
        assert rec["result"] == "ok", rec
        assert f"pid {p.proc.pid} signalled" in rec["detail"], rec
        p.proc.wait(timeout=10)
        assert p.proc.returncode == -15  # SIGTERM
    finally:
        p.stop()


def test_configured_stream_owners_win_over_the_first_comer(tmp_path):
    producer_uid, _ = account(PRODUCER)
    intruder_uid, _ = account(INTRUDER)
    config = f'ingest:\n  stream_owners: {{"fraud/*": [{producer_uid}]}}\n'
    with Agent(config) as agent:
        first = HeldProducer(agent, "fraud/scores", rows=100, user=INTRUDER)  # comes first
        try:
            wait_until(lambda: agent.metrics().get("mltap_segments_stream_owner_refused_total",
                                                   uid=intruder_uid) == 1,
                       timeout=15, what="the first comer refused: the stream is configured")
            owner = HeldProducer(agent, "fraud/scores", rows=200, user=PRODUCER)
            try:
                s = agent.wait_stream("fraud/scores", lambda s: s["records"] == 200)
                assert s is not None and s["records"] == 200, s
                assert [p["uid"] for p in s["producers"]] == [producer_uid], s
            finally:
                owner.stop()
        finally:
            first.stop()


def test_without_cap_sys_ptrace_other_uids_producers_are_refused_and_retried_not_recounted():
    # mltapd keeps CAP_SYS_PTRACE by default to read other uids' /proc/<pid>/maps; without it the
    # check cannot be made, so the segment is refused (proc_unreadable), never read unverified,
    # counted and logged once, and retried with backoff (1 s, 2 s, ...) in case the cause passes.
    config = "agent:\n  keep_capabilities: [CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_KILL]\n  log_level: debug\n"
    with Agent(config) as agent:
        p = HeldProducer(agent, "noptrace/stream", rows=100, user=PRODUCER)
        try:
            wait_until(lambda: agent.metrics().get("mltap_segments_unverified_total", cause="proc_unreadable") == 1,
                       timeout=15, what="segment refused as proc_unreadable")
            time.sleep(3.5)  # at least two retries
            m = agent.metrics()
            assert m.get("mltap_segments_unverified_total", cause="proc_unreadable") == 1
            assert agent.stream("noptrace/stream") is None
            logs = agent.logs()
            assert logs.count("producer not verified (proc_unreadable)") == 1, logs
            assert "/maps: Permission denied" in logs
            retries = logs.count("still not verified (proc_unreadable)")
            assert 2 <= retries <= 3, f"{retries} retries in ~4 s: backoff 1 s, 2 s"
        finally:
            p.stop()
