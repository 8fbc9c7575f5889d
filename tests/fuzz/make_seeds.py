#!/usr/bin/python3
"""Writes the segment seeds of tests/fuzz/corpus/segment/ with the real Python SDK.

    PYTHONPATH=build/python /usr/bin/python3 tests/fuzz/make_seeds.py

Each seed is a real segment file as a producer left it, with its trailing zeros cut (the
segment target pads the image back to the size its header claims). Small rings (64 KiB, one
lane) keep the seeds small. regress-payload-overflow is derived from one of them by hand (see
its comment below): it is the input of a bug, not something the SDK writes.
"""
import os
import shutil
import struct
import sys
import tempfile

import numpy as np

import mltap

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "segment")


def seed(name, writes, **kw):
    d = tempfile.mkdtemp(prefix="mltap-seeds-", dir="/dev/shm")
    try:
        s = mltap.Stream("seed/" + name, component="seeds", shm_dir=d, namespace="seeds",
                         ring_bytes=64 << 10, lanes=1, sampling_budget=0, **kw)
        for x, ids in writes:
            s.write(x, trace_ids=ids)
        data = open(s.segment_path, "rb").read()
        s.close()
    finally:
        shutil.rmtree(d)
    image = data.rstrip(b"\0")
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(image)
    return data


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(7)
    feats = seed("features_f32_ids", [(rng.normal(size=(5, 3)).astype(np.float32), [1, 2, 3, 4, 5]),
                                      (np.array([1.0, np.nan, np.inf], dtype=np.float32), 9)],
                 features=["age", "amount", "items"])
    seed("matrix_f16", [(rng.normal(size=(4, 2, 2)).astype(np.float16), None)], row_shape=[2, 2], dtype="float16")
    seed("labels_i64", [(np.arange(10, dtype=np.int64), None)], kind="labels", features=["label"])
    seed("embeddings_u8_artifact", [(rng.integers(0, 255, size=(3, 16), dtype=np.uint8), None)],
         kind="embeddings", row_shape=[16], artifacts=["/srv/models/model.pt"])
    seed("mixed_dtypes", [(np.array([True, False, True]), None), (np.array([-1, 2, -3], dtype=np.int8), None),
                          (np.array([1, 2, 3], dtype=np.uint64), None), (np.array([0.5, 1.5, 2.5]), None)])
    # More than the ring holds: records wrap around its end and the oldest are overwritten.
    seed("wrapped_ring", [(rng.normal(size=(40, 32)).astype(np.float64), None) for _ in range(8)])

    # regress-payload-overflow: a 1 GiB ring (data_bytes 2^30, accepted by check_layout) holding
    # one float64 record of 2^31 rows x 2^30 elements: rows x elements x 8 = 2^64 wraps to a
    # 0-byte payload, which matched payload_bytes 0 and the 64-byte record, so the reader handed
    # ingest a record claiming 2^61 values over an empty payload.
    h = bytearray(feats)
    (lanes_offset,) = struct.unpack_from("<Q", h, 64)
    (index_offset, data_offset) = struct.unpack_from("<QQ", h, 88)
    ring = 1 << 30
    stride = (data_offset + ring + 4095) // 4096 * 4096
    struct.pack_into("<Q", h, 32, lanes_offset + stride)   # segment_bytes
    struct.pack_into("<Q", h, 72, stride)                   # lane_stride
    struct.pack_into("<QQ", h, 104, ring, ring)             # data_bytes, max_record_bytes
    idx = lanes_offset + index_offset                       # index entry of record 0
    rec = lanes_offset + data_offset                        # record 0 (ring position 0)
    struct.pack_into("<II", h, idx + 16, 64, 1 << 31)       # size, rows
    struct.pack_into("<II", h, rec + 16, 1 << 31, 0)        # rows, payload_bytes
    struct.pack_into("<HBBI", h, rec + 24, 2, 1, 0, 64)     # float64, ndim 1, no ids, payload at 64
    struct.pack_into("<I", h, rec + 32, 1 << 30)            # dims[0]
    with open(os.path.join(OUT, "regress-payload-overflow"), "wb") as f:
        f.write(bytes(h).rstrip(b"\0"))
    print("seeds written to", OUT)


if __name__ == "__main__":
    sys.exit(main())
