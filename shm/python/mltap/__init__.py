"""mltap: write tensors from ML processes into shared-memory rings that mltapd observes.

    import mltap
    s = mltap.Stream("shop/features", component="featuregen", features=["age", "amount"])
    s.write(np.array([41.0, 12.5], dtype=np.float32))      # one record
    s.write(batch, trace_ids=request_ids)                    # one record per row

See shm/python/README.md for what raises and what is counted.
"""

import enum

from . import _mltap
from ._mltap import Stream

__version__ = _mltap.__version__
__all__ = ["Stream", "WriteResult", "__version__"]


def __getattr__(name):
    # Reference profiles for drift detection live in their own extension (mltap._profile, linked
    # to the detectors): loaded on first use, so a process that only writes streams loads the SDK
    # alone. AttributeError when the package was built without agent/detectors.
    if name in ("Profile", "ProfileError"):
        from . import profile
        value = getattr(profile, name, None)
        if value is not None:
            globals()[name] = value
            return value
    raise AttributeError(f"module 'mltap' has no attribute '{name}'")


class WriteResult(str, enum.Enum):
    """What Stream.write did; members compare equal to their names ("written", ...)."""

    written = "written"          # at least one row reached the ring
    sampled_out = "sampled_out"  # the sampler kept none of the rows
    dropped = "dropped"          # lost: bad input, too large, no lane, no ring or closed

    def __str__(self) -> str:
        return self.value


_mltap._set_write_results(WriteResult.written, WriteResult.sampled_out, WriteResult.dropped)
