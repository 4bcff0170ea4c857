"""Sampling is right on any installed transformers: cached == uncached, batched == alone, and what
the sampler saw is what the model says (the defect of 2026-11-25: transformers 5.24 +
transformer-lens 4.3.0 broke the bridge's KV cache and every sampled continuation was garbage)."""

import pytest
import torch

import interp
from experiments.prompts import PROMPTS
from interp.compat import cached_decoding_error


def test_cached_decoding_matches_a_full_forward(tiny):
    tokens = interp.encode_prompt(tiny, "I believe the meaning of life is")
    assert cached_decoding_error(tiny, tokens) < 1e-4


def test_without_the_shim_the_cache_defect_is_visible(tiny, monkeypatch):
    """The check behind the shim can fail: a bridge whose attention ignores the cache (what
    transformer-lens 4.3.0 does under transformers >= 5.24) is caught."""
    for module in tiny.modules():
        update = getattr(module, "_update_kv_cache", None)
        if update is not None:
            monkeypatch.setattr(module, "_update_kv_cache", lambda k, v, **kwargs: (k, v))
    tokens = interp.encode_prompt(tiny, "I believe the meaning of life is")
    assert cached_decoding_error(tiny, tokens) > 1e-3


def test_sampler_records_the_models_log_probabilities(tiny):
    comp = interp.sample_continuation(tiny, "I believe", max_new_tokens=8, seed=1, use_cache=True)
    with torch.inference_mode():
        lp = interp.continuation_logprob(
            tiny, comp.prompt_tokens, comp.continuation_tokens
        ).per_token[0]
    assert comp.meta["sampler"] == "cached"
    assert torch.allclose(lp, torch.tensor(comp.meta["token_logprobs"]), atol=1e-4)


@pytest.mark.real_model
@pytest.mark.drift
@pytest.mark.parametrize("temperature", [0.6, 0])
def test_real_model_cached_and_uncached_sample_the_same_tokens(smollm2, temperature):
    prompt = PROMPTS["meaning_of_life"]
    kw = dict(max_new_tokens=24, seed=0, temperature=temperature)
    cached = interp.sample_continuation(smollm2, prompt, use_cache=True, **kw)
    plain = interp.sample_continuation(smollm2, prompt, use_cache=False, **kw)
    assert cached.continuation_tokens.tolist() == plain.continuation_tokens.tolist()
    err = (
        (torch.tensor(cached.meta["token_logprobs"]) - torch.tensor(plain.meta["token_logprobs"]))
        .abs()
        .max()
    )
    assert err < 1e-3


@pytest.mark.real_model
@pytest.mark.drift
def test_real_model_left_padded_batch_samples_what_each_prompt_alone_samples(smollm2):
    """The four study prompts (6 to 40 tokens: every row but one is left-padded) in one batch."""
    prompts = list(PROMPTS.values())
    together = interp.sample_continuations(
        smollm2, prompts, max_new_tokens=32, seed=0, use_cache=True
    )
    for prompt, comp in zip(prompts, together, strict=False):
        alone = interp.sample_continuation(
            smollm2, prompt, max_new_tokens=32, seed=0, use_cache=True
        )  # no padding
        assert comp.continuation_tokens.tolist() == alone.continuation_tokens.tolist(), prompt
