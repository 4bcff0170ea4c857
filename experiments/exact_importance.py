"""The audit's experiment: every claim that uses single-direction importances, from exact ablations.

For one text: the exact importance of every direction (one batch row per direction,
``importance_i = logp - logp(v_i removed from every write)``), and from it

- Spearman(s, importance) with a real permutation null (the importances shuffled over directions,
  ``n_permutations`` times, seeded): its 97.5% point and the one-sided p-value;
- how well the speed tools rank the exact values (``estimators``: first order, first order +
  Fisher/2, and the screened default of ``run_single_direction``, each Spearman and top-10 recall);
- the minimal k of the SVD, exact-importance and exact-compromise orders by
  ``interp.search.scan_first_crossing`` (every k scanned wherever the curve comes within ``band``
  nats of the target), with the study's binary search and the coarse grid's first crossing beside
  it (``minimal_k``; every evaluated point in ``curve``).

The replication runs it on a stated subset of texts (``replicate --exact-texts N``); the claims
about importance read only these numbers (``experiments.study.replication``).
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from interp import Completion
from interp.search import bisect_min_k, first_crossing, scan_first_crossing, stable_crossing

from .base import ExperimentResult, Text, as_text
from .measure import curve_ks, effective_tolerance, estimator_quality, orders_from_importance
from .registry import register
from .single_direction import exhaustive_single_direction, importance_figure

ORDERINGS = ("singular_value", "importance", "compromise_rank_product")


def spearman_permutation_null(
    x: np.ndarray, y: np.ndarray, *, n: int = 10000, seed: int = 0
) -> dict[str, float]:
    """Spearman(x, y) and its permutation null: y's ranks shuffled over the entries ``n`` times
    (seeded). Returns the observed rho, the null's 2.5% and 97.5% points and the one-sided
    p-value of rho (the share of shuffles at least as large, +1 smoothed)."""
    rx = stats.rankdata(x)
    ry = stats.rankdata(y)
    rx = (rx - rx.mean()) / (rx.std() * len(rx))
    ry = (ry - ry.mean()) / ry.std()
    rho = float(rx @ ry)
    rng = np.random.default_rng(seed)
    null = np.empty(n)
    for a in range(0, n, 1000):  # 1000 shuffles at a time: (1000, d) floats
        b = min(a + 1000, n)
        null[a:b] = rng.permuted(np.broadcast_to(ry, (b - a, len(ry))), axis=1) @ rx
    lo, hi = np.percentile(null, [2.5, 97.5])
    return {
        "rho": rho,
        "null_q025": float(lo),
        "null_q975": float(hi),
        "p_one_sided": float((1 + (null >= rho).sum()) / (n + 1)),
        "n_permutations": n,
    }


@dataclass
class ExactImportanceResult(ExperimentResult):
    name = "exact_importance"

    @property
    def importance(self) -> pd.DataFrame:
        return self.tables["importance"]

    def min_k(self, ordering: str = "singular_value", method: str = "exact_scan") -> int:
        t = self.tables["minimal_k"]
        return int(t[(t.ordering == ordering) & (t.method == method)].k.iloc[0])

    def summary(self) -> dict[str, Any]:
        mk = self.tables["minimal_k"]
        est = self.tables["estimators"].set_index("estimator")
        out: dict[str, Any] = dict(self.meta["permutation"])
        out["spearman_sv_importance"] = out.pop("rho")
        out["n_directions"] = len(self.importance)
        noise = self.meta.get("importance_noise", {})
        out["importance_noise_floor"] = noise.get("noise_floor", float("nan"))
        out["n_within_noise_floor"] = noise.get("n_within_noise_floor", -1)
        out["spearman_above_noise_floor"] = noise.get("spearman_above_noise_floor", float("nan"))
        out["top10_sv_ranks"] = (
            self.importance.sort_values("importance", ascending=False).sv_rank.head(10).tolist()
        )
        for r in mk.itertuples():
            out[f"{r.method}_k_frac[{r.ordering}]"] = float(r.k_frac)
        for name, r in est.iterrows():
            out[f"{name}_spearman"] = float(r.spearman)
            out[f"{name}_top10_recall"] = float(r.top10_recall)
        return out

    def figures(self) -> dict[str, Any]:
        import plotly.express as px

        name = self.meta["model"]["name"]
        curve = self.tables["curve"]
        return {
            "exact_importance_vs_singular_value": importance_figure(
                self.importance,
                f"{name}: exact single-direction importance (every direction ablated)",
            ),
            "exact_orders_curve": px.line(
                curve,
                x="k",
                y="logprob",
                color="ordering",
                markers=True,
                render_mode="svg",
                title=(
                    f"{name}: clipping curves in SVD and exact-importance orders (every k near "
                    "the target)"
                ),
            )
            .add_hline(y=self.meta["baseline_logprob"], line_dash="dot")
            .update_layout(yaxis_title="log p(continuation)", xaxis_title="k"),
        }


@register(
    "exact_importance",
    result=ExactImportanceResult,
    builtin=True,
    stage="exact",
    order=0,
    help="the audit's exact stage: every direction ablated, every k scanned near the target",
)
def run_exact_importance(
    model: Any,
    completion: "Completion | Text",
    *,
    kinds: tuple[str, ...] | None = None,
    tolerance: float = 1e-4,
    band: float = 5.0,
    n_permutations: int = 10000,
    seed: int = 0,
    n_fisher: int = 8,
    chunk_size: int | None = None,
    progress: bool = False,
    single: Any = None,
) -> ExactImportanceResult:
    """Exact importances of every direction, the claims built on them, and exact minimal k.
    ``single``: an exhaustive ``run_single_direction`` result of this text to reuse (its
    importances are all exact); anything else is recomputed."""
    text = as_text(model, completion, kinds=kinds, chunk_size=chunk_size, progress=progress)
    d = text.d_model
    single = exhaustive_single_direction(
        model, text, single, n_fisher=n_fisher, seed=seed, chunk_size=chunk_size, progress=progress
    )
    imp = single.importance
    exact = imp.importance.to_numpy()
    s = imp.singular_value.to_numpy()
    nz = s > 0
    perm = spearman_permutation_null(s[nz], exact[nz], n=n_permutations, seed=seed)
    # The noise floor of an exact importance: an ablation row runs in a batch of the sweeps' chunk
    # size, and the same pass with nothing removed differs from the baseline by up to text.noise().
    floor = text.noise()
    above = nz & (np.abs(exact) > floor)
    noise_floor = {
        "noise_floor": floor,
        "noise_by_batch": {str(b): v for b, v in text.noise_by_batch().items()},
        "n_within_noise_floor": int((np.abs(exact) <= floor).sum()),
        "spearman_above_noise_floor": float(stats.spearmanr(s[above], exact[above]).statistic)
        if above.sum() > 2
        else float("nan"),
    }
    estimators = [
        {
            "estimator": name,
            **estimator_quality(imp[col].to_numpy(), exact),
            "spearman_with_s": float(stats.spearmanr(imp[col].to_numpy()[nz], s[nz]).statistic),
        }
        for name, col in (
            ("first_order", "first_order"),
            ("first_plus_half_fisher", "second_order"),
            ("screened_default", "screened_estimate"),
        )
    ]
    orders = orders_from_importance(imp)
    tol = effective_tolerance(tolerance, text.noise())
    target = text.baseline - tol
    grid = curve_ks(d, jitter=False)
    rows, curves = [], []
    evaluators = {
        name: text.evaluator(name, orders[name]) for name in ORDERINGS
    }  # shared with an exhaustive run's
    for name, ev in evaluators.items():
        scan = scan_first_crossing(ev, target, d, grid, band=band)
        searches = {
            "exact_scan": (scan.k, scan.evaluations),
            "grid_first_crossing": (lambda r: (r.k, r.evaluations))(
                first_crossing(ev, target, d, grid)
            ),
            "stable": (lambda r: (r.k, r.evaluations))(stable_crossing(ev, target, d, grid)),
            "bisection": (lambda r: (r.k, r.evaluations))(bisect_min_k(ev, target, d)),
        }
        for method, (k, n_eval) in searches.items():
            rows.append(
                {
                    "ordering": name,
                    "method": method,
                    "k": int(k),
                    "k_frac": k / d,
                    "tolerance": tol,
                    "evaluations": n_eval,
                    "band": band if method == "exact_scan" else np.nan,
                }
            )
        curves.append(ev.table().assign(ordering=name))
    importance = imp[
        [
            "direction",
            "singular_value",
            "sv_rank",
            "importance",
            "importance_rank",
            "first_order",
            "fisher",
            "second_order",
            "screened_estimate",
        ]
    ].copy()
    return ExactImportanceResult(
        tables={
            "importance": importance,
            "minimal_k": pd.DataFrame(rows),
            "estimators": pd.DataFrame(estimators),
            "curve": pd.concat(curves, ignore_index=True)[
                ["ordering", "k", "logprob", "orig_delta", "kept_delta"]
            ],
        },
        settings={
            "kinds": list(text.kinds),
            "tolerance": tolerance,
            "band": band,
            "n_permutations": n_permutations,
            "seed": seed,
            "n_fisher": n_fisher,
        },
        meta=text.meta(
            permutation=perm,
            importance_noise=noise_floor,
            effective_tolerance=tol,
            noise_at_d=text.noise(),
            forward_rows=single.meta["forward_rows"] + sum(ev.n_rows for ev in evaluators.values()),
        ),
    )
