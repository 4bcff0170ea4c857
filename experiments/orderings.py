"""Experiment 4: clipping curves when directions are included in other orders.

Orders (each a permutation of the basis columns, most-included-first):
- ``singular_value``: the SVD order (experiment 2);
- ``importance``: by single-direction importance (experiment 3), largest first;
- ``compromise`` (default formula ``rank_product``): by (sv_rank + 1) * (importance_rank + 1),
  smallest first, so a direction must be both large and important to come early.
  Other compromises: ``rank_sum`` and ``sv_times_importance`` (s_i * max(importance_i, 0)).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from interp import Basis, Completion, normalize_kinds
from interp.sweeps import default_k_grid

from .base import ExperimentResult, basis_for, run_meta
from .clipping import baseline_logprob, clipping_curve, curve_figures
from .single_direction import SingleDirectionResult, run_single_direction

COMPROMISES: dict[str, Callable[[pd.DataFrame], np.ndarray]] = {
    # smaller score = included earlier
    "rank_product": lambda t: (t.sv_rank.to_numpy() + 1.0) * (t.importance_rank.to_numpy() + 1.0),
    "rank_sum": lambda t: t.sv_rank.to_numpy() + t.importance_rank.to_numpy() + 0.0,
    "sv_times_importance": lambda t: -(t.singular_value.to_numpy() * np.clip(t.importance.to_numpy(), 0, None)),
}


def orders_from_importance(importance: pd.DataFrame, compromise: str = "rank_product") -> dict[str, np.ndarray]:
    """Permutations of the directions for every ordering (from the single-direction table)."""
    if compromise not in COMPROMISES:
        raise ValueError(f"unknown compromise {compromise!r}; choose one of {sorted(COMPROMISES)}")
    t = importance.sort_values("direction")
    return {
        "singular_value": np.argsort(t.sv_rank.to_numpy(), kind="stable"),
        "importance": np.argsort(t.importance_rank.to_numpy(), kind="stable"),
        f"compromise_{compromise}": np.argsort(COMPROMISES[compromise](t), kind="stable"),
    }


@dataclass
class OrderingsResult(ExperimentResult):
    name = "orderings"

    @property
    def curve(self) -> pd.DataFrame:
        return self.tables["curve"]

    def summary(self) -> dict[str, Any]:
        base, tol = self.meta["baseline_logprob"], self.settings["tolerance"]
        out = {}
        for ordering, c in self.curve.groupby("ordering"):
            ok = c[c.logprob >= base - tol]
            out[ordering] = {
                "first_k_reaching_baseline": int(ok.k.min()) if len(ok) else None,
                "logprob_at_quarter_d": float(c.iloc[(c.k_frac - 0.25).abs().argmin()].logprob),
                "logprob_at_half_d": float(c.iloc[(c.k_frac - 0.5).abs().argmin()].logprob),
            }
        return out

    def figures(self) -> dict[str, Any]:
        return curve_figures(self.curve, self.meta["baseline_logprob"], f"{self.meta['model']['name']}: orderings")


def run_orderings(
    model: Any,
    completion: Completion,
    *,
    basis: Basis | None = None,
    single: SingleDirectionResult | None = None,
    kinds: tuple[str, ...] = ("attn", "mlp"),
    compromise: str = "rank_product",
    ks: list[int] | None = None,
    tolerance: float = 1e-4,
    chunk_size: int | None = None,
    progress: bool = False,
) -> OrderingsResult:
    kinds = normalize_kinds(kinds)
    basis = basis or basis_for(model, completion, kinds=kinds)
    single = single or run_single_direction(
        model, completion, basis=basis, kinds=kinds, gradient=False, chunk_size=chunk_size, progress=progress
    )
    orders = orders_from_importance(single.importance, compromise)
    ks = ks if ks is not None else default_k_grid(basis.d_model)
    curves = [
        clipping_curve(
            model, completion, basis.vectors[:, order.copy()], ks, ordering=name, kinds=kinds,
            chunk_size=chunk_size, progress=progress,
        )
        for name, order in orders.items()
    ]
    order_table = pd.DataFrame(
        [(name, pos, int(col)) for name, order in orders.items() for pos, col in enumerate(order)],
        columns=["ordering", "position", "direction"],
    )
    base, _ = baseline_logprob(model, completion)
    return OrderingsResult(
        tables={"curve": pd.concat(curves, ignore_index=True), "orders": order_table},
        settings={"kinds": list(kinds), "compromise": compromise, "tolerance": tolerance, "n_k": len(ks)},
        meta=run_meta(model, completion, baseline_logprob=base),
    )
