"""Clip variants: clip writes to a subspace, but replace the removed part by a fill vector, and
only at chosen positions, layers and kinds.

The study's clip keeps ``P_m w`` of every write ``w`` (``P_m`` the projection onto the basis
columns selected by the 0/1 mask ``m``, e.g. the top k). A variant keeps

    clip(w) = P_m w + (I - P_m) f = w - (I - P_m)(w - f)

with a fill ``f`` per (layer, kind): ``f = 0`` is the study's clip, ``f`` = the mean write is
mean ablation of the removed directions. With a complete orthonormal basis V,
``(I - P_m) y = project(y, V, 1 - m)``, so many masks (many k, one batch row each) share one
pass, and the removed part needs only the columns some row removes
(``interp.projection.compact``). Positions outside the clipped set keep their write as it is.

``fill_clip`` is the pure function (no model); ``fill_clip_writes`` is the hook adapter, a
context manager around ``model.hooks`` (hooks removed on exit, also on exceptions).
"""

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from .projection import check_mask, check_orthonormal, compact, project
from .writes import KINDS, model_device, normalize_kinds, write_hook_name

__all__ = ["fill_clip", "fill_clip_writes", "removed_part"]


def _removal(
    directions: Float[Tensor, "d_model r"], mask: Float[Tensor, "mbatch r"]
) -> tuple[Float[Tensor, "d_model c"], Float[Tensor, "mbatch c"], bool]:
    """The removed part's columns in their cheaper form (``compact`` of the removal mask 1 - m)."""
    complete = directions.shape[0] == directions.shape[1]
    return compact(directions, 1 - mask, complete=complete)


def _apply_removal(y: Tensor, v: Tensor, m: Tensor, complement: bool) -> Tensor:
    """``(I - P_m) y`` from ``_removal``'s columns: ``project(y, v, m)``, or ``y - project(...)``
    in the complement form."""
    if v.shape[1] == 0:  # no row keeps a column (complement form: all removed) or none removes one
        return y if complement else torch.zeros_like(y)
    part = project(y, v, m)
    return y - part if complement else part


def removed_part(
    y: Float[Tensor, "batch pos d_model"],
    directions: Float[Tensor, "d_model d_model"],
    mask: Float[Tensor, "mbatch d_model"],
) -> Float[Tensor, "batch pos d_model"]:
    """``(I - P_m) y``: the part of ``y`` along the columns of the complete basis ``directions``
    that ``mask`` leaves out (``project(y, V, 1 - m)``, computed on the fewer columns)."""
    return _apply_removal(y, *_removal(directions, mask))


def fill_clip(
    x: Float[Tensor, "batch pos d_model"],
    directions: Float[Tensor, "d_model d_model"],
    mask: Float[Tensor, "mbatch d_model"] | None = None,
    *,
    fill: Float[Tensor, " d_model"] | None = None,
    positions: Bool[Tensor, " pos"] | None = None,
) -> Float[Tensor, "batch pos d_model"]:
    """Clipped writes ``P_m x + (I - P_m) fill`` at the selected positions, ``x`` elsewhere.

    Args:
        x: writes, one batch row per mask row (or any batch when ``mask`` has one row).
        directions: a complete orthonormal basis as columns (``Basis.vectors``).
        mask: 0/1, ``(batch, d_model)`` or ``(1, d_model)``: the columns each row keeps
            (``prefix_masks(ks, d)`` for top-k); ``None`` keeps every column (``x`` unchanged).
        fill: what the removed directions are set to (their component of ``fill``); ``None`` = 0,
            the study's clip.
        positions: True where the write is clipped; ``None`` = every position.

    Computes ``x - (I - P_m)(x - fill)`` in ``x``'s dtype (pass float64 for exact checks).
    """
    if mask is None:
        return x
    y = x if fill is None else x - fill.to(x.dtype)
    out = x - _apply_removal(y, *_removal(directions.to(x.dtype), mask.to(x.dtype)))
    if positions is not None:
        if positions.shape != (x.shape[1],):
            raise ValueError(
                f"positions must be a ({x.shape[1]},) bool mask over positions, "
                f"got {tuple(positions.shape)}"
            )
        out = torch.where(positions.to(out.device)[None, :, None], out, x)
    return out


