"""NumPy arrays and torch tensors written from Python, read by a real mltapd, checked in its
/metrics and /api/v1/streams against NumPy's statistics of the same data."""

import json
import os
import threading

import numpy as np
import pytest

import mltap
from ringview import Segment

FEATURES = ["f0", "f1", "f2", "f3"]


def expected_feature_stats(data):
    """What the agent must report per feature: data is (rows, features) float64."""
    out = []
    for col in data.T:
        finite = col[np.isfinite(col)]
        out.append(dict(values=len(col), nan=int(np.isnan(col).sum()), inf=int(np.isinf(col).sum()),
                        window_count=len(finite), mean=finite.mean(), variance=finite.var(),
                        min=finite.min(), max=finite.max()))
    return out


def check_stream(agent, name, component, data, writes=None):
    rows = len(data)
    writes = rows if writes is None else writes
    s = agent.wait_stream(name, lambda s: s["records"] >= rows and s["writes"] >= writes)
    assert s is not None, f"mltapd never listed stream {name}"
    assert s["records"] == rows and s["writes"] == writes, (name, s["records"], s["writes"])
    assert s["component"] == component
    got = {f["name"]: f for f in s["features"]}
    assert list(got) == FEATURES
    m = agent.metrics()
    assert m.exact("mltap_stream_records_total", stream=name, component=component) == rows
    assert m.exact("mltap_stream_writes_total", stream=name, component=component) == writes
    for fname, exp in zip(FEATURES, expected_feature_stats(data)):
        f = got[fname]
        ctx = (name, fname)
        assert f["values"] == exp["values"], ctx
        assert f["nan"] == exp["nan"], ctx
        assert f["inf"] == exp["inf"], ctx
        assert f["window_count"] == exp["window_count"], ctx
        assert f["min"] == exp["min"], ctx
        assert f["max"] == exp["max"], ctx
        assert f["mean"] == pytest.approx(exp["mean"], rel=1e-9, abs=1e-12), ctx
        assert f["variance"] == pytest.approx(exp["variance"], rel=1e-7, abs=1e-12), ctx
        # The same numbers in the Prometheus exposition.
        # (the text format prints doubles with 16 significant digits)
        assert m.exact("mltap_feature_mean", stream=name, feature=fname) == pytest.approx(exp["mean"], rel=1e-9, abs=1e-12), ctx
        assert m.exact("mltap_feature_min", stream=name, feature=fname) == pytest.approx(exp["min"], rel=1e-15), ctx
        assert m.exact("mltap_feature_max", stream=name, feature=fname) == pytest.approx(exp["max"], rel=1e-15), ctx
        assert (m.exact("mltap_feature_nonfinite_total", stream=name, feature=fname, kind="nan") or 0) == exp["nan"], ctx
        assert (m.exact("mltap_feature_nonfinite_total", stream=name, feature=fname, kind="inf") or 0) == exp["inf"], ctx
        assert m.exact("mltap_feature_values_total", stream=name, feature=fname) == exp["values"], ctx
    return s


def sample_data(dtype, rows, rng):
    dt = np.dtype(dtype)
    if dt.kind == "f":
        x = rng.normal(10.0, 3.0, size=(rows, len(FEATURES)))
        x[rng.random(x.shape) < 0.05] = np.nan
        x[rng.random(x.shape) < 0.01] = np.inf
        x[rng.random(x.shape) < 0.01] = -np.inf
        return x.astype(dt)
    if dt.kind == "b":
        return rng.random((rows, len(FEATURES))) < 0.3
    info = np.iinfo(dt)
    lo, hi = max(info.min, -(2 ** 40)), min(info.max, 2 ** 40)
    return rng.integers(lo, hi, size=(rows, len(FEATURES)), dtype=dt, endpoint=True)


NUMPY_DTYPES = ["float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8",
                "uint16", "uint32", "uint64", "bool"]


