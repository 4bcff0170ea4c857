"""Text length: the cut texts, the lazy scan (equal to the every-k scan), the evaluated-point gap
closure, the first / stable / converged crossings (equal to an every-k reading), the rank bound, the
noise across k, target subsets (equal to a plain forward pass), and the experiment end to end on
the tiny random GPT-2."""

import json

import numpy as np
import pandas as pd
import pytest

import experiments as E
from experiments.facts import STUDY_D_MODEL, STUDY_MIN_K
from experiments.measure import (
    curve_ks,
    effective_tolerance,
    gap_closure,
    gap_closure_evaluated,
    lazy_scan_first_crossing,
)
from experiments.text_length import (
    TextLengthResult,
    noise_across_k,
    noise_ks,
    run_text_length,
    settle,
    study_points,
    target_subsets,
)
from experiments.texts import cut_continuation
from interp import sample_continuation
from interp.search import curve_crossings, scan_first_crossing


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
    known = (
        curve_ks(d, jitter=False)
        if seed % 2
        else sorted(rng.choice(d + 1, 7, replace=False).tolist())
    )
    band = float(rng.choice([0.5, 5.0, 50.0]))
    full, lazy = Counting(curve), Counting(curve)
    want = scan_first_crossing(full, target, d, known, band=band)
    got = lazy_scan_first_crossing(lazy, target, d, known, band=band, step=int(rng.integers(1, 9)))
    assert got.k == want.k
    assert set(lazy.asked) <= set(full.asked)  # never evaluates a k the scan would not
    assert got.evaluations <= want.evaluations


def test_lazy_scan_stops_at_the_first_pass():
    d = 100
    curve = np.where(
        np.arange(d + 1) >= 37, 0.0, -1.0
    )  # passes from 37 on, within the band everywhere
    ev = Counting(curve)
    r = lazy_scan_first_crossing(ev, 0.0, d, [0, 50, 100], band=5.0, step=4)
    assert r.k == 37
    assert (
        max(k for k in ev.asked if k not in (0, 50, 100)) == 40
    )  # nothing scanned past the chunk holding 37


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
    return sample_continuation(
        gpt2_tiny, "I believe the meaning of life is", max_new_tokens=20, seed=3, stop_at_eos=False
    )


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
    return run_text_length(
        gpt2_tiny,
        long_completion,
        lengths=(2, 6, 20, 64),
        scaled=False,
        band=5.0,
        prompt_name="meaning_of_life",
        chunk_size=16,
    )


def test_table_counts_and_skips(result, gpt2_tiny, long_completion):
    t = result.table
    assert t.n_continuation_tokens.tolist() == [2, 6, 20]
    assert result.settings["skipped_lengths"] == [64]
    n_prompt = long_completion.n_prompt
    assert (t.n_prompt_tokens == n_prompt).all()
    assert (t.n_tokens == n_prompt + t.n_continuation_tokens).all()
    assert np.allclose(t.tokens_per_dim, t.n_tokens / gpt2_tiny.cfg.d_model)
    assert (t.d_model == gpt2_tiny.cfg.d_model).all()
    assert (t.n_writes == 2 * gpt2_tiny.cfg.n_layers * t.n_tokens).all()
    assert np.allclose(t.writes_per_dim, t.n_writes / t.d_model)
    assert (t["rank"] == np.minimum(t.n_writes, t.d_model)).all()
    assert (t.n_scored == t.n_continuation_tokens).all()
    assert (t.length_label == ["2", "6", "full"]).all()
    assert np.allclose(t.min_k_frac, t.min_k / t.d_model)
    assert (
        (t.min_k >= 0)
        & (t.min_k <= t.d_model)
        & (t.bisection_k >= 1)
        & (t.bisection_k <= t.d_model)
    ).all()


def test_min_k_equals_an_every_k_scan_and_bisection_is_the_study_s(
    result, gpt2_tiny, long_completion
):
    d = gpt2_tiny.cfg.d_model
    for r in result.table.itertuples():
        cut = cut_continuation(gpt2_tiny, long_completion, r.n_continuation_tokens)
        text = E.prepare(gpt2_tiny, cut, chunk_size=16)
        curve = text.evaluator("singular_value").evaluate(range(d + 1))
        target = text.baseline - r.tolerance
        assert r.tolerance >= effective_tolerance(1e-4, text.noise())  # noise at d, and across k
        assert abs(r.baseline_logprob - text.baseline) < 1e-9  # each length its own text and basis
        ok = curve >= target
        ok[d] = True
        assert r.min_k == r.first_k == int(np.argmax(ok)), r.n_continuation_tokens
        fails = np.nonzero(~ok)[0]
        assert r.stable_k == (fails[-1] + 1 if len(fails) else 0)  # every k from it on passes
        assert r.frac_fail_above_first == pytest.approx(
            (~ok[r.first_k + 1 :]).mean() if r.first_k < d else 0.0
        )
        far = np.nonzero((curve < text.baseline - 1.0) & (np.arange(d + 1) < d))[0]
        assert r.converged_k == (far[-1] + 1 if len(far) else 0)
        assert r.stable_exact and r.converged_exact and r.stable_k <= r.rank
        lo, hi = 0, d  # the study's bisection on the same curve, target = baseline exactly
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if curve[mid] >= text.baseline else (mid, hi)
        assert r.bisection_k == hi


