"""Every per-prompt experiment on a tiny random model: table shapes and invariants."""

import json

import numpy as np
import pytest
import torch

import experiments as E
from experiments.minimal_subspace import random_orthonormal
from interp.importance import taylor_importance
from interp.scoring import continuation_logprob, final_residual, unembed
from interp.search import bisect_min_k, first_crossing, stable_crossing
from interp.sweeps import (
    ClipEvaluator,
    clip_sweep,
    coarse_k_grid,
    default_k_grid,
    naive_ablation_loop,
)
from interp.writes import write_hook_names


@pytest.fixture(scope="module")
def comp(gpt2_tiny):
    return E.get_continuation(gpt2_tiny, "meaning_of_life", max_new_tokens=10, seed=0)


@pytest.fixture()
def text(gpt2_tiny, comp):  # fresh evaluators for every test
    return E.prepare(gpt2_tiny, comp)


def test_prompts_are_the_studys():
    assert E.PROMPTS["relativity"].endswith("states that ")
    assert E.PROMPTS["launch"].endswith("\n        I just ")
    assert "        peppermint => menthe poivrée\n" in E.PROMPTS["translate"]
    assert E.PROMPTS["translate"].endswith("        cheese =>")
    assert len(E.REPLICATION_PROMPTS) >= 16 and set(E.PROMPTS) <= set(E.REPLICATION_PROMPTS)


def test_prompts_file(tmp_path):
    plain = tmp_path / "p.txt"
    plain.write_text("first prompt\n\nsecond\\nline two\n")
    assert E.load_prompts_file(plain) == {"p01": "first prompt", "p02": "second\nline two"}
    jl = tmp_path / "p.jsonl"
    jl.write_text('{"name": "a", "text": "x"}\n{"prompt": "y"}\n')
    assert E.load_prompts_file(jl) == {"a": "x", "p02": "y"}
    (tmp_path / "bad.jsonl").write_text('{"name": "a"}\n')
    with pytest.raises(ValueError, match="'text'"):
        E.load_prompts_file(tmp_path / "bad.jsonl")


def test_stored_continuation_is_reused(gpt2_tiny, tmp_path):
    store = tmp_path / "c.json"
    a = E.get_continuation(gpt2_tiny, "relativity", store=store, max_new_tokens=5, seed=4)
    data = json.loads(store.read_text())
    data["continuation_tokens"] = [1, 2, 3]  # a stored continuation wins over resampling
    store.write_text(json.dumps(data))
    b = E.get_continuation(gpt2_tiny, "relativity", store=store, max_new_tokens=5, seed=4)
    assert b.continuation_tokens.tolist() == [1, 2, 3] and a.prompt == b.prompt
    c = E.get_continuation(
        gpt2_tiny, "relativity", store=store, max_new_tokens=5, seed=5
    )  # new settings
    assert c.meta["seed"] == 5


def test_prepare_captures_writes_and_baseline_in_one_pass(gpt2_tiny, comp, text):
    again = E.basis_for(gpt2_tiny, comp)
    assert torch.allclose(text.basis.singular_values, again.singular_values, rtol=1e-5)
    with torch.inference_mode():
        lp = continuation_logprob(
            gpt2_tiny, comp.prompt_tokens, comp.continuation_tokens
        ).total.item()
    assert text.baseline == pytest.approx(lp, abs=1e-5)
    assert text.writes.matrix.shape[0] == 2 * gpt2_tiny.cfg.n_layers * comp.tokens.numel()


def test_spectrum(gpt2_tiny, comp, text, tmp_path):
    r = E.run_spectrum(gpt2_tiny, text)
    sv, d = r.singular_values, gpt2_tiny.cfg.d_model
    assert len(sv) == 6 * d and set(sv.variant) == {
        "attn",
        "mlp",
        "attn+mlp",
        "attn/no_bos",
        "mlp/no_bos",
        "attn+mlp/no_bos",
    }
    for _, g in sv.groupby("variant"):
        assert np.all(np.diff(g.singular_value) <= 1e-9)
        assert g.cumulative_mass.iloc[-1] == pytest.approx(1.0)
    s = r.tables["summary"].set_index("variant")
    n_pos = comp.tokens.numel()
    assert s.loc["attn", "n_writes"] == gpt2_tiny.cfg.n_layers * n_pos
    assert s.loc["attn+mlp/no_bos", "n_writes"] == 2 * gpt2_tiny.cfg.n_layers * (n_pos - 1)
    assert (s.n50 <= s.n90).all() and (s.n90 <= s.n99).all()
    # each variant equals the SVD of freshly captured writes of those kinds
    attn = E.basis_for(gpt2_tiny, comp, kinds=("attn",), exclude_bos=True)
    got = sv[sv.variant == "attn/no_bos"].singular_value.to_numpy()
    assert np.allclose(got, attn.singular_values.numpy(), rtol=1e-4, atol=1e-6)
    r.save(tmp_path)
    again = E.SpectrumResult.load(tmp_path)
    assert again.meta["model"]["d_model"] == d and len(again.singular_values) == len(sv)
    assert set(r.figures()) == {"spectrum_linear", "spectrum_log", "spectrum_cumulative"}


