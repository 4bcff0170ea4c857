"""Every per-prompt experiment on a tiny random model: table shapes and invariants."""

import json

import numpy as np
import pytest
import torch

import experiments as E
from experiments.minimal_subspace import bisect_min_k, sweep_min_k
from interp.scoring import continuation_logprob
from interp.sweeps import clip_sweep, default_k_grid, gradient_importance, naive_ablation_loop
from interp.writes import write_hook_names


@pytest.fixture(scope="module")
def comp(gpt2_tiny):
    return E.get_continuation(gpt2_tiny, "meaning_of_life", max_new_tokens=10, seed=0)


@pytest.fixture(scope="module")
def basis(gpt2_tiny, comp):
    return E.basis_for(gpt2_tiny, comp)


def test_prompts_are_the_studys():
    assert E.PROMPTS["relativity"].endswith("states that ")
    assert E.PROMPTS["launch"].endswith("\n        I just ")
    assert "        peppermint => menthe poivrée\n" in E.PROMPTS["translate"]
    assert E.PROMPTS["translate"].endswith("        cheese =>")


def test_stored_continuation_is_reused(gpt2_tiny, tmp_path):
    store = tmp_path / "c.json"
    a = E.get_continuation(gpt2_tiny, "relativity", store=store, max_new_tokens=5, seed=4)
    data = json.loads(store.read_text())
    data["continuation_tokens"] = [1, 2, 3]  # a stored continuation wins over resampling
    store.write_text(json.dumps(data))
    b = E.get_continuation(gpt2_tiny, "relativity", store=store, max_new_tokens=5, seed=4)
    assert b.continuation_tokens.tolist() == [1, 2, 3] and a.prompt == b.prompt
    c = E.get_continuation(gpt2_tiny, "relativity", store=store, max_new_tokens=5, seed=5)  # new settings
    assert c.meta["seed"] == 5


def test_spectrum(gpt2_tiny, comp, tmp_path):
    r = E.run_spectrum(gpt2_tiny, comp)
    sv, d = r.singular_values, gpt2_tiny.cfg.d_model
    assert len(sv) == 6 * d and set(sv.variant) == {
        "attn", "mlp", "attn+mlp", "attn/no_bos", "mlp/no_bos", "attn+mlp/no_bos"}
    for _, g in sv.groupby("variant"):
        assert np.all(np.diff(g.singular_value) <= 1e-12)
        assert g.cumulative_mass.iloc[-1] == pytest.approx(1.0)
    s = r.tables["summary"].set_index("variant")
    n_pos = comp.tokens.numel()
    assert s.loc["attn", "n_writes"] == gpt2_tiny.cfg.n_layers * n_pos
    assert s.loc["attn+mlp/no_bos", "n_writes"] == 2 * gpt2_tiny.cfg.n_layers * (n_pos - 1)
    assert (s.n50 <= s.n90).all() and (s.n90 <= s.n99).all()
    r.save(tmp_path)
    again = E.SpectrumResult.load(tmp_path)
    assert again.meta["model"]["d_model"] == d and len(again.singular_values) == len(sv)
    assert set(r.figures()) == {"spectrum_linear", "spectrum_log", "spectrum_cumulative"}


def test_clipping_at_d_model_equals_baseline(gpt2_tiny, comp, basis):
    d = gpt2_tiny.cfg.d_model
    r = E.run_clipping(gpt2_tiny, comp, basis=basis)
    c = r.curve
    assert c.k.tolist() == list(range(d + 1))
    assert abs(c[c.k == d].logprob.iloc[0] - r.meta["baseline_logprob"]) < 1e-4
    assert c[c.k == 0].kept_delta.iloc[0] == 0
    assert np.all(c.kept_delta <= c.orig_delta + 1e-5)
    for key in ("prompt", "continuation_tokens", "model"):
        assert key in r.meta


def test_batched_chunked_and_unbatched_sweeps_agree(gpt2_tiny, comp, basis):
    ks = [0, 3, 17, 40, 64]
    full = clip_sweep(gpt2_tiny, comp, basis.vectors, ks, chunk_size=len(ks))
    chunked = clip_sweep(gpt2_tiny, comp, basis.vectors, ks, chunk_size=2)
    one = clip_sweep(gpt2_tiny, comp, basis.vectors, ks, chunk_size=1)
    assert (full.n_passes, chunked.n_passes, one.n_passes) == (1, 3, 5)
    for other in (chunked, one):
        assert torch.allclose(full.logprob, other.logprob, atol=1e-4)
        assert torch.allclose(full.orig_delta, other.orig_delta, rtol=1e-4)


def test_single_direction_batched_equals_loop(gpt2_tiny, comp, basis):
    r = E.run_single_direction(gpt2_tiny, comp, basis=basis, chunk_size=16)
    t = r.importance
    assert len(t) == gpt2_tiny.cfg.d_model
    cols = [0, 5, 33]
    loop = naive_ablation_loop(gpt2_tiny, comp, basis.vectors, cols)
    exact = r.meta["baseline_logprob"] - loop.numpy()
    assert np.allclose(t.importance.to_numpy()[cols], exact, atol=1e-4)
    assert sorted(t.importance_rank) == list(range(len(t)))
    s = r.summary()
    assert -1 <= s["spearman_sv_importance"] <= 1
    assert len(r.tables["deviations"]) > 0


