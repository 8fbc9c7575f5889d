"""Per-uid quotas (ingest.max_streams_per_uid, max_segments_per_uid; docs/security.md) with real
processes as two unprivileged uids (setpriv --reuid): one uid at its quota cannot stop another
uid's streams; its extra segments are refused, counted by uid and logged once; when one of its
producers dies its slot is released and a waiting segment is attached.
"""
import os
import time
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))
from mltap_harness import Agent, wait_until  # noqa: E402
from test_producer_trust import INTRUDER, PRODUCER, HeldProducer, account  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create and switch to test accounts")

CONFIG = """
ingest:
  max_streams_per_uid: 2
  max_segments_per_uid: 4
  dead_producer_grace: 0s
"""


def test_one_uid_at_its_quota_does_not_crowd_out_another():
    intruder_uid, _ = account(INTRUDER)
    producer_uid, _ = account(PRODUCER)
    held = []
    with Agent(CONFIG) as agent:
        try:
            # Two streams: the intruder's stream quota.
            for name in ("evil/a", "evil/b", "evil/b"):
                held.append(HeldProducer(agent, name, rows=10, user=INTRUDER))
            agent.wait_stream("evil/b", lambda s: s["records"] == 20)
            # A third stream: refused (streams quota).
            held.append(HeldProducer(agent, "evil/c", rows=10, user=INTRUDER))
            wait_until(lambda: agent.metrics().get("mltap_segments_quota_refused_total", uid=str(intruder_uid)) == 1,
                       timeout=15, what="third stream of the intruder refused")
            # A fourth segment of a stream it has: fits; a fifth: refused (segments quota).
            held.append(HeldProducer(agent, "evil/a", rows=10, user=INTRUDER))
            agent.wait_stream("evil/a", lambda s: s["records"] == 20)
            held.append(HeldProducer(agent, "evil/b", rows=10, user=INTRUDER))
            wait_until(lambda: agent.metrics().get("mltap_segments_quota_refused_total", uid=str(intruder_uid)) == 2,
                       timeout=15, what="fifth segment of the intruder refused")
            # Another uid is not affected: its stream is attached and read exactly.
            legit = HeldProducer(agent, "real/x", rows=25, user=PRODUCER)
            held.append(legit)
            s = agent.wait_stream("real/x", lambda s: s["records"] == 25)
            assert s is not None and s["records"] == 25, s
            m = agent.metrics()
            assert m.get("mltap_segments_quota_refused_total", uid=str(producer_uid)) is None
            assert m.get("mltap_segments", state="rejected") == 2
            assert agent.wait_stream("evil/c", lambda s: True, timeout=0.5) is None
            logs = agent.logs()
            assert logs.count(f"uid {intruder_uid} has reached ingest.max_streams_per_uid (2)") == 1, logs
            # Logged once per uid: the second refusal (segments quota) goes to debug.
            assert "max_segments_per_uid (4)" not in logs, logs
            # Still refused on retries, and counted once per file.
            time.sleep(1.5)
            assert agent.metrics().get("mltap_segments_quota_refused_total", uid=str(intruder_uid)) == 2
            # A dead producer releases its slot: kill the first evil/a producer; once its segment
            # is retired the waiting fifth segment (evil/b) attaches; evil/c (a third stream) still
            # waits.
            held[0].stop()
            wait_until(lambda: agent.metrics().get("mltap_segments", state="rejected") == 1, timeout=30,
                       what="a waiting segment of the intruder attached after a slot was released")

            def live(name):
                s = agent.stream(name)
                return 0 if s is None else sum(p["state"] == "alive" for p in s["producers"])
            wait_until(lambda: live("evil/b") == 3, timeout=15, what="the fifth segment attached")
            assert live("evil/c") == 0
            s = agent.wait_stream("evil/b", lambda s: s["records"] == 30)
            assert s["records"] == 30, s
            # A waiting segment whose producer is killed is removed by the agent (it was verified
            # once): a refused stream's file does not stay forever.
            waiting = held[3]
            assert os.path.exists(waiting.segment)
            waiting.stop()
            wait_until(lambda: not os.path.exists(waiting.segment), timeout=30,
                       what="the killed waiting producer's segment removed")
            wait_until(lambda: agent.metrics().get("mltap_segments", state="rejected") == 0, timeout=15,
                       what="rejected gauge back to 0")
            assert agent.metrics().get("mltap_segments_quota_refused_total", uid=str(intruder_uid)) == 2
        finally:
            for p in held:
                p.stop()
