"""A small reader of mltap ring segments for tests, written from shm/include/mltap/format.hpp
(ABI 2): it reads what a Python producer put into its ring (records, trace ids, payload bytes)
and writes the agent's control block (flags) the way mltapd's reactions will.

It is deliberately independent of the C++ reader in agent/ingest so that the tests check the
producer against the documented layout, not against the agent's interpretation of it.
"""

import mmap
import os
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = 0x474E525041544C4D  # "MLTAPRNG"
ABI_MAJOR = 2
# LaneHeader (ABI 2): line 0 commit_seq, next_pos; line 1 reserve_seq, reserve_pos; line 2
# owner_tid, claims; line 3 the counters.
LANE_OWNER_TID = 128
LANE_COUNTERS = 192
PAGE = 4096
RECORD_ALIGN = 64
RECORD_HEADER = 64
HAS_TRACE_IDS = 1
FLAG_NAME_MAX = 32
CONTROL_FLAGS = 32
CONTROL_FLAGS_OFFSET = 128  # ControlBlock.flags
CONTROL_FLAG_SIZE = 40      # name[32], value u32, reserved u32

# DType -> numpy dtype of the stored bytes (bfloat16 is kept as its raw 16-bit pattern).
DTYPES = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("<i8"),
    5: np.dtype("u1"), 6: np.dtype("?"), 7: np.dtype("<f2"), 8: np.dtype("<u2"),
    9: np.dtype("i1"), 10: np.dtype("<i2"), 11: np.dtype("<u2"), 12: np.dtype("<u4"),
    13: np.dtype("<u8"),
}
DTYPE_NAMES = {
    1: "float32", 2: "float64", 3: "int32", 4: "int64", 5: "uint8", 6: "bool", 7: "float16",
    8: "bfloat16", 9: "int8", 10: "int16", 11: "uint16", 12: "uint32", 13: "uint64",
}


@dataclass
class Record:
    seq: int
    timestamp_ns: int
    rows: int
    dtype: int
    dims: tuple
    trace_ids: list
    payload: bytes

    def array(self):
        """Payload as an array of shape (rows, *dims)."""
        return np.frombuffer(self.payload, dtype=DTYPES[self.dtype]).reshape((self.rows,) + self.dims)


def _cstr(b):
    return b.split(b"\0", 1)[0].decode("ascii")


