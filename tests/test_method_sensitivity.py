"""Method or scale: the study's bisection, its simulator on a noisy curve, the gap closure, and the
experiment end to end on the tiny random GPT-2 (invariants only: random weights find nothing)."""

import numpy as np
import pytest

import experiments as E
from experiments.measure import cast_copy, gap_closure, simulate_bisection
from experiments.method_sensitivity import (
    MethodSensitivityResult,
    exact_first_crossing,
    noise_batches,
    pooled_sd,
    run_method_sensitivity,
)
from interp.search import bisect_min_k, study_bisection


def _eval(curve):
    return lambda ks: curve[list(ks)]


def _rough_curve(d: int, seed: int) -> np.ndarray:
    """A non-monotone curve rising from -200 to 0 with 3-nat jitter (the study's chaotic kind)."""
    rng = np.random.default_rng(seed)
    return np.linspace(-200, 0, d + 1) + 3 * rng.standard_normal(d + 1)


def test_study_bisection_is_first_crossing_on_a_monotone_curve():
    d = 97
    curve = np.sort(np.random.default_rng(0).normal(size=d + 1)) * 10
    for target in (curve[0] - 1, curve[1], curve[40] + 1e-9, curve[96], curve[d] + 5):
        k = study_bisection(_eval(curve), target, d).k
        assert k == exact_first_crossing(curve, target)
        assert 1 <= k <= d
        if target > curve[0]:  # where the package's search probes k = 0 first and finds it failing
            assert k == bisect_min_k(_eval(curve), target, d).k


def test_study_bisection_never_evaluates_0_or_d_and_is_log2_d():
    d = 576
    asked = []
    study_bisection(
        lambda ks: (asked.extend(ks), np.zeros(len(ks)))[1], 1.0, d
    )  # every probe fails
    assert 0 not in asked and d not in asked
    assert len(asked) == len(set(asked)) <= int(np.ceil(np.log2(d)))


def test_simulation_without_noise_is_the_bisection_of_the_clean_curve():
    d = 200
    for seed in range(5):
        curve = _rough_curve(d, seed)  # non-monotone: bisection != first crossing in general
        target = curve[d] - 0.5
        ks = simulate_bisection(curve, target, 0.0, 50, np.random.default_rng(seed))
        assert (ks == study_bisection(_eval(curve), target, d).k).all()


def test_simulated_k_spreads_with_noise():
    d = 256
    curve = np.linspace(-100, 0, d + 1)  # monotone: exact answer is k = d (target = curve[d])
    rng = np.random.default_rng(0)
    quiet = simulate_bisection(curve, curve[d], 1e-6, 500, rng)
    loud = simulate_bisection(curve, curve[d], 50.0, 500, rng)
    assert np.median(quiet) >= d - 1
    assert np.ptp(loud) > d / 2 and np.std(loud) > 20 * max(np.std(quiet), 1)
    assert np.median(loud) < 0.9 * d  # zero tolerance + noise: the search stops early
    # reproducible from the seed
    again = simulate_bisection(curve, curve[d], 50.0, 500, np.random.default_rng(1))
    assert (again == simulate_bisection(curve, curve[d], 50.0, 500, np.random.default_rng(1))).all()


def test_gap_closure_on_a_linear_curve():
    d = 100
    curve = np.arange(d + 1, dtype=float) - d  # -100 ... 0, baseline 0
    g = gap_closure(curve, 0.0, d).set_index(["criterion", "level"])
    assert g.loc[("gap_closed", 0.5), "k_first"] == 50
    assert g.loc[("gap_closed", 0.9), "k_first"] == 90
    assert g.loc[("gap_closed", 0.99), "k_first"] == 99
    assert g.loc[("within_nats", 1.0), "k_frac_first"] == pytest.approx(0.99)
    assert g.loc[("within_nats", 5.0), "k_frac_first"] == pytest.approx(0.95)
    assert g.loc[("within_nats", 10.0), "k_frac_first"] == pytest.approx(0.90)
    assert (g.k_first == g.k_stable).all()  # monotone
    # a spike that reaches the target early: first moves, stable does not
    spiky = curve.copy()
    spiky[10] = 0.0
    s = gap_closure(spiky, 0.0, d).set_index(["criterion", "level"])
    assert (
        s.loc[("within_nats", 1.0), "k_first"] == 10
        and s.loc[("within_nats", 1.0), "k_stable"] == 99
    )
    with pytest.raises(ValueError):
        gap_closure(curve[:-1], 0.0, d)