def test_numpy_dtypes_reach_the_metrics(agent, make_stream):
    rng = np.random.default_rng(1)
    expected = {}
    for dtype in NUMPY_DTYPES:
        name = f"np/{dtype}"
        s = make_stream(name, component="pytest", features=FEATURES, dtype=dtype,
                        sampling_budget=0)
        single = sample_data(dtype, 1, rng)[0]
        batch = sample_data(dtype, 200, rng)
        fortran = np.asfortranarray(sample_data(dtype, 50, rng))  # non-contiguous rows
        strided = sample_data(dtype, 60, rng)[::3]                 # every third row
        assert s.write(single) == mltap.WriteResult.written        # 1-D: one record
        assert s.write(batch) == "written"                         # 2-D: one record per row
        assert s.write(fortran) is mltap.WriteResult.written
        assert s.write(strided) is mltap.WriteResult.written
        all_rows = np.vstack([single[None, :], batch, fortran, strided]).astype(np.float64)
        st = s.stats()
        assert st["rows_written"] == st["rows_committed"] == len(all_rows)
        assert st["rows_copied"] == len(fortran) + len(strided)
        expected[name] = all_rows
    # Lists are converted (to the declared dtype) and counted as such.
    lst = make_stream("np/list", component="pytest", features=FEATURES, dtype="float64")
    rows = [[1.5, 2.0, -3.0, 4.25], [0.0, float("nan"), 7.0, 1e6]]
    assert lst.write(rows[0]) == "written"
    assert lst.write(rows[1:]) == "written"
    assert lst.stats()["rows_converted"] == 2
    expected["np/list"] = np.array(rows, dtype=np.float64)
    for name, data in expected.items():
        check_stream(agent, name, "pytest", data)


def test_torch_tensors_reach_the_metrics(agent, make_stream):
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(2)
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64,
                  torch.uint8, torch.bool):
        tag = str(dtype).replace("torch.", "")
        name = f"torch/{tag}"
        s = make_stream(name, component="torchtest", features=FEATURES, dtype=dtype)
        base = torch.randn(300, len(FEATURES), generator=gen) * 5 + 1
        base[torch.rand(base.shape, generator=gen) < 0.05] = float("nan")
        if dtype == torch.bool:
            t = torch.nan_to_num(base) > 1
        elif not dtype.is_floating_point:
            t = torch.nan_to_num(base).round().clamp(0 if dtype == torch.uint8 else -1000, 200).to(dtype)
        else:
            t = base.to(dtype)
        single = t[0]
        batch = t[1:200]
        transposed = t[200:].t().contiguous().t()   # same values, column-major storage
        assert not transposed.is_contiguous()
        grad = t[1:3].clone().requires_grad_(dtype.is_floating_point)  # autograd tensors are fine
        assert s.write(single) == "written"
        assert s.write(batch) == "written"
        assert s.write(transposed) == "written"
        assert s.write(grad) == "written"
        parts = [single[None, :], batch, transposed, grad.detach()]
        data = torch.cat(parts).to(torch.float64).numpy()
        assert s.stats()["rows_copied"] == len(transposed)
        check_stream(agent, name, "torchtest", data)


def test_sampling_counts_are_exact_in_the_agent(agent, make_stream):
    s = make_stream("sampled/x", component="pytest", features=FEATURES, sampling_budget=200)
    x = np.arange(64 * len(FEATURES), dtype=np.float32).reshape(64, len(FEATURES))
    results = {"written": 0, "sampled_out": 0, "dropped": 0}
    writes = 0
    # ~1 s at far above the budget so that sampling engages after the first window.
    import time
    end = time.monotonic() + 1.2
    while time.monotonic() < end:
        results[s.write(x)] += 1
        writes += len(x)
    # Bad input is counted too, and the invariant still holds.
    assert s.write(np.zeros((3, 4), dtype=np.complex64)) == "dropped"
    writes += 3
    st = s.stats()
    assert st["rows_written"] == writes
    assert st["rows_written"] == st["rows_committed"] + st["rows_sampled_out"] + st["rows_dropped"]
    assert st["rows_bad_input"] == 3
    assert st["rows_sampled_out"] > writes // 2, st  # the budget bit
    assert results["sampled_out"] > 0 and results["written"] > 0
    # Rows the agent lost to overwriting (the first window keeps everything) are counted too.
    a = agent.wait_stream("sampled/x", lambda a: a["writes"] == writes and
                          a["records"] + a["dropped"]["overwritten"] == st["rows_committed"])
    assert a["writes"] == writes
    assert a["records"] + a["dropped"]["overwritten"] == st["rows_committed"]
    assert a["sampled_out"] == st["rows_sampled_out"]
    assert a["dropped"]["bad_input"] == 3
    assert a["writes"] == a["records"] + a["sampled_out"] + sum(a["dropped"].values())
    m = agent.metrics()
    assert m.exact("mltap_stream_sampled_out_records_total", stream="sampled/x", component="pytest") == st["rows_sampled_out"]
    assert m.exact("mltap_stream_dropped_records_total", stream="sampled/x", reason="bad_input") == 3