class Segment:
    def __init__(self, path):
        self.path = path
        fd = os.open(path, os.O_RDWR)
        try:
            self.size = os.fstat(fd).st_size
            self.mm = mmap.mmap(fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        h = self.mm
        (self.magic, self.abi_major, self.abi_minor, self.endian, self.header_bytes, self.word_bits,
         self.state, self.segment_bytes, self.control_offset, self.schema_offset, self.schema_bytes,
         self.lanes_offset, self.lane_stride, self.lane_count, self.index_entries, self.index_offset,
         self.data_offset, self.data_bytes, self.max_record_bytes, self.pid, self.uid,
         self.start_ticks) = struct.unpack_from("<QIIIIIIQQQQQQIIQQQQIIQ", h, 0)
        if self.magic != MAGIC or self.endian != 0x01020304 or self.abi_major != ABI_MAJOR:
            raise ValueError(f"{path}: not an ABI {ABI_MAJOR} mltap segment")
        if self.segment_bytes != self.size or self.lanes_offset + self.lane_stride * self.lane_count > self.size:
            raise ValueError(f"{path}: sizes do not match the file")
        if self.data_bytes & (self.data_bytes - 1) or self.index_entries & (self.index_entries - 1):
            raise ValueError(f"{path}: ring sizes are not powers of two")
        self.stream_name = _cstr(h[160:288])
        self.component = _cstr(h[288:352])
        self.sdk = _cstr(h[352:384])
        (self.kind, self.declared_dtype, self.declared_ndim) = struct.unpack_from("<HHI", h, 384)
        self.declared_shape = struct.unpack_from("<6I", h, 392)[: self.declared_ndim]
        (self.feature_count, self.sampling_budget) = struct.unpack_from("<II", h, 416)

    def close(self):
        self.mm.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def feature_names(self):
        count, _ = struct.unpack_from("<II", self.mm, self.schema_offset)
        refs = self.schema_offset + 8
        text = refs + 8 * count
        names = []
        for i in range(count):
            off, length = struct.unpack_from("<II", self.mm, refs + 8 * i)
            names.append(self.mm[text + off: text + off + length].decode("ascii"))
        return names

    # -- lanes and records ----------------------------------------------------------------
    def _lane(self, i):
        return self.lanes_offset + i * self.lane_stride

    def lane_counters(self, i):
        base = self._lane(i)
        commit_seq, = struct.unpack_from("<Q", self.mm, base)
        owner_tid, = struct.unpack_from("<I", self.mm, base + LANE_OWNER_TID)
        (rows_written, sampled_out, rows_committed, too_large, bad_input, records,
         nbytes) = struct.unpack_from("<7Q", self.mm, base + LANE_COUNTERS)
        return dict(commit_seq=commit_seq, owner_tid=owner_tid, rows_written=rows_written,
                    rows_sampled_out=sampled_out, rows_committed=rows_committed,
                    rows_too_large=too_large, rows_bad_input=bad_input,
                    records_committed=records, bytes_committed=nbytes)

    def _ring_bytes(self, lane_base, pos, n):
        data = lane_base + self.data_offset
        off = pos & (self.data_bytes - 1)
        first = min(n, self.data_bytes - off)
        out = self.mm[data + off: data + off + first]
        if first < n:
            out += self.mm[data: data + n - first]
        return out

    def records(self, lane=None):
        """Every committed record, oldest first. Raises if one was overwritten (tests size their
        rings so that nothing is)."""
        lanes = range(self.lane_count) if lane is None else [lane]
        for i in lanes:
            base = self._lane(i)
            commit_seq, = struct.unpack_from("<Q", self.mm, base)
            index = base + self.index_offset
            for seq in range(commit_seq):
                e_seq, e_pos, e_size, e_rows, _ = struct.unpack_from(
                    "<QQIIQ", self.mm, index + 32 * (seq & (self.index_entries - 1)))
                if e_seq != seq:
                    raise AssertionError(f"lane {i}: record {seq} was overwritten")
                raw = self._ring_bytes(base, e_pos, e_size)
                (r_seq, ts, rows, payload_bytes, dtype, ndim, flags,
                 payload_offset) = struct.unpack_from("<QQIIHBBI", raw, 0)
                dims = struct.unpack_from("<6I", raw, 32)[:ndim]
                assert r_seq == seq and rows == e_rows, "index and record disagree"
                assert payload_offset + payload_bytes == e_size, "record size mismatch"
                ids = []
                if flags & HAS_TRACE_IDS:
                    ids = list(struct.unpack_from(f"<{rows}Q", raw, RECORD_HEADER))
                payload = raw[payload_offset: payload_offset + payload_bytes]
                yield Record(seq, ts, rows, dtype, tuple(dims), ids, payload)

    # -- control block (the agent's side) -------------------------------------------------
    def set_flag(self, name, value, leave_odd=False):
        """Sets a flag like the agent does: generation odd, change, generation even.
        With leave_odd the update is left half-done (an agent that died mid-update)."""
        raw = name.encode("ascii")
        assert 0 < len(raw) < FLAG_NAME_MAX
        cb = self.control_offset
        gen, = struct.unpack_from("<Q", self.mm, cb)
        if gen % 2:
            gen += 1  # finish a previous half-done update first
        struct.pack_into("<Q", self.mm, cb, gen + 1)
        slot = None
        for i in range(CONTROL_FLAGS):
            off = cb + CONTROL_FLAGS_OFFSET + CONTROL_FLAG_SIZE * i
            existing = _cstr(self.mm[off: off + FLAG_NAME_MAX])
            if existing == name or (slot is None and existing == ""):
                slot = off
                if existing == name:
                    break
        assert slot is not None, "no free flag slot"
        self.mm[slot: slot + FLAG_NAME_MAX] = raw + b"\0" * (FLAG_NAME_MAX - len(raw))
        struct.pack_into("<I", self.mm, slot + FLAG_NAME_MAX, value)
        if not leave_odd:
            struct.pack_into("<Q", self.mm, cb, gen + 2)

    def finish_control_update(self):
        cb = self.control_offset
        gen, = struct.unpack_from("<Q", self.mm, cb)
        if gen % 2:
            struct.pack_into("<Q", self.mm, cb, gen + 1)
