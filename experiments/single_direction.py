"""Experiment 3: remove one singular direction at a time from every write and measure the change
in the continuation's log-probability; compare with the singular value.

``importance_i = logp(unclipped) - logp(v_i removed)``: positive when the direction helps the
continuation. Computed exactly (batched, one batch row per direction; ``exhaustive=True``) or
screened (default): a second-order estimate for every direction, exact ablations where they
matter (``interp.importance``).
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from interp import Completion
from interp.importance import screened_importance, taylor_importance
from interp.sweeps import ablation_sweep

from .base import ExperimentResult, Text, as_text
from .measure import estimator_quality, ranks_descending
from .registry import register


@dataclass
class SingleDirectionResult(ExperimentResult):
    name = "single_direction"

    @property
    def importance(self) -> pd.DataFrame:
        return self.tables["importance"]

    def summary(self) -> dict[str, Any]:
        t = self.importance
        t = t[t.singular_value > 0]
        top = t.sort_values("importance", ascending=False)
        out = {
            "n_directions": len(t),
            "n_exact": int(t.exact.sum()),
            "spearman_sv_importance": float(
                stats.spearmanr(t.singular_value, t.importance).statistic
            ),
            "pearson_sv_importance": float(
                stats.pearsonr(t.singular_value, t.importance).statistic
            ),
            "spearman_sv_abs_importance": float(
                stats.spearmanr(t.singular_value, t.importance.abs()).statistic
            ),
            "median_importance": float(t.importance.median()),
            "n_helpful_removals": int((t.importance < 0).sum()),
            "most_important_direction": int(top.direction.iloc[0]),
            "top10_directions": top.direction.head(10).tolist(),
            "top10_sv_ranks": top.sv_rank.head(10).tolist(),
        }
        out.update(self.meta.get("estimator_quality", {}))
        return out

    def figures(self) -> dict[str, Any]:
        import plotly.express as px

        title = f"{self.meta['model']['name']}: single-direction importance"
        figs = {"importance_vs_singular_value": importance_figure(self.importance, title)}
        t = self.importance
        ex = t[(t.singular_value > 0) & t.exact]
        if len(ex) and "second_order" in t:
            figs["estimate_vs_exact"] = px.scatter(
                ex.assign(second_order=ex.second_order),
                x="importance",
                y="second_order",
                hover_data=["direction"],
                title=(
                    f"{self.meta['model']['name']}: second-order (Fisher) estimate vs exact "
                    "importance"
                ),
                render_mode="svg",
            ).update_layout(
                xaxis_title="exact importance (nats)", yaxis_title="first order + Fisher / 2"
            )
        return figs


def importance_figure(importance: pd.DataFrame, title: str, *, floor: float = 1e-6) -> Any:
    """|importance| against the singular value of every direction with a nonzero one (log-log;
    colour: the sign of the importance, symbol: exact or estimated when the table says, an
    exact-importance table being exact throughout; |importance| below ``floor`` drawn at it):
    SingleDirectionResult's ``importance_vs_singular_value``, ExactImportanceResult's
    ``exact_importance_vs_singular_value`` and the report's ``importance_scatter``."""
    import plotly.express as px

    t = importance[importance.singular_value > 0].assign(
        abs_importance=lambda d: d.importance.abs().clip(lower=floor),
        sign=lambda d: np.where(d.importance >= 0, "removal hurts", "removal helps"),
    )
    if "exact" in t:
        t = t.assign(how=np.where(t.exact, "exact", "estimated"))
    return px.scatter(
        t,
        x="singular_value",
        y="abs_importance",
        color="sign",
        symbol="how" if "how" in t else None,
        log_x=True,
        log_y=True,
        hover_data=["direction", "importance"],
        title=title,
        render_mode="svg",
    ).update_layout(
        yaxis_title="|logp - logp(direction removed)| (nats)", xaxis_title="singular value"
    )


def default_screen(d: int, n_exact: int | None = None) -> tuple[int, int, int]:
    """Exact ablations of the screened default: (top by estimate, top by singular value,
    calibration sample) in proportions 3 : 1 : 2, about 8% of d in all (24, 8, 16 for d = 576;
    ``n_exact`` overrides the total). Chosen on SmolLM2's exact sweeps (docs/performance.md)."""
    total = n_exact if n_exact is not None else max(12, round(0.083 * d))
    n_score = max(1, round(total * 3 / 6))
    n_sv = max(1, round(total / 6))
    return n_score, n_sv, max(total - n_score - n_sv, 0)


