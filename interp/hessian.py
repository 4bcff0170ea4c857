"""Second-order structure of the log-probability in the per-direction scales of the writes.

Scale direction i of a basis V (orthonormal columns v_i) by a_i in every write:

    w -> w + V diag(a - 1) V^T w          (a = 1: unchanged; a_i = 0: v_i removed, as an ablation)

and call ``f(a)`` the continuation's total log-probability. Later layers see the scaled residual
stream, so their writes are recomputed (as in ``interp.hooks``). At a = 1:

- the gradient ``g_i = df/da_i`` is the first-order term of ``interp.importance`` (the sum over
  writes of ``(w.v_i)(df/dw.v_i)``);
- the Hessian ``H_ij = d2f/da_i da_j`` is available only through Hessian-vector products (one
  backward pass through the gradient's graph each; the graph of f and of g is built once);
- removing direction i is ``a -> a - e_i``, so its importance (``logp - logp(v_i removed)``,
  positive = removal hurts) is, to second order, ``g_i - H_ii / 2`` (``second_order_importance``),
  and the change from removing a set S (0/1 mask m) is ``-g.m + m^T H m / 2``
  (``quadratic_change``).

Pieces: ``scale_writes`` (the pure map), ``scaling_directions`` (the hook adapter),
``logprob_of_scales``, ``ScaleCurvature`` (value, gradient and batched HVPs at a = 1: made by
``scale_curvature``), ``hessian_matrix`` / ``hessian_diagonal`` (d HVPs with unit vectors),
``hutchinson_diagonal`` (a stochastic estimate), ``lanczos`` (top-|eigenvalue| pairs from HVPs,
full reorthogonalization) and ``eigen_loading`` (a direction's weight in the top eigenvectors).

Attention: the double backward runs through whatever attention kernel the model's forward pass
chose. On CPU the bridge's models run scaled_dot_product_attention's math path, whose backward
is differentiable; ``scale_curvature`` forces the math backend (``sdpa_kernel(SDPBackend.MATH)``)
during its forward pass, because the fused kernels (flash / memory-efficient, CUDA) have no double
backward.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from .scoring import final_residual, unembed
from .tokens import Completion, check_sequence
from .writes import KINDS, model_device, normalize_kinds, write_hook_names


def scale_writes(
    w: Float[Tensor, "*batch pos d_model"],
    directions: Float[Tensor, "d_model r"],
    a: Float[Tensor, "*rows r"],
) -> Float[Tensor, "*batch pos d_model"]:
    """``w + V diag(a - 1) V^T w``: the component of every write along column i of V scaled by
    ``a_i``. ``a`` is ``(r,)`` for every batch element or ``(batch, r)``, one per batch element
    (``w`` then ``(batch, pos, d_model)``). With a = 1 the result equals ``w`` exactly (it adds
    zeros)."""
    coef = w @ directions  # (..., pos, r)
    scale = (a - 1)[..., None, :] if a.ndim == 2 else a - 1
    return w + (coef * scale) @ directions.T


@contextmanager
def scaling_directions(
    model: Any,
    directions: Float[Tensor, "d_model r"],
    a: Float[Tensor, "*batch r"],
    *,
    kinds: Sequence[str] = KINDS,
    compute_dtype: torch.dtype | None = None,
) -> Iterator[None]:
    """Within the block, every write of ``kinds`` is ``scale_writes(w, directions, a)``. ``a`` may
    require grad (its graph goes through the model). ``compute_dtype``: default float64 for a
    float64 model, else float32 (the write is cast back to the model's dtype). Hooks are
    registered through ``model.hooks(fwd_hooks=...)`` and removed on exit, also on exceptions."""
    kinds = normalize_kinds(kinds)
    device = model_device(model)
    if compute_dtype is None:
        compute_dtype = (
            torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32
        )
    v = directions.to(device=device, dtype=compute_dtype)
    scales = a.to(device=device, dtype=compute_dtype)
    if v.shape[0] != int(model.cfg.d_model) or v.shape[1] != scales.shape[-1]:
        raise ValueError(
            f"directions {tuple(v.shape)} and scales {tuple(scales.shape)} do not fit d_model "
            f"{int(model.cfg.d_model)}"
        )

    def hook(x: Tensor, *, hook: Any) -> Tensor:
        if scales.ndim == 2 and x.shape[0] != scales.shape[0]:
            raise ValueError(f"{hook.name}: batch {x.shape[0]} but {scales.shape[0]} scale vectors")
        return scale_writes(x.to(compute_dtype), v, scales).to(x.dtype)

    with model.hooks(fwd_hooks=[(name, hook) for _, _, name in write_hook_names(model, kinds)]):
        yield


def logprob_of_scales(
    model: Any,
    completion: Completion,
    directions: Float[Tensor, "d_model r"],
    a: Float[Tensor, "*batch r"],
    *,
    kinds: Sequence[str] = KINDS,
) -> Float[Tensor, "*batch"]:
    """Total log-probability of the continuation (float64) with the writes scaled by ``a``:
    a scalar for ``a`` of shape ``(r,)``, one per row for ``(batch, r)`` (one batched pass).
    Differentiable in ``a`` outside ``torch.no_grad``."""
    batch = a.shape[0] if a.ndim == 2 else None
    with scaling_directions(model, directions, a, kinds=kinds):
        per_token = _per_token_logprob(model, completion, batch or 1)
    total = per_token.to(torch.float64).sum(-1)
    return total if batch is not None else total[0]


def _per_token_logprob(model: Any, completion: Completion, batch: int) -> Tensor:
    """``continuation_logprob``'s per-token values, the softmax in the logits' own precision when
    it is above float32 (``continuation_logprob`` casts logits to float32, which would cap a float64
    model's second differences at float32's); for a float32 model the very same operations."""
    tokens = completion.tokens[None].expand(batch, -1)
    check_sequence(model, tokens, what="prompt + continuation")
    tokens = tokens.to(model_device(model))
    n_prompt, n_cont = completion.n_prompt, int(completion.continuation_tokens.numel())
    logits = unembed(model, final_residual(model, tokens)[:, n_prompt - 1 : n_prompt - 1 + n_cont])
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(-1, tokens[:, n_prompt:, None])[..., 0]


@contextmanager
def _math_attention() -> Iterator[None]:
    """scaled_dot_product_attention's math backend (differentiable twice) where it can be chosen."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - older torch
        yield
        return
    with sdpa_kernel(SDPBackend.MATH):
        yield


class ScaleCurvature:
    """f(a) at a = 1 with its graph kept: ``value``, ``grad`` and Hessian-vector products.

    One forward pass and one backward pass with ``create_graph=True`` at construction; each HVP
    (or batch of HVPs) is one more backward pass through the gradient's graph (``retain_graph``).
    Made by ``scale_curvature``; ``n_hvp`` counts the products computed. ``close()`` frees the
    graph.
    """

    def __init__(
        self,
        model: Any,
        completion: Completion,
        directions: Tensor,
        *,
        kinds: Sequence[str] = KINDS,
        batched: bool = True,
    ) -> None:
        self.r = int(directions.shape[1])
        dtype = torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32
        self._a = torch.ones(self.r, dtype=dtype, device=model_device(model), requires_grad=True)
        with torch.enable_grad(), _math_attention():
            f = logprob_of_scales(model, completion, directions, self._a, kinds=kinds)
            (g,) = torch.autograd.grad(f, self._a, create_graph=True)
        self.value = float(f.detach())
        self.grad: Float[Tensor, " r"] = g.detach().to("cpu", torch.float64)
        self._g: Tensor | None = g
        self.batched = batched
        self.n_hvp = 0
        self.n_backward = (
            1  # the gradient's; one more per HVP call (a batch of vectors is one vmapped call)
        )

    def hvp(self, u: Float[Tensor, "*n r"]) -> Float[Tensor, "*n r"]:
        """``H u`` for a vector ``(r,)`` or each row of ``(n, r)`` (float64, on the CPU). Rows go
        through one vmapped backward (``is_grads_batched``) when every op has a batching rule,
        else one backward each."""
        if self._g is None:
            raise RuntimeError(
                "this ScaleCurvature was closed; build another with scale_curvature(...)"
            )
        single = u.ndim == 1
        rows = u[None] if single else u
        rows = rows.to(device=self._a.device, dtype=self._a.dtype)
        out = None
        if self.batched and len(rows) > 1:
            try:
                (out,) = torch.autograd.grad(
                    self._g, self._a, grad_outputs=rows, retain_graph=True, is_grads_batched=True
                )
                self.n_backward += 1
            except RuntimeError:  # an op without a batching rule: fall back to one backward per row
                self.batched = False
        if out is None:
            out = torch.stack(
                [
                    torch.autograd.grad(self._g, self._a, grad_outputs=row, retain_graph=True)[0]
                    for row in rows
                ]
            )
            self.n_backward += len(rows)
        self.n_hvp += len(rows)
        out = out.detach().to("cpu", torch.float64)
        return out[0] if single else out

    __call__ = hvp

    def close(self) -> None:
        self._g = None


def scale_curvature(
    model: Any,
    completion: Completion,
    directions: Float[Tensor, "d_model r"],
    *,
    kinds: Sequence[str] = KINDS,
    batched: bool = True,
) -> ScaleCurvature:
    """Value, gradient and HVPs of f(a) (the continuation's log-probability under
    ``scaling_directions``) at a = 1. See ``ScaleCurvature``."""
    return ScaleCurvature(model, completion, directions, kinds=kinds, batched=batched)


def hessian_matrix(
    hvp: Callable[[Tensor], Tensor],
    r: int,
    *,
    chunk_size: int = 32,
    progress: Callable[[int], Any] | None = None,
) -> Float[Tensor, "r r"]:
    """The full Hessian from ``r`` HVPs with unit vectors, ``chunk_size`` per batched call;
    symmetrized (float64). Cost: r HVPs, i.e. r backward passes through the gradient's graph (each
    about two to three forward passes' work) after one forward and one backward pass."""
    eye = torch.eye(r, dtype=torch.float64)
    cols = []
    for start in range(0, r, chunk_size):
        cols.append(hvp(eye[start : start + chunk_size]))
        if progress is not None:
            progress(min(start + chunk_size, r))
    h = torch.cat(cols).to(torch.float64)
    return (h + h.T) / 2


def hessian_diagonal(
    hvp: Callable[[Tensor], Tensor], r: int, *, chunk_size: int = 32
) -> Float[Tensor, " r"]:
    """The exact diagonal ``H_ii`` (r HVPs with unit vectors; ``hessian_matrix``'s cost)."""
    return torch.diagonal(hessian_matrix(hvp, r, chunk_size=chunk_size)).clone()


def hutchinson_diagonal(
    hvp: Callable[[Tensor], Tensor],
    r: int,
    *,
    n_probes: int = 16,
    seed: int = 0,
    chunk_size: int = 32,
) -> Float[Tensor, " r"]:
    """Hutchinson's estimate ``mean_z z * (H z)`` over ``n_probes`` Rademacher vectors z (unbiased;
    its variance is the sum of the squared off-diagonal entries of each row, over n_probes)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randint(0, 2, (n_probes, r), generator=gen).to(torch.float64) * 2 - 1
    hz = torch.cat([hvp(z[s : s + chunk_size]) for s in range(0, n_probes, chunk_size)])
    return (z * hz).mean(0)


@dataclass
class EigenPairs:
    """Eigenvalues (sorted by decreasing |value|) and unit eigenvectors (columns), float64."""

    values: Float[Tensor, " k"]
    vectors: Float[Tensor, "r k"]
    residuals: Float[Tensor, " k"]  # ||H u - lambda u|| estimated from the Lanczos recurrence
    n_iter: int


def lanczos(
    hvp: Callable[[Tensor], Tensor],
    r: int,
    n_eig: int = 10,
    n_iter: int | None = None,
    *,
    seed: int = 0,
) -> EigenPairs:
    """The ``n_eig`` eigenpairs of largest |eigenvalue| of a symmetric operator given by ``hvp``
    (``(r,) -> (r,)``), by ``n_iter`` Lanczos steps (default ``min(r, max(2 n_eig + 10, 3 n_eig))``;
    one HVP each) from a seeded random start, with full reorthogonalization (twice, classical
    Gram-Schmidt against every earlier vector), so the basis stays orthonormal in float64 and no
    ghost copies of converged eigenvalues appear. Ritz pairs of the tridiagonal matrix;
    ``residuals`` are |beta_m y_m|, the exact residual norms of the Ritz pairs in exact arithmetic.
    Stops early on an invariant subspace (then the pairs are exact)."""
    n_iter = min(r, n_iter if n_iter is not None else max(2 * n_eig + 10, 3 * n_eig))
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(r, generator=gen, dtype=torch.float64)
    q = q / q.norm()
    qs, alphas, betas = [q], [], []
    beta_last = 0.0
    for j in range(n_iter):
        w = hvp(qs[j]).to(torch.float64)
        alpha = float(qs[j] @ w)
        alphas.append(alpha)
        basis = torch.stack(qs, 1)
        for _ in range(2):
            w = w - basis @ (basis.T @ w)
        beta = float(w.norm())
        beta_last = beta
        scale = max(abs(a) for a in alphas) or 1.0
        if j == n_iter - 1 or beta <= 1e-12 * scale:
            break
        betas.append(beta)
        qs.append(w / beta)
    m = len(alphas)
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if m > 1:
        off = torch.tensor(betas[: m - 1], dtype=torch.float64)
        t = t + torch.diag(off, 1) + torch.diag(off, -1)
    theta, y = torch.linalg.eigh(t)
    order = torch.argsort(theta.abs(), descending=True)[: min(n_eig, m)]
    basis = torch.stack(qs[:m], 1)
    vectors = basis @ y[:, order]
    residuals = (beta_last * y[-1, order]).abs()
    return EigenPairs(theta[order], vectors, residuals, n_iter=m)


def second_order_importance(grad: np.ndarray, hessian_diag: np.ndarray) -> np.ndarray:
    """Importance of removing each direction (a_i: 1 -> 0), positive = removal hurts, to second
    order: ``logp - logp(a - e_i) ~= g_i - H_ii / 2``. Exact for a quadratic f."""
    return np.asarray(grad, dtype=np.float64) - np.asarray(hessian_diag, dtype=np.float64) / 2


def quadratic_change(grad: np.ndarray, hessian: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The quadratic model's change of log-probability when the directions of each 0/1 mask row
    ``removed`` (``(r,)`` or ``(n, r)``) are removed together: ``-g.m + m^T H m / 2``."""
    m = np.asarray(removed, dtype=np.float64)
    return -(m @ grad) + 0.5 * np.einsum("...i,ij,...j->...", m, hessian, m)


def eigen_loading(pairs: EigenPairs) -> np.ndarray:
    """A direction's weight in the top eigenvectors: ``sum_k |lambda_k| u_k[i]^2`` (the diagonal of
    |H| restricted to the top eigenspace; >= 0, unsigned: it ranks curvature, not harm)."""
    v = pairs.vectors.numpy()
    return (np.abs(pairs.values.numpy())[None, :] * v**2).sum(1)
