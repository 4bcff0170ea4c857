"""The folded-weights fast path equals the hooked projection, and weights come back."""

import pytest
import torch

import interp


def test_folded_equals_hooked_and_restores(tiny):
    comp = interp.sample_continuation(tiny, "Simply put, the theory", max_new_tokens=6, seed=0)
    basis = interp.write_basis(interp.capture_writes(tiny, comp.tokens)).vectors.float()
    v = basis[:, : tiny.cfg.d_model // 3]
    before = [p.detach().clone() for p in tiny.parameters()]
    with torch.inference_mode(), interp.project_writes(tiny, v):
        hooked = interp.continuation_logprob(
            tiny, comp.prompt_tokens, comp.continuation_tokens
        ).per_token
    with torch.inference_mode(), interp.folded_projection(tiny, v):
        folded = interp.continuation_logprob(
            tiny, comp.prompt_tokens, comp.continuation_tokens
        ).per_token
    assert torch.allclose(hooked, folded, atol=1e-4)
    with interp.project_writes(tiny, v):
        slow = interp.sample_continuations(
            tiny, "I believe", num_samples=2, max_new_tokens=8, seed=3
        )
    with interp.folded_projection(tiny, v):
        fast = interp.sample_continuations(
            tiny, "I believe", num_samples=2, max_new_tokens=8, seed=3, use_cache=True
        )
    assert [s.continuation_tokens.tolist() for s in slow] == [
        f.continuation_tokens.tolist() for f in fast
    ]
    assert all(torch.equal(a, b) for a, b in zip(before, tiny.parameters(), strict=False))


def test_folding_restores_weights_on_error(gpt2_tiny):
    before = [p.detach().clone() for p in gpt2_tiny.parameters()]
    with pytest.raises(RuntimeError, match="boom"):
        with interp.folded_projection(gpt2_tiny, torch.eye(gpt2_tiny.cfg.d_model)[:, :3]):
            raise RuntimeError("boom")
    assert all(torch.equal(a, b) for a, b in zip(before, gpt2_tiny.parameters(), strict=False))