def test_gap_columns_match_the_long_table_and_the_curve(result):
    t, gap, curve = result.table, result.tables["gap_closure"], result.tables["curve"]
    for r in t.itertuples():
        g = gap[gap.n_continuation_tokens == r.n_continuation_tokens].set_index(
            ["criterion", "level"]
        )
        assert r.gap50_k_frac == g.loc[("gap_closed", 0.5), "k_frac_first"]
        assert r.within1_k_frac == g.loc[("within_nats", 1.0), "k_frac_first"]
        c = curve[curve.n_continuation_tokens == r.n_continuation_tokens]
        n_noise = int(
            (result.tables["noise"].n_continuation_tokens == r.n_continuation_tokens).sum()
        )
        assert len(c) + n_noise == r.forward_rows and 0 in set(c.k) and r.d_model in set(c.k)
        assert (g.k_first.to_numpy() <= r.d_model).all()


def test_full_curve_gap_closure_is_exact(gpt2_tiny, long_completion):
    r = run_text_length(gpt2_tiny, long_completion, lengths=(3,), full_curve=True, chunk_size=16)
    assert r.table.forward_rows.iloc[0] >= gpt2_tiny.cfg.d_model + 1
    assert r.tables["gap_closure"].exact.all()


def test_study_points():
    sp = study_points({"relativity": 12}).set_index("prompt_name")
    assert np.isclose(sp.loc["meaning_of_life", "tokens_per_dim"], 71 / STUDY_D_MODEL)
    assert (
        sp.loc["meaning_of_life", "n_tokens_known"] and not sp.loc["relativity", "n_tokens_known"]
    )
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
    assert set(figs) == {"min_k_vs_writes_per_dim", "gap_closure_vs_writes_per_dim"}
    fig = figs["min_k_vs_writes_per_dim"]
    json.loads(fig.to_json())  # draws (serializes) without error
    json.loads(figs["gap_closure_vs_writes_per_dim"].to_json())
    star = next(tr for tr in fig.data if "71 tokens" in (tr.name or ""))
    assert np.isclose(star.x[0], 2 * 32 * 71 / STUDY_D_MODEL) and np.isclose(star.y[0], 1886 / 4096)
    assert any(np.isclose(s.y0, 0.46) and np.isclose(s.y1, 0.81) for s in fig.layout.shapes)
    bound = next(tr for tr in fig.data if (tr.name or "").startswith("span of the writes"))
    assert np.allclose(bound.y, np.minimum(1, bound.x))
    stable = [
        tr
        for tr in fig.data
        if (tr.name or "").endswith("meaning_of_life, stable crossing") and tr.xaxis in (None, "x")
    ]  # the first panel: against writes per dimension
    assert len(stable) == 1 and np.allclose(sorted(stable[0].x), sorted(both.table.writes_per_dim))
    assert np.allclose(sorted(stable[0].y), sorted(both.table.stable_k_frac))
    assert isinstance(result.table, pd.DataFrame)


# --- issue 27: crossings, rank bound, noise across k, target subsets ---------------------------


def test_curve_crossings_on_a_chance_dip():
    """A curve that dips above its target once, far below the convergence point: first 22, stable
    and converged where the curve really settles, and the share failing again in between."""
    d = 100
    curve = np.full(d + 1, -0.5)
    curve[:60] = -50.0
    curve[22] = 0.0  # a chance pass
    curve[80:] = 0.0
    curve[90] = -0.3  # fails again after settling once
    c = curve_crossings(dict(enumerate(curve)), -1e-4, 0.0, d)
    assert (c.first, c.stable, c.converged) == (22, 91, 60)
    assert c.frac_fail_above_first == pytest.approx(
        ((curve[23:] < -1e-4) & (np.arange(23, d + 1) < d)).mean()
    )
    assert c.stable_exact and c.converged_exact and c.known_from == 0
    some = {
        k: curve[k] for k in (0, 22, 50, 95, 100)
    }  # coarse: stable and converged are bounds only
    c2 = curve_crossings(some, -1e-4, 0.0, d)
    assert c2.first == 22 and c2.stable == 95 and not c2.stable_exact and not c2.converged_exact
    assert c2.stable >= c.stable and c2.converged <= 95


