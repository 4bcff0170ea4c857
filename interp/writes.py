"""Writes: what every attention block and MLP adds to the residual stream, at every position.

Rows of the writes matrix are ordered by (layer, kind, position), kind in compute order
(attention before MLP). The tidy ``index`` has one row per write.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor

from .tokens import check_sequence, token_strings

KINDS: tuple[str, ...] = ("attn", "mlp")


def normalize_kinds(kinds: Sequence[str] | str) -> tuple[str, ...]:
    """Validate kinds and put them in compute order: ``("mlp", "attn") -> ("attn", "mlp")``."""
    if isinstance(kinds, str):
        kinds = tuple(k.strip() for k in kinds.replace("+", ",").split(",") if k.strip())
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {tuple(kinds)}.")
    return tuple(k for k in KINDS if k in kinds)


def write_hook_name(layer: int, kind: str) -> str:
    """The TransformerLens hook point of one write: ``write_hook_name(3, "attn")`` is
    ``"blocks.3.hook_attn_out"`` (``kind``: ``"attn"`` or ``"mlp"``). The same name on a
    TransformerBridge and a HookedTransformer; register a hook on it with
    ``model.hooks(fwd_hooks=[(name, fn)])``."""
    return f"blocks.{layer}.hook_{kind}_out"


def write_hook_names(model: Any, kinds: Sequence[str] = KINDS) -> list[tuple[int, str, str]]:
    """``(layer, kind, hook name)`` for every write, in row order; checks the hooks exist."""
    kinds = normalize_kinds(kinds)
    names = [
        (layer, kind, write_hook_name(layer, kind))
        for layer in range(int(model.cfg.n_layers))
        for kind in kinds
    ]
    missing = [n for _, _, n in names if n not in model.hook_dict]
    if missing:
        raise ValueError(
            f"Model has no hook points {missing[:3]}...: it needs HookedTransformer hook names. "
            "Load it with interp.load_model (TransformerBridge in compatibility mode)."
        )
    return names


def as_batch(tokens: Tensor) -> Int[Tensor, "batch pos"]:
    if tokens.ndim == 1:
        return tokens[None]
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (pos,) or (batch, pos), got shape {tuple(tokens.shape)}")
    return tokens


@dataclass
class Writes:
    """Every write for one token sequence: ``matrix`` rows described by ``index``.

    Attributes:
        matrix: one row per write (float32, CPU), ordered by (layer, kind, position), attention
            before MLP.
        index: one row per write, tidy, columns ``row`` (row of ``matrix``), ``layer``, ``kind``
            (``"attn"`` or ``"mlp"``), ``position`` (0 = BOS), ``token_id`` and ``token`` (the
            token's string, when the model has a tokenizer). Filter it to build a mask for
            ``select``, e.g. ``w.select(w.index.layer < 4)``.
        tokens: the sequence's token ids.
        kinds: the kinds captured.
        n_layers: the model's number of layers.
    """

    matrix: Float[Tensor, "n_writes d_model"]
    index: pd.DataFrame  # row, layer, kind, position, token_id, token
    tokens: Int[Tensor, " pos"]
    kinds: tuple[str, ...]
    n_layers: int

    @property
    def d_model(self) -> int:
        return int(self.matrix.shape[1])

    def select(self, mask: "pd.Series | Sequence[bool]") -> "Writes":
        """The writes whose index rows match ``mask`` (e.g. ``w.index.position != 0``)."""
        keep = torch.as_tensor(list(mask), dtype=torch.bool)
        index = self.index[keep.numpy()].reset_index(drop=True)
        index["row"] = range(len(index))
        return Writes(self.matrix[keep], index, self.tokens, self.kinds, self.n_layers)


@contextmanager
def recording_writes(
    model: Any, *, kinds: Sequence[str] = KINDS
) -> Iterator[Callable[[Tensor], Writes]]:
    """Record every write of the forward passes run inside (hooks removed on exit).

    Yields ``build(tokens)``: the ``Writes`` of batch row 0 of the last pass, for that sequence.
    Lets a caller capture the writes during a pass it runs anyway (e.g. the baseline scoring).
    """
    kinds = normalize_kinds(kinds)
    hooks = write_hook_names(model, kinds)
    store: dict[str, Tensor] = {}

    def build(tokens: Tensor) -> Writes:
        seq = as_batch(tokens)[0].cpu()
        missing = [name for _, _, name in hooks if name not in store]
        if missing:
            raise RuntimeError(
                f"no forward pass recorded {missing[:2]}...: run the model inside the context"
            )
        stacked = torch.stack(
            [store[name][0, : seq.numel()] for _, _, name in hooks]
        )  # (layer*kind, pos, d)
        matrix = rearrange(stacked.float().cpu(), "lk pos d -> (lk pos) d")
        strings = (
            token_strings(model, seq) if getattr(model, "tokenizer", None) is not None else None
        )
        n_pos = seq.numel()
        index = pd.DataFrame(
            {
                "layer": [layer for layer, _, _ in hooks for _ in range(n_pos)],
                "kind": [kind for _, kind, _ in hooks for _ in range(n_pos)],
                "position": list(range(n_pos)) * len(hooks),
                "token_id": seq.tolist() * len(hooks),
            }
        )
        if strings is not None:
            index["token"] = strings * len(hooks)
        index.insert(0, "row", range(len(index)))
        return Writes(matrix, index, seq, kinds, int(model.cfg.n_layers))

    # Register on each name separately: the bridge's aliases mean hook.name may be canonical.
    with model.hooks(fwd_hooks=[(name, _saver(store, name)) for _, _, name in hooks]):
        yield build


def capture_writes(model: Any, tokens: Tensor, *, kinds: Sequence[str] = KINDS) -> Writes:
    """Run ``model`` on one sequence and stack all its writes (float32, on CPU).

    Args:
        tokens: ``(pos,)`` or ``(1, pos)`` token ids (BOS included if wanted).
        kinds: ``("attn",)``, ``("mlp",)`` or both.
    """
    tokens = as_batch(tokens)
    if tokens.shape[0] != 1:
        raise ValueError("capture_writes takes one sequence; loop over a batch yourself.")
    check_sequence(model, tokens)
    with torch.inference_mode(), recording_writes(model, kinds=kinds) as build:
        model(tokens.to(model_device(model)))
    return build(tokens)


def _saver(store: dict[str, Tensor], name: str):
    def save(x: Tensor, hook: Any) -> None:
        store[name] = x.detach()

    return save


def model_device(model: Any) -> torch.device:
    """The device of the model's parameters (where token tensors must go before a forward pass):
    ``tokens.to(model_device(model))``."""
    return next(model.parameters()).device
