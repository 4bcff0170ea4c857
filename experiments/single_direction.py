"""Experiment 3: remove one singular direction at a time from every write and measure the change
in the continuation's log-probability; compare with the singular value.

``importance_i = logp(unclipped) - logp(v_i removed)``: positive when the direction helps the
continuation. Computed exactly (batched, one batch row per direction) and, optionally, by the
first-order gradient estimate (one forward + backward pass).
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from interp import Basis, Completion, normalize_kinds
from interp.sweeps import ablation_sweep, gradient_importance

from .base import ExperimentResult, basis_for, run_meta
from .clipping import baseline_logprob


def ranks_descending(values: np.ndarray) -> np.ndarray:
    """0 for the largest value (ties broken by position)."""
    order = np.argsort(-values, kind="stable")
    ranks = np.empty_like(order)
    ranks[order] = np.arange(len(values))
    return ranks


def top_k_agreement(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Fraction of the top-k (largest) of ``a`` that are also in the top-k of ``b``."""
    k = min(k, len(a))
    return len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k if k else float("nan")


@dataclass
class SingleDirectionResult(ExperimentResult):
    name = "single_direction"

    @property
    def importance(self) -> pd.DataFrame:
        return self.tables["importance"]

    def summary(self) -> dict[str, Any]:
        t = self.importance
        t = t[t.singular_value > 0]
        if "exact" in t:  # screened runs: statistics over the exactly computed directions only
            t = t[t.exact.astype(bool)]
        out = {
            "n_exact": len(t),
            "spearman_sv_importance": float(stats.spearmanr(t.singular_value, t.importance).statistic),
            "pearson_sv_importance": float(stats.pearsonr(t.singular_value, t.importance).statistic),
            "spearman_sv_abs_importance": float(stats.spearmanr(t.singular_value, t.importance.abs()).statistic),
            "n_helpful_removals": int((t.importance < 0).sum()),
            "most_important_direction": int(t.loc[t.importance.idxmax(), "direction"]),
        }
        if "gradient_importance" in t:
            out["gradient_spearman"] = float(stats.spearmanr(t.gradient_importance, t.importance).statistic)
            out["gradient_top10_agreement"] = top_k_agreement(t.gradient_importance.values, t.importance.values, 10)
            out["gradient_top100_agreement"] = top_k_agreement(t.gradient_importance.values, t.importance.values, 100)
        return out

    def figures(self) -> dict[str, Any]:
        import plotly.express as px

        t = self.importance[self.importance.singular_value > 0].assign(
            abs_importance=lambda d: d.importance.abs().clip(lower=1e-12),
            sign=lambda d: np.where(d.importance >= 0, "removal hurts", "removal helps"),
        )
        title = f"{self.meta['model']['name']}: single-direction importance"
        figs = {
            "importance_vs_singular_value": px.scatter(
                t, x="singular_value", y="abs_importance", color="sign", log_x=True, log_y=True,
                hover_data=["direction", "importance"], title=title,
            ).update_layout(yaxis_title="|logp - logp(direction removed)| (nats)")
        }
        if "gradient_importance" in t:
            figs["gradient_vs_exact"] = px.scatter(
                t, x="importance", y="gradient_importance", hover_data=["direction"],
                title=f"{self.meta['model']['name']}: first-order estimate vs exact importance",
            )
        return figs


def run_single_direction(
    model: Any,
    completion: Completion,
    *,
    basis: Basis | None = None,
    kinds: tuple[str, ...] = ("attn", "mlp"),
    gradient: bool = True,
    n_exact: int | None = None,
    n_deviations: int = 15,
    chunk_size: int | None = None,
    progress: bool = False,
) -> SingleDirectionResult:
    """Exact importance of every direction, or (``n_exact``) of the ``n_exact`` directions with the
    largest first-order estimate |effect|, the others keeping the estimate (column ``exact``)."""
    kinds = normalize_kinds(kinds)
    basis = basis or basis_for(model, completion, kinds=kinds)
    base, _ = baseline_logprob(model, completion)
    s = basis.singular_values.numpy()
    estimate = None
    if gradient or n_exact is not None:
        estimate = -gradient_importance(model, completion, basis.vectors, kinds=kinds).numpy()
    columns = np.arange(len(s))
    if n_exact is not None:
        columns = np.sort(np.argsort(-np.abs(estimate), kind="stable")[:n_exact])
    sweep = ablation_sweep(
        model, completion, basis.vectors, columns=columns.tolist(), kinds=kinds, chunk_size=chunk_size, progress=progress
    )
    importance = estimate.copy() if estimate is not None else np.zeros(len(s))
    importance[columns] = base - sweep.logprob.numpy()
    exact = np.zeros(len(s), dtype=bool)
    exact[columns] = True
    table = pd.DataFrame(
        {
            "direction": np.arange(len(s)),
            "singular_value": s,
            "sv_rank": ranks_descending(s),
            "logprob_ablated": np.where(exact, base - importance, np.nan),
            "importance": importance,
            "importance_rank": ranks_descending(importance),
            "exact": exact,
        }
    )
    if estimate is not None:
        table["gradient_importance"] = estimate
    nz = table[table.singular_value > 0]
    deviations = (
        nz.assign(rank_gap=(nz.sv_rank - nz.importance_rank).abs())
        .sort_values("rank_gap", ascending=False)
        .head(n_deviations)
        .reset_index(drop=True)
    )
    return SingleDirectionResult(
        tables={"importance": table, "deviations": deviations},
        settings={"kinds": list(kinds), "gradient": gradient, "n_exact": n_exact, "n_passes": sweep.n_passes},
        meta=run_meta(model, completion, baseline_logprob=base),
    )