def test_clipping_at_d_model_equals_baseline(gpt2_tiny, text):
    d = gpt2_tiny.cfg.d_model
    r = E.run_clipping(gpt2_tiny, text, exhaustive=True)
    c = r.curve
    assert c.k.tolist() == list(range(d + 1))
    assert abs(c[c.k == d].logprob.iloc[0] - r.meta["baseline_logprob"]) < 1e-4
    assert c[c.k == 0].kept_delta.iloc[0] == 0
    assert np.all(c.kept_delta <= c.orig_delta + 1e-5)
    s = r.summary()
    assert 0 <= s["k_converged"] <= d and {"jitter_low", "jitter_mid", "jitter_high"} <= set(s)
    # k_converged: from there on every k is within 1 nat of the unclipped model, not just before
    within = c.logprob >= r.meta["baseline_logprob"] - 1.0
    assert within[c.k >= s["k_converged"]].all() and (
        s["k_converged"] == 0 or not within[c.k == s["k_converged"] - 1].iloc[0]
    )
    default = E.run_clipping(gpt2_tiny, text)  # adaptive grid: a subset, same values
    assert set(default.curve.k) < set(c.k) and len(default.curve) < d
    merged = default.curve.merge(c, on="k", suffixes=("", "_all"))
    assert np.allclose(merged.logprob, merged.logprob_all)
    for key in ("prompt", "continuation_tokens", "model"):
        assert key in r.meta


def test_batched_chunked_and_unbatched_sweeps_agree(gpt2_tiny, comp, text):
    ks = [0, 3, 17, 40, 64]
    full = clip_sweep(gpt2_tiny, comp, text.basis.vectors, ks, chunk_size=len(ks))
    chunked = clip_sweep(gpt2_tiny, comp, text.basis.vectors, ks, chunk_size=2)
    one = clip_sweep(gpt2_tiny, comp, text.basis.vectors, ks, chunk_size=1)
    assert (full.n_passes, chunked.n_passes, one.n_passes) == (1, 3, 5)
    for other in (chunked, one):
        assert torch.allclose(full.logprob, other.logprob, atol=1e-4)
        assert torch.allclose(full.orig_delta, other.orig_delta, rtol=1e-4)


def test_evaluator_memoizes(gpt2_tiny, comp, text):
    ev = ClipEvaluator(gpt2_tiny, comp, text.basis.vectors, chunk_size=4)
    a = ev([0, 10, 64])
    b = ev([10, 64, 5])
    assert ev.n_rows == 4 and a[1] == b[0] and list(ev.table().k) == [0, 5, 10, 64]


def test_single_direction_exact_equals_loop(gpt2_tiny, comp, text):
    r = E.run_single_direction(gpt2_tiny, text, exhaustive=True, chunk_size=16)
    t = r.importance
    assert len(t) == gpt2_tiny.cfg.d_model and t.exact.all()
    cols = [0, 5, 33]
    loop = naive_ablation_loop(gpt2_tiny, comp, text.basis.vectors, cols)
    assert np.allclose(t.importance.to_numpy()[cols], text.baseline - loop.numpy(), atol=1e-4)
    assert sorted(t.importance_rank) == list(range(len(t)))
    s = r.summary()
    assert -1 <= s["spearman_sv_importance"] <= 1 and -1 <= s["screened_spearman"] <= 1
    assert len(r.tables["deviations"]) > 0


def test_screened_importance_is_exact_where_it_says(gpt2_tiny, text):
    full = E.run_single_direction(gpt2_tiny, text, exhaustive=True).importance
    screened = E.run_single_direction(gpt2_tiny, text, n_exact=12)
    t = screened.importance
    assert t.exact.sum() == screened.meta["forward_rows"] <= 12 + 2
    assert np.allclose(t.importance[t.exact], full.importance[t.exact], atol=1e-4)
    assert t.importance.notna().all() and not t.exact.all()
    n_sv = screened.settings["screen"]["n_top_sv"]
    top_sv = np.argsort(-t.singular_value.to_numpy())[:n_sv]
    assert n_sv >= 1 and t.exact.to_numpy()[top_sv].all()  # the largest directions are always exact