def test_pooled_sd_and_noise_batches():
    assert pooled_sd(np.array([1.0, 1.0, 5.0, 5.0]), ["a", "a", "b", "b"]) == 0.0
    assert pooled_sd(np.array([0.0, 2.0, 10.0, 12.0]), ["a", "a", "b", "b"]) == pytest.approx(
        np.sqrt(2)
    )
    assert noise_batches([3, 7], 1) == [[3], [7]]
    assert noise_batches([3, 7], 4) == [[3, 7, 3, 7]]
    assert noise_batches([1, 2, 3], 2) == [[1, 2], [2, 3], [3, 1]]


def test_run_method_sensitivity_end_to_end(gpt2_tiny, completion, tmp_path):
    import torch

    before = next(gpt2_tiny.parameters()).dtype
    text = E.prepare(gpt2_tiny, completion)
    r = run_method_sensitivity(
        gpt2_tiny,
        text,
        dtypes=("float32", "bfloat16"),
        batch_sizes=(1, 3),
        n_draws=200,
        noise_grid=(1.0,),
        seed=0,
    )
    assert next(gpt2_tiny.parameters()).dtype == before == torch.float32
    text.check_model(gpt2_tiny)  # the prepared text still accepts the model
    d = text.d_model
    t = r.tables
    # long format: one row per observation, no wide per-dtype columns
    assert set(t["noise"].dtype) == {"float32", "bfloat16"}
    assert {
        "dtype",
        "kind",
        "k",
        "batch_size",
        "position_in_batch",
        "logprob",
        "dev_same_dtype",
        "dev_float32",
        "dev_same_dtype_per_token",
    } <= set(t["noise"].columns)
    assert len(t["simulation"]) == 200 * t["simulation_summary"].noise.nunique()
    assert list(t["curve"].k) == list(range(d + 1))
    f32_b1 = t["noise"][(t["noise"].dtype == "float32") & (t["noise"].batch_size == 1)]
    assert (f32_b1.dev_same_dtype == 0).all() and (f32_b1.dev_float32 == 0).all()
    # float32 unclipped at batch 1 is the text's baseline; the curve's k = d is the unclipped model
    unc = f32_b1[f32_b1.kind == "unclipped"].logprob.iloc[0]
    assert unc == pytest.approx(text.baseline, abs=1e-4)
    assert t["curve"].logprob.iloc[-1] == pytest.approx(text.baseline, abs=1e-4)
    # the exact answers agree with the pure functions on the stored curve
    curve = t["curve"].logprob.to_numpy()
    mk = t["minimal_k"].set_index(["method", "dtype", "composition"])
    assert mk.loc[("exact_first_crossing", "float32", "every_k"), "k"] == exact_first_crossing(
        curve, text.baseline
    )
    assert set(t["bisection"].composition) == {"batch1", "batch3_random"}
    assert t["bisection"].groupby("composition").k.apply(lambda k: k.is_unique).all()
    none = t["simulation_summary"].set_index("noise").loc["none"]
    assert none.median_k_frac == mk.loc[("bisection_exact_curve", "float32", "every_k"), "k_frac"]
    assert (t["bisection"].k.between(1, d - 1)).all()
    s = r.summary()
    assert "headline" in s and "% of d" in s["headline"]
    for fig in r.figures().values():
        fig.to_json()
    again = MethodSensitivityResult.load(r.save(tmp_path / "ms"))
    assert again.summary() == s
    with pytest.raises(ValueError, match="float32"):  # a copy: the session fixture is never cast
        run_method_sensitivity(cast_copy(gpt2_tiny, "bfloat16"), completion)
