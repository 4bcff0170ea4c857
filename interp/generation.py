"""Sampling the model's own continuation (works inside ``project_writes`` for clipped generation).

Each step runs the blocks on the whole sequence so far (no KV cache: correct under any hooks)
and unembeds only the last position. Samples are drawn on the CPU from a seeded generator, so
a seed gives the same text on any device up to floating-point ties.
"""

from collections.abc import Sequence
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
    noise_rows: Tensor | None = None,
) -> Int[Tensor, " batch"]:
    """Greedy when temperature is 0, else nucleus (top-p) sampling at that temperature.

    Sampling is by inverse CDF from uniform numbers; rows with the same ``noise_rows`` entry
    share theirs, so two rows with the same distribution draw the same token (paired samples:
    e.g. a clipped and an unclipped model fed the same randomness).
    """
    logits = logits.detach().float().cpu()
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_p  # always keeps the most likely token
    sorted_p = sorted_p * keep
    cdf = (sorted_p / sorted_p.sum(-1, keepdim=True)).cumsum(-1)
    rows = torch.arange(logits.shape[0]) if noise_rows is None else noise_rows
    u = torch.rand(int(rows.max()) + 1, generator=generator, dtype=torch.float64)[rows].float()
    choice = torch.searchsorted(cdf, u[:, None]).clamp_max(cdf.shape[-1] - 1)
    return order.gather(-1, choice)[:, 0]


@torch.inference_mode()
def sample_continuations(
    model: Any,
    prompt: "str | Tensor | Sequence[str | Tensor]",
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
    """``num_samples`` continuations of each prompt, all sampled together as one batch.

    ``prompt`` is text (encoded with BOS first; ``""`` means BOS only), token ids, or a list of
    those; rows come out prompt by prompt (``num_samples`` each). A sample stops after the EOS
    token (kept as its last token) when ``stop_at_eos``. ``use_cache=True`` runs the bridge's HF
    model with its KV cache: fast, and hooks still fire on the new token at every step (so
    ``project_writes`` with one mask row per batch row clips some rows and not others);
    several prompts of different lengths are left-padded, which needs it. The default
    recomputes the whole sequence each step.
    """
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError("temperature must be >= 0 and top_p in (0, 1]")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    prompts = [prompt] if isinstance(prompt, str | Tensor) else list(prompt)
    if not prompts:
        raise ValueError("no prompt given")
    texts = [p if isinstance(p, str) else decode(model, p) for p in prompts]
    encoded = [encode_prompt(model, p) if isinstance(p, str) else p.long().cpu() for p in prompts]
    n_ctx = int(model.cfg.n_ctx)
    longest = max(t.numel() for t in encoded)
    if longest + max_new_tokens > n_ctx:
        raise ValueError(
            f"prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) is longer "
            f"than the model's context (n_ctx={n_ctx}); shorten the prompt or ask for fewer tokens."
        )
    for t in encoded:
        check_sequence(model, t, what="prompt")
    padded = any(t.numel() != longest for t in encoded)
    if padded and not use_cache:
        raise ValueError("prompts of different lengths are left-padded, which needs use_cache=True")
    eos = model.tokenizer.eos_token_id
    pad = eos if eos is not None else 0
    gen = torch.Generator().manual_seed(seed)
    device = model_device(model)
    rows = [t for t in encoded for _ in range(num_samples)]
    n = len(rows)
    seq = torch.stack([torch.cat([torch.full((longest - t.numel(),), pad), t]) for t in rows]).to(device)
    mask = torch.stack([torch.cat([torch.zeros(longest - t.numel()), torch.ones(t.numel())]) for t in rows]).long()
    done = torch.zeros(n, dtype=torch.bool)
    noise_rows = torch.arange(n) % num_samples  # sample i of every prompt shares its randomness
    if use_cache:
        next_logits = _cached_stepper(model, mask.to(device) if padded else None)
    else:
        next_logits = lambda s: unembed(model, final_residual(model, s)[:, -1])  # noqa: E731
    for _ in tqdm(range(max_new_tokens), desc="sampling", disable=not progress, leave=False):
        nxt = sample_token(next_logits(seq), temperature=temperature, top_p=top_p, generator=gen,
                           noise_rows=noise_rows)
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        seq = torch.cat([seq, nxt[:, None].to(device)], dim=1)
        if stop_at_eos and eos is not None:
            done |= nxt == eos
            if bool(done.all()):
                break
    out = []
    settings = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    for i in range(n):
        cont = seq[i, longest:].cpu()
        if stop_at_eos and eos is not None and bool((cont == eos).any()):
            cont = cont[: int((cont == eos).nonzero()[0]) + 1]
        j = i // num_samples
        out.append(
            Completion(
                prompt=texts[j],
                prompt_tokens=encoded[j].clone(),
                continuation_tokens=cont,
                continuation_text=decode(model, cont),
                meta={**settings, "sample": i % num_samples, "tokenizer": tokenizer_fingerprint(model.tokenizer)},
            )
        )
    return out


def _cached_stepper(model: Any, mask: Tensor | None = None) -> Any:
    """Last-position logits from the HF model inside a bridge, feeding only new tokens (with an
    attention mask and positions that skip the left padding when ``mask`` is given)."""
    hf = getattr(model, "original_model", None)
    if hf is None:
        raise ValueError("use_cache=True needs a TransformerBridge (an HF model inside); use use_cache=False.")
    state: dict[str, Any] = {"past": None, "seen": 0, "mask": mask}

    def step(seq: Tensor) -> Tensor:
        kwargs: dict[str, Any] = {}
        if state["mask"] is not None:
            grow = seq.shape[1] - state["mask"].shape[1]
            if grow > 0:
                state["mask"] = torch.cat([state["mask"], state["mask"].new_ones(seq.shape[0], grow)], dim=1)
            positions = (state["mask"].cumsum(-1) - 1).clamp_min(0)
            kwargs = dict(attention_mask=state["mask"], position_ids=positions[:, state["seen"]:])
        out = hf(input_ids=seq[:, state["seen"] :], past_key_values=state["past"], use_cache=True, **kwargs)
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
