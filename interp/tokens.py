"""Tokens: prompt/continuation pairs whose split is exact.

BOS rule: a prompt is encoded as ``[BOS] + tokenizer(prompt, add_special_tokens=False)``, so the
empty prompt is ``[BOS]`` alone. The continuation is kept as token ids (the model's own sample),
never re-tokenized from text, so ``prompt_tokens + continuation_tokens`` is exactly the sequence
the model produced.
"""

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor


class TokenizerMismatchError(ValueError):
    """Stored tokens were made with another tokenizer than the model's."""


def bos_token_id(model: Any) -> int:
    tok = model.tokenizer
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if bos is None:
        raise ValueError(
            "The tokenizer has neither a BOS nor an EOS token, so prompts cannot start with one; "
            "set tokenizer.bos_token before encoding."
        )
    return int(bos)


def encode_prompt(model: Any, text: str, *, prepend_bos: bool = True) -> Int[Tensor, " pos"]:
    """Token ids of a prompt, BOS first (see module doc). Empty text gives ``[BOS]``."""
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if prepend_bos:
        ids = [bos_token_id(model)] + list(ids)
    if not ids:
        raise ValueError("Empty prompt without BOS: nothing to condition on; use prepend_bos=True.")
    return torch.tensor(ids, dtype=torch.long)


def decode(model: Any, tokens: Tensor) -> str:
    return model.tokenizer.decode(tokens.tolist())


def token_strings(model: Any, tokens: Tensor) -> list[str]:
    return model.tokenizer.batch_decode([[t] for t in tokens.tolist()])


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A short hash of the vocabulary: equal for the same tokenizer, different for another."""
    vocab = tokenizer.get_vocab()
    items = sorted(vocab.items(), key=lambda kv: kv[1])
    h = hashlib.sha256("\n".join(f"{t}\t{i}" for t, i in items).encode("utf-8"))
    return h.hexdigest()[:16]


def check_sequence(model: Any, tokens: Tensor, *, what: str = "sequence") -> None:
    """Raise a clear error for token ids out of vocabulary or sequences longer than the context."""
    if tokens.numel() == 0:
        raise ValueError(f"Empty {what}: give at least one token.")
    n_ctx, d_vocab = int(model.cfg.n_ctx), int(model.cfg.d_vocab)
    if tokens.shape[-1] > n_ctx:
        raise ValueError(
            f"The {what} has {tokens.shape[-1]} tokens, longer than the model's context "
            f"(n_ctx={n_ctx}); shorten the prompt or use fewer new tokens."
        )
    if int(tokens.max()) >= d_vocab or int(tokens.min()) < 0:
        raise TokenizerMismatchError(
            f"Token id {int(tokens.max())} is outside the model's vocabulary (d_vocab={d_vocab}): "
            "these tokens were made with another tokenizer; re-tokenize with this model's."
        )


@dataclass
class Completion:
    """A prompt and a continuation, as token ids; the split between them is exact."""

    prompt: str
    prompt_tokens: Int[Tensor, " prompt_pos"]
    continuation_tokens: Int[Tensor, " cont_pos"]
    continuation_text: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> Int[Tensor, " pos"]:
        return torch.cat([self.prompt_tokens, self.continuation_tokens])

    @property
    def n_prompt(self) -> int:
        return int(self.prompt_tokens.numel())

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "prompt_tokens": self.prompt_tokens.tolist(),
            "continuation_tokens": self.continuation_tokens.tolist(),
            "continuation_text": self.continuation_text,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], model: Any | None = None) -> "Completion":
        """Rebuild; with ``model``, check the tokenizer is the one that made the tokens."""
        comp = cls(
            prompt=d["prompt"],
            prompt_tokens=torch.tensor(d["prompt_tokens"], dtype=torch.long),
            continuation_tokens=torch.tensor(d["continuation_tokens"], dtype=torch.long),
            continuation_text=d.get("continuation_text", ""),
            meta=dict(d.get("meta", {})),
        )
        if model is not None:
            stored = comp.meta.get("tokenizer")
            here = tokenizer_fingerprint(model.tokenizer)
            if stored is not None and stored != here:
                raise TokenizerMismatchError(
                    f"These tokens were made by a tokenizer with fingerprint {stored}, but the "
                    f"model's tokenizer is {here}: regenerate the continuation with this model "
                    "(delete the stored continuation) or load the model that made it."
                )
            check_sequence(model, comp.tokens)
        return comp
