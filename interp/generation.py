"""Sampling the model's own continuation (works inside ``project_writes`` for clipped generation).

Each step runs the blocks on the whole sequence so far (no KV cache: correct under any hooks)
and unembeds only the last position. Samples are drawn on the CPU from a seeded generator, so
a seed gives the same text on any device up to floating-point ties.
"""

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from .tokens import Completion, check_sequence, decode, encode_prompt, tokenizer_fingerprint
from .scoring import final_residual, unembed
from .writes import model_device


def sample_token(
    logits: Float[Tensor, "batch vocab"],
    *,
    temperature: float | int,
    top_p: float | int,
    generator: torch.Generator,
) -> Int[Tensor, " batch"]:
    """Greedy when temperature is 0, else nucleus (top-p) sampling at that temperature."""
    logits = logits.detach().float().cpu()
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_p  # always keeps the most likely token
    sorted_p = sorted_p * keep
    choice = torch.multinomial(sorted_p / sorted_p.sum(-1, keepdim=True), 1, generator=generator)
    return order.gather(-1, choice)[:, 0]


@torch.inference_mode()
def sample_continuations(
    model: Any,
    prompt: str | Tensor,
    *,
    num_samples: int = 1,
    max_new_tokens: int = 64,
    temperature: float | int = 0.6,
    top_p: float | int = 0.9,
    seed: int = 0,
    stop_at_eos: bool = True,
    progress: bool = False,
    use_cache: bool = False,
) -> list[Completion]:
    """``num_samples`` continuations of one prompt, sampled together as one batch.

    ``prompt`` is text (encoded with BOS first; ``""`` means BOS only) or token ids.
    A sample stops after the EOS token (kept as its last token) when ``stop_at_eos``.
    ``use_cache=True`` runs the bridge's HF model with its KV cache (fast; pair it with
    ``folded_projection`` for a clipped model); the default recomputes the whole sequence each
    step, which is correct under any hooks.
    """
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError("temperature must be >= 0 and top_p in (0, 1]")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    text = prompt if isinstance(prompt, str) else decode(model, prompt)
    prompt_tokens = encode_prompt(model, prompt) if isinstance(prompt, str) else prompt.long().cpu()
    n_ctx = int(model.cfg.n_ctx)
    if prompt_tokens.numel() + max_new_tokens > n_ctx:
        raise ValueError(
            f"prompt ({prompt_tokens.numel()} tokens) + max_new_tokens ({max_new_tokens}) is longer "
            f"than the model's context (n_ctx={n_ctx}); shorten the prompt or ask for fewer tokens."
        )
    check_sequence(model, prompt_tokens, what="prompt")
    eos = model.tokenizer.eos_token_id
    gen = torch.Generator().manual_seed(seed)
    device = model_device(model)
    seq = prompt_tokens[None].repeat(num_samples, 1).to(device)
    done = torch.zeros(num_samples, dtype=torch.bool)
    next_logits = _cached_stepper(model) if use_cache else (lambda s: unembed(model, final_residual(model, s)[:, -1]))
    for _ in tqdm(range(max_new_tokens), desc="sampling", disable=not progress, leave=False):
        nxt = sample_token(next_logits(seq), temperature=temperature, top_p=top_p, generator=gen)
        nxt = torch.where(done, torch.full_like(nxt, eos if eos is not None else 0), nxt)
        seq = torch.cat([seq, nxt[:, None].to(device)], dim=1)
        if stop_at_eos and eos is not None:
            done |= nxt == eos
            if bool(done.all()):
                break
    out = []
    settings = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    for i in range(num_samples):
        cont = seq[i, prompt_tokens.numel() :].cpu()
        if stop_at_eos and eos is not None and bool((cont == eos).any()):
            cont = cont[: int((cont == eos).nonzero()[0]) + 1]
        out.append(
            Completion(
                prompt=text,
                prompt_tokens=prompt_tokens.clone(),
                continuation_tokens=cont,
                continuation_text=decode(model, cont),
                meta={**settings, "sample": i, "tokenizer": tokenizer_fingerprint(model.tokenizer)},
            )
        )
    return out


def _cached_stepper(model: Any) -> Any:
    """Last-position logits from the HF model inside a bridge, feeding only new tokens."""
    hf = getattr(model, "original_model", None)
    if hf is None:
        raise ValueError("use_cache=True needs a TransformerBridge (an HF model inside); use use_cache=False.")
    state: dict[str, Any] = {"past": None, "seen": 0}

    def step(seq: Tensor) -> Tensor:
        out = hf(input_ids=seq[:, state["seen"] :], past_key_values=state["past"], use_cache=True)
        state["past"], state["seen"] = out.past_key_values, seq.shape[1]
        return out.logits[:, -1]

    return step


def sample_continuation(
    model: Any,
    prompt: str | Tensor,
    *,
    max_new_tokens: int = 64,
    temperature: float | int = 0.6,
    top_p: float | int = 0.9,
    seed: int = 0,
    stop_at_eos: bool = True,
    use_cache: bool = False,
) -> Completion:
    """One seeded continuation (greedy when ``temperature == 0``); its tokens fix the text to study.
    ``use_cache=True``: the KV-cached path (fast; only for an unhooked or weight-folded model)."""
    return sample_continuations(
        model,
        prompt,
        num_samples=1,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        stop_at_eos=stop_at_eos,
        use_cache=use_cache,
    )[0]
