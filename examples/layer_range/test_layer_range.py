"""Tests of the plug-in, written as a user would: the package's fixtures, invariants that must
hold."""

import numpy as np
from layer_range import LayerRangeResult, run_layer_range

import experiments as E


def test_limits(gpt2_tiny, completion, tmp_path):
    text = E.prepare(gpt2_tiny, completion)
    d = text.d_model
    r = run_layer_range(
        gpt2_tiny, text, ks=[0, 4, d], ranges={"all": range(2), "none": [], "first": [0]}
    )
    t = r.curve.set_index(["layers", "basis", "k"]).logprob
    base = r.meta["baseline_logprob"]
    clip = E.run_clipping(gpt2_tiny, text, ks=[0, 4, d]).curve.set_index("k").logprob
    assert np.allclose(
        [t["all", "global", k] for k in (0, 4, d)], [clip[k] for k in (0, 4, d)], atol=1e-4
    )
    assert np.allclose(t.loc["none"].to_numpy(), base, atol=1e-4)  # no layers: the unclipped model
    assert abs(t["first", "local", d] - base) < 1e-4 and abs(t["first", "local", 0] - base) > 1e-3
    assert r.settings["ranges"] == {"all": [0, 1], "none": [], "first": [0]}
    again = LayerRangeResult.load(r.save(tmp_path / "r"))
    assert again.summary() == r.summary() and len(again.figures()) == 1
