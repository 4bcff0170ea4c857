"""The core invariants on a real pretrained model (../shared/models or $RESID_WRITES_MODEL).

Skipped, with the reason printed, when no real model is available offline.
"""

import pytest
import torch
from einops import rearrange

import interp

pytestmark = pytest.mark.real_model
PROMPT = "I believe the meaning of life is"


@pytest.fixture(scope="module")
def completion(real_model):
    comp = interp.sample_continuation(real_model, PROMPT, max_new_tokens=64, seed=0)
    print(f"\n[{interp.model_info(real_model).name}] {PROMPT!r} -> {comp.continuation_text!r}")
    return comp


def test_real_model_invariants(real_model, completion, capsys):
    m = real_model
    writes = interp.capture_writes(m, completion.tokens)
    n_pos = completion.tokens.numel()
    last = f"blocks.{m.cfg.n_layers - 1}.hook_resid_post"
    _, cache = m.run_with_cache(completion.tokens[None].to(next(m.parameters()).device),
                                names_filter=["blocks.0.hook_resid_pre", last])
    total = cache["blocks.0.hook_resid_pre"][0].float().cpu() + rearrange(writes.matrix, "(lk p) d -> lk p d", p=n_pos).sum(0)
    final = cache[last][0].float().cpu()
    rel = ((total - final).norm() / final.norm()).item()
    basis = interp.write_basis(writes)
    with torch.inference_mode():
        base = interp.continuation_logprob(m, completion.prompt_tokens, completion.continuation_tokens).total
        with interp.project_writes(m, basis.vectors.float()):
            full = interp.continuation_logprob(m, completion.prompt_tokens, completion.continuation_tokens).total
    err = (full - base).abs().item()
    with capsys.disabled():
        print(f"\n[{interp.model_info(m).name}] continuation: {completion.continuation_text!r}\n"
              f"  writes-sum reconstruction rel err {rel:.2e}; k=d_model |dlogp| {err:.2e} nats; "
              f"baseline logp {base.item():.3f}; top singular values {basis.singular_values[:3].tolist()}")
    assert rel < 1e-4
    assert err < 1e-3  # float32 over ~64 tokens of a deep model
