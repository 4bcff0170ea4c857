"""Pure tensor functions for subspace interventions (no model, no hooks).

A subspace is given by orthonormal ``directions`` (columns), shared ``(d_model, r)`` or one per
batch element ``(batch, d_model, r)``, and an optional 0/1 ``mask`` ``(batch, r)`` choosing
which columns each batch element uses. That covers both batched sweeps the study needs:
clipping to the top-k for many k (one basis, prefix masks) and single-direction ablations
(one column per batch element).
"""

from collections.abc import Sequence

import torch
from einops import einsum
from jaxtyping import Float
from torch import Tensor


def check_orthonormal(
    directions: Float[Tensor, "*batch d_model r"], *, d_model: int | None = None, atol: float = 1e-4
) -> None:
    """Raise if ``directions`` are not orthonormal columns of width ``d_model``."""
    if directions.ndim not in (2, 3):
        raise ValueError(
            f"directions must be (d_model, r) or (batch, d_model, r), got {tuple(directions.shape)}"
        )
    d, r = directions.shape[-2:]
    if d_model is not None and d != d_model:
        raise ValueError(
            f"directions have width {d} but the model's d_model is {d_model}: pass columns of "
            "length d_model (e.g. Basis.vectors[:, :k], not its transpose)."
        )
    if r > d:
        raise ValueError(
            f"{r} directions cannot be orthonormal in {d} dimensions (k must be 0..{d})."
        )
    if r == 0:
        return
    gram = directions.transpose(-1, -2).double() @ directions.double()
    err = (gram - torch.eye(r, dtype=gram.dtype, device=gram.device)).abs().max().item()
    if err > atol:
        raise ValueError(
            f"directions are not orthonormal (max |V^T V - I| = {err:.2e} > {atol:.0e}); "
            "orthonormalize them first, e.g. with torch.linalg.qr(V).Q."
        )


def check_mask(mask: Tensor, r: int) -> None:
    if mask.ndim != 2 or mask.shape[1] != r:
        raise ValueError(f"mask must be (batch, r={r}), got {tuple(mask.shape)}")
    if not torch.all((mask == 0) | (mask == 1)):
        raise ValueError("mask must be 0/1 (it selects directions); got other values.")


def project(
    x: Float[Tensor, "batch pos d_model"],
    directions: Float[Tensor, "*dbatch d_model r"],
    mask: Float[Tensor, "mbatch r"] | None = None,
) -> Float[Tensor, "batch pos d_model"]:
    """Orthogonal projection of every vector of ``x`` onto span(selected directions)."""
    if directions.ndim == 2:
        coeff = einsum(x, directions, "b p d, d r -> b p r")
    else:
        coeff = einsum(x, directions, "b p d, b d r -> b p r")
    if mask is not None:
        coeff = coeff * mask[:, None, :]
    if directions.ndim == 2:
        return einsum(coeff, directions, "b p r, d r -> b p d")
    return einsum(coeff, directions, "b p r, b d r -> b p d")


def ablate(
    x: Float[Tensor, "batch pos d_model"],
    directions: Float[Tensor, "*dbatch d_model r"],
    mask: Float[Tensor, "mbatch r"] | None = None,
) -> Float[Tensor, "batch pos d_model"]:
    """Remove the selected directions: projection onto their orthogonal complement."""
    return x - project(x, directions, mask)


def compact(
    directions: Float[Tensor, "d_model r"],
    mask: Float[Tensor, "batch r"],
    *,
    complete: bool = False,
) -> tuple[Float[Tensor, "d_model c"], Float[Tensor, "batch c"], bool]:
    """The same masked projection with fewer columns: ``(directions', mask', complement)``.

    Columns no row keeps are dropped. With a complete basis (``complete``: the columns span the
    whole space, so ``V V^T = I``), keeping columns m equals removing the others,
    ``project(x, V, m) == x - project(x, V[:, c], 1 - m[:, c])`` with c the columns some row
    leaves out; that form is returned (``complement=True``) when it needs fewer columns. Clipping
    to top-k costs O(min(k, d - k)) per write instead of O(d).
    """
    keep_any = mask.bool().any(0)
    drop_any = (~mask.bool()).any(0)
    if complete and int(drop_any.sum()) < int(keep_any.sum()):
        return directions[:, drop_any], 1 - mask[:, drop_any], True
    return directions[:, keep_any], mask[:, keep_any], False


def prefix_masks(
    ks: Sequence[int], r: int, *, device: torch.device | str = "cpu"
) -> Float[Tensor, "n r"]:
    """Row i keeps the first ``ks[i]`` of ``r`` directions (clipping to top-k, many k at once)."""
    ks_t = torch.as_tensor(list(ks), device=device)
    if ks_t.numel() and (ks_t.min() < 0 or ks_t.max() > r):
        raise ValueError(f"k must be in 0..{r}, got {ks_t.min().item()}..{ks_t.max().item()}")
    return (torch.arange(r, device=device)[None, :] < ks_t[:, None]).float()


def order_directions(
    directions: Float[Tensor, "d_model r"], order: Sequence[int] | Tensor
) -> Float[Tensor, "d_model r"]:
    """Columns reordered (e.g. by importance) so that prefix masks follow ``order``."""
    order_t = torch.as_tensor(order, dtype=torch.long)
    if sorted(order_t.tolist()) != list(range(directions.shape[1])):
        raise ValueError("order must be a permutation of 0..r-1")
    return directions[:, order_t]
