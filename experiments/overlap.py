"""Experiment 7: how the minimal subspaces of different prompts overlap, against random nulls.

Overlap of two subspaces with orthonormal bases Q_i (d x k_i), Q_j (d x k_j):
``||Q_i^T Q_j||_F^2`` = sum of squared cosines of their principal angles. Nulls:
- ``analytic``: uniformly random subspaces of the same sizes: mean k_i k_j / d and variance
  2 k_i k_j (d - k_i)(d - k_j) / (d^2 (d - 1)(d + 2)) (both exact; tested against Monte Carlo);
- ``monte_carlo``: the same, sampled. By rotational invariance the overlap of a random k_j-subspace
  with any fixed k_i-subspace has the law of ||Q[:k_i, :k_j]||_F^2 for one Haar-random d x d
  orthogonal Q, so one QR per draw gives every pair at once (prefix sums of Q^2);
- ``spectral``: random subspaces drawn from the writes' own spectrum (anisotropic): k Gaussian
  vectors with covariance V diag(s^2) V^T, orthonormalized; the few huge directions are
  then almost always included, which a uniform null ignores. Each subspace gets its own draws,
  shared by all the pairs it is in.
The z-score ``(observed - mean) / sd`` under the analytic null says whether an observed overlap is
what random subspaces would give; with subspaces covering most of the space the relative error
is small for any subspaces at all (the sd is then tiny too), so read the z-score, not only the
relative error.
"""

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from .base import ExperimentResult


def overlap(q_i: Float[Tensor, "d ki"], q_j: Float[Tensor, "d kj"]) -> float:
    """||Q_i^T Q_j||_F^2 (computed in float64)."""
    return float((q_i.double().T @ q_j.double()).pow(2).sum())


def principal_cosines(
    q_i: Float[Tensor, "d ki"], q_j: Float[Tensor, "d kj"]
) -> Float[Tensor, " m"]:
    """Cosines of the principal angles, descending (min(k_i, k_j) of them); float32 SVD of the
    float64 product (cosines to ~1e-6)."""
    return torch.linalg.svdvals((q_i.double().T @ q_j.double()).float()).double().clamp(0, 1)


def expected_random_overlap(k_i: int, k_j: int, d: int) -> float:
    return k_i * k_j / d


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def random_basis(
    d: int, k: int, generator: torch.Generator, device: torch.device | str = "cpu"
) -> Float[Tensor, "d k"]:
    """Haar-random orthonormal d x k basis (numbers drawn on the CPU from ``generator``, so a seed
    gives the same basis on any device; the QR runs on ``device``)."""
    q, r = torch.linalg.qr(torch.randn(d, k, generator=generator, dtype=torch.float64).to(device))
    return q * torch.sign(torch.diagonal(r))[None, :]


def spectral_basis(
    vectors: Float[Tensor, "d r"],
    singular_values: Float[Tensor, " r"],
    k: int,
    generator: torch.Generator,
) -> Float[Tensor, "d k"]:
    """Random k-dim subspace drawn from N(0, V diag(s^2) V^T) (the writes' own anisotropy)."""
    z = torch.randn(vectors.shape[1], k, generator=generator, dtype=torch.float64).to(
        vectors.device
    )
    sample = vectors.double() @ (singular_values.double().to(vectors.device)[:, None] * z)
    return torch.linalg.qr(sample).Q


def random_overlap_sd(k_i: int, k_j: int, d: int) -> float:
    """Standard deviation of ||Q_i^T Q_j||_F^2 for uniformly random subspaces (exact)."""
    return float(np.sqrt(2 * k_i * k_j * (d - k_i) * (d - k_j) / (d * d * (d - 1) * (d + 2))))


