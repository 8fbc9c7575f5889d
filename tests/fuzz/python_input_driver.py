# The Python half of python_input_fuzzer (tests/fuzz/README.md): turns the fuzzer's bytes into
# one Stream.write(x, trace_ids=...) call on one of a few streams of the real _mltap extension
# (compiled into the fuzzer, so its C++ conversion code, shm/python/src/tensor_input.cpp and
# py_stream.cpp, is instrumented). x is a NumPy array of any dtype (incl. ones the format cannot
# carry), shape, byte order and memory layout (reversed, strided, transposed, broadcast, read-only,
# Fortran order), a nested list/tuple (ragged, mixed, huge ints), a number, a buffer-protocol
# object, an __array__ object, or an object of the wrong kind. Only safe NumPy views are built:
# the memory x describes is always memory x owns.
#
# run(data) returns normally or raises what Stream.write raised; the C++ side accepts only
# TypeError and ValueError (README "What raises and what is counted"). The warnings filter is
# "error": the binding must still never raise a RuntimeWarning out of write().
import array
import warnings

import numpy as np

import _mltap

warnings.simplefilter("error")

DTYPES = ["float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8", "uint16",
          "uint32", "uint64", "bool", ">f4", ">i8", ">f8", "<u2", "complex64", "object", "U3",
          "datetime64[s]", "longdouble", "V4"]


class Skip(Exception):
    """The input does not describe a buildable object: not a finding."""


class Reader:
    def __init__(self, data):
        self.data = data
        self.i = 0

    def u8(self):
        if self.i >= len(self.data):
            return 0
        self.i += 1
        return self.data[self.i - 1]

    def rest(self, n):
        chunk = self.data[self.i:self.i + n]
        self.i += len(chunk)
        return chunk


class ArrayLike:
    def __init__(self, value, fail):
        self.value = value
        self.fail = fail

    def __array__(self, dtype=None):
        if self.fail:
            raise RuntimeError("__array__ refused")
        return np.asarray(self.value, dtype=dtype)


def make_array(r):
    dt = np.dtype(DTYPES[r.u8() % len(DTYPES)])
    ndim = r.u8() % 5
    shape = tuple(r.u8() % 6 for _ in range(ndim))
    n = int(np.prod(shape)) if shape else 1
    if dt.kind in "biufc":
        raw = r.rest(n * dt.itemsize)
        raw = raw + bytes(n * dt.itemsize - len(raw))
        a = np.frombuffer(raw, dtype=dt).copy().reshape(shape)
    elif dt.kind == "O":
        a = np.empty(shape, dtype=object)
        a.fill(r.u8())
    else:
        a = np.zeros(shape, dtype=dt)
    t = r.u8()
    if t & 1 and a.ndim >= 1:
        a = a[::-1]
    if t & 2 and a.ndim >= 2:
        a = a.T
    if t & 4 and a.ndim >= 1 and a.shape[-1] > 1:
        a = a[..., ::2]
    if t & 8 and a.ndim >= 1:
        a = np.broadcast_to(a, (r.u8() % 4,) + a.shape)  # zero strides
    if t & 16:
        a = np.asfortranarray(a)
    if t & 32 and a.dtype.kind in "biuf":
        a = a.byteswap().view(a.dtype.newbyteorder())  # other byte order, same values
    if t & 64:
        a = a.view()
        a.flags.writeable = False
    return a


def make_list(r, depth=0):
    k = r.u8()
    if depth < 4 and k % 3 == 0:
        items = [make_list(r, depth + 1) for _ in range(r.u8() % 5)]
        return tuple(items) if k & 8 else items
    choice = k % 7
    if choice == 0:
        return r.u8() - 128
    if choice == 1:
        return (r.u8() - 128) / 7.0
    if choice == 2:
        return bool(k & 16)
    if choice == 3:
        return (1 << (r.u8() % 130)) * (-1 if k & 32 else 1)  # beyond int64 and uint64
    if choice == 4:
        return float("nan") if k & 16 else float("-inf")
    if choice == 5:
        return None if k & 16 else "x"
    return np.float16(r.u8())


def make_x(r):
    kind = r.u8() % 9
    if kind <= 2:
        return make_array(r)
    if kind == 3:
        return make_list(r)
    if kind == 4:
        return [make_list(r) for _ in range(r.u8() % 4)]
    if kind == 5:
        v = r.u8()
        return [v, float(v), True, np.int64(v), np.float32(v), 1 << 70][v % 6]
    if kind == 6:
        a = make_array(r)
        if a.dtype.kind in "biuf" and a.dtype.isnative:
            return memoryview(np.ascontiguousarray(a))
        return array.array("d", [float(v) for v in r.rest(r.u8() % 16)])
    if kind == 7:
        return ArrayLike(make_list(r), r.u8() & 1)
    return [None, "text", b"bytes", {"a": 1}, object()][r.u8() % 5]


def make_ids(r):
    k = r.u8() % 8
    if k == 0:
        return None
    if k == 1:
        return (r.u8() << 56) - (1 << 63)
    if k == 2:
        return [r.u8() * 1000 for _ in range(r.u8() % 6)]
    if k == 3:
        return np.arange(r.u8() % 6, dtype=["int64", "uint64", "int32", "float64", "bool"][r.u8() % 5])
    if k == 4:
        return np.zeros((2, r.u8() % 3), dtype=np.int64)
    if k == 5:
        return [1 << 64, -(1 << 63) - 1][r.u8() % 2]
    if k == 6:
        return "ids"
    return np.arange(6, dtype=np.int64)[::-1][: r.u8() % 6]


streams = []


def setup(shm_dir):
    common = dict(shm_dir=shm_dir, namespace="fuzz", ring_bytes=64 << 10, lanes=1, sampling_budget=0)
    streams.append(_mltap.Stream("fuzz/any", component="fuzz", **common))
    streams.append(_mltap.Stream("fuzz/features", component="fuzz", features=["a", "b", "c"], **common))
    streams.append(_mltap.Stream("fuzz/matrix", component="fuzz", row_shape=[2, 2], dtype="float16", **common))
    streams.append(_mltap.Stream("fuzz/labels", component="fuzz", kind="predictions", features=["p"],
                                 dtype="int64", **common))


def check_stats(s):
    st = s.stats()
    dropped = st["rows_too_large"] + st["rows_bad_input"] + st["rows_no_lane"] + st["rows_no_ring"]
    if st["rows_written"] != st["rows_committed"] + st["rows_sampled_out"] + dropped:
        raise AssertionError("stats do not add up: %r" % (st,))


def run(data):
    r = Reader(data)
    s = streams[r.u8() % len(streams)]
    try:
        x = make_x(r)
        ids = make_ids(r)
    except Exception:  # the builder's own failures (e.g. ragged lists, V4 arrays) are not findings
        return
    try:
        result = s.write(x, trace_ids=ids)
    except (TypeError, ValueError):
        check_stats(s)
        return
    if result not in ("written", "sampled_out", "dropped"):
        raise AssertionError("write returned %r" % (result,))
    check_stats(s)
