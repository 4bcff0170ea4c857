"""Sampling the model's own continuation (works inside ``project_writes`` for clipped generation).

Two decoding paths share one sampler (``PairedSampler``): the default runs the blocks on the whole
sequence at every step (no KV cache: right under any hooks, on any hooked model); ``use_cache=True``
runs transformers' own ``generate`` on the HF model inside a bridge (KV cache, left padding). Tokens
are drawn on the CPU from a seeded generator, so a seed gives the same text on any device up to
floating-point ties, and every completion records the log-probability its sampler saw for each
token (``meta["token_logprobs"]``), which ``experiments.study.checks`` compares with the scoring
pass.
"""

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from .scoring import final_residual, unembed
from .tokens import Completion, check_sequence, decode, encode_prompt, tokenizer_fingerprint
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
    token (kept as its last token) when ``stop_at_eos``. ``use_cache=True`` runs ``generate`` on
    the bridge's HF model with its KV cache: fast, and hooks still fire on the new token at every
    step (so ``project_writes`` with one mask row per batch row clips some rows and not others);
    several prompts of different lengths are left-padded, which needs it. The default
    recomputes the whole sequence each step. Sample ``i`` of every prompt shares its random
    numbers (paired samples).
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
    if not use_cache and any(t.numel() != longest for t in encoded):
        raise ValueError("prompts of different lengths are left-padded, which needs use_cache=True")
    eos = model.tokenizer.eos_token_id if stop_at_eos else None
    pad = model.tokenizer.eos_token_id if model.tokenizer.eos_token_id is not None else 0
    sampler = PairedSampler(
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        noise_rows=torch.arange(len(encoded) * num_samples) % num_samples,
    )
    rows = [t for t in encoded for _ in range(num_samples)]
    if use_cache:
        seq = _generate_cached(
            model, rows, sampler, max_new_tokens=max_new_tokens, eos=eos, pad=pad, progress=progress
        )
    else:
        seq = _generate_uncached(
            model, rows, sampler, max_new_tokens=max_new_tokens, eos=eos, pad=pad, progress=progress
        )
    logprobs = sampler.token_logprobs()
    out = []
    settings = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    for i in range(len(rows)):
        cont = seq[i]
        if eos is not None and bool((cont == eos).any()):
            cont = cont[: int((cont == eos).nonzero()[0]) + 1]
        j = i // num_samples
        out.append(
            Completion(
                prompt=texts[j],
                prompt_tokens=encoded[j].clone(),
                continuation_tokens=cont,
                continuation_text=decode(model, cont),
                meta={
                    **settings,
                    "sample": i % num_samples,
                    "tokenizer": tokenizer_fingerprint(model.tokenizer),
                    "token_logprobs": [round(float(x), 6) for x in logprobs[i, : cont.numel()]],
                    "sampler": "cached" if use_cache else "uncached",
                },
            )
        )
    return out


class PairedSampler:
    """Draws every row's next token from its logits with ``sample_token`` (rows with the same
    ``noise_rows`` entry share their uniform numbers) and records the log-probability (at
    temperature 1) that the logits gave each chosen token: ``reproduce`` checks those against its
    scoring pass, which catches any cache, padding or position bug in the decoding path."""

    def __init__(
        self, *, temperature: float | int, top_p: float | int, seed: int, noise_rows: Tensor
    ) -> None:
        self.temperature, self.top_p, self.noise_rows = temperature, top_p, noise_rows
        self.generator = torch.Generator().manual_seed(seed)
        self.logprobs: list[Tensor] = []

    def __call__(self, logits: Float[Tensor, "batch vocab"]) -> Int[Tensor, " batch"]:
        logits = logits.detach().float().cpu()
        nxt = sample_token(
            logits,
            temperature=self.temperature,
            top_p=self.top_p,
            generator=self.generator,
            noise_rows=self.noise_rows,
        )
        self.logprobs.append(torch.log_softmax(logits, -1).gather(-1, nxt[:, None])[:, 0])
        return nxt

    def token_logprobs(self) -> Float[Tensor, "batch step"]:
        return torch.stack(self.logprobs, dim=1)


def _generate_uncached(
    model: Any,
    rows: list[Tensor],
    sampler: PairedSampler,
    *,
    max_new_tokens: int,
    eos: int | None,
    pad: int,
    progress: bool,
) -> Int[Tensor, "batch new"]:
    """Runs the blocks on the whole sequence at every step (no KV cache: right under any hooks,
    on any model with HookedTransformer hook names). Rows must have equal lengths."""
    device = model_device(model)
    seq = torch.stack(rows).to(device)
    n_prompt = seq.shape[1]
    done = torch.zeros(len(rows), dtype=torch.bool)
    for _ in tqdm(range(max_new_tokens), desc="sampling", disable=not progress, leave=False):
        nxt = sampler(unembed(model, final_residual(model, seq)[:, -1]))
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        seq = torch.cat([seq, nxt[:, None].to(device)], dim=1)
        if eos is not None:
            done |= nxt == eos
            if bool(done.all()):
                break
    return seq[:, n_prompt:].cpu()


def _generate_cached(
    model: Any,
    rows: list[Tensor],
    sampler: PairedSampler,
    *,
    max_new_tokens: int,
    eos: int | None,
    pad: int,
    progress: bool,
) -> Int[Tensor, "batch new"]:
    """transformers' own ``generate`` on the HF model inside a bridge (its KV cache, attention
    mask and positions for left-padded rows). Our sampler picks each token from the raw logits
    (``_SampleWith``): greedy decoding then takes exactly that token, so every row's randomness is
    ours and paired, and the bridge's hooks fire on every new token."""
    from transformers import GenerationConfig, LogitsProcessorList

    hf = getattr(model, "original_model", None)
    if hf is None:
        raise ValueError(
            "use_cache=True needs a TransformerBridge (an HF model inside); use use_cache=False."
        )
    device = next(hf.parameters()).device
    longest = max(t.numel() for t in rows)
    ids = torch.stack([torch.cat([torch.full((longest - t.numel(),), pad), t]) for t in rows]).to(
        device
    )
    mask = torch.stack(
        [torch.cat([torch.zeros(longest - t.numel()), torch.ones(t.numel())]) for t in rows]
    ).long()
    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        use_cache=True,
        eos_token_id=eos,
        pad_token_id=pad,
        num_beams=1,
        temperature=None,
        top_p=None,
        top_k=None,
        repetition_penalty=None,
    )
    bar = tqdm(total=max_new_tokens, desc="sampling", disable=not progress, leave=False)
    out = hf.generate(
        input_ids=ids,
        attention_mask=mask.to(device),
        generation_config=config,
        logits_processor=LogitsProcessorList([_SampleWith(sampler, bar)]),
    )
    bar.close()
    new = out[:, longest:].cpu()
    if new.shape[1] < max_new_tokens and eos is None:
        raise RuntimeError(
            f"generate stopped after {new.shape[1]} of {max_new_tokens} tokens without an "
            "EOS to stop at"
        )
    return new


class _SampleWith:
    """A logits processor that lets ``PairedSampler`` choose the token: every other logit becomes
    -inf, so greedy decoding returns the sampler's choice."""

    def __init__(self, sampler: PairedSampler, bar: Any) -> None:
        self.sampler, self.bar = sampler, bar

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        nxt = self.sampler(scores).to(scores.device)
        self.bar.update(1)
        chosen = torch.full_like(scores, float("-inf"))
        return chosen.scatter_(-1, nxt[:, None], 0.0)


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
