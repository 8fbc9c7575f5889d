"""mltap.Profile: the detectors' reference-profile builder bound to Python. The builder's own
statistics are tested in tests/detectors; here: what Python passes in arrives intact."""

import json

import numpy as np
import pytest

import mltap

pytestmark = pytest.mark.skipif(not hasattr(mltap, "Profile"), reason="built without agent/detectors")


def test_from_numpy_matches_numpy(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.normal(3.0, 2.0, size=(2000, 3))
    x[rng.random(x.shape) < 0.02] = np.nan
    x[7, 2] = np.inf
    x[:, 1] = rng.integers(0, 4, size=2000)  # few distinct integers: categorical
    p = mltap.Profile.from_array(x, features=["amount", "segment", "score"], bins=64)
    assert (p.rows, p.columns, p.layout, p.dtype, p.row_shape) == (2000, ["amount", "segment", "score"], "features", "float64", [3])
    feats = {f["name"]: f for f in p.features}
    for i, name in enumerate(["amount", "segment", "score"]):
        col = x[:, i]
        finite = col[np.isfinite(col)]
        f = feats[name]
        assert f["values"] == len(col) and f["finite"] == len(finite)
        assert f["nan"] == np.isnan(col).sum()
        assert f["pos_inf"] == np.isposinf(col).sum()
        assert f["mean"] == pytest.approx(finite.mean(), rel=1e-12)
        assert f["variance"] == pytest.approx(finite.var(), rel=1e-9)
        assert (f["min"], f["max"]) == (finite.min(), finite.max())
    assert feats["segment"]["kind"] == "categorical"
    assert sorted(feats["segment"]["categories"]) == [0.0, 1.0, 2.0, 3.0]
    assert sum(feats["segment"]["category_counts"]) == 2000
    assert feats["amount"]["kind"] == "numeric" and sum(feats["amount"]["counts"]) == feats["amount"]["finite"]
    # Saved, loaded, identical; the file is the versioned JSON document.
    path = tmp_path / "ref.json"
    p.save(str(path))
    q = mltap.Profile.load(str(path))
    assert q.to_json() == p.to_json()
    assert json.loads(path.read_text())["version"] == p.version == 2
    # Version 2: every feature carries its noise estimate (docs/detectors.md, noise floor).
    doc = json.loads(p.to_json())
    for f in doc["features"]:
        assert len(f["noise"]["windows"]) == len(f["noise"]["methods"]["psi"]["mean"]) > 0
    assert "wasserstein" in doc["features"][0]["noise"]["methods"]
    assert "linf" in doc["features"][1]["noise"]["methods"]


def test_low_cardinality_floats_are_value_counts_unless_forced():
    rng = np.random.default_rng(6)
    b = (rng.random(500) < 0.3).astype(float)
    x = np.stack([(b - 0.3) / np.sqrt(0.21), rng.normal(size=500)], axis=1)  # standardized binary
    p = mltap.Profile.from_array(x, features=["flag", "z"])
    kinds = {f["name"]: f["kind"] for f in p.features}
    assert kinds == {"flag": "categorical", "z": "numeric"}
    forced = mltap.Profile.from_array(x, features=["flag", "z"], numeric=["flag"])
    assert {f["name"]: f["kind"] for f in forced.features}["flag"] == "numeric"


def test_inputs_torch_lists_and_shapes():
    torch = pytest.importorskip("torch")
    t = torch.linspace(0, 1, 40).reshape(10, 2, 2).to(torch.bfloat16)
    p = mltap.Profile.from_array(t)
    assert p.dtype == "bfloat16" and p.row_shape == [2, 2] and p.rows == 10
    assert p.columns == ["f0", "f1", "f2", "f3"]
    expected = t.to(torch.float64).reshape(10, 4).numpy()
    assert [f["mean"] for f in p.features] == pytest.approx(expected.mean(axis=0), rel=1e-12)
    one = mltap.Profile.from_array([1.0, 2.0, 4.0], features=["y"])  # 1-D: one feature
    assert one.rows == 3 and one.columns == ["y"]


def test_errors():
    x = np.ones((5, 2))
    with pytest.raises(mltap.ProfileError, match="1 feature names for 2 columns"):
        mltap.Profile.from_array(x, features=["a"])
    with pytest.raises(ValueError, match="duplicate"):
        mltap.Profile.from_array(x, features=["a", "a"])
    with pytest.raises(ValueError, match="no rows"):
        mltap.Profile.from_array(np.ones((0, 2)))
    with pytest.raises(TypeError, match="numeric"):
        mltap.Profile.from_array(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="layout"):
        mltap.Profile.from_array(x, layout="weights")
    with pytest.raises(mltap.ProfileError):
        mltap.Profile.load("/nonexistent/profile.json")
    with pytest.raises(mltap.ProfileError):
        mltap.Profile.from_json('{"version": 99}')
