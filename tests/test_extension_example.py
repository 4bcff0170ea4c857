"""The docs' worked extension example (examples/layer_clipping/layer_clipping.py, a plug-in living
outside the package) behaves as documented."""

import sys
from pathlib import Path

import numpy as np
import pytest

import experiments as E
from experiments import registry

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "layer_clipping" / "layer_clipping.py"


@pytest.fixture()
def example():
    """The example module, loaded by path as $RESID_WRITES_PLUGINS would; forgotten afterwards."""
    try:
        yield registry.load_module(str(EXAMPLE))
    finally:
        registry.unregister("layer_clipping")
        sys.modules.pop(f"resid_writes_plugin_{EXAMPLE.stem}", None)


def test_layer_clipping_limits(example, gpt2_tiny, completion):
    run_layer_clipping = example.run_layer_clipping
    text = E.prepare(gpt2_tiny, completion)
    d, n_layers = gpt2_tiny.cfg.d_model, gpt2_tiny.cfg.n_layers
    ks = [0, 4, d]
    r = run_layer_clipping(
        gpt2_tiny, text, ks=ks, layer_sets={"all": range(n_layers), "none": [], "first": [0]}
    )
    t = r.tables["curve"].set_index(["layers", "k"]).logprob
    clip = E.run_clipping(gpt2_tiny, text, ks=ks).curve.set_index("k").logprob
    base = r.meta["baseline_logprob"]
    assert np.allclose(
        [t["all", k] for k in ks], [clip[k] for k in ks], atol=1e-4
    )  # all layers = clipping
    assert np.allclose([t["none", k] for k in ks], base, atol=1e-4)  # no layers = unclipped
    assert abs(t["first", 0] - base) > 1e-3 and abs(t["first", d] - base) < 1e-4


def test_layer_clipping_is_a_plugin_found_by_its_path(example, gpt2_tiny, completion, monkeypatch):
    monkeypatch.setenv(registry.ENV, str(EXAMPLE))
    plugin = registry.get_plugin("layer_clipping")
    assert plugin.result is example.LayerClippingResult
    r = plugin(gpt2_tiny, E.prepare(gpt2_tiny, completion), seed=0)  # the defaults; seed is dropped
    curve = r.tables["curve"]
    d = gpt2_tiny.cfg.d_model
    assert set(curve.layers) == {"first", "early", "late", "all"} and {0, d} <= set(curve.k)
    base = r.meta["baseline_logprob"]
    assert np.allclose(curve[curve.k == d].logprob, base, atol=1e-4)  # k = d: every write unchanged
