"""The whole study on one model: every experiment on the four prompts, then the cross-prompt
overlap and a report. Resumable: a finished experiment's folder holds ``settings.json`` (written
last, via an atomic rename), and a rerun with the same ``out`` loads it instead of recomputing.
"""

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from interp import Basis, Completion, model_info, normalize_kinds
from interp.sweeps import default_k_grid

from .base import ExperimentResult, basis_for, run_meta
from .clipped_generation import ClippedGenerationResult, run_clipped_generation
from .clipping import ClippingResult, run_clipping
from .minimal_subspace import MinimalSubspaceResult, run_minimal_subspace
from .orderings import OrderingsResult, run_orderings
from .overlap import OverlapResult, Subspace, run_overlap
from .prompts import PROMPTS, get_continuation
from .single_direction import SingleDirectionResult, run_single_direction
from .spectrum import SpectrumResult, run_spectrum

EXPERIMENTS = ("spectrum", "clipping", "single_direction", "orderings", "minimal_subspace", "clipped_generation")


@dataclass
class Settings:
    prompts: Sequence[str] = tuple(PROMPTS)
    kinds: tuple[str, ...] = ("attn", "mlp")
    seed: int = 0
    max_new_tokens: int = 64
    k_points: int | None = None  # None: every k for d_model <= 1024, else a log+linear grid
    chunk_size: int | None = None
    n_exact: int | None = None  # exact single-direction ablations only for the top-n by gradient
    n_samples: int = 3
    overlap_draws: int = 200
    png: bool = False
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def k_grid(self, d_model: int) -> list[int]:
        grid = default_k_grid(d_model)
        if self.k_points and len(grid) > self.k_points:
            idx = torch.linspace(0, len(grid) - 1, self.k_points).round().long().unique()
            grid = [grid[i] for i in idx.tolist()]
        return grid


def cached(directory: Path, cls: type[ExperimentResult], compute: Callable[[], ExperimentResult], png: bool) -> Any:
    """Load a finished result from ``directory`` or compute, save atomically and draw it."""
    if (directory / "settings.json").exists():
        return cls.load(directory)
    result = compute()
    tmp = directory.with_name(directory.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    result.save_figures(tmp / "figures", png=png)
    result.save(tmp)  # settings.json last: its presence marks the result finished
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    return result


@dataclass
class PromptResults:
    completion: Completion
    basis: Basis
    results: dict[str, ExperimentResult]


def run_prompt(model: Any, name: str, out: Path, s: Settings) -> PromptResults:
    kinds = normalize_kinds(s.kinds)
    comp = get_continuation(
        model, name, seed=s.seed, store=out / "continuations" / f"{name}.json", max_new_tokens=s.max_new_tokens
    )
    basis = basis_for(model, comp, kinds=kinds)
    ks = s.k_grid(basis.d_model)
    common = dict(kinds=kinds, chunk_size=s.chunk_size)
    d = out / name
    r: dict[str, ExperimentResult] = {}
    r["spectrum"] = cached(d / "spectrum", SpectrumResult, lambda: run_spectrum(model, comp), s.png)
    r["clipping"] = cached(
        d / "clipping", ClippingResult,
        lambda: run_clipping(model, comp, basis=basis, ks=ks, progress=s.progress, **common), s.png,
    )
    r["single_direction"] = cached(
        d / "single_direction", SingleDirectionResult,
        lambda: run_single_direction(model, comp, basis=basis, n_exact=s.n_exact, progress=s.progress, **common), s.png,
    )
    r["orderings"] = cached(
        d / "orderings", OrderingsResult,
        lambda: run_orderings(model, comp, basis=basis, single=r["single_direction"], ks=ks, progress=s.progress, **common),
        s.png,
    )
    r["minimal_subspace"] = cached(
        d / "minimal_subspace", MinimalSubspaceResult,
        lambda: run_minimal_subspace(model, comp, basis=basis, orderings=r["orderings"], prompt_name=name, **common),
        s.png,
    )
    k = r["minimal_subspace"].order("singular_value", "sweep")
    r["clipped_generation"] = cached(
        d / "clipped_generation", ClippedGenerationResult,
        lambda: run_clipped_generation(
            model, comp, basis=basis, k=k, kinds=kinds, n_samples=s.n_samples, seed=s.seed,
            max_new_tokens=min(48, s.max_new_tokens),
        ),
        s.png,
    )
    return PromptResults(comp, basis, r)


def subspaces_from(per_prompt: dict[str, PromptResults]) -> list[Subspace]:
    """Each prompt's minimal subspace (sweep method) under every ordering."""
    subs = []
    for name, pr in per_prompt.items():
        orders = pr.results["orderings"].tables["orders"]
        table = pr.results["minimal_subspace"].table
        for ordering, g in orders.groupby("ordering"):
            k = int(table[(table.ordering == ordering) & (table.method == "sweep")].k.iloc[0])
            cols = g.sort_values("position").direction.to_numpy()[:k].copy()
            subs.append(
                Subspace(
                    name=name if ordering == "singular_value" else f"{name}/{ordering}",
                    basis=pr.basis.vectors[:, cols], prompt=name, source=ordering,
                    spectrum_vectors=pr.basis.vectors, spectrum_values=pr.basis.singular_values,
                )
            )
    return subs


def reproduce(model: Any, out: str | Path, settings: Settings | None = None) -> dict[str, Any]:
    """Run everything; returns {"prompts": {name: PromptResults}, "overlap": OverlapResult, ...}."""
    s = settings or Settings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = [p for p in s.prompts if p not in PROMPTS]
    if unknown:
        raise ValueError(f"unknown prompts {unknown}; choose from {list(PROMPTS)}")
    t0 = time.perf_counter()
    per_prompt = {}
    for name in tqdm(list(s.prompts), desc="prompts", disable=not s.progress):
        per_prompt[name] = run_prompt(model, name, out, s)
    overlap = None
    if len(per_prompt) >= 2:
        first = next(iter(per_prompt.values())).completion
        overlap = cached(
            out / "overlap", OverlapResult,
            lambda: run_overlap(
                subspaces_from(per_prompt), draws=s.overlap_draws, seed=s.seed,
                meta={**run_meta(model, first), "prompts": list(per_prompt)},
            ),
            s.png,
        )
    from .report import write_report

    info = model_info(model).to_dict()
    report = write_report(out, per_prompt, overlap, info, s, elapsed=time.perf_counter() - t0)
    return {"prompts": per_prompt, "overlap": overlap, "report": report}