def test_first_order_estimate_matches_finite_difference(gpt2_tiny, comp, text):
    # Removing eps of v from every write (w -> w - eps (w.v) v) changes logp by -eps * first_order
    # to first order; a central difference cancels the second-order term.
    v = text.basis.vectors[:, :1].float()
    est = taylor_importance(gpt2_tiny, comp, v, n_fisher=0).first_order[0]

    def logp_partial(eps):
        def partial(x, *, hook):
            return x - eps * (x @ v) @ v.T

        hooks = [(n, partial) for _, _, n in write_hook_names(gpt2_tiny)]
        with torch.inference_mode(), gpt2_tiny.hooks(fwd_hooks=hooks):
            return (
                continuation_logprob(gpt2_tiny, comp.prompt_tokens, comp.continuation_tokens)
                .total.double()
                .item()
            )

    eps = 0.05
    fd = (logp_partial(eps) - logp_partial(-eps)) / (2 * eps)
    assert -fd == pytest.approx(est, rel=0.02, abs=1e-3)


def test_fisher_term_matches_its_exact_value(gpt2_tiny, comp, text):
    """The sampled Fisher term equals sum_t J_t^T (diag p_t - p_t p_t^T) J_t, with J_t the exact
    Jacobian of position t's logits along the removal of v (forward-mode, no sampling)."""
    cols = [0, 3, 20]
    v = text.basis.vectors[:, cols].float()
    mc = taylor_importance(gpt2_tiny, comp, v, n_fisher=400, seed=1).fisher
    hooks = write_hook_names(gpt2_tiny)
    n_p, n_c = comp.n_prompt, comp.continuation_tokens.numel()
    exact = []
    for i in range(len(cols)):
        u = v[:, i : i + 1]

        def logits_at(alpha):
            def remove(x, *, hook):
                return x - alpha * (x @ u) @ u.T  # noqa: B023 (called in this iteration)

            with gpt2_tiny.hooks(fwd_hooks=[(n, remove) for _, _, n in hooks]):
                return unembed(
                    gpt2_tiny,
                    final_residual(gpt2_tiny, comp.tokens[None])[0, n_p - 1 : n_p - 1 + n_c],
                ).float()

        z, jac = torch.func.jvp(logits_at, (torch.zeros(()),), (torch.ones(()),))
        p = torch.softmax(z, -1)
        exact.append(float(((jac**2 * p).sum(-1) - (jac * p).sum(-1) ** 2).sum().detach()))
    exact = np.array(exact)
    assert np.allclose(mc, exact, rtol=0.25), (mc, exact)  # 400 samples: ~7% standard error each


def test_orderings_and_minimal_subspace(gpt2_tiny, text):
    single = E.run_single_direction(gpt2_tiny, text, exhaustive=True)
    od = E.run_orderings(gpt2_tiny, text, single=single, ks=[0, 8, 32, 64])
    assert set(od.curve.ordering) == {"singular_value", "importance", "compromise_rank_product"}
    d = gpt2_tiny.cfg.d_model
    for name in od.curve.ordering.unique():
        assert sorted(od.order(name)) == list(range(d))
    for _, g in od.curve[od.curve.k == d].groupby("ordering"):  # every order ends at the baseline
        assert abs(g.logprob.iloc[0] - od.meta["baseline_logprob"]) < 1e-4
    ms = E.run_minimal_subspace(gpt2_tiny, text, orderings=od, bisection=True)
    t = ms.table
    assert (
        set(t.method) == {"first_crossing", "stable", "bisection", "converged"}
        and t.k.between(0, d).all()
    )
    assert set(t.ordering) == {
        "singular_value",
        "importance",
        "compromise_rank_product",
        "random_basis",
        "random_basis#1",
        "random_basis#2",
    }
    # verify the default's answer directly: k reaches the target, k - 1 does not
    k = ms.order("singular_value")
    target = text.baseline - ms.meta["effective_tolerance"]
    lp = clip_sweep(gpt2_tiny, text.completion, text.basis.vectors, [max(k - 1, 0), k]).logprob
    assert lp[1] >= target and (k == 0 or lp[0] < target)
    sens = ms.tables["sensitivity"]
    for _, g in sens[sens.criterion == "total"].groupby(
        "ordering"
    ):  # looser tolerance, fewer directions
        assert np.all(np.diff(g.sort_values("tolerance").k) <= 0)


