"""A prepared text's memos never hand back an answer computed for other settings (issue 18):
a result is the same whether its text is fresh or already used by other experiments, and
settings the text cannot honour are refused with an error that says what to do."""

import pandas as pd
import pytest
import torch

import experiments as E
import interp


@pytest.fixture(scope="module")
def comp(gpt2_tiny):
    return E.get_continuation(gpt2_tiny, "relativity", max_new_tokens=8, seed=0)


def fresh_minimal(model, comp, **kw):
    return E.run_minimal_subspace(model, E.prepare(model, comp), **kw)


def test_random_basis_of_another_seed_is_not_the_memoized_one(gpt2_tiny, comp):
    shared = E.prepare(gpt2_tiny, comp)
    seed0 = E.run_minimal_subspace(gpt2_tiny, shared, seed=0)
    seed1 = E.run_minimal_subspace(gpt2_tiny, shared, seed=1)
    alone = fresh_minimal(gpt2_tiny, comp, seed=1)
    pd.testing.assert_frame_equal(seed1.table, alone.table)
    pd.testing.assert_frame_equal(seed1.tables["sensitivity"], alone.tables["sensitivity"])
    assert seed1.settings["random_null_seed"] == 1 and seed0.settings["random_null_seed"] == 0
    # two random-basis evaluators now live side by side, each with its own curve
    randoms = [ev for (name, _, _), ev in shared.evaluators.items() if name == "random_basis"]
    assert len(randoms) == 2
    a, b = (ev([0, 8, 16, 32]) for ev in randoms)
    assert abs(a - b).max() > 1e-3


def test_results_and_evaluation_counts_do_not_depend_on_what_ran_before(gpt2_tiny, comp):
    used = E.prepare(gpt2_tiny, comp)
    E.run_clipping(
        gpt2_tiny, used
    )  # fills the singular-value memo with another grid and refinements
    E.run_minimal_subspace(gpt2_tiny, used, tolerance=10.0)  # another tolerance's refinements
    after = E.run_minimal_subspace(gpt2_tiny, used, tolerance=1e-4)
    alone = fresh_minimal(gpt2_tiny, comp, tolerance=1e-4)
    pd.testing.assert_frame_equal(after.table, alone.table)  # k and the evaluations column
    pd.testing.assert_frame_equal(after.tables["sensitivity"], alone.tables["sensitivity"])
    assert after.settings["tolerance"] == 1e-4
    clip_after = E.run_clipping(gpt2_tiny, used)
    clip_alone = E.run_clipping(gpt2_tiny, E.prepare(gpt2_tiny, comp))
    assert clip_after.summary()["k_converged"] == clip_alone.summary()["k_converged"]


def test_kinds_other_than_the_texts_are_refused(gpt2_tiny, comp):
    both = E.prepare(gpt2_tiny, comp)
    for run in (E.run_clipping, E.run_minimal_subspace, E.run_single_direction):
        with pytest.raises(ValueError, match=r"differs from the prepared text's kinds.*prepare"):
            run(gpt2_tiny, both, kinds=("attn",))
    same = E.run_clipping(
        gpt2_tiny, both, kinds=("mlp", "attn"), ks=[0, 4, gpt2_tiny.cfg.d_model]
    )  # same kinds, any order
    assert same.settings["kinds"] == ["attn", "mlp"]
    attn = E.prepare(gpt2_tiny, comp, kinds=("attn",))
    r = E.run_clipping(
        gpt2_tiny, attn, ks=[0, 4, gpt2_tiny.cfg.d_model]
    )  # default: the text's kinds, recorded as used
    assert r.settings["kinds"] == ["attn"] and r.meta["kinds"] == ["attn"]
    assert r.curve.logprob.iloc[0] != same.curve.logprob.iloc[0]


def test_another_model_or_a_changed_dtype_is_refused(model_dirs, gpt2_tiny, comp):
    model = interp.load_model(model_dirs["gpt2"], device="cpu", progress=False)
    text = E.prepare(model, comp)
    with pytest.raises(ValueError, match="another model object"):
        E.run_clipping(gpt2_tiny, text, ks=[0, gpt2_tiny.cfg.d_model])
    model.to(torch.float64)
    with pytest.raises(
        ValueError, match=r"dtype changed .*float32 -> float64.*prepare the text again"
    ):
        E.run_clipping(model, text, ks=[0, gpt2_tiny.cfg.d_model])
    with pytest.raises(ValueError, match="dtype changed"):
        text.noise()


def test_noise_floor_is_measured_the_way_the_sweeps_run(gpt2_tiny, comp, monkeypatch):
    """The noise floor runs full projections in a batch of the sweeps' chunk size (and of 1), with
    the text's kinds: the batch sizes it reports are those, and the floor is their largest error."""
    seen = []
    real = E.base.continuation_logprob

    def spy(model, prompt, cont, batch_size=1, **kw):
        seen.append(batch_size)
        return real(model, prompt, cont, batch_size=batch_size, **kw)

    monkeypatch.setattr(E.base, "continuation_logprob", spy)
    text = E.prepare(gpt2_tiny, comp, chunk_size=5, kinds=("attn",))
    by_batch = text.noise_by_batch()
    assert sorted(by_batch) == [1, 5] and sorted(seen[-2:]) == [1, 5]
    assert text.noise() == max(by_batch.values())
    auto = E.prepare(gpt2_tiny, comp)
    chunk = interp.sweeps.auto_chunk_size(
        gpt2_tiny, comp.tokens.numel(), comp.continuation_tokens.numel()
    )
    assert sorted(auto.noise_by_batch()) == sorted({1, chunk})
