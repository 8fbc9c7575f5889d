"""mltap: write tensors from ML processes into shared-memory rings that mltapd observes.

    import mltap
    s = mltap.Stream("shop/features", component="featuregen", features=["age", "amount"])
    s.write(np.array([41.0, 12.5], dtype=np.float32))      # one record
    s.write(batch, trace_ids=request_ids)                    # one record per row

See shm/python/README.md for what raises and what is counted.
"""

import enum

from . import _mltap
from . import profile as _profile  # attaches Profile.from_array
from ._mltap import Stream

__version__ = _mltap.__version__
__all__ = ["Stream", "WriteResult", "__version__"]

# Reference profiles for drift detection (present when built with agent/detectors).
if hasattr(_mltap, "Profile"):
    from ._mltap import Profile, ProfileError
    __all__ += ["Profile", "ProfileError"]


class WriteResult(str, enum.Enum):
    """What Stream.write did; members compare equal to their names ("written", ...)."""

    written = "written"          # at least one row reached the ring
    sampled_out = "sampled_out"  # the sampler kept none of the rows
    dropped = "dropped"          # lost: bad input, too large, no lane, no ring or closed

    def __str__(self) -> str:
        return self.value


_mltap._set_write_results(WriteResult.written, WriteResult.sampled_out, WriteResult.dropped)
