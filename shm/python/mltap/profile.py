"""mltap.Profile: the detectors' profile builder (extension mltap._profile), with from_array for
training data (NumPy, torch, pandas, lists). Imported by mltap.__getattr__ on first use."""

import sys

try:
    from . import _profile
except ImportError:  # built without agent/detectors
    _profile = None

DEFAULT_EMBEDDING_SEED = 0x6D6C746170


def _from_array(cls, x, features=None, *, layout="features", bins=256, categorical=(),
                numeric=(), categorical_max_distinct=64, max_categories=64, class_threshold=0.5,
                embedding_projections=16, embedding_seed=DEFAULT_EMBEDDING_SEED, source="python"):
    """Builds a reference profile from training data with exact quantile bins.

    x: rows of training data: a 2-D array (rows x features), a 1-D array (one feature), or an
    N-D array (rows x a row shape, flattened to columns); NumPy arrays, CPU torch tensors,
    pandas DataFrames (whose columns name the features) and nested lists. NaN/Inf are allowed
    and counted. features: one name per column (default f0, f1, ...). layout: "features",
    "predictions" (adds the predicted class) or "embeddings" (norm and random projections).
    categorical/numeric: names of features forced to that kind (integer features with at most
    categorical_max_distinct values are categorical otherwise). Raises mltap.ProfileError
    (a ValueError) for data the builder refuses, TypeError for non-numeric data.
    """
    import numpy as np

    dtype = None
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        dtype = str(x.dtype).replace("torch.", "")
        x = x.detach().to(device="cpu", dtype=torch.float64).numpy()
    if features is None and hasattr(x, "columns"):
        features = [str(c) for c in x.columns]
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"mltap.Profile.from_array: numeric data expected, got dtype {a.dtype}")
    if dtype is None:
        dtype = a.dtype.name
    if a.ndim == 0:
        raise ValueError("mltap.Profile.from_array: expected rows of data, got a scalar")
    if a.ndim == 1:
        a = a[:, None]
    row_shape = [int(d) for d in a.shape[1:]]
    cols = int(np.prod(row_shape))
    a = np.ascontiguousarray(a.reshape(a.shape[0], cols), dtype=np.float64)
    if isinstance(features, str):
        raise TypeError("mltap.Profile.from_array: features must be a list of names, not a str")
    return cls._build(a, [str(f) for f in features] if features is not None else [], layout,
                      bins, categorical_max_distinct, max_categories, list(categorical),
                      list(numeric), embedding_projections, embedding_seed, class_threshold,
                      dtype, row_shape, source)


if _profile is not None:
    _profile.Profile.from_array = classmethod(_from_array)
    Profile = _profile.Profile
    ProfileError = _profile.ProfileError
