"""The docs' worked extension example (experiments/layer_clipping.py) behaves as documented."""

import numpy as np

import experiments as E
from experiments.layer_clipping import run_layer_clipping


def test_layer_clipping_limits(gpt2_tiny, completion):
    text = E.prepare(gpt2_tiny, completion)
    d, n_layers = gpt2_tiny.cfg.d_model, gpt2_tiny.cfg.n_layers
    ks = [0, 4, d]
    r = run_layer_clipping(gpt2_tiny, text, ks=ks,
                           layer_sets={"all": range(n_layers), "none": [], "first": [0]})
    t = r.tables["curve"].set_index(["layers", "k"]).logprob
    clip = E.run_clipping(gpt2_tiny, text, ks=ks).curve.set_index("k").logprob
    base = r.meta["baseline_logprob"]
    assert np.allclose([t["all", k] for k in ks], [clip[k] for k in ks], atol=1e-4)  # all layers = clipping
    assert np.allclose([t["none", k] for k in ks], base, atol=1e-4)  # no layers = unclipped
    assert abs(t["first", 0] - base) > 1e-3 and abs(t["first", d] - base) < 1e-4
