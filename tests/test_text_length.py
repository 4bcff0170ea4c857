"""Text length: the cut texts, the lazy scan (equal to the every-k scan), the evaluated-point gap
closure, and the experiment end to end on the tiny random GPT-2 (invariants only)."""

import json

import numpy as np
import pandas as pd
import pytest

import experiments as E
from experiments.method_sensitivity import gap_closure
from experiments.minimal_subspace import effective_tolerance
from experiments.study.prompts import STUDY_D_MODEL, STUDY_MIN_K
from experiments.text_length import (
    TextLengthResult, cut_continuation, gap_closure_evaluated, lazy_scan_first_crossing, run_text_length, study_points,
)
from interp import sample_continuation
from interp.search import scan_first_crossing


class Counting:
    def __init__(self, curve):
        self.curve, self.asked = np.asarray(curve, float), []

    def __call__(self, ks):
        self.asked.extend(int(k) for k in ks)
        return self.curve[list(ks)]


def _rough(d, seed, jitter=3.0):
    rng = np.random.default_rng(seed)
    return np.linspace(-60, 0, d + 1) + jitter * rng.standard_normal(d + 1)


@pytest.mark.parametrize("seed", range(25))
def test_lazy_scan_equals_scan_first_crossing_on_rough_curves(seed):
    rng = np.random.default_rng(1000 + seed)
    d = int(rng.integers(20, 300))
    curve = _rough(d, seed, jitter=float(rng.choice([0.0, 0.5, 3.0, 10.0])))
    target = curve[d] - float(rng.choice([0.0, 1e-4, 1.0, 5.0]))
    known = E.clipping.curve_ks(d, jitter=False) if seed % 2 else sorted(rng.choice(d + 1, 7, replace=False).tolist())
    band = float(rng.choice([0.5, 5.0, 50.0]))
    full, lazy = Counting(curve), Counting(curve)
    want = scan_first_crossing(full, target, d, known, band=band)
    got = lazy_scan_first_crossing(lazy, target, d, known, band=band, step=int(rng.integers(1, 9)))
    assert got.k == want.k
    assert set(lazy.asked) <= set(full.asked)  # never evaluates a k the scan would not
    assert got.evaluations <= want.evaluations


def test_lazy_scan_stops_at_the_first_pass():
    d = 100
    curve = np.where(np.arange(d + 1) >= 37, 0.0, -1.0)  # passes from 37 on, within the band everywhere
    ev = Counting(curve)
    r = lazy_scan_first_crossing(ev, 0.0, d, [0, 50, 100], band=5.0, step=4)
    assert r.k == 37
    assert max(k for k in ev.asked if k not in (0, 50, 100)) == 40  # nothing scanned past the chunk holding 37


def test_gap_closure_evaluated_equals_gap_closure_with_every_k_and_bounds_it_otherwise():
    d = 150
    for seed in range(10):
        curve = _rough(d, seed, jitter=2.0)
        base = float(curve[d] + 0.3)
        ref = gap_closure(curve, base, d)
        every = gap_closure_evaluated(dict(enumerate(curve)), base, d)
        assert every.k_first.tolist() == ref.k_first.tolist()
        assert every.exact.all() or (every.k_first == 0).any()
        some = [0, 10, 40, 75, 100, 140, d]
        coarse = gap_closure_evaluated({k: curve[k] for k in some}, base, d)
        assert (coarse.k_first.to_numpy() >= ref.k_first.to_numpy()).all()  # an upper bound
        assert (coarse.k_prev < coarse.k_first).all()


@pytest.fixture(scope="module")
def long_completion(gpt2_tiny):
    return sample_continuation(gpt2_tiny, "I believe the meaning of life is", max_new_tokens=20, seed=3,
                               stop_at_eos=False)


def test_cut_continuations_are_nested_prefixes(gpt2_tiny, long_completion):
    full = long_completion.continuation_tokens
    prev = None
    for n in (1, 4, 8, 20):
        cut = cut_continuation(gpt2_tiny, long_completion, n)
        assert cut.continuation_tokens.tolist() == full[:n].tolist()
        assert cut.prompt_tokens.tolist() == long_completion.prompt_tokens.tolist()
        if prev is not None:
            assert cut.continuation_tokens[: prev.numel()].tolist() == prev.tolist()
        prev = cut.continuation_tokens
    with pytest.raises(ValueError, match="cannot cut"):
        cut_continuation(gpt2_tiny, long_completion, 21)


@pytest.fixture(scope="module")
def result(gpt2_tiny, long_completion):
    return run_text_length(gpt2_tiny, long_completion, lengths=(2, 6, 20, 64), band=5.0, prompt_name="meaning_of_life",
                           chunk_size=16)


def test_table_counts_and_skips(result, gpt2_tiny, long_completion):
    t = result.table
    assert t.n_continuation_tokens.tolist() == [2, 6, 20]
    assert result.settings["skipped_lengths"] == [64]
    n_prompt = long_completion.n_prompt
    assert (t.n_prompt_tokens == n_prompt).all()
    assert (t.n_tokens == n_prompt + t.n_continuation_tokens).all()
    assert np.allclose(t.tokens_per_dim, t.n_tokens / gpt2_tiny.cfg.d_model)
    assert (t.d_model == gpt2_tiny.cfg.d_model).all()
    assert (t.n_writes_rows == 2 * gpt2_tiny.cfg.n_layers * t.n_tokens).all()
    assert np.allclose(t.min_k_frac, t.min_k / t.d_model)
    assert ((t.min_k >= 0) & (t.min_k <= t.d_model) & (t.bisection_k >= 1) & (t.bisection_k <= t.d_model)).all()


