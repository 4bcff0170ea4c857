"""Scoring: log-probability of a continuation given a prompt, logits only where needed.

The forward pass is stopped at the last block's residual; the final norm and unembedding are
applied only at the positions that predict continuation tokens (the unembedding is a large
share of a small model's compute).
"""

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from .tokens import check_sequence
from .writes import as_batch, model_device


class _StopForward(Exception):
    pass


@dataclass
class LogProbs:
    """Per-token and total log-probabilities (nats) of the continuation, one row per batch
    element."""

    per_token: Float[Tensor, "batch cont_pos"]

    @property
    def total(self) -> Float[Tensor, " batch"]:
        """Summed in float64 (64 float32 terms of ~1-10 nats lose ~1e-5 nats in a float32 sum)."""
        return self.per_token.double().sum(-1)

    @property
    def mean(self) -> Float[Tensor, " batch"]:
        return self.per_token.double().mean(-1)


def final_residual(model: Any, tokens: Tensor) -> Float[Tensor, "batch pos d_model"]:
    """Run the blocks only and return the residual stream after the last block (before ln_final)."""
    name = f"blocks.{int(model.cfg.n_layers) - 1}.hook_resid_post"
    store: dict[str, Tensor] = {}

    def grab(x: Tensor, *, hook: Any) -> None:
        store["resid"] = x
        raise _StopForward

    try:
        with model.hooks(fwd_hooks=[(name, grab)]):
            model(tokens)
    except _StopForward:
        pass
    if "resid" not in store:
        raise RuntimeError(
            f"{name} did not fire; the model does not expose HookedTransformer hooks"
        )
    return store["resid"]


def unembed(model: Any, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
    return model.unembed(model.ln_final(resid))


def continuation_logprob(
    model: Any,
    prompt_tokens: Tensor,
    continuation_tokens: Tensor,
    *,
    batch_size: int | None = None,
) -> LogProbs:
    """Log-probability of each continuation token given the prompt and the tokens before it.

    Args:
        prompt_tokens: ``(P,)`` or ``(batch, P)`` (BOS included, see ``interp.tokens``).
        continuation_tokens: ``(C,)`` or ``(batch, C)``; must not be empty.
        batch_size: expand 1-D tokens to this many copies (one per batched subspace).

    Gradients flow when called outside ``torch.no_grad``; wrap in ``torch.inference_mode()``
    for sweeps.
    """
    prompt = as_batch(prompt_tokens)
    cont = as_batch(continuation_tokens)
    if cont.shape[-1] == 0:
        raise ValueError("Empty continuation: there is nothing to score; give at least one token.")
    if prompt.shape[-1] == 0:
        raise ValueError("Empty prompt: start it with BOS (interp.encode_prompt does).")
    b = max(prompt.shape[0], cont.shape[0], batch_size or 1)
    for name, t in (("prompt", prompt), ("continuation", cont)):
        if t.shape[0] not in (1, b):
            raise ValueError(f"{name} batch {t.shape[0]} does not match batch {b}")
    tokens = torch.cat([prompt.expand(b, -1), cont.expand(b, -1)], dim=1)
    check_sequence(model, tokens, what="prompt + continuation")
    device = model_device(model)
    tokens = tokens.to(device)
    n_prompt, n_cont = prompt.shape[1], cont.shape[1]
    resid = final_residual(model, tokens)
    logits = unembed(model, resid[:, n_prompt - 1 : n_prompt - 1 + n_cont]).float()
    logp = torch.log_softmax(logits, dim=-1)
    target = tokens[:, n_prompt:, None]
    return LogProbs(per_token=logp.gather(-1, target)[..., 0])
