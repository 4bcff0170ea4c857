"""Experiment 7: how the minimal subspaces of different prompts overlap, against random nulls.

Overlap of two subspaces with orthonormal bases Q_i (d x k_i), Q_j (d x k_j):
``||Q_i^T Q_j||_F^2`` = sum of squared cosines of their principal angles. Nulls:
- ``analytic``: uniformly random subspaces of the same sizes: E = k_i k_j / d (exact);
- ``monte_carlo``: the same, sampled (mean and standard deviation over draws);
- ``spectral``: random subspaces drawn from the writes' own spectrum (anisotropic): k Gaussian
  vectors with covariance V diag(s^2) V^T, orthonormalized; the few huge directions are
  then almost always included, which a uniform null ignores.
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


def principal_cosines(q_i: Float[Tensor, "d ki"], q_j: Float[Tensor, "d kj"]) -> Float[Tensor, " m"]:
    """Cosines of the principal angles, descending (min(k_i, k_j) of them)."""
    return torch.linalg.svdvals(q_i.double().T @ q_j.double()).clamp(0, 1)


def expected_random_overlap(k_i: int, k_j: int, d: int) -> float:
    return k_i * k_j / d


def random_basis(d: int, k: int, generator: torch.Generator) -> Float[Tensor, "d k"]:
    """Haar-random orthonormal d x k basis."""
    q, r = torch.linalg.qr(torch.randn(d, k, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None, :]


def spectral_basis(
    vectors: Float[Tensor, "d r"], singular_values: Float[Tensor, " r"], k: int, generator: torch.Generator
) -> Float[Tensor, "d k"]:
    """Random k-dim subspace drawn from N(0, V diag(s^2) V^T) (the writes' own anisotropy)."""
    z = torch.randn(vectors.shape[1], k, generator=generator, dtype=torch.float64)
    sample = vectors.double() @ (singular_values.double()[:, None] * z)
    return torch.linalg.qr(sample).Q


def monte_carlo_overlap(
    sizes: tuple[int, int], d: int, *, draws: int, generator: torch.Generator, sampler: Any = None
) -> np.ndarray:
    """Overlaps of ``draws`` pairs of random subspaces (uniform unless ``sampler(k, gen, which)``)."""
    out = np.empty(draws)
    for n in range(draws):
        if sampler is None:
            a, b = random_basis(d, sizes[0], generator), random_basis(d, sizes[1], generator)
        else:
            a, b = sampler(sizes[0], generator, 0), sampler(sizes[1], generator, 1)
        out[n] = overlap(a, b)
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
                out[f"overall_rel_err_{null}"] = float(
                    (cross.observed.sum() - cross[f"null_{null}"].sum()) / cross[f"null_{null}"].sum()
                )
        return out

    def figures(self) -> dict[str, Any]:
        import plotly.express as px

        figs = {
            "stacked_spectrum": px.line(
                self.tables["stacked_spectrum"], x="index", y="singular_value", color="source",
                title="SVD of all subspaces' bases stacked: observed vs random subspaces of the same sizes",
            ).update_layout(xaxis_title="singular direction", yaxis_title="singular value"),
        }
        p = self.pairs.melt(
            id_vars=["pair", "same_prompt"], value_vars=["observed", "null_analytic", "null_monte_carlo"]
            + (["null_spectral"] if "null_spectral" in self.pairs else []),
            var_name="quantity", value_name="overlap",
        )
        figs["pairwise_overlap"] = px.bar(
            p, x="pair", y="overlap", color="quantity", barmode="group",
            title="Pairwise overlap ||Q_i^T Q_j||_F^2 against random-subspace nulls",
        )
        return figs


def run_overlap(
    subspaces: list[Subspace],
    *,
    draws: int = 200,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
) -> OverlapResult:
    """Pairwise overlaps, principal angles and stacked spectrum of any number of subspaces."""
    if len(subspaces) < 2:
        raise ValueError("overlap needs at least two subspaces")
    d = int(subspaces[0].basis.shape[0])
    if any(int(s.basis.shape[0]) != d for s in subspaces):
        raise ValueError("all subspaces must live in the same d_model")
    gen = torch.Generator().manual_seed(seed)
    rows, angles = [], []
    for a, b in combinations(subspaces, 2):
        ki, kj = a.basis.shape[1], b.basis.shape[1]
        obs = overlap(a.basis, b.basis)
        analytic = expected_random_overlap(ki, kj, d)
        mc = monte_carlo_overlap((ki, kj), d, draws=draws, generator=gen)
        row = {
            "pair": f"{a.name} | {b.name}", "a": a.name, "b": b.name, "k_a": ki, "k_b": kj, "d_model": d,
            "same_prompt": bool(a.prompt and a.prompt == b.prompt),
            "observed": obs, "null_analytic": analytic,
            "null_monte_carlo": mc.mean(), "null_monte_carlo_std": mc.std(ddof=1),
            "z_monte_carlo": (obs - mc.mean()) / max(mc.std(ddof=1), 1e-12),
        }
        if all(s.spectrum_vectors is not None for s in (a, b)):
            pair = (a, b)

            def sampler(k: int, g: torch.Generator, which: int) -> Tensor:
                return spectral_basis(pair[which].spectrum_vectors, pair[which].spectrum_values, k, g)

            sp = monte_carlo_overlap((ki, kj), d, draws=max(draws // 4, 10), generator=gen, sampler=sampler)
            row.update(null_spectral=sp.mean(), null_spectral_std=sp.std(ddof=1))
        for null in ("analytic", "monte_carlo", "spectral"):
            if f"null_{null}" in row:
                row[f"rel_err_{null}"] = (obs - row[f"null_{null}"]) / row[f"null_{null}"]
        rows.append(row)
        cos = principal_cosines(a.basis, b.basis).numpy()
        angles += [
            {"pair": row["pair"], "index": i, "cosine": c, "angle_deg": float(np.degrees(np.arccos(c)))}
            for i, c in enumerate(cos)
        ]
    stacked = torch.cat([s.basis.double() for s in subspaces], dim=1)
    observed = torch.linalg.svdvals(stacked).numpy()
    rand = torch.cat([random_basis(d, s.basis.shape[1], gen) for s in subspaces], dim=1)
    random_sv = torch.linalg.svdvals(rand).numpy()
    spectrum = pd.concat(
        [
            pd.DataFrame({"source": "observed", "index": np.arange(len(observed)), "singular_value": observed}),
            pd.DataFrame({"source": "random", "index": np.arange(len(random_sv)), "singular_value": random_sv}),
        ],
        ignore_index=True,
    )
    sizes = pd.DataFrame([{"name": s.name, "prompt": s.prompt, "source": s.source, "k": s.basis.shape[1]} for s in subspaces])
    return OverlapResult(
        tables={"pairs": pd.DataFrame(rows), "angles": pd.DataFrame(angles), "stacked_spectrum": spectrum, "subspaces": sizes},
        settings={"draws": draws, "seed": seed, "d_model": d},
        meta=meta or {},
    )
