"""What Stream.write accepts, how inputs become records (checked in the ring itself), what is
counted as bad input and what raises (shm/python/README.md, "What raises and what is counted")."""

import array
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import mltap
from ringview import DTYPE_NAMES, Segment


def records(stream):
    with Segment(stream.segment_path) as seg:
        return list(seg.records())


def test_version_sdk_and_header(make_stream):
    s = make_stream("hdr/x", component="unit", features=["a", "b"], kind="predictions",
                    dtype="float32", sampling_budget=123)
    assert mltap.__version__.count(".") == 2
    with Segment(s.segment_path) as seg:
        assert seg.sdk == f"python/{mltap.__version__}"
        assert seg.stream_name == "hdr/x" and seg.component == "unit"
        assert seg.kind == 2 and DTYPE_NAMES[seg.declared_dtype] == "float32"
        assert seg.declared_shape == (2,) and seg.feature_names() == ["a", "b"]
        assert seg.sampling_budget == 123
    assert repr(s).startswith("<mltap.Stream 'hdr/x' component='unit' segment='")


def test_records_batches_and_row_shapes(make_stream):
    s = make_stream("shape/x", sampling_budget=0)  # no declared row: any shape is a record
    x = np.arange(24, dtype=np.float32)
    s.write(x[:3])                      # 1-D: one record of 3
    s.write(x[:12].reshape(4, 3))       # 2-D: 4 rows of 3
    s.write(x.reshape(2, 3, 4))         # 3-D: 2 rows of 3x4
    s.write(np.float64(2.5))            # a NumPy scalar: one record of one value
    s.write(7)                          # a Python number: likewise (converted)
    s.write(np.arange(5.0))             # a longer row
    recs = records(s)
    assert [(r.rows, r.dims, DTYPE_NAMES[r.dtype]) for r in recs] == [
        (1, (3,), "float32"), (4, (3,), "float32"), (2, (3, 4), "float32"),
        (1, (1,), "float64"), (1, (1,), "int64"), (1, (5,), "float64")]
    np.testing.assert_array_equal(recs[2].array(), x.reshape(2, 3, 4))
    assert s.stats()["rows_written"] == 1 + 4 + 2 + 1 + 1 + 1
    assert s.stats()["rows_converted"] == 1

    img = make_stream("shape/img", kind="raw", row_shape=(2, 3), sampling_budget=0)
    img.write(np.ones((2, 3)))          # the declared record dims: one record
    img.write(np.ones((5, 2, 3)))       # one more dim: a batch of 5
    assert [(r.rows, r.dims) for r in records(img)] == [(1, (2, 3)), (5, (2, 3))]


