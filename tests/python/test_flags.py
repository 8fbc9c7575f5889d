"""Flags set in the segment's control block (the way mltapd's producer-flag reaction will set
them, through tests/python/ringview.py), read with Stream.flag()/flag_value() and delivered to
on_flag callbacks; and interpreter exit with callbacks registered."""

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from ringview import Segment


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_flags_and_callbacks(make_stream):
    s = make_stream("flags/x", features=["a"])
    seen = []
    changed = threading.Event()

    def on_pause(value):
        seen.append((value, threading.current_thread() is not threading.main_thread()))
        changed.set()

    s.on_flag("pause", on_pause)
    assert s.flag("pause") is False and s.flag_value("pause") == 0
    with Segment(s.segment_path) as seg:
        seg.set_flag("pause", 7)
        assert s.flag("pause") is True and s.flag_value("pause") == 7
        assert s.flag_value("other") == 0
        assert changed.wait(5), "callback not called"
        assert seen == [(7, True)]  # called once, from the SDK's thread
        changed.clear()
        seg.set_flag("pause", 0)
        assert changed.wait(5)
        assert seen == [(7, True), (0, True)]
        assert s.flag("pause") is False
        # An update left half-done (odd generation) is never read as a value.
        seg.set_flag("pause", 9, leave_odd=True)
        assert s.flag_value("pause") == 0
        seg.finish_control_update()
        assert s.flag_value("pause") == 9
        assert wait_for(lambda: seen[-1] == (9, True))


def test_callback_errors_are_reported_and_do_not_stop_delivery(make_stream, monkeypatch):
    s = make_stream("flags/raise", features=["a"])
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u.exc_type))
    values = []

    def bad(value):
        values.append(value)
        raise RuntimeError("boom")

    s.on_flag("mode", bad)
    with Segment(s.segment_path) as seg:
        seg.set_flag("mode", 1)
        assert wait_for(lambda: values == [1] and reported == [RuntimeError])
        seg.set_flag("mode", 2)
        assert wait_for(lambda: values == [1, 2] and reported == [RuntimeError] * 2)


def test_on_flag_argument_errors(make_stream):
    s = make_stream("flags/args", features=["a"])
    with pytest.raises(TypeError, match="callable"):
        s.on_flag("pause", 42)
    with pytest.raises(ValueError, match="invalid flag name"):
        s.on_flag("x" * 40, lambda v: None)
    with pytest.raises(ValueError, match="invalid flag name"):
        s.on_flag("", lambda v: None)
    s.close()
    with pytest.raises(ValueError, match="closed"):
        s.on_flag("pause", lambda v: None)
    assert s.flag("pause") is False


def test_close_from_inside_own_callback(make_stream):
    s = make_stream("flags/selfclose", features=["a"])
    done = threading.Event()

    def cb(value):
        s.close()  # joins nothing: the binding must not deadlock on its own thread
        done.set()

    s.on_flag("stop", cb)
    path = s.segment_path
    with Segment(path) as seg:
        seg.set_flag("stop", 1)
        assert done.wait(5)
    assert s.closed and s.write(np.ones(1)) == "dropped"
    # The ring is still closed properly (no agent here: the producer removes it).
    assert wait_for(lambda: not os.path.exists(path))


EXIT_SCRIPTS = {
    # A callback registered and idle at exit.
    "idle": """
        s.on_flag("pause", lambda v: None)
        s.write(np.ones(2))
    """,
    # A callback running (sleeping, holding no GIL) while the interpreter exits.
    "running": """
        started = threading.Event()
        def slow(v):
            started.set()
            time.sleep(0.5)
        s.on_flag("pause", slow)
        Segment(s.segment_path).set_flag("pause", 1)
        started.wait(5)
    """,
    # Flags changing continuously while the main thread exits with an error status.
    "busy": """
        s.on_flag("pause", lambda v: sum(range(1000)))
        seg = Segment(s.segment_path)
        def flip():
            for i in range(100000):
                seg.set_flag("pause", i % 2)
        threading.Thread(target=flip, daemon=True).start()
        time.sleep(0.3)
        sys.exit(3)
    """,
    # A daemon thread still writing while the interpreter finalizes.
    "writer": """
        s.on_flag("pause", lambda v: None)
        def write():
            while True:
                s.write(np.ones(2))
        threading.Thread(target=write, daemon=True).start()
        time.sleep(0.2)
    """,
}


@pytest.mark.parametrize("case", sorted(EXIT_SCRIPTS))
def test_interpreter_exit_with_callbacks(case, shm_dir):
    body = textwrap.indent(textwrap.dedent(EXIT_SCRIPTS[case]), "    ")
    code = textwrap.dedent(f"""
        import sys, threading, time
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import numpy as np
        import mltap
        from ringview import Segment
        s = mltap.Stream("exit/x", features=["a", "b"], shm_dir={shm_dir!r})
        def main():
        """) + body + "\nmain()\nprint('done', flush=True)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    expected = 3 if case == "busy" else 0
    assert out.returncode == expected, out.stderr
    assert "Fatal" not in out.stderr and "terminate" not in out.stderr, out.stderr
    # atexit closed the stream; without an agent the producer removed its ring.
    assert os.listdir(shm_dir) == []
