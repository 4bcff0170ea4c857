"""Experiment 4: clipping curves when directions are included in other orders.

Orders (each a permutation of the basis columns, most-included-first):
- ``singular_value``: the SVD order (experiment 2);
- ``importance``: by single-direction importance (experiment 3), largest first;
- ``compromise`` (default formula ``rank_product``): by (sv_rank + 1) * (importance_rank + 1),
  smallest first, so a direction must be both large and important to come early.
  Other compromises: ``rank_sum`` and ``sv_times_importance`` (s_i * max(importance_i, 0)).
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from interp import Completion

from .base import ExperimentResult, Text, as_text
from .measure import clipping_curve, curve_figures, curve_ks, order_in_table, orders_from_importance
from .registry import register
from .single_direction import SingleDirectionResult, run_single_direction


@dataclass
class OrderingsResult(ExperimentResult):
    name = "orderings"

    @property
    def curve(self) -> pd.DataFrame:
        return self.tables["curve"]

    def order(self, ordering: str) -> np.ndarray:
        return order_in_table(self.tables["orders"], ordering)

    def summary(self) -> dict[str, Any]:
        base = self.meta["baseline_logprob"]
        out = {}
        for ordering, c in self.curve.groupby("ordering"):
            out[ordering] = {
                "logprob_at_quarter_d": float(c.iloc[(c.k_frac - 0.25).abs().argmin()].logprob),
                "logprob_at_half_d": float(c.iloc[(c.k_frac - 0.5).abs().argmin()].logprob),
                "logprob_at_three_quarters_d": float(
                    c.iloc[(c.k_frac - 0.75).abs().argmin()].logprob
                ),
                "max_gap_to_unclipped": float(base - c.logprob.min()),
            }
        return out

    def figures(self) -> dict[str, Any]:
        return curve_figures(
            self.curve, self.meta["baseline_logprob"], f"{self.meta['model']['name']}: orderings"
        )


def run_orderings(
    model: Any,
    completion: "Completion | Text",
    *,
    single: SingleDirectionResult | None = None,
    kinds: tuple[str, ...]
    | None = None,  # default: the prepared text's (attention + MLP for a completion)
    compromise: str = "rank_product",
    ks: list[int] | None = None,
    exhaustive: bool = False,
    chunk_size: int | None = None,
    progress: bool = False,
) -> OrderingsResult:
    """Clipping curves in singular-value, importance and compromise order (same k grid)."""
    text = as_text(model, completion, kinds=kinds, chunk_size=chunk_size, progress=progress)
    single = single or run_single_direction(
        model, text, exhaustive=exhaustive, chunk_size=chunk_size, progress=progress
    )
    orders = orders_from_importance(single.importance, compromise)
    ks = ks if ks is not None else curve_ks(text.d_model, exhaustive=exhaustive, jitter=False)
    curves = [clipping_curve(text, name, order, ks=ks) for name, order in orders.items()]
    order_table = pd.DataFrame(
        [(name, pos, int(col)) for name, order in orders.items() for pos, col in enumerate(order)],
        columns=["ordering", "position", "direction"],
    )
    return OrderingsResult(
        tables={"curve": pd.concat(curves, ignore_index=True), "orders": order_table},
        settings={
            "kinds": list(text.kinds),
            "compromise": compromise,
            "n_k": len(ks),
            "exhaustive": exhaustive,
        },
        meta=text.meta(importance_exact_fraction=float(single.importance.exact.mean())),
    )


@register(
    "orderings",
    result=OrderingsResult,
    builtin=True,
    stage="default",
    order=40,
    help="clipping curves under other orderings of the directions (importance, compromise)",
)
def orderings_experiment(
    model: Any,
    text: "Completion | Text",
    *,
    results: Any = None,
    compromise: str = "rank_product",
    ks: list[int] | None = None,
    exhaustive: bool = False,
) -> OrderingsResult:
    """``run_orderings``, reusing the text's ``single_direction`` result when the run has one."""
    return run_orderings(
        model,
        text,
        single=(results or {}).get("single_direction"),
        compromise=compromise,
        ks=ks,
        exhaustive=exhaustive,
    )