@pytest.mark.parametrize("seed", range(12))
def test_settle_equals_an_every_k_reading(seed):
    """First crossing by the band scan, then scan_down: the three crossings equal the every-k
    answers, and no more than the k from the scan's stop up to d (plus the grid) are evaluated."""
    rng = np.random.default_rng(seed)
    d = int(rng.integers(30, 200))
    curve = np.linspace(-80, 0, d + 1) ** 3 / 6400 + float(
        rng.choice([0.2, 1.0, 3.0])
    ) * rng.standard_normal(d + 1)
    curve[d] = 0.0
    target = -float(rng.choice([1e-4, 0.5]))

    class Ev(Counting):
        @property
        def points(self):
            return {k: self.curve[k] for k in self.asked}

    ev = Ev(curve)
    first, c = settle(
        ev, target, 0.0, d, curve_ks(d, jitter=False), band=5.0, step=int(rng.integers(1, 9))
    )
    want = curve_crossings(dict(enumerate(curve)), target, 0.0, d)
    assert (c.first, c.stable, c.converged) == (want.first, want.stable, want.converged)
    assert c.stable_exact and c.converged_exact
    assert c.frac_fail_above_first == pytest.approx(want.frac_fail_above_first)


def test_rank_bound_on_a_text_with_fewer_writes_than_dimensions(gpt2_tiny, long_completion):
    """The tiny GPT-2 (d 64, 2 layers) writes 4 rows a token: a 15-token text has 60 < 64 writes.
    Its rank is 60, clipping to k >= 60 is the identity on the writes (noise only) and the stable
    crossing cannot exceed the rank."""
    r = run_text_length(
        gpt2_tiny, long_completion, lengths=(1,), scaled=False, chunk_size=16
    ).table.iloc[0]
    assert r.n_writes == 4 * r.n_tokens < gpt2_tiny.cfg.d_model and r.rank_limited
    assert r["rank"] == r.n_writes and r.span_frac == pytest.approx(r.n_writes / r.d_model)
    assert r.stable_k <= r["rank"]
    assert r.stable_k_rank == pytest.approx(
        r.stable_k / r["rank"]
    ) and r.first_k_rank == pytest.approx(r.first_k / r["rank"])
    assert r.noise_across_k < 1e-4 and r.tolerance == pytest.approx(max(1e-4, 10 * r.noise_floor))


def test_noise_across_k_marks_the_identity_clips(gpt2_tiny, long_completion):
    text = E.prepare(gpt2_tiny, cut_continuation(gpt2_tiny, long_completion, 1), chunk_size=16)
    rank, d = int(text.basis.rank), text.d_model
    ks = noise_ks(d, rank)
    assert rank in ks and d // 2 in ks and all(0 < k < d for k in ks)
    t = noise_across_k(text, ks).set_index("k")
    assert t.identity.tolist() == [k >= rank for k in t.index]
    assert t.loc[t.identity, "identity_noise"].max() < 1e-4  # the clip changes nothing but rounding
    assert t.loc[~t.identity, "identity_noise"].isna().all()
    assert (t.noise >= t.batch_noise).all()


def test_target_subsets_score_a_plain_forward_pass(gpt2_tiny, long_completion):
    """A subset's value at k = d is the plain forward pass's log-probability of those tokens, and at
    k < d the clipped pass's, summed over them; the full subset is the text's own row."""
    import torch

    from interp import project_writes
    from interp.projection import prefix_masks
    from interp.scoring import continuation_logprob

    text = E.prepare(gpt2_tiny, long_completion, chunk_size=16)
    c, d = text.completion, text.d_model
    ev = text.evaluator("singular_value")
    with torch.inference_mode():
        plain = (
            continuation_logprob(gpt2_tiny, c.prompt_tokens, c.continuation_tokens)
            .per_token[0]
            .double()
        )
        with project_writes(gpt2_tiny, text.basis.vectors, mask=prefix_masks([17], d), check=False):
            clipped = (
                continuation_logprob(gpt2_tiny, c.prompt_tokens, c.continuation_tokens)
                .per_token[0]
                .double()
            )
    for pos in ([0, 1], [18, 19], list(range(20))):
        sub = ev.subset(pos)
        assert sub([d])[0] == pytest.approx(float(plain[pos].sum()), abs=1e-5)
        assert sub([17])[0] == pytest.approx(float(clipped[pos].sum()), abs=1e-4)
    with pytest.raises(ValueError, match="subset"):
        ev.subset([25])
    t = target_subsets(gpt2_tiny, text, (2, 20))
    assert set(zip(t.m, t.which, strict=False)) == {(2, "first"), (2, "last"), (20, "first")}
    row = t[(t.m == 20)].iloc[0]
    whole = run_text_length(gpt2_tiny, text, lengths=(20,), scaled=False).table.iloc[0]
    assert (row.first_k, row.stable_k, row.converged_k) == (
        whole.first_k,
        whole.stable_k,
        whole.converged_k,
    )
    assert (t.stable_k >= t.first_k).all()


def test_run_text_length_with_subsets_puts_the_cut_texts_beside(gpt2_tiny, long_completion):
    r = run_text_length(
        gpt2_tiny,
        long_completion,
        lengths=(2, 20),
        scaled=False,
        target_subsets_m=(2, 4),
        chunk_size=16,
    )
    sub = r.tables["subsets"]
    own = sub[sub.basis == "cut text's own"]
    assert (
        own.m.tolist() == [2]
        and own.first_k.iloc[0] == r.table.set_index("n_continuation_tokens").first_k[2]
    )
    assert set(sub[sub.basis == "full text"].which) == {"first", "last"}
    assert "target_subsets" in r.figures()
