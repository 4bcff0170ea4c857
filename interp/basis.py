"""Basis: the SVD of a writes matrix, M = U S V^T; the right singular vectors are directions."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from .writes import Writes


@dataclass
class Basis:
    """Singular values (descending, zero-padded to d_model) and right singular vectors as columns.

    ``vectors`` is a complete orthonormal basis (d_model x d_model): when the writes matrix has
    fewer rows than d_model, the null space is filled with an orthonormal completion (singular
    value 0) so that clipping can sweep k all the way to d_model.
    """

    singular_values: Float[Tensor, " r"]
    vectors: Float[Tensor, "d_model r"]
    n_rows: int
    rank: int
    kinds: tuple[str, ...]
    excluded_positions: tuple[int, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def d_model(self) -> int:
        return int(self.vectors.shape[0])

    def top(self, k: int) -> Float[Tensor, "d_model k"]:
        if not 0 <= k <= self.vectors.shape[1]:
            raise ValueError(f"k must be in 0..{self.vectors.shape[1]}, got {k}")
        return self.vectors[:, :k]

    def table(self) -> pd.DataFrame:
        """One row per direction: index, singular value, fraction and cumulative fraction of
        mass."""
        s = self.singular_values.double()
        sq = s**2
        total = sq.sum().clamp_min(1e-300)
        return pd.DataFrame(
            {
                "direction": range(len(s)),
                "singular_value": s.numpy(),
                "mass_fraction": (sq / total).numpy(),
                "cumulative_mass": (sq.cumsum(0) / total).numpy(),
                "cumulative_singular_value": s.cumsum(0).numpy(),
            }
        )


def _fix_signs(vh: Tensor) -> Tensor:
    """Deterministic signs: each vector's largest-magnitude entry positive."""
    idx = vh.abs().argmax(dim=1)
    signs = torch.sign(vh[torch.arange(vh.shape[0]), idx])
    signs[signs == 0] = 1
    return vh * signs[:, None]


def svd_basis(
    matrix: Float[Tensor, "n d_model"],
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> tuple[Float[Tensor, " d_model"], Float[Tensor, "d_model d_model"], int]:
    """(singular values zero-padded to d_model, complete orthonormal V as columns, numerical rank).

    In float64, from the eigendecomposition of the d x d Gram matrix M^T M (several times faster
    than an SVD of the tall matrix, and complete by construction); singular values below
    ~1e-7 of the largest are then numerically zero. In float32, a direct SVD.
    """
    m = matrix.to(device=device or matrix.device, dtype=dtype)
    n, d = m.shape
    if dtype == torch.float64:
        evals, evecs = torch.linalg.eigh(m.T @ m)
        s = evals.flip(0).clamp_min(0).sqrt()
        vh = evecs.flip(1).T
        tol = s.max().clamp_min(1e-300) * (max(n, d) * torch.finfo(dtype).eps) ** 0.5
    else:
        _, s, vh = torch.linalg.svd(m, full_matrices=n < d)
        vh = vh[:d]
        if s.numel() < d:
            s = torch.cat([s, s.new_zeros(d - s.numel())])
        tol = s.max().clamp_min(1e-300) * max(n, d) * torch.finfo(dtype).eps
    rank = int((s > tol).sum())
    s = torch.where(s > tol, s, torch.zeros_like(s))
    return s.cpu(), _fix_signs(vh).T.contiguous().cpu(), rank


def write_basis(
    writes: Writes,
    *,
    exclude_positions: Sequence[int] = (),
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Basis:
    """SVD of the writes matrix (in ``dtype``, float64 by default, whatever the model's dtype).

    Args:
        exclude_positions: token positions whose writes are left out (e.g. ``(0,)`` for the
            BOS token, whose writes are often huge). Reported in ``Basis.excluded_positions``.
        device: where the decomposition runs (e.g. the model's GPU); the result is on the CPU.
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError("write_basis computes in float32 or float64")
    excluded = tuple(sorted(set(int(p) for p in exclude_positions)))
    if excluded:
        keep = ~writes.index.position.isin(excluded)
        if not keep.any():
            raise ValueError(f"excluding positions {excluded} leaves no writes")
        writes = writes.select(keep)
    s, v, rank = svd_basis(writes.matrix, dtype=dtype, device=device)
    return Basis(
        singular_values=s.cpu(),
        vectors=v.cpu(),
        n_rows=int(writes.matrix.shape[0]),
        rank=rank,
        kinds=writes.kinds,
        excluded_positions=excluded,
        meta={"dtype": str(dtype).replace("torch.", "")},
    )
