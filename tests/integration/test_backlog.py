"""Records a previous run left in the rings (its producers ended before this agent started) are
read and counted as backlog, never analyzed: they must not become a stream's reference, which
would make today's healthy data look drifted (issue 11: the demo run twice)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))
from mltap_harness import Agent, Producer, wait_until  # noqa: E402

# Agent A keeps closed segments long enough to be stopped with them still in /dev/shm; small
# pinning windows so that 3,000 rows would pin a reference.
CONFIG = """
ingest:
  closed_segment_grace: 60s
detectors:
  pin_records: 1000
  window_records: 500
  min_window_records: 100
"""


def reference_sources(agent, stream):
    return [dict(ls).get("source") for ls, v in agent.metrics().series("mltap_stream_reference_info").items()
            if dict(ls).get("stream") == stream and v == 1]


def test_a_previous_runs_leftovers_are_counted_as_backlog_and_never_pinned():
    first = Agent(CONFIG).start()
    try:
        Producer(first, name="bl/s", rows=3000, features=2, rate=30000).run()
        wait_until(lambda: first.metrics().get("mltap_stream_records_total", 0, stream="bl/s") == 3000,
                   what="agent A read the producer's rows")
        # The live agent analyzed them (its producer ran while it did): not backlog, pinned.
        assert first.metrics().get("mltap_stream_backlog_records_total", 0, stream="bl/s") == 0
        wait_until(lambda: reference_sources(first, "bl/s") == ["pinned"], what="A pinned a reference")
        first.process.stop()  # SIGTERM: the closed ring stays (grace 60 s)
        prefix = f"mltap.{first.namespace}."
        left = [n for n in os.listdir(first.shm_dir) if n.startswith(prefix) and not n.endswith("agent")]
        assert left, "the test needs the closed ring left in place"

        # Agent B starts with the ring already there: backlog, counted exactly, not analyzed.
        second = Agent(CONFIG, namespace=first.namespace, shm_dir=first.shm_dir).start()
        try:
            wait_until(lambda: second.metrics().get("mltap_stream_backlog_records_total", 0, stream="bl/s") == 3000,
                       what="B counted the leftover rows as backlog")
            m = second.metrics()
            assert m.get("mltap_stream_records_total", 0, stream="bl/s") == 3000
            assert "is backlog: its producer ended before this agent started" in second.logs()
            assert reference_sources(second, "bl/s") == []

            # A producer running now is analyzed: the reference comes from its data only.
            Producer(second, name="bl/s", rows=3000, features=2, rate=30000).run()
            wait_until(lambda: reference_sources(second, "bl/s") == ["pinned"], what="B pinned live data")
            # The rest of the live rows may be read up to ingest.read_delay after the pinning.
            m = wait_until(lambda: (lambda m: m if m.get("mltap_stream_records_total", 0, stream="bl/s") == 6000
                                    else None)(second.metrics()), what="B read every live row")
            assert m.get("mltap_stream_backlog_records_total", 0, stream="bl/s") == 3000
        finally:
            second.stop()
    finally:
        first.stop()