def haar_pair_overlaps(
    d: int,
    sizes: list[tuple[int, int]],
    draws: int,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """(draws, len(sizes)): for each draw and size pair (a, b), the overlap of a random b-dim
    subspace with a fixed a-dim one, read off one Haar-random orthogonal d x d matrix per draw
    (prefix sums of its squared entries)."""
    rows = torch.tensor([a for a, _ in sizes], dtype=torch.long)
    cols = torch.tensor([b for _, b in sizes], dtype=torch.long)
    out = np.zeros((draws, len(sizes)))
    for n in range(draws):
        q = random_basis(d, d, generator, device).pow(2)
        prefix = torch.zeros(d + 1, d + 1, dtype=q.dtype, device=q.device)
        prefix[1:, 1:] = q.cumsum(0).cumsum(1)
        out[n] = prefix[rows.to(q.device), cols.to(q.device)].cpu().numpy()
    return out


def monte_carlo_overlap(
    sizes: tuple[int, int], d: int, *, draws: int, generator: torch.Generator, sampler: Any = None
) -> np.ndarray:
    """Overlaps of ``draws`` pairs of random subspaces (uniform unless ``sampler(k, gen,
    which)``)."""
    if sampler is None:
        return haar_pair_overlaps(d, [sizes], draws, generator)[:, 0]
    out = np.empty(draws)
    for n in range(draws):
        out[n] = overlap(sampler(sizes[0], generator, 0), sampler(sizes[1], generator, 1))
    return out


@dataclass
class Subspace:
    """A named subspace, optionally with the spectrum it came from (for the spectral null)."""

    name: str
    basis: Float[Tensor, "d k"]
    prompt: str = ""
    source: str = ""
    spectrum_vectors: Tensor | None = None
    spectrum_values: Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class OverlapResult(ExperimentResult):
    name = "overlap"

    @property
    def pairs(self) -> pd.DataFrame:
        return self.tables["pairs"]

    def summary(self) -> dict[str, Any]:
        p = self.pairs
        cross = p[~p.same_prompt]
        out: dict[str, Any] = {"n_pairs": len(p), "n_cross_prompt_pairs": len(cross)}
        for null in ("analytic", "monte_carlo", "spectral"):
            col = f"rel_err_{null}"
            if col in p and len(cross):
                out[f"mean_abs_rel_err_{null}"] = float(cross[col].abs().mean())
                expected = float(cross[f"null_{null}"].sum())  # 0 when every subspace is empty
                out[f"overall_rel_err_{null}"] = (
                    float((cross.observed.sum() - expected) / expected)
                    if expected
                    else float("nan")
                )
        if len(cross):
            out["median_z_analytic"] = float(cross.z_analytic.median())
            out["mean_k_frac"] = float(np.mean(np.r_[cross.k_a, cross.k_b]) / cross.d_model.iloc[0])
        return out

    def figures(self) -> dict[str, Any]:
        import plotly.express as px

        figs = {
            "stacked_spectrum": px.line(
                self.tables["stacked_spectrum"],
                x="index",
                y="singular_value",
                color="source",
                render_mode="svg",
                title=(
                    "SVD of all subspaces' bases stacked: observed vs random subspaces of the "
                    "same sizes"
                ),
            ).update_layout(xaxis_title="singular direction", yaxis_title="singular value"),
        }
        p = self.pairs.assign(
            kind=np.where(self.pairs.same_prompt, "same text, other ordering", "different texts")
        )
        figs["pairwise_overlap"] = pairwise_overlap_figure(
            p,
            "Pairwise overlap ||Q_i^T Q_j||_F^2 against the random-subspace prediction k_i k_j / d",
            color="kind",
        )
        return figs


def pairwise_overlap_figure(pairs: pd.DataFrame, title: str, *, color: str | None = None) -> Any:
    """Observed overlap of each pair against the random-subspace prediction k_i k_j / d, with the
    line of equality: OverlapResult's ``pairwise_overlap`` and the report's ``overlap``."""
    import plotly.express as px
    import plotly.graph_objects as go

    fig = px.scatter(
        pairs,
        x="null_analytic",
        y="observed",
        color=color,
        hover_data=["pair", "z_analytic"],
        render_mode="svg",
        title=title,
    ).update_layout(xaxis_title="k_i k_j / d (random subspaces)", yaxis_title="observed overlap")
    lo = float(pairs[["null_analytic", "observed"]].min().min())
    hi = float(pairs[["null_analytic", "observed"]].max().max())
    fig.add_trace(
        go.Scatter(
            x=[lo, hi],
            y=[lo, hi],
            mode="lines",
            line=dict(dash="dot", color="gray"),
            name="observed = k_i k_j / d",
        )
    )
    return fig


def run_overlap(
    subspaces: list[Subspace],
    *,
    draws: int = 100,
    spectral_draws: int = 8,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
    device: str | torch.device | None = None,
) -> OverlapResult:
    """Pairwise overlaps, principal angles and stacked spectrum of any number of subspaces."""
    if len(subspaces) < 2:
        raise ValueError("overlap needs at least two subspaces")
    d = int(subspaces[0].basis.shape[0])
    if any(int(s.basis.shape[0]) != d for s in subspaces):
        raise ValueError("all subspaces must live in the same d_model")
    gen = torch.Generator().manual_seed(seed)
    device = torch.device(device) if device is not None else default_device()
    # each draw is a d x d QR (float64): keep the nulls a small share of the run on large models
    budget = 2e12 if device.type == "cuda" else 4e10
    cap = max(10, int(budget / d**3))
    draws, spectral_draws = min(draws, cap), min(spectral_draws, max(4, cap // 10))
    bases = [s.basis.to(device) for s in subspaces]
    pair_index = list(combinations(range(len(subspaces)), 2))
    sizes = [(bases[i].shape[1], bases[j].shape[1]) for i, j in pair_index]
    uniform = haar_pair_overlaps(d, sizes, draws, gen, device) if draws else None
    spectral = {  # each subspace's own random draws from its spectrum
        i: [
            spectral_basis(s.spectrum_vectors.to(device), s.spectrum_values, s.basis.shape[1], gen)
            for _ in range(spectral_draws)
        ]
        for i, s in enumerate(subspaces)
        if s.spectrum_vectors is not None and spectral_draws
    }
    rows, angles = [], []
    for n_pair, (ia, ib) in enumerate(pair_index):
        a, b = subspaces[ia], subspaces[ib]
        ki, kj = sizes[n_pair]
        obs = overlap(bases[ia], bases[ib])
        analytic, sd = expected_random_overlap(ki, kj, d), random_overlap_sd(ki, kj, d)
        row = {
            "pair": f"{a.name} | {b.name}",
            "a": a.name,
            "b": b.name,
            "k_a": ki,
            "k_b": kj,
            "d_model": d,
            "same_prompt": bool(a.prompt and a.prompt == b.prompt),
            "observed": obs,
            "null_analytic": analytic,
            "null_analytic_sd": sd,
            "z_analytic": (obs - analytic) / sd if sd > 0 else 0.0,
        }
        if uniform is not None:
            mc = uniform[:, n_pair]
            row.update(
                null_monte_carlo=mc.mean(),
                null_monte_carlo_std=mc.std(ddof=1) if draws > 1 else float("nan"),
            )
        if ia in spectral and ib in spectral:
            sp = np.array([overlap(x, y) for x, y in zip(spectral[ia], spectral[ib], strict=False)])
            row.update(
                null_spectral=sp.mean(),
                null_spectral_std=sp.std(ddof=1) if len(sp) > 1 else float("nan"),
            )
        for null in ("analytic", "monte_carlo", "spectral"):
            if f"null_{null}" in row:
                expected = row[f"null_{null}"]
                row[f"rel_err_{null}"] = (obs - expected) / expected if expected else float("nan")
        rows.append(row)
        cos = principal_cosines(bases[ia], bases[ib]).cpu().numpy()
        angles += [
            {
                "pair": row["pair"],
                "index": i,
                "cosine": c,
                "angle_deg": float(np.degrees(np.arccos(c))),
            }
            for i, c in enumerate(cos)
        ]
    stacked = torch.cat([b.double() for b in bases], dim=1)
    observed = torch.linalg.svdvals(stacked).cpu().numpy()
    rand = torch.cat([random_basis(d, s.basis.shape[1], gen, device) for s in subspaces], dim=1)
    random_sv = torch.linalg.svdvals(rand).cpu().numpy()
    spectrum = pd.concat(
        [
            pd.DataFrame(
                {
                    "source": "observed",
                    "index": np.arange(len(observed)),
                    "singular_value": observed,
                }
            ),
            pd.DataFrame(
                {
                    "source": "random",
                    "index": np.arange(len(random_sv)),
                    "singular_value": random_sv,
                }
            ),
        ],
        ignore_index=True,
    )
    sizes = pd.DataFrame(
        [
            {"name": s.name, "prompt": s.prompt, "source": s.source, "k": s.basis.shape[1]}
            for s in subspaces
        ]
    )
    return OverlapResult(
        tables={
            "pairs": pd.DataFrame(rows),
            "angles": pd.DataFrame(angles),
            "stacked_spectrum": spectrum,
            "subspaces": sizes,
        },
        settings={
            "draws": draws,
            "spectral_draws": spectral_draws,
            "seed": seed,
            "d_model": d,
            "device": str(device),
        },
        meta=meta or {},
    )