def test_min_k_equals_an_every_k_scan_and_bisection_is_the_study_s(result, gpt2_tiny, long_completion):
    d = gpt2_tiny.cfg.d_model
    for r in result.table.itertuples():
        cut = cut_continuation(gpt2_tiny, long_completion, r.n_continuation_tokens)
        text = E.prepare(gpt2_tiny, cut, chunk_size=16)
        curve = text.evaluator("singular_value").evaluate(range(d + 1))
        target = text.baseline - effective_tolerance(1e-4, text.noise())
        assert abs(r.baseline_logprob - text.baseline) < 1e-9  # each length its own text and basis
        ok = curve >= target
        ok[d] = True
        assert r.min_k == int(np.argmax(ok)), r.n_continuation_tokens
        lo, hi = 0, d  # the study's bisection on the same curve, target = baseline exactly
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if curve[mid] >= text.baseline else (mid, hi)
        assert r.bisection_k == hi


def test_gap_columns_match_the_long_table_and_the_curve(result):
    t, gap, curve = result.table, result.tables["gap_closure"], result.tables["curve"]
    for r in t.itertuples():
        g = gap[gap.n_continuation_tokens == r.n_continuation_tokens].set_index(["criterion", "level"])
        assert r.gap50_k_frac == g.loc[("gap_closed", 0.5), "k_frac_first"]
        assert r.within1_k_frac == g.loc[("within_nats", 1.0), "k_frac_first"]
        c = curve[curve.n_continuation_tokens == r.n_continuation_tokens]
        assert len(c) == r.forward_rows and 0 in set(c.k) and r.d_model in set(c.k)
        assert (g.k_first.to_numpy() <= r.d_model).all()


def test_full_curve_gap_closure_is_exact(gpt2_tiny, long_completion):
    r = run_text_length(gpt2_tiny, long_completion, lengths=(3,), full_curve=True, chunk_size=16)
    assert r.table.forward_rows.iloc[0] >= gpt2_tiny.cfg.d_model + 1
    assert r.tables["gap_closure"].exact.all()


def test_study_points():
    sp = study_points({"relativity": 12}).set_index("prompt_name")
    assert np.isclose(sp.loc["meaning_of_life", "tokens_per_dim"], 71 / STUDY_D_MODEL)
    assert sp.loc["meaning_of_life", "n_tokens_known"] and not sp.loc["relativity", "n_tokens_known"]
    assert np.isclose(sp.loc["relativity", "tokens_per_dim_lo"], 13 / STUDY_D_MODEL)
    assert np.isclose(sp.loc["relativity", "tokens_per_dim_hi"], 76 / STUDY_D_MODEL)
    assert np.isnan(sp.loc["launch", "tokens_per_dim"])
    assert np.allclose(sp.min_k_frac, [STUDY_MIN_K[p] / STUDY_D_MODEL for p in sp.index])


def test_save_load_concat_and_figures(result, tmp_path):
    again = TextLengthResult.load(result.save(tmp_path / "r"))
    assert again.summary() == json.loads(json.dumps(result.summary()))
    both = TextLengthResult.concat([result, again])
    assert len(both.table) == 2 * len(result.table)
    figs = both.figures()
    assert set(figs) == {"min_k_vs_tokens_per_dim", "gap_closure_vs_tokens_per_dim"}
    fig = figs["min_k_vs_tokens_per_dim"]
    json.loads(fig.to_json())  # draws (serializes) without error
    json.loads(figs["gap_closure_vs_tokens_per_dim"].to_json())
    names = [tr.name or "" for tr in fig.data]
    assert any("study" in n and "known" in n for n in names)
    star = next(tr for tr in fig.data if "71 tokens" in (tr.name or ""))
    assert np.isclose(star.x[0], 71 / STUDY_D_MODEL) and np.isclose(star.y[0], 1886 / 4096)
    assert any(np.isclose(s.y0, 0.46) and np.isclose(s.y1, 0.81) for s in fig.layout.shapes)
    ours = [tr for tr in fig.data if (tr.name or "").endswith(": meaning_of_life")]
    assert len(ours) == 1 and np.allclose(sorted(ours[0].x), sorted(both.table.tokens_per_dim))
    assert isinstance(result.table, pd.DataFrame)


def test_basis_swap_diagonal_is_each_texts_own_answer(gpt2_tiny, long_completion):
    from experiments.text_length import basis_swap

    t = basis_swap(gpt2_tiny, long_completion, 6, band=5.0, chunk_size=16).set_index(["target", "basis"])
    assert len(t) == 4 and set(t.n_continuation_tokens) == {6, 20}
    for target, n in (("cut", 6), ("full", 20)):  # own basis: run_text_length's exact minimal k
        own = run_text_length(gpt2_tiny, long_completion, lengths=(n,), band=5.0, chunk_size=16).table.iloc[0]
        assert t.loc[(target, target), "min_k"] == own.min_k
        assert t.loc[(target, "cut"), "baseline_logprob"] == t.loc[(target, "full"), "baseline_logprob"]