def test_threads_write_one_stream_exactly(agent, make_stream):
    s = make_stream("threads/x", component="pytest", features=FEATURES, sampling_budget=0)
    per_thread = 2000

    start, end = threading.Barrier(4), threading.Barrier(4)  # all four own a lane at once

    def work(k):
        row = np.full(len(FEATURES), k, dtype=np.float64)
        start.wait()
        for _ in range(per_thread):
            s.write(row)
        end.wait()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    data = np.repeat(np.arange(4, dtype=np.float64), per_thread)[:, None].repeat(len(FEATURES), 1)
    check_stream(agent, "threads/x", "pytest", data)
    with Segment(s.segment_path) as seg:
        per_lane = [seg.lane_counters(i)["rows_written"] for i in range(seg.lane_count)]
    assert sorted(per_lane, reverse=True)[:5] == [per_thread] * 4 + [0]


def test_forked_child_is_a_second_producer_of_the_stream(agent, make_stream):
    s = make_stream("fork/x", component="pytest", features=FEATURES, sampling_budget=0)
    s.on_flag("pause", lambda v: None)  # a live SDK thread in the parent must not break the child
    row = np.ones(len(FEATURES), dtype=np.float32)
    for _ in range(100):
        s.write(row)
    parent_segment = s.segment_path
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: write, report, wait for the parent's check, close, exit
        code = 1
        try:
            os.close(to_child_w)
            os.close(to_parent_r)
            for _ in range(50):
                s.write(row * 2)
            report = dict(stats=s.stats(), segment=s.segment_path, pid=os.getpid())
            os.write(to_parent_w, json.dumps(report).encode() + b"\n")
            os.read(to_child_r, 1)
            s.close()
            code = 0
        finally:
            os._exit(code)
    os.close(to_child_r)
    os.close(to_parent_w)
    try:
        with os.fdopen(to_parent_r) as f:
            report = json.loads(f.readline())
        for _ in range(30):
            s.write(row)
        assert report["stats"]["rows_written"] == 50
        assert report["segment"] != parent_segment
        assert report["segment"].startswith(os.path.dirname(parent_segment))
        assert s.stats()["rows_written"] == 130
        a = agent.wait_stream("fork/x", lambda a: a["writes"] == 180 and a["records"] == 180)
        assert a["writes"] == 180 and a["records"] == 180
        pids = sorted(p["pid"] for p in a["producers"])
        assert pids == sorted([os.getpid(), pid])
        assert all(p["sdk"] == f"python/{mltap.__version__}" for p in a["producers"])
        data = np.vstack([np.ones((130, 4)), np.full((50, 4), 2.0)])
        check_stream(agent, "fork/x", "pytest", data)
    finally:
        os.write(to_child_w, b"x")
        os.close(to_child_w)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_environment_picks_namespace_and_ring_directory(agent, shm_dir, namespace, monkeypatch):
    monkeypatch.setenv("MLTAP_NAMESPACE", namespace)
    monkeypatch.setenv("MLTAP_SHM_DIR", shm_dir)
    with mltap.Stream("env/x", component="pytest", features=FEATURES) as s:
        assert os.path.dirname(s.segment_path) == shm_dir
        assert os.path.basename(s.segment_path).startswith(f"mltap.{namespace}.")
        s.write(np.arange(4.0))
        check_stream(agent, "env/x", "pytest", np.arange(4.0)[None, :])