def test_gradient_screening_computes_exact_values_for_the_top_candidates(gpt2_tiny, comp, basis):
    full = E.run_single_direction(gpt2_tiny, comp, basis=basis).importance
    screened = E.run_single_direction(gpt2_tiny, comp, basis=basis, n_exact=10).importance
    assert screened.exact.sum() == 10
    top = np.argsort(-np.abs(full.gradient_importance.to_numpy()), kind="stable")[:10]
    assert set(screened.direction[screened.exact]) == set(top)
    assert np.allclose(screened.importance[screened.exact], full.importance[screened.exact], atol=1e-4)
    rest = ~screened.exact
    assert np.allclose(screened.importance[rest], screened.gradient_importance[rest])


def test_gradient_estimate_matches_finite_difference(gpt2_tiny, comp, basis):
    # Removing eps of v from every write (w -> w - eps (w.v) v) changes logp by eps * estimate to
    # first order; a central difference cancels the second-order term.
    v = basis.vectors[:, :1].float()
    est = gradient_importance(gpt2_tiny, comp, v)[0].item()

    def logp_partial(eps):
        def partial(x, *, hook):
            return x - eps * (x @ v) @ v.T

        hooks = [(n, partial) for _, _, n in write_hook_names(gpt2_tiny)]
        with torch.inference_mode(), gpt2_tiny.hooks(fwd_hooks=hooks):
            return continuation_logprob(gpt2_tiny, comp.prompt_tokens, comp.continuation_tokens).total.double().item()

    eps = 0.05
    fd = (logp_partial(eps) - logp_partial(-eps)) / (2 * eps)
    assert fd == pytest.approx(est, rel=0.02, abs=1e-3)


def test_orderings_and_minimal_subspace(gpt2_tiny, comp, basis):
    single = E.run_single_direction(gpt2_tiny, comp, basis=basis, gradient=False)
    od = E.run_orderings(gpt2_tiny, comp, basis=basis, single=single, ks=[0, 8, 32, 64])
    assert set(od.curve.ordering) == {"singular_value", "importance", "compromise_rank_product"}
    d = gpt2_tiny.cfg.d_model
    for _, g in od.tables["orders"].groupby("ordering"):
        assert sorted(g.direction) == list(range(d))
    for _, g in od.curve[od.curve.k == d].groupby("ordering"):  # every order ends at the baseline
        assert abs(g.logprob.iloc[0] - od.meta["baseline_logprob"]) < 1e-4
    ms = E.run_minimal_subspace(gpt2_tiny, comp, basis=basis, orderings=od, n_coarse=8)
    t = ms.table
    assert set(t.method) == {"bisection", "sweep"} and (t.k.between(0, d)).all()
    # verify the sweep's answer directly: k reaches the target, k - 1 does not
    k = ms.order("singular_value", "sweep")
    target = ms.meta["baseline_logprob"] - 1e-4
    lp = clip_sweep(gpt2_tiny, comp, basis.vectors, [max(k - 1, 0), k]).logprob
    assert lp[1] >= target and (k == 0 or lp[0] < target)


@pytest.mark.parametrize("d,true_k,n_coarse", [(100, 37, 10), (4096, 1886, 64), (50, 0, 8), (64, 64, 8)])
def test_bisection_and_batched_search_agree_on_monotone_curve(d, true_k, n_coarse):
    curve = np.where(np.arange(d + 1) >= true_k, 0.0, -1.0 - (true_k - np.arange(d + 1)) / d)

    def evaluate(ks):
        return curve[np.asarray(ks)], -(-len(ks) // 16)

    b = bisect_min_k(evaluate, -1e-4, d)
    s = sweep_min_k(evaluate, -1e-4, d, n_coarse=n_coarse)
    assert b.k == s.k == true_k
    assert b.passes <= int(np.ceil(np.log2(d))) + 1


def test_sweep_finds_first_crossing_where_bisection_may_not():
    d = 64
    curve = -np.ones(d + 1)
    curve[10:14] = 0.0  # an early, non-monotone crossing
    curve[40:] = 0.0
    s = sweep_min_k(lambda ks: (curve[np.asarray(ks)], 1), -1e-4, d, n_coarse=64)
    assert s.k == 10 and s.stable_k == 40


def test_clipped_generation(gpt2_tiny, comp, basis):
    r = E.run_clipped_generation(gpt2_tiny, comp, basis=basis, k=8, n_samples=2, max_new_tokens=5, seed=1)
    t = r.samples
    assert len(t) == 2 * 2 * 2 and set(t.model) == {"clipped", "unclipped"} and set(t.start) == {"prompt", "empty"}
    again = E.run_clipped_generation(gpt2_tiny, comp, basis=basis, k=8, n_samples=2, max_new_tokens=5, seed=1)
    assert again.samples.text.tolist() == t.text.tolist()
    full = E.run_clipped_generation(gpt2_tiny, comp, basis=basis, k=gpt2_tiny.cfg.d_model, n_samples=2, max_new_tokens=5, seed=1).samples
    # clipping to all of d_model generates what the unclipped model does
    assert full[full.model == "clipped"].text.tolist() == full[full.model == "unclipped"].text.tolist()


def test_default_k_grid():
    assert default_k_grid(64) == list(range(65))
    g = default_k_grid(4096)
    assert g[0] == 0 and g[-1] == 4096 and 1 in g and len(g) < 500 and g == sorted(set(g))