@contextmanager
def fill_clip_writes(
    model: Any,
    directions: Float[Tensor, "d_model r"],
    *,
    mask: Float[Tensor, "batch r"] | None = None,
    kinds: Sequence[str] = KINDS,
    layers: Sequence[int] | None = None,
    fills: Mapping[tuple[int, str], Tensor] | None = None,
    positions: Sequence[int] | None = None,
    compute_dtype: torch.dtype = torch.float32,
    check: bool = True,
) -> Iterator[list[tuple[int, str]]]:
    """Clip the writes of ``layers`` x ``kinds`` at ``positions`` to span(selected directions),
    the removed part replaced by that hook's fill (``fill_clip`` on every hooked write).

    Args:
        directions: a complete orthonormal basis (``d_model x d_model``, columns).
        mask: 0/1 ``(batch, d_model)``, one row per batch row (``prefix_masks(ks, d)``: many k in
            one pass); ``None`` keeps every column (the hooks change nothing).
        kinds: which writes are clipped (``("attn",)``, ``("mlp",)`` or both).
        layers: which layers are clipped (``None`` = all); other writes are left untouched.
        fills: ``{(layer, kind): (d_model,) tensor}``, the value the removed directions take; it
            must cover every clipped (layer, kind). ``None`` = zeros (the study's clip).
        positions: the clipped token positions (``None`` = all; positions past the sequence are
            ignored); the writes at other positions are left untouched.
        compute_dtype: float32 (default) or float64, whatever the model's dtype.
        check: verify orthonormality, completeness and the mask once at entry.

    Yields the clipped ``(layer, kind)`` pairs. Run the model on a batch of ``mask.shape[0]`` rows.
    """
    d_model = int(model.cfg.d_model)
    kinds = normalize_kinds(kinds)
    if directions.shape != (d_model, d_model):
        raise ValueError(
            f"directions must be a complete basis ({d_model}, {d_model}), got "
            f"{tuple(directions.shape)}"
        )
    if check:
        check_orthonormal(directions, d_model=d_model)
    n_layers = int(model.cfg.n_layers)
    layers = list(range(n_layers)) if layers is None else sorted({int(layer) for layer in layers})
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"layers {bad} are outside 0..{n_layers - 1}")
    hooked = [(layer, kind) for layer in layers for kind in kinds]
    absent = [
        write_hook_name(*key) for key in hooked if write_hook_name(*key) not in model.hook_dict
    ]
    if absent:
        raise ValueError(f"model has no hook points {absent[:3]}: load it with interp.load_model")
    device = model_device(model)
    fill_t: dict[tuple[int, str], Tensor] = {}
    if fills is not None:
        missing = [key for key in hooked if key not in fills]
        if missing:
            raise ValueError(
                f"fills has no vector for the clipped writes {missing[:3]}: give one per "
                "(layer, kind)"
            )
        for key in hooked:
            f = torch.as_tensor(fills[key])
            if f.shape != (d_model,):
                raise ValueError(f"fill for {key} must be ({d_model},), got {tuple(f.shape)}")
            fill_t[key] = f.to(device=device, dtype=compute_dtype)
    batch = None
    if mask is not None:
        if check:
            check_mask(mask, d_model)
        batch = int(mask.shape[0])
        v, m, complement = _removal(
            directions.to(device=device, dtype=compute_dtype),
            mask.to(device=device, dtype=compute_dtype),
        )
    pos_list = None if positions is None else sorted({int(p) for p in positions})
    pos_cache: dict[int, Tensor] = {}

    def clipped_positions(n: int) -> Tensor | None:
        if pos_list is None:
            return None
        if n not in pos_cache:
            sel = torch.zeros(n, dtype=torch.bool, device=device)
            idx = [p for p in pos_list if 0 <= p < n]
            sel[idx] = True
            pos_cache[n] = sel
        return pos_cache[n]

    def make_hook(layer: int, kind: str):
        f = fill_t.get((layer, kind))

        def hook_fn(x: Tensor, *, hook: Any) -> Tensor:
            if mask is None:
                return x
            if batch != 1 and x.shape[0] != batch:
                raise ValueError(
                    f"{hook.name}: the model ran on a batch of {x.shape[0]} but the mask "
                    f"has {batch} rows; run it on that many copies of the tokens "
                    "(batch_size=...)"
                )
            w = x.to(compute_dtype)
            y = w if f is None else w - f
            out = w - _apply_removal(y, v, m, complement)
            sel = clipped_positions(w.shape[1])
            if sel is not None:
                out = torch.where(sel[None, :, None], out, w)
            return out.to(x.dtype)

        return hook_fn

    with model.hooks(
        fwd_hooks=[(write_hook_name(layer, kind), make_hook(layer, kind)) for layer, kind in hooked]
    ):
        yield hooked
