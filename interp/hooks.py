"""Thin hook adapters: apply the pure functions of ``projection`` to every write of a model.

Inside ``project_writes(model, V)`` every ``blocks.{L}.hook_{attn,mlp}_out`` output is replaced
by its projection onto span(V) (or, with ``mode="ablate"``, onto the orthogonal complement).
Later layers see the clipped residual stream, so their writes are recomputed, as in the study.
Hooks are removed on exit, also when the body raises.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from .projection import ablate, check_mask, check_orthonormal, compact, project
from .writes import KINDS, model_device, normalize_kinds, write_hook_names

Mode = Literal["project", "ablate"]


@dataclass
class WriteNorms:
    """Squared norms of attempted (orig) and kept writes, per hook call and batch element.

    ``orig_delta``/``kept_delta`` are the study's quantities: per forward pass and batch element,
    the Frobenius norm of all writes (every layer, kind and position) before/after projection.
    """

    hooks: list[tuple[int, str]]
    calls: list[tuple[int, str, Tensor, Tensor]] = field(default_factory=list)

    @property
    def n_passes(self) -> int:
        return len(self.calls) // max(len(self.hooks), 1)

    def _stack(self, which: int) -> Float[Tensor, "n_passes n_hooks batch"]:
        n = self.n_passes * len(self.hooks)
        if n == 0:
            return torch.zeros(0, len(self.hooks), 0)
        sq = torch.stack([c[which].float().cpu() for c in self.calls[:n]])
        return sq.reshape(self.n_passes, len(self.hooks), -1)

    def orig_delta(self) -> Float[Tensor, "n_passes batch"]:
        return self._stack(2).sum(1).sqrt()

    def kept_delta(self) -> Float[Tensor, "n_passes batch"]:
        return self._stack(3).sum(1).sqrt()

    def table(self) -> pd.DataFrame:
        """Tidy: one row per (pass, batch element, layer, kind) with orig_norm and kept_norm."""
        orig, kept = self._stack(2).sqrt(), self._stack(3).sqrt()
        rows = []
        for p in range(orig.shape[0]):
            for h, (layer, kind) in enumerate(self.hooks):
                for b in range(orig.shape[2]):
                    rows.append((p, b, layer, kind, orig[p, h, b].item(), kept[p, h, b].item()))
        return pd.DataFrame(
            rows, columns=["pass", "batch", "layer", "kind", "orig_norm", "kept_norm"]
        )


def _prepare(
    model: Any,
    directions: Tensor,
    mask: Tensor | None,
    compute_dtype: torch.dtype,
    check: bool,
) -> tuple[Tensor, Tensor | None, int | None]:
    d_model = int(model.cfg.d_model)
    if check:
        check_orthonormal(directions, d_model=d_model)
    elif directions.shape[-2] != d_model:
        raise ValueError(
            f"directions have width {directions.shape[-2]}, model d_model is {d_model}"
        )
    device = model_device(model)
    directions = directions.to(device=device, dtype=compute_dtype)
    batch = directions.shape[0] if directions.ndim == 3 else None
    if mask is not None:
        check_mask(mask, directions.shape[-1])
        if batch is not None and mask.shape[0] != batch:
            raise ValueError(f"mask batch {mask.shape[0]} != directions batch {batch}")
        batch = mask.shape[0]
        mask = mask.to(device=device, dtype=compute_dtype)
    return directions, mask, batch


@contextmanager
def project_writes(
    model: Any,
    directions: Float[Tensor, "*batch d_model r"],
    *,
    mask: Float[Tensor, "batch r"] | None = None,
    kinds: Sequence[str] = KINDS,
    mode: Mode = "project",
    record: bool = True,
    compute_dtype: torch.dtype = torch.float32,
    check: bool = True,
) -> Iterator[WriteNorms]:
    """Clip every write to span(directions) (``mode="project"``) or remove it (``"ablate"``).

    Args:
        directions: orthonormal columns, ``(d_model, r)`` for one subspace or
            ``(batch, d_model, r)`` for one subspace per batch element.
        mask: optional 0/1 ``(batch, r)``: batch element b uses only the columns where
            ``mask[b] == 1`` (e.g. ``prefix_masks(ks, d_model)`` clips to many k in one pass).
        kinds: which writes are intervened on (``("attn",)``, ``("mlp",)`` or both).
        record: record per-call squared norms of attempted and kept writes (``WriteNorms``).
        compute_dtype: float32 (default) or float64, whatever the model's dtype.
        check: verify orthonormality and width once at entry.

    Yields:
        ``WriteNorms`` filled as forward passes run. Run the model on a batch of the same size as
        the subspaces (``continuation_logprob(..., batch_size=B)``).
    """
    if mode not in ("project", "ablate"):
        raise ValueError(f"mode must be 'project' or 'ablate', got {mode!r}")
    kinds = normalize_kinds(kinds)
    directions, mask, batch = _prepare(model, directions, mask, compute_dtype, check)
    hooks = write_hook_names(model, kinds)
    norms = WriteNorms(hooks=[(layer, kind) for layer, kind, _ in hooks])
    complement = False
    if (
        directions.ndim == 2 and mask is not None
    ):  # fewer columns, same result (see projection.compact)
        complete = directions.shape[1] == directions.shape[0]
        directions, mask, complement = compact(directions, mask, complete=complete)
    op = project if (mode == "project") != complement else ablate

    def make_hook(layer: int, kind: str):
        def hook_fn(x: Tensor, *, hook: Any) -> Tensor:
            if batch is not None and x.shape[0] != batch:
                raise ValueError(
                    f"{hook.name}: the model ran on a batch of {x.shape[0]} but there are {batch} "
                    "subspaces; run it on that many copies of the tokens (batch_size=...)."
                )
            w = x.to(compute_dtype)
            kept = op(w, directions, mask)
            if record:
                with torch.no_grad():
                    norms.calls.append((layer, kind, w.pow(2).sum((1, 2)), kept.pow(2).sum((1, 2))))
            return kept.to(x.dtype)

        return hook_fn

    with model.hooks(fwd_hooks=[(name, make_hook(layer, kind)) for layer, kind, name in hooks]):
        yield norms


@contextmanager
def ablate_directions(
    model: Any,
    directions: Float[Tensor, "*batch d_model r"],
    **kwargs: Any,
) -> Iterator[WriteNorms]:
    """Remove span(directions) from every write; same arguments as ``project_writes``."""
    with project_writes(model, directions, mode="ablate", **kwargs) as norms:
        yield norms