def run_single_direction(
    model: Any,
    completion: "Completion | Text",
    *,
    kinds: tuple[str, ...]
    | None = None,  # default: the prepared text's (attention + MLP for a completion)
    exhaustive: bool = False,
    n_exact: int | None = None,
    n_fisher: int = 8,
    seed: int = 0,
    n_deviations: int = 15,
    chunk_size: int | None = None,
    progress: bool = False,
) -> SingleDirectionResult:
    """Importance of every direction: exact for all (``exhaustive``) or screened (default).

    Screened: the Taylor estimate (first order + Fisher, ``interp.importance``) from one forward
    and ``1 + n_fisher`` backward passes, exact ablations for the directions on top by that
    estimate and by singular value plus a calibration sample (about 8% of d_model in all, or
    ``n_exact``), the calibrated estimate for the rest (column ``exact`` says which is which).
    Exhaustive runs also report how well the screened estimate would have done (its Spearman and
    top-10 recall against the exact values).
    """
    text = as_text(model, completion, kinds=kinds, chunk_size=chunk_size, progress=progress)
    base, basis = text.baseline, text.basis
    s = basis.singular_values.numpy()
    d = len(s)
    estimate = taylor_importance(
        model, text.completion, basis.vectors, kinds=text.kinds, n_fisher=n_fisher, seed=seed
    )
    rows = {"n": 0, "passes": 0}

    def exact_fn(columns: np.ndarray) -> np.ndarray:
        sweep = ablation_sweep(
            model,
            text.completion,
            basis.vectors,
            columns=columns.tolist(),
            kinds=text.kinds,
            chunk_size=chunk_size,
            progress=progress,
        )
        rows["n"] += len(columns)
        rows["passes"] += sweep.n_passes
        return base - sweep.logprob.numpy()

    n_score, n_top_sv, n_cal = default_screen(d, n_exact)
    quality = {}
    if exhaustive:
        importance = exact_fn(np.arange(d))
        exact = np.ones(d, dtype=bool)
        screened = screened_importance(
            estimate,
            s,
            lambda c: importance[c],
            n_score=n_score,
            n_top_sv=n_top_sv,
            n_calibration=n_cal,
        )
        for name, values in (
            ("first_order", estimate.first_order),
            ("second_order", estimate.second_order),
            ("screened", screened.importance),
        ):
            quality.update(
                {f"{name}_{k}": v for k, v in estimator_quality(values, importance).items()}
            )
        quality["screened_exact_rows"] = screened.n_exact_rows
    else:
        screened = screened_importance(
            estimate, s, exact_fn, n_score=n_score, n_top_sv=n_top_sv, n_calibration=n_cal
        )
        importance, exact = screened.importance, screened.exact
    table = pd.DataFrame(
        {
            "direction": np.arange(d),
            "singular_value": s,
            "sv_rank": ranks_descending(s),
            "logprob_ablated": np.where(exact, base - importance, np.nan),
            "importance": importance,
            "importance_rank": ranks_descending(importance),
            "exact": exact,
            "first_order": estimate.first_order,
            "fisher": estimate.fisher,
            "second_order": estimate.second_order,
            "screened_estimate": screened.calibrated,
        }
    )
    nz = table[table.singular_value > 0]
    deviations = (
        nz.assign(rank_gap=(nz.sv_rank - nz.importance_rank).abs())
        .sort_values("rank_gap", ascending=False)
        .head(n_deviations)
        .reset_index(drop=True)
    )
    return SingleDirectionResult(
        tables={"importance": table, "deviations": deviations},
        settings={
            "kinds": list(text.kinds),
            "exhaustive": exhaustive,
            "n_fisher": n_fisher,
            "seed": seed,
            "screen": {"n_score": n_score, "n_top_sv": n_top_sv, "n_calibration": n_cal},
        },
        meta=text.meta(
            estimator_quality=quality,
            forward_rows=rows["n"],
            forward_passes=rows["passes"],
            backward_passes=estimate.n_backward,
            score_weights=screened.coefficients[1:].tolist(),
        ),
    )


@register(
    "single_direction",
    result=SingleDirectionResult,
    builtin=True,
    stage="default",
    order=30,
    help="each direction's importance: exact ablations where screened, Taylor estimates elsewhere",
)
def single_direction_experiment(
    model: Any,
    text: "Completion | Text",
    *,
    exhaustive: bool = False,
    n_exact: int | None = None,
    n_fisher: int = 8,
    seed: int = 0,
    n_deviations: int = 15,
) -> SingleDirectionResult:
    """``run_single_direction`` as the pipeline runs it (its own chunk size: the run's is not
    passed)."""
    return run_single_direction(
        model,
        text,
        exhaustive=exhaustive,
        n_exact=n_exact,
        n_fisher=n_fisher,
        seed=seed,
        n_deviations=n_deviations,
    )


def exact_table(reuse: Any, d: int) -> pd.DataFrame | None:
    """The importance table of ``reuse`` (a single-direction or exact-importance result, or such a
    table, e.g. one read back from a run's docs) sorted by direction, when it holds the exact
    importance of every one of the ``d`` directions; else None. An exact-importance table has no
    ``exact`` column: each of its rows is an ablation."""
    if reuse is None:
        return None
    t = reuse.tables["importance"] if hasattr(reuse, "tables") else reuse
    if len(t) != d or ("exact" in t and not bool(t.exact.all())):
        return None
    return t.sort_values("direction").reset_index(drop=True)


def exhaustive_single_direction(
    model: Any,
    text: Text,
    reuse: Any = None,
    *,
    n_fisher: int = 8,
    seed: int = 0,
    chunk_size: int | None = None,
    progress: bool = False,
) -> Any:
    """``reuse`` when it is exact for every direction (``exact_table``), else an exhaustive
    ``run_single_direction`` of the text (d ablation rows)."""
    if exact_table(reuse, text.d_model) is not None:
        return reuse
    return run_single_direction(
        model,
        text,
        exhaustive=True,
        n_fisher=n_fisher,
        seed=seed,
        chunk_size=chunk_size,
        progress=progress,
    )
