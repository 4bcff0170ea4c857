"""Experiment 5: the smallest k whose clipped model gives the continuation at least its unclipped
log-probability (within ``tolerance`` nats), per ordering.

Two searches over the same evaluator:
- ``bisect_min_k``: the study's plain bisection (assumes the curve is monotone; one pass per step);
- ``sweep_min_k``: a coarse batched sweep, then a batched sweep of every k inside the first
  coarse interval that crosses the target. It does not assume monotonicity on the coarse grid and
  also reports the smallest coarse k above which every coarse point stays above the target.
k = d_model is the unclipped model and always counts as reaching the target.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from interp import Basis, Completion, normalize_kinds
from interp.sweeps import clip_sweep

from .base import ExperimentResult, basis_for, run_meta
from .clipping import baseline_logprob
from .orderings import OrderingsResult
from .prompts import STUDY_D_MODEL, STUDY_MIN_K

# Batched evaluator: log-probabilities at the given k, and the forward passes it took.
EvalFn = Callable[[list[int]], tuple[np.ndarray, int]]


@dataclass
class SearchResult:
    k: int
    passes: int
    evaluations: int
    stable_k: int | None = None  # sweep only: smallest coarse k with every larger coarse k passing


def bisect_min_k(evaluate: EvalFn, target: float, d: int) -> SearchResult:
    passes = evals = 0

    def ok(k: int) -> bool:
        nonlocal passes, evals
        if k >= d:
            return True
        value, p = evaluate([k])
        passes, evals = passes + p, evals + 1
        return bool(value[0] >= target)

    if ok(0):
        return SearchResult(0, passes, evals)
    lo, hi = 0, d  # invariant: ok(hi), not ok(lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return SearchResult(hi, passes, evals)


def sweep_min_k(evaluate: EvalFn, target: float, d: int, *, n_coarse: int = 64) -> SearchResult:
    coarse = sorted(set(np.linspace(0, d, n_coarse + 1).round().astype(int).tolist()))
    values, passes = evaluate([k for k in coarse if k < d])
    passing = np.append(values >= target, True)  # k = d always passes
    first = int(np.argmax(passing))
    failing = np.nonzero(~passing)[0]
    stable_k = coarse[int(failing[-1]) + 1] if len(failing) else 0
    evals = len(coarse) - 1
    if first == 0:
        return SearchResult(coarse[0], passes, evals, stable_k)
    inside = list(range(coarse[first - 1] + 1, coarse[first]))
    k = coarse[first]
    if inside:
        fine, p = evaluate(inside)
        passes, evals = passes + p, evals + len(inside)
        hits = np.nonzero(fine >= target)[0]
        if len(hits):
            k = inside[int(hits[0])]
    return SearchResult(k, passes, evals, stable_k)


@dataclass
class MinimalSubspaceResult(ExperimentResult):
    name = "minimal_subspace"

    @property
    def table(self) -> pd.DataFrame:
        return self.tables["minimal_k"]

    def summary(self) -> dict[str, Any]:
        return {"minimal_k": self.table.to_dict(orient="records")}

    def figures(self) -> dict[str, Any]:
        import plotly.express as px

        return {
            "minimal_k": px.bar(
                self.table, x="ordering", y="k_frac", color="method", barmode="group",
                title=f"{self.meta['model']['name']}: minimal k / d_model "
                f"(study, Llama-3-8B: {self.meta.get('study_k_frac', float('nan')):.0%})",
            )
        }

    def order(self, ordering: str = "singular_value", method: str = "sweep") -> int:
        row = self.table[(self.table.ordering == ordering) & (self.table.method == method)]
        return int(row.k.iloc[0])


def model_evaluator(
    model: Any, completion: Completion, directions: torch.Tensor, *, kinds: Sequence[str], chunk_size: int | None
) -> EvalFn:
    def evaluate(ks: list[int]) -> tuple[np.ndarray, int]:
        out = clip_sweep(model, completion, directions, ks, kinds=kinds, chunk_size=chunk_size)
        return out.logprob.numpy(), out.n_passes

    return evaluate


def run_minimal_subspace(
    model: Any,
    completion: Completion,
    *,
    basis: Basis | None = None,
    orderings: OrderingsResult | None = None,
    kinds: tuple[str, ...] = ("attn", "mlp"),
    tolerance: float = 1e-4,
    n_coarse: int = 64,
    chunk_size: int | None = None,
    prompt_name: str | None = None,
) -> MinimalSubspaceResult:
    kinds = normalize_kinds(kinds)
    basis = basis or basis_for(model, completion, kinds=kinds)
    d = basis.d_model
    base, _ = baseline_logprob(model, completion)
    target = base - tolerance
    orders = {"singular_value": np.arange(d)}
    if orderings is not None:
        t = orderings.tables["orders"]
        orders = {name: g.sort_values("position").direction.to_numpy() for name, g in t.groupby("ordering")}
    rows = []
    for name, order in orders.items():
        evaluate = model_evaluator(model, completion, basis.vectors[:, order.copy()], kinds=kinds, chunk_size=chunk_size)
        for method, res in (
            ("bisection", bisect_min_k(evaluate, target, d)),
            ("sweep", sweep_min_k(evaluate, target, d, n_coarse=n_coarse)),
        ):
            rows.append(
                {
                    "ordering": name, "method": method, "k": res.k, "k_frac": res.k / d,
                    "stable_k": res.stable_k, "forward_passes": res.passes, "evaluations": res.evaluations,
                }
            )
    study = STUDY_MIN_K.get(prompt_name or "")
    return MinimalSubspaceResult(
        tables={"minimal_k": pd.DataFrame(rows)},
        settings={"kinds": list(kinds), "tolerance": tolerance, "n_coarse": n_coarse},
        meta=run_meta(
            model, completion, baseline_logprob=base, prompt_name=prompt_name,
            study_k=study, study_k_frac=(study / STUDY_D_MODEL) if study else None,
        ),
    )