def test_exhaustive_minimal_k_is_the_brute_force_answer(gpt2_tiny, text):
    ms = E.run_minimal_subspace(gpt2_tiny, text, exhaustive=True, random_null=False)
    curve = np.array(text.evaluator("singular_value")(range(text.d_model + 1)))
    target = text.baseline - ms.meta["effective_tolerance"]
    ok = curve >= target
    ok[-1] = True
    assert ms.order("singular_value") == int(np.argmax(ok))
    assert ms.order("singular_value", "stable") == int(
        np.nonzero(~ok)[0].max() + 1 if (~ok).any() else 0
    )


def test_random_orthonormal():
    q = random_orthonormal(24, seed=3).double()
    assert torch.allclose(q.T @ q, torch.eye(24, dtype=torch.float64), atol=1e-5)
    assert torch.equal(q, random_orthonormal(24, seed=3).double())


@pytest.mark.parametrize("d,true_k", [(100, 37), (4096, 1886), (50, 0), (64, 64)])
def test_searches_agree_on_a_monotone_curve(d, true_k):
    curve = np.where(np.arange(d + 1) >= true_k, 0.0, -1.0 - (true_k - np.arange(d + 1)) / d)

    def evaluate(ks):
        return curve[np.asarray(ks, dtype=int)]

    grid = coarse_k_grid(d)
    assert bisect_min_k(evaluate, -1e-4, d).k == true_k
    first = first_crossing(evaluate, -1e-4, d, grid)
    assert first.k == true_k and first.evaluations < 80
    assert stable_crossing(evaluate, -1e-4, d, grid).k == true_k


def test_first_and_stable_crossings_on_a_non_monotone_curve():
    d = 64
    curve = -np.ones(d + 1)
    curve[10:14] = 0.0  # an early, non-monotone crossing
    curve[40:] = 0.0

    def evaluate(ks):
        return curve[np.asarray(ks, dtype=int)]

    assert first_crossing(evaluate, -1e-4, d, range(d + 1)).k == 10
    assert stable_crossing(evaluate, -1e-4, d, coarse_k_grid(d)).k == 40
    assert stable_crossing(evaluate, -1e-4, d, range(d + 1)).k == 40


def test_clipped_generation(gpt2_tiny, text):
    r = E.run_clipped_generation(gpt2_tiny, text, k=8, n_samples=2, max_new_tokens=5, seed=1)
    t = r.samples
    assert (
        len(t) == 2 * 2 * 2
        and set(t.model) == {"clipped", "unclipped"}
        and set(t.start) == {"prompt", "empty"}
    )
    assert "KV cache" in r.meta["clipped_by"]
    again = E.run_clipped_generation(gpt2_tiny, text, k=8, n_samples=2, max_new_tokens=5, seed=1)
    assert again.samples.text.tolist() == t.text.tolist()
    full = E.run_clipped_generation(
        gpt2_tiny, text, k=gpt2_tiny.cfg.d_model, n_samples=2, max_new_tokens=5, seed=1
    ).samples
    # clipping to all of d_model generates what the unclipped model does
    assert (
        full[full.model == "clipped"].text.tolist() == full[full.model == "unclipped"].text.tolist()
    )


def test_grids():
    assert default_k_grid(64) == list(range(65))
    g = default_k_grid(4096)
    assert g[0] == 0 and g[-1] == 4096 and 1 in g and len(g) < 500 and g == sorted(set(g))
    c = coarse_k_grid(576)
    assert c[0] == 0 and c[-1] == 576 and {1, 2, 4, 575, 574, 572} <= set(c) and len(c) < 40


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_left_padded_batch_samples_like_each_prompt_alone(model_dirs, arch):
    import interp

    model = interp.load_model(model_dirs[arch], device="cpu")
    prompts = ["", "I believe the meaning of life is"]
    together = interp.sample_continuations(
        model, prompts, temperature=0, max_new_tokens=6, use_cache=True
    )
    for p, got in zip(prompts, together, strict=False):
        alone = interp.sample_continuation(model, p, temperature=0, max_new_tokens=6)
        assert got.continuation_tokens.tolist() == alone.continuation_tokens.tolist()
        assert got.prompt_tokens.tolist() == alone.prompt_tokens.tolist()
