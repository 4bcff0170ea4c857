"""The study's procedure experiment: the scaled length, the searches against the text's own curve,
the low-precision bisection against a bisection on that dtype's own curve, and the summary keys
the replication table reads (tiny random GPT-2: invariants only, no finding)."""

import numpy as np
import pytest

import experiments as E
from experiments.measure import score_clipped, score_unclipped
from experiments.study_procedure import StudyProcedureResult, cast_cached, run_study_procedure
from experiments.texts import cut_continuation, scaled_length
from interp import sample_continuation
from interp.search import study_bisection


def test_scaled_length_is_the_studys_new_tokens_per_dimension():
    assert scaled_length(4096) == 64
    assert scaled_length(576) == 9  # 64 * 576 / 4096 = 9.0
    assert scaled_length(640) == 10
    assert scaled_length(64) == 1
    assert scaled_length(8) == 1  # never 0


@pytest.fixture(scope="module")
def comp(gpt2_tiny):
    return sample_continuation(
        gpt2_tiny, "I believe the meaning of life is", max_new_tokens=12, seed=3, stop_at_eos=False
    )


@pytest.fixture(scope="module")
def result(gpt2_tiny, comp):
    return run_study_procedure(
        gpt2_tiny, comp, scaled_tokens=4, chunk_size=16, prompt_name="meaning_of_life"
    )


def test_rows_and_sizes(result, comp):
    t = result.table
    assert set(zip(t.condition, t.method, t.dtype, strict=False)) == {
        (c, m, dt)
        for c in ("full", "scaled")
        for m, dt in (
            ("exact_scan", "float32"),
            ("study_bisection", "float32"),
            ("study_bisection", "bfloat16"),
        )
    }
    full, scaled = t[t.condition == "full"].iloc[0], t[t.condition == "scaled"].iloc[0]
    assert full.n_continuation_tokens == comp.continuation_tokens.numel() == 12
    assert scaled.n_continuation_tokens == 4
    assert full.n_prompt_tokens == scaled.n_prompt_tokens == comp.n_prompt
    assert np.isclose(scaled.tokens_per_dim, (comp.n_prompt + 4) / 64)
    assert ((t.k >= 0) & (t.k <= 64)).all() and np.allclose(t.k_frac, t.k / 64)


def test_float32_searches_match_the_texts_every_k_curve(gpt2_tiny, result, comp):
    """The bisection row is study_bisection on the text's own curve (every k computed here), and
    the exact scan's k is that curve's first crossing of baseline - tolerance."""
    for cond, c in (("full", comp), ("scaled", cut_continuation(gpt2_tiny, comp, 4))):
        text = E.prepare(gpt2_tiny, c, chunk_size=16)
        curve = text.evaluator("singular_value").evaluate(range(65))
        t = result.table[result.table.condition == cond].set_index(["method", "dtype"])
        bis = study_bisection(lambda ks: curve[list(ks)], text.baseline, 64)  # noqa: B023 (called in this iteration)
        assert t.loc[("study_bisection", "float32"), "k"] == bis.k
        tol = t.loc[("exact_scan", "float32"), "tolerance"]
        ok = curve >= text.baseline - tol
        ok[64] = True
        want = int(np.argmax(ok))
        assert t.loc[("exact_scan", "float32"), "k"] == want
        assert abs(t.loc[("exact_scan", "float32"), "baseline_logprob"] - text.baseline) < 1e-9


def test_low_precision_bisection_follows_its_own_dtype(gpt2_tiny, result, comp):
    """Recompute the bfloat16 curve at every k (batch 1, the model's bfloat16 copy) and bisect it:
    the row's k must be that bisection's, and its target the bfloat16 unclipped log-probability."""
    low = cast_cached(gpt2_tiny, "bfloat16")
    assert low is cast_cached(gpt2_tiny, "bfloat16")  # one copy per model
    assert (
        next(gpt2_tiny.parameters()).dtype.is_floating_point
        and str(next(gpt2_tiny.parameters()).dtype) == "torch.float32"
    )  # the caller's model is not cast
    text = E.prepare(gpt2_tiny, comp, chunk_size=16)
    row = result.table[
        (result.table.condition == "full") & (result.table.dtype == "bfloat16")
    ].iloc[0]
    target = float(score_unclipped(low, comp, 1)[0])
    assert abs(row.target - target) < 1e-6
    curve = np.array(
        [score_clipped(low, comp, text.basis.vectors, [k], kinds=text.kinds)[0] for k in range(65)]
    )
    assert row.k == study_bisection(lambda ks: curve[list(ks)], target, 64).k
    probes = result.tables["probes"]
    assert set(probes.condition) == {"full", "scaled"} and (probes.dtype == "bfloat16").all()
    full_probes = probes[probes.condition == "full"]
    assert np.allclose(full_probes.logprob.to_numpy(), curve[full_probes.k.to_numpy()], atol=1e-6)


def test_summary_keys_and_round_trip(result, tmp_path):
    s = result.summary()
    for cond in ("full", "scaled"):
        assert s[f"k_frac[{cond}:exact_scan:float32]"] == result.k_frac(cond, "exact_scan")
        assert s[f"k_frac[{cond}:study_bisection:bfloat16]"] == result.k_frac(
            cond, "study_bisection", "bfloat16"
        )
        assert f"gap50_k_frac[{cond}]" in s and f"within1_k_frac[{cond}]" in s
    assert s["n_continuation_tokens[scaled]"] == 4
    result.save(tmp_path)
    back = StudyProcedureResult.load(tmp_path)
    assert back.summary() == s
    figs = result.figures()
    assert len(figs["study_procedure"].data) == 3 and len(figs["study_procedure_curves"].data) >= 4


def test_bad_input(gpt2_tiny, comp):
    with pytest.raises(ValueError, match="conditions"):
        run_study_procedure(gpt2_tiny, comp, conditions=("half",))
    low = cast_cached(gpt2_tiny, "bfloat16")
    with pytest.raises(ValueError, match="float32"):
        run_study_procedure(low, comp)