def test_rows_of_another_width_than_declared_are_bad_input(make_stream):
    s = make_stream("width/x", features=["a", "b", "c"], sampling_budget=0)
    x = np.arange(24, dtype=np.float32)
    assert s.write(x[:3]) == "written"
    assert s.write(x[:12].reshape(4, 3)) == "written"
    with pytest.warns(RuntimeWarning, match=r"a record of shape \(5,\) for a stream declaring \(3,\)"):
        assert s.write(np.arange(5.0)) == "dropped"            # longer row
    with warnings.catch_warnings():
        warnings.simplefilter("error")                           # warned once per stream
        assert s.write(x[:2]) == "dropped"                       # shorter row
        assert s.write(x.reshape(2, 3, 4)) == "dropped"          # 2 rows of 3x4
        assert s.write(x[:8].reshape(4, 2)[::2]) == "dropped"    # non-contiguous, 2 rows of 2
        assert s.write(7) == "dropped"                           # one value
    st = s.stats()
    assert st["rows_bad_input"] == 1 + 1 + 2 + 2 + 1
    assert st["rows_committed"] == 1 + 4
    assert st["rows_written"] == st["rows_committed"] + st["rows_bad_input"]
    assert [(r.rows, r.dims) for r in records(s)] == [(1, (3,)), (4, (3,))]

    img = make_stream("width/img", kind="raw", row_shape=(2, 3), sampling_budget=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert img.write(np.ones((3, 2))) == "dropped"           # same size, other shape
    assert img.write(np.ones((2, 3))) == "written"
    assert img.stats()["rows_bad_input"] == 1


def test_duplicate_feature_names_are_refused(make_stream):
    with pytest.raises(ValueError, match="duplicate feature name 'a' \\(features 0 and 2\\)"):
        make_stream("dup/x", features=["a", "b", "a"])


@pytest.mark.parametrize("value", ["a/b", "../../etc", "UPPER", "x" * 32])
def test_an_invalid_namespace_variable_is_an_error_that_names_it(shm_dir, value):
    code = (
        "import mltap\n"
        "try:\n"
        f"    mltap.Stream('ns/x', shm_dir={shm_dir!r})\n"
        "except ValueError as e:\n"
        "    print('ValueError:', e)\n")
    env = dict(os.environ, MLTAP_NAMESPACE=value)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"ValueError: mltap: MLTAP_NAMESPACE='{value}' is not a valid namespace" in out.stdout
    assert os.listdir(shm_dir) == []  # nothing written anywhere, "default" included
    # An explicit namespace= wins over the variable; an empty variable means "default".
    ok = ("import mltap\n"
          f"s = mltap.Stream('ns/x', shm_dir={shm_dir!r}, namespace='given')\n"
          "print(s.segment_path)\n"
          f"t = mltap.Stream('ns/y', shm_dir={shm_dir!r})\n")
    out = subprocess.run([sys.executable, "-c", ok], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1 and "MLTAP_NAMESPACE" in out.stderr
    assert "/mltap.given." in out.stdout
    out = subprocess.run([sys.executable, "-c", ok.replace("namespace='given'", "")],
                         env=dict(os.environ, MLTAP_NAMESPACE=""), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "/mltap.default." in out.stdout, out.stderr


def test_one_value_records_take_1d_arrays_as_batches(make_stream):
    labels = make_stream("labels/y", kind="labels", features=["label"], sampling_budget=0)
    assert labels.write(np.array([0, 1, 1, 0]), trace_ids=[10, 11, 12, 13]) == "written"
    assert labels.write(1, trace_ids=14) == "written"
    scores = make_stream("scores/p", kind="predictions", row_shape=[1], sampling_budget=0)
    scores.write(np.array([0.1, 0.9, 0.4]))
    assert [(r.rows, r.dims, r.trace_ids) for r in records(labels)] == [
        (4, (1,), [10, 11, 12, 13]), (1, (1,), [14])]
    assert [(r.rows, r.dims) for r in records(scores)] == [(3, (1,))]
    assert labels.stats()["rows_written"] == 5


def test_non_contiguous_and_foreign_byte_order_are_copied(make_stream):
    s = make_stream("copy/x", features=["a", "b", "c"], sampling_budget=0)
    base = np.arange(60, dtype=np.float64).reshape(10, 6)
    inputs = [base[:, ::2], base[::-1, 1:4], np.asfortranarray(base[:, :3]),
              base[:, :3].astype(">f8"), base[:4, :3].T.T[::2]]
    for a in inputs:
        assert s.write(a) == "written"
    st = s.stats()
    assert st["rows_copied"] == sum(len(a) for a in inputs)
    recs = records(s)
    for a, r in zip(inputs, recs):
        np.testing.assert_array_equal(r.array(), np.ascontiguousarray(a, dtype="<f8"))
    # Contiguous, native input is not copied by the binding.
    s.write(base[:, :3].copy())
    assert s.stats()["rows_copied"] == st["rows_copied"]
    # A batch larger than the binding's 1 MiB gather chunk arrives complete, in order.
    big = np.arange(3 * 200_000, dtype=np.float32).reshape(3, 200_000).T  # 2.4 MB, strided
    big_stream = make_stream("copy/big", features=["a", "b", "c"], sampling_budget=0, ring_bytes=8 << 20)
    assert big_stream.write(big) == "written"
    got = np.vstack([r.array() for r in records(big_stream)])
    np.testing.assert_array_equal(got, big)
    assert len(records(big_stream)) > 1


def test_every_format_dtype(make_stream):
    s = make_stream("dtypes/x", sampling_budget=0)
    for dt in ["float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8",
               "uint16", "uint32", "uint64", "bool"]:
        a = (np.arange(6) % 2).astype(dt).reshape(2, 3)
        assert s.write(a) == "written", dt
    names = [DTYPE_NAMES[r.dtype] for r in records(s)]
    assert names == ["float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8",
                     "uint16", "uint32", "uint64", "bool"]


def test_torch_dtypes_and_payload(make_stream):
    torch = pytest.importorskip("torch")
    s = make_stream("torch/x", sampling_budget=0)
    t32 = torch.linspace(-2, 2, 12).reshape(4, 3)
    for t in (t32, t32.to(torch.bfloat16), t32.to(torch.float16), t32.to(torch.int16),
              torch.nn.Parameter(t32.clone())):
        assert s.write(t) == "written"
    recs = records(s)
    assert [DTYPE_NAMES[r.dtype] for r in recs] == ["float32", "bfloat16", "float16", "int16", "float32"]
    np.testing.assert_array_equal(recs[0].array(), t32.numpy())
    # bfloat16 is stored as its raw 16 bits
    np.testing.assert_array_equal(recs[1].array(), t32.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16))
    np.testing.assert_array_equal(recs[2].array(), t32.to(torch.float16).numpy())


def test_buffer_protocol_objects(make_stream):
    s = make_stream("buf/x", sampling_budget=0)
    assert s.write(array.array("d", [1.0, 2.0, 3.0])) == "written"
    assert s.write(memoryview(np.arange(6, dtype=np.int32).reshape(2, 3))) == "written"
    assert s.write(memoryview(np.arange(12, dtype=np.uint8).reshape(3, 4)[:, ::2])) == "written"  # strided
    recs = records(s)
    assert [(r.rows, r.dims, DTYPE_NAMES[r.dtype]) for r in recs] == [
        (1, (3,), "float64"), (2, (3,), "int32"), (3, (2,), "uint8")]
    np.testing.assert_array_equal(recs[2].array(), np.arange(12, dtype=np.uint8).reshape(3, 4)[:, ::2])


BAD_INPUTS = [
    ("object array", lambda: np.array([[1, None], [2, 3]], dtype=object), 2),
    ("complex", lambda: np.ones((3, 2), dtype=np.complex128), 3),
    ("str array", lambda: np.array(["a", "b"]), 1),
    ("datetime", lambda: np.array(["2024-01-01"], dtype="datetime64[D]"), 1),
    ("longdouble", lambda: np.ones(4, dtype=np.longdouble), 1),
    ("7-D rows", lambda: np.ones((2,) + (1,) * 7), 2),
    ("empty row", lambda: np.ones((4, 0)), 4),
    ("ragged list", lambda: [[1.0, 2.0], [3.0]], 1),
    ("list of str", lambda: ["a", "b"], 1),
]


@pytest.mark.parametrize("what,make,rows", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_data_is_counted_not_raised(make_stream, what, make, rows):
    s = make_stream("bad/x", sampling_budget=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert s.write(make()) == mltap.WriteResult.dropped
        assert s.write(make()) == "dropped"
    st = s.stats()
    assert st["rows_written"] == 2 * rows
    assert st["rows_bad_input"] == 2 * rows
    assert st["rows_committed"] == 0
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1  # once
    assert records(s) == []


def test_rows_larger_than_the_ring_allows(make_stream):
    s = make_stream("big/x", ring_bytes=64 << 10, sampling_budget=0)  # records up to 32 KiB
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert s.write(np.ones(10_000, dtype=np.float32)) == "dropped"          # 40 KB row
        assert s.write(np.asfortranarray(np.ones((3, 10_000), dtype=np.float32))) == "dropped"  # strided
    big_batch = np.ones((1500, 8), dtype=np.float32)  # 48 KB in 32-byte rows: split, kept
    assert s.write(big_batch) == "written"
    st = s.stats()
    assert st["rows_too_large"] + st["rows_bad_input"] == 1 + 3
    assert st["rows_committed"] == 1500
    assert st["rows_written"] == st["rows_committed"] + st["rows_dropped"]
    assert len(records(s)) > 1


def test_bad_trace_id_length_is_counted(make_stream):
    s = make_stream("bad/ids", sampling_budget=0)
    with pytest.warns(RuntimeWarning, match="trace_ids has 3 ids for 2 rows"):
        assert s.write(np.ones((2, 4)), trace_ids=[1, 2, 3]) == "dropped"
    assert s.write(np.ones((2, 4)), trace_ids=5) == "dropped"  # one id for two rows
    assert s.write(np.ones((2, 4)).T[:2], trace_ids=[1]) == "dropped"  # non-contiguous, too
    st = s.stats()
    assert st["rows_bad_input"] == 6 and st["rows_written"] == 6


def test_warnings_as_errors_do_not_make_write_raise(make_stream):
    s = make_stream("bad/strict", sampling_budget=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert s.write(np.ones(3, dtype=complex)) == "dropped"
    assert s.stats()["rows_bad_input"] == 1


def test_torch_inputs_the_format_cannot_carry(make_stream):
    torch = pytest.importorskip("torch")
    s = make_stream("bad/torch", sampling_budget=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert s.write(torch.ones(3, 4, device="meta")) == "dropped"          # not on the CPU
        assert s.write(torch.ones(2, 4, dtype=torch.complex64)) == "dropped"   # dtype
        assert s.write(torch.eye(5).to_sparse()) == "dropped"                  # layout
    assert s.stats()["rows_bad_input"] == 3 + 2 + 5


RAISES = [
    ("str", lambda s: s.write("1.0"), TypeError),
    ("None", lambda s: s.write(None), TypeError),
    ("dict", lambda s: s.write({"a": 1}), TypeError),
    ("bytes", lambda s: s.write(b"abc"), TypeError),
    ("no argument", lambda s: s.write(), TypeError),
    ("three arguments", lambda s: s.write(np.ones(2), 1, 2), TypeError),
    ("unknown keyword", lambda s: s.write(np.ones(2), trace=1), TypeError),
    ("float trace id", lambda s: s.write(np.ones(2), trace_ids=1.5), TypeError),
    ("str trace ids", lambda s: s.write(np.ones((2, 2)), trace_ids="ab"), TypeError),
    ("float trace id array", lambda s: s.write(np.ones((2, 2)), trace_ids=np.ones(2)), TypeError),
    ("list of non-int ids", lambda s: s.write(np.ones((2, 2)), trace_ids=[1, "2"]), TypeError),
    ("2-D trace ids", lambda s: s.write(np.ones((2, 2)), trace_ids=np.ones((2, 1), dtype=np.int64)), ValueError),
    ("id above 2**64", lambda s: s.write(np.ones(2), trace_ids=2 ** 64), ValueError),
    ("id below -2**63", lambda s: s.write(np.ones(2), trace_ids=-(2 ** 63) - 1), ValueError),
]


@pytest.mark.parametrize("what,call,exc", RAISES, ids=[r[0] for r in RAISES])
def test_argument_errors_raise(make_stream, what, call, exc):
    s = make_stream("raise/x", sampling_budget=0)
    with pytest.raises(exc, match="mltap|Stream.write"):
        call(s)
    assert s.stats()["rows_written"] == 0  # nothing was counted


def test_keyword_arguments_and_results(make_stream):
    s = make_stream("kw/x", sampling_budget=0)
    r = s.write(x=np.ones(2), trace_ids=[7])
    assert r is mltap.WriteResult.written and r == "written" and str(r) == "written"
    assert s.write(np.ones(2), [8]) == "written"
    assert [r.trace_ids for r in records(s)] == [[7], [8]]


CONSTRUCTOR_ERRORS = [
    (dict(name="bad name with spaces"), ValueError),
    (dict(name=5), TypeError),
    (dict(kind="weights"), ValueError),
    (dict(features="age"), TypeError),
    (dict(features=["ok", 3]), TypeError),
    (dict(features=["a", "b"], row_shape=[3]), ValueError),
    (dict(row_shape=[1] * 7), ValueError),
    (dict(row_shape=[0]), ValueError),
    (dict(dtype="complex64"), ValueError),
    (dict(ring_bytes=100000), ValueError),
    (dict(lanes=0), ValueError),
    (dict(sampling_budget=-1), ValueError),
    (dict(sampling_budget=1.5), TypeError),
    (dict(namespace="UPPER"), ValueError),
    (dict(clock="atomic"), ValueError),
    (dict(component="has space"), ValueError),
]


@pytest.mark.parametrize("kw,exc", CONSTRUCTOR_ERRORS, ids=[str(c[0]) for c in CONSTRUCTOR_ERRORS])
def test_constructor_errors(shm_dir, kw, exc):
    kw = dict(kw)
    name = kw.pop("name", "ctor/x")
    with pytest.raises(exc, match="mltap"):
        mltap.Stream(name, shm_dir=shm_dir, **kw)


def test_dtype_spellings(make_stream):
    torch = pytest.importorskip("torch")
    for spelling, name in [(np.float32, "float32"), (np.dtype("int16"), "int16"), ("bool", "bool"),
                           (torch.bfloat16, "bfloat16"), (float, "float64"), (np.bool_, "bool")]:
        s = make_stream("dt/x", dtype=spelling)
        with Segment(s.segment_path) as seg:
            assert DTYPE_NAMES[seg.declared_dtype] == name, spelling


def test_lists_follow_the_declared_dtype(make_stream):
    s = make_stream("lists/x", features=["a", "b"], dtype="float32", sampling_budget=0)
    s.write([1, 2])
    s.write(((1.5, 2.5), (3.5, 4.5)))
    bf = make_stream("lists/bf", features=["a", "b"], dtype="bfloat16", sampling_budget=0)
    bf.write([1, 2])  # NumPy has no bfloat16: float32
    assert [DTYPE_NAMES[r.dtype] for r in records(s) + records(bf)] == ["float32", "float32", "float32"]
    assert s.stats()["rows_converted"] == 3


def test_close_and_context_manager(make_stream, shm_dir):
    with mltap.Stream("ctx/x", shm_dir=shm_dir) as s:
        assert s.write(np.ones(2)) == "written"
        path = s.segment_path
    assert s.closed and s.segment_path is None
    assert s.write(np.ones(2)) == "dropped"
    st = s.stats()
    assert st["writes_after_close"] == 1 and st["rows_written"] == 1  # counters survive close
    s.close()  # idempotent
    import os
    assert not os.path.exists(path)  # no agent present: the producer removes its ring


def test_stream_closed_while_converting_its_input(make_stream):
    s = make_stream("reentrant/x", sampling_budget=0)

    class Closes:
        def __array__(self, dtype=None):
            s.close()
            return np.ones(3)

    assert s.write(Closes()) == "dropped"
    assert s.stats()["writes_after_close"] == 1


def test_import_does_not_pull_in_numpy_or_torch(tmp_path):
    code = ("import sys, array, mltap\n"
            f"s = mltap.Stream('imp/x', shm_dir={str(tmp_path)!r})\n"
            "assert s.write(array.array('f', [1.0, 2.0])) == 'written'\n"
            "assert s.write(memoryview(b'abc').cast('B')) == 'written'\n"
            "s.close()\n"
            "print('numpy' in sys.modules, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
