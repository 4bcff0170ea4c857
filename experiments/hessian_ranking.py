"""The study's open idea: rank directions by second-order structure, and check it against exact
single-direction ablations.

f(a) is the continuation's log-probability with every write's component along direction i of
the text's SVD basis scaled by a_i (``interp.hessian``). At a = 1, from one forward pass, one
backward pass with its graph kept and d + n_iter Hessian-vector products:

- ``hessian_second_order``: ``g_i - H_ii / 2``, the second-order Taylor estimate of removing
  direction i (a_i: 1 -> 0); H_ii exact (d HVPs with unit vectors: the full Hessian);
- ``hessian_eigen_loading``: ``sum_k |lambda_k| u_k[i]^2`` over the top ``n_eig`` eigenpairs (by
  |eigenvalue|) from Lanczos on HVPs (unsigned: curvature, not harm); compared with the full
  Hessian's eigenvalues;
- compared with ``first_order`` (g_i, from ``interp.importance``) and ``fisher_second_order``
  (first order + Fisher / 2) and the exact importances (an exhaustive single-direction sweep):
  Spearman, top-10/100 recall, sign agreement, median error (``estimators``);
- the minimal k (the smallest k whose clip reaches the baseline within the effective tolerance,
  by ``experiments.measure.lazy_scan_first_crossing``: the band scan's exact answer) when the
  directions are included in the SVD, exact-importance, Hessian (``hessian_second_order``, largest
  first: "the Hessian order"), eigen-loading, first-order and Fisher orders (``minimal_k``);
- ``failures``: per estimate, the directions it gets most wrong, classified (see ``classify``),
  and ``paths``: the exact log-probability along a_i in {0, 1/4, 1/2, 3/4, 1} for those
  directions beside the first- and second-order predictions (where the Taylor series breaks).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from interp import Completion
from interp.hessian import (
    eigen_loading,
    hessian_matrix,
    hutchinson_diagonal,
    lanczos,
    logprob_of_scales,
    scale_curvature,
    second_order_importance,
)

from .base import ExperimentResult, Text, as_text
from .measure import effective_tolerance, estimator_quality, exact_min_k, ranks_descending
from .registry import register
from .single_direction import exact_table, exhaustive_single_direction

# estimator name -> column of the directions table (values in nats, positive = removal hurts,
# except the eigen loading and the singular value, which are unsigned scores)
VALUE_ESTIMATORS = ("first_order", "fisher_second_order", "hessian_second_order")
ESTIMATORS = (
    "singular_value",
    *VALUE_ESTIMATORS,
    "hessian_eigen_loading",
    "minus_half_hessian_diag",
)
ORDERINGS = {  # ordering -> the column it sorts by (largest first)
    "singular_value": "singular_value",
    "exact_importance": "exact",
    "hessian": "hessian_second_order",
    "hessian_eigen_loading": "hessian_eigen_loading",
    "first_order": "first_order",
    "fisher_second_order": "fisher_second_order",
}
FAILURE_CLASSES = ("sign", "cancellation", "saturation", "underestimate", "magnitude")


def classify(
    estimate: np.ndarray,
    exact: np.ndarray,
    grad: np.ndarray,
    *,
    floor: float,
    ratio: float = 3.0,
    cancel_frac: float = 0.1,
) -> np.ndarray:
    """The kind of error of each estimate (``""`` where ``|estimate - exact| <= floor``):

    - ``sign``: estimate and exact effect of opposite signs, both larger than ``floor``;
    - ``cancellation``: the gradient is near zero (``|g_i| < cancel_frac |exact|``) while the
      exact effect is large, and the estimate misses it (``|estimate| < |exact| / ratio``);
    - ``saturation``: the estimate is much larger than the exact effect (``|estimate| > ratio
      |exact|``): the log-probability's change levels off along the removal (or changes course)
      where the Taylor series keeps growing;
    - ``underestimate``: ``|estimate| < |exact| / ratio`` with a gradient that is not near zero;
    - ``magnitude``: within a factor ``ratio`` of the exact effect but off by more than ``floor``.
    """
    est, ex, g = (np.asarray(x, dtype=np.float64) for x in (estimate, exact, grad))
    err = np.abs(est - ex)
    out = np.full(len(est), "", dtype=object)
    wrong = err > floor
    sign = wrong & (np.sign(est) != np.sign(ex)) & (np.abs(est) > floor) & (np.abs(ex) > floor)
    under = np.abs(est) < np.abs(ex) / ratio
    cancel = wrong & ~sign & under & (np.abs(g) < cancel_frac * np.abs(ex))
    sat = wrong & ~sign & (np.abs(est) > ratio * np.abs(ex))
    out[wrong] = "magnitude"
    out[wrong & under] = "underestimate"
    out[sat] = "saturation"
    out[cancel] = "cancellation"
    out[sign] = "sign"
    return out


def symlog(x: np.ndarray, scale: float) -> np.ndarray:
    """``sign(x) log10(1 + |x| / scale)``: a log axis for values of both signs (linear below
    ``scale``)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.log10(1 + np.abs(x) / scale)


@dataclass
class HessianRankingResult(ExperimentResult):
    name = "hessian_ranking"

    @property
    def directions(self) -> pd.DataFrame:
        return self.tables["directions"]

    def min_k(self, ordering: str) -> int:
        t = self.tables["minimal_k"]
        return int(t[t.ordering == ordering].k.iloc[0])

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: self.meta[k]
            for k in (
                "n_directions",
                "n_hvp",
                "n_backward",
                "effective_tolerance",
                "noise_floor",
                "curvature_value_minus_baseline",
                "grad_minus_first_order_max_abs",
                "lanczos_max_rel_error",
                "path_a0_minus_exact_max_abs",
            )
            if k in self.meta
        }
        for r in self.tables["estimators"].itertuples():
            out[f"{r.estimator}_spearman"] = float(r.spearman_with_exact)
            out[f"{r.estimator}_top10_recall"] = float(r.top10_recall)
        for r in self.tables["minimal_k"].itertuples():
            out[f"k[{r.ordering}]"] = int(r.k)
            out[f"k_frac[{r.ordering}]"] = float(r.k_frac)
        eig = self.tables["eigen"]
        if len(eig):
            out["top_eigenvalue"] = float(eig.eigenvalue.iloc[0])
        counts = self.meta.get("failure_counts", {})
        for est, by_class in counts.items():
            for cls, n in by_class.items():
                out[f"{est}_n_{cls}"] = int(n)
        return out

    def figures(self) -> dict[str, Any]:
        import plotly.express as px

        t = self.directions
        scale = float(self.settings.get("symlog_scale", 1e-3))
        long = pd.concat(
            [
                pd.DataFrame(
                    {
                        "direction": t.direction,
                        "estimator": name,
                        "exact": symlog(t.exact, scale),
                        "estimate": symlog(t[name], scale),
                        "sv_rank": t.sv_rank,
                    }
                )
                for name in VALUE_ESTIMATORS
            ],
            ignore_index=True,
        )
        model = self.meta["model"]["name"]
        figs = {
            "estimate_vs_exact": px.scatter(
                long,
                x="exact",
                y="estimate",
                facet_col="estimator",
                hover_data=["direction", "sv_rank"],
                render_mode="svg",
                title=(
                    f"{model}: estimated vs exact single-direction importance (symlog: sign(x) "
                    f"log10(1 + |x|/{scale:g}))"
                ),
            ).update_layout(
                xaxis_title="exact (symlog nats)", yaxis_title="estimate (symlog nats)"
            ),
            "minimal_k": px.bar(
                self.tables["minimal_k"],
                x="ordering",
                y="k_frac",
                hover_data=["k", "evaluations"],
                title=(
                    f"{model}: minimal k / d by inclusion order (tolerance "
                    f"{self.meta.get('effective_tolerance', 0):.2g} nats)"
                ),
            ).update_layout(yaxis_title="minimal k / d_model"),
        }
        paths = self.tables.get("paths")
        if paths is not None and len(paths):
            p = paths.melt(
                id_vars=["direction", "a"],
                value_vars=["exact", "first_order", "second_order"],
                var_name="curve",
                value_name="change",
            )
            figs["removal_paths"] = px.line(
                p,
                x="a",
                y="change",
                color="curve",
                facet_col="direction",
                facet_col_wrap=4,
                markers=True,
                render_mode="svg",
                title=(
                    f"{model}: logp(a_i) - logp along the removal of the worst-estimated directions"
                ),
            )
        return figs


@dataclass
class Curvature:
    """The model's part of the ranking (``measure_curvature``): the gradient, the Hessian's
    diagonal (and the full Hessian when ``diagonal="exact"``), the Lanczos eigenpairs, and the
    curvature pass's counts and value."""

    grad: np.ndarray
    hdiag: np.ndarray
    full: torch.Tensor | None
    pairs: Any
    n_hvp: int
    n_backward: int
    value: float


def measure_curvature(
    model: Any,
    text: Text,
    *,
    diagonal: str,
    n_probes: int,
    n_eig: int,
    n_iter: int | None,
    seed: int,
    hvp_chunk: int,
) -> Curvature:
    """One forward and backward pass with its graph kept, then the Hessian-vector products: the
    diagonal (exact: d HVPs, the full Hessian; or Hutchinson: ``n_probes``) and ``n_eig``
    eigenpairs by Lanczos."""
    d = text.d_model
    curv = scale_curvature(model, text.completion, text.basis.vectors, kinds=text.kinds)
    try:
        g = curv.grad.numpy()
        full = None
        if diagonal == "exact":
            full = hessian_matrix(curv.hvp, d, chunk_size=hvp_chunk)
            hdiag = torch.diagonal(full).numpy().copy()
        else:
            hdiag = hutchinson_diagonal(
                curv.hvp, d, n_probes=n_probes, seed=seed, chunk_size=hvp_chunk
            ).numpy()
        pairs = lanczos(curv.hvp, d, n_eig, n_iter, seed=seed)
    finally:
        curv.close()
    return Curvature(g, hdiag, full, pairs, curv.n_hvp, curv.n_backward, curv.value)


def directions_table(imp: pd.DataFrame, curv: Curvature) -> pd.DataFrame:
    """Per direction: singular value, exact importance, every estimate and its rank (no model
    call)."""
    ex = imp.importance.to_numpy(dtype=np.float64)
    s = imp.singular_value.to_numpy(dtype=np.float64)
    g, hdiag = curv.grad, curv.hdiag
    t = pd.DataFrame(
        {
            "direction": np.arange(len(ex)),
            "singular_value": s,
            "sv_rank": ranks_descending(s),
            "exact": ex,
            "exact_rank": ranks_descending(ex),
            "first_order": imp.first_order.to_numpy(dtype=np.float64),
            "fisher": imp.fisher.to_numpy(dtype=np.float64),
            "fisher_second_order": imp.second_order.to_numpy(dtype=np.float64),
            "grad": g,
            "hessian_diag": hdiag,
            "hessian_second_order": second_order_importance(g, hdiag),
            "minus_half_hessian_diag": -hdiag / 2,
            "hessian_eigen_loading": eigen_loading(curv.pairs),
        }
    )
    for name in (
        "first_order",
        "fisher_second_order",
        "hessian_second_order",
        "hessian_eigen_loading",
    ):
        t[f"{name}_rank"] = ranks_descending(t[name].to_numpy())
    return t


def estimators_table(t: pd.DataFrame, err_floor: float) -> pd.DataFrame:
    """Each estimate against the exact importances: Spearman, top-10/100 recall, and for the
    value estimates sign agreement (where ``|exact| > err_floor``) and median error."""
    ex = t.exact.to_numpy()
    significant = np.abs(ex) > err_floor
    rows = []
    for name in ESTIMATORS:
        est = t[name].to_numpy()
        q = estimator_quality(est, ex)
        row = {
            "estimator": name,
            "spearman_with_exact": q["spearman"],
            "top10_recall": q["top10_recall"],
            "top100_recall": q["top100_recall"],
            "spearman_with_abs_exact": float(stats.spearmanr(est, np.abs(ex)).statistic),
            "sign_agreement": np.nan,
            "median_abs_error": np.nan,
            "n_significant": int(significant.sum()),
        }
        if name in VALUE_ESTIMATORS:
            row["sign_agreement"] = (
                float((np.sign(est[significant]) == np.sign(ex[significant])).mean())
                if significant.any()
                else np.nan
            )
            row["median_abs_error"] = float(np.median(np.abs(est - ex)))
        rows.append(row)
    return pd.DataFrame(rows)


def eigen_table(curv: Curvature, sv_rank: pd.Series) -> tuple[pd.DataFrame, float]:
    """The Lanczos eigenpairs beside the full Hessian's eigenvalues (same |value| order), and the
    largest relative error of the Lanczos values (NaN without the full Hessian)."""
    pairs, full = curv.pairs, curv.full
    eig_rows = []
    full_vals = None
    if full is not None:
        ev = torch.linalg.eigvalsh(full)
        full_vals = ev[torch.argsort(ev.abs(), descending=True)].numpy()
    vec = pairs.vectors.numpy()
    for k in range(len(pairs.values)):
        top = np.argsort(-np.abs(vec[:, k]))[:5]
        eig_rows.append(
            {
                "index": k,
                "eigenvalue": float(pairs.values[k]),
                "residual": float(pairs.residuals[k]),
                "full_hessian_eigenvalue": float(full_vals[k]) if full_vals is not None else np.nan,
                "top_directions": " ".join(str(int(i)) for i in top),
                "top_loadings": " ".join(f"{vec[i, k]:+.3f}" for i in top),
                "top_sv_ranks": " ".join(str(int(sv_rank[i])) for i in top),
            }
        )
    eigen = pd.DataFrame(eig_rows)
    lanczos_err = (
        float(
            np.max(
                np.abs(eigen.eigenvalue - eigen.full_hessian_eigenvalue)
                / np.abs(eigen.full_hessian_eigenvalue).max()
            )
        )
        if full_vals is not None
        else np.nan
    )
    return eigen, lanczos_err


def minimal_k_table(
    text: Text, t: pd.DataFrame, *, tolerance: float, band: float, tol: float
) -> pd.DataFrame:
    """The minimal k per inclusion order (the lazy band scan: exact where the curve nears the
    target); model calls through the text's evaluators."""
    d = text.d_model
    mk = []
    for ordering, column in ORDERINGS.items():
        order = np.argsort(-t[column].to_numpy(), kind="stable")
        name = (
            "singular_value"
            if ordering == "singular_value"
            else ("importance" if ordering == "exact_importance" else f"hessian_ranking:{ordering}")
        )
        ev = text.evaluator(name, None if ordering == "singular_value" else order)
        before = ev.n_rows
        scan, _ = exact_min_k(ev, text, tolerance=tolerance, band=band)
        mk.append(
            {
                "ordering": ordering,
                "k": scan.k,
                "k_frac": scan.k / d,
                "tolerance": tol,
                "evaluations": scan.evaluations,
                "scanned": scan.scanned,
                "new_rows": ev.n_rows - before,
                "band": band,
            }
        )
    return pd.DataFrame(mk)


FAILURE_COLUMNS = [
    "estimator",
    "direction",
    "sv_rank",
    "exact",
    "estimate",
    "error",
    "grad",
    "hessian_diag",
    "fisher",
    "failure",
]
PATH_COLUMNS = ["direction", "a", "exact", "first_order", "second_order", "fisher_second_order"]


def failures_table(
    t: pd.DataFrame, *, err_floor: float, ratio: float, cancel_frac: float, n_failures: int
) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """Per value estimate, the ``n_failures`` directions with the largest errors, classified
    (``classify``), and the count of each class (no model call)."""
    ex, g, hdiag = t.exact.to_numpy(), t.grad.to_numpy(), t.hessian_diag.to_numpy()
    fails, counts = [], {}
    for name in VALUE_ESTIMATORS:
        est = t[name].to_numpy()
        cls = classify(est, ex, g, floor=err_floor, ratio=ratio, cancel_frac=cancel_frac)
        counts[name] = {c: int((cls == c).sum()) for c in FAILURE_CLASSES}
        worst = [i for i in np.argsort(-np.abs(est - ex), kind="stable") if cls[i]][:n_failures]
        for i in worst:
            fails.append(
                {
                    "estimator": name,
                    "direction": int(i),
                    "sv_rank": int(t.sv_rank[i]),
                    "exact": ex[i],
                    "estimate": est[i],
                    "error": est[i] - ex[i],
                    "grad": g[i],
                    "hessian_diag": hdiag[i],
                    "fisher": float(t.fisher[i]),
                    "failure": cls[i],
                }
            )
    return pd.DataFrame(fails, columns=FAILURE_COLUMNS), counts


def path_logprobs(
    model: Any, text: Text, dirs: list[int], points: list[float], chunk_size: int | None
) -> np.ndarray:
    """The exact log-probability with direction i scaled to a, for every (i, a) of ``dirs`` x
    ``points`` (in that order)."""
    d = text.d_model
    a = torch.ones(len(dirs) * len(points), d, dtype=torch.float64)
    for j, (i, p) in enumerate((i, p) for i in dirs for p in points):
        a[j, i] = p
    batch = chunk_size or 16
    with torch.inference_mode():
        return torch.cat(
            [
                logprob_of_scales(
                    model, text.completion, text.basis.vectors, a[s0 : s0 + batch], kinds=text.kinds
                )
                for s0 in range(0, len(a), batch)
            ]
        ).numpy()


def paths_table(
    t: pd.DataFrame, dirs: list[int], points: list[float], lp: np.ndarray | None, baseline: float
) -> pd.DataFrame:
    """The exact path a_i: 1 -> 0 of each direction in ``dirs`` (``lp`` from ``path_logprobs``)
    beside the first- and second-order predictions (no model call)."""
    g, hdiag = t.grad.to_numpy(), t.hessian_diag.to_numpy()
    path_rows = []
    if dirs:
        for j, (i, p) in enumerate((i, p) for i in dirs for p in points):
            step = 1.0 - p
            path_rows.append(
                {
                    "direction": i,
                    "a": p,
                    "exact": lp[j] - baseline,
                    "first_order": -g[i] * step,
                    "second_order": -g[i] * step + hdiag[i] * step**2 / 2,
                    "fisher_second_order": -t.first_order[i] * step - t.fisher[i] * step**2 / 2,
                }
            )
        for i in dirs:
            path_rows.append(
                {
                    "direction": i,
                    "a": 1.0,
                    "exact": 0.0,
                    "first_order": 0.0,
                    "second_order": 0.0,
                    "fisher_second_order": 0.0,
                }
            )
    return (
        pd.DataFrame(path_rows, columns=PATH_COLUMNS)
        .sort_values(["direction", "a"])
        .reset_index(drop=True)
    )


@register(
    "hessian_ranking",
    result=HessianRankingResult,
    builtin=True,
    help=(
        "directions ranked by the Hessian of log p in per-direction scales, against exact ablations"
    ),
)
def run_hessian_ranking(
    model: Any,
    completion: "Completion | Text",
    *,
    kinds: tuple[str, ...] | None = None,
    n_eig: int = 10,
    n_iter: int | None = None,
    exact: Any = None,
    results: Mapping[str, Any] | None = None,
    diagonal: str = "exact",
    n_probes: int = 32,
    tolerance: float = 1e-4,
    band: float = 5.0,
    seed: int = 0,
    n_fisher: int = 8,
    hvp_chunk: int = 32,
    n_failures: int = 8,
    ratio: float = 3.0,
    cancel_frac: float = 0.1,
    path_points: tuple[float, ...] = (0.25, 0.5, 0.75),
    chunk_size: int | None = None,
    progress: bool = False,
) -> HessianRankingResult:
    """Second-order ranking of the text's SVD directions against exact ablations.

    ``exact``: an ``ExactImportanceResult`` or exhaustive ``SingleDirectionResult`` of this text
    to reuse (default: the run's ``results["exact_importance"]``, the exact stage, when it has
    one; else an exhaustive ``run_single_direction``: d ablation rows). ``diagonal``:
    ``"exact"`` (d HVPs, the full Hessian) or ``"hutchinson"`` (``n_probes`` HVPs, an estimate).
    ``n_eig`` eigenpairs by ``n_iter`` Lanczos steps (one HVP each). Failures: an error counts
    where ``|estimate - exact| > max(0.01 nats, 10 x the text's noise)``; ``ratio`` and
    ``cancel_frac`` are ``classify``'s thresholds.
    """
    if diagonal not in ("exact", "hutchinson"):
        raise ValueError(f"diagonal must be 'exact' or 'hutchinson', got {diagonal!r}")
    text = as_text(model, completion, kinds=kinds, chunk_size=chunk_size, progress=progress)
    d = text.d_model
    if exact is None:
        exact = (results or {}).get("exact_importance")
    imp = exact_table(
        exhaustive_single_direction(
            model,
            text,
            exact,
            n_fisher=n_fisher,
            seed=seed,
            chunk_size=chunk_size,
            progress=progress,
        ),
        d,
    )
    curv = measure_curvature(
        model,
        text,
        diagonal=diagonal,
        n_probes=n_probes,
        n_eig=n_eig,
        n_iter=n_iter,
        seed=seed,
        hvp_chunk=hvp_chunk,
    )
    t = directions_table(imp, curv)
    floor_noise = text.noise()
    err_floor = max(0.01, 10 * floor_noise)
    estimators = estimators_table(t, err_floor)
    eigen, lanczos_err = eigen_table(curv, t.sv_rank)
    tol = effective_tolerance(tolerance, floor_noise)  # exact_min_k's, for the meta
    minimal_k = minimal_k_table(text, t, tolerance=tolerance, band=band, tol=tol)
    failures, counts = failures_table(
        t, err_floor=err_floor, ratio=ratio, cancel_frac=cancel_frac, n_failures=n_failures
    )
    dirs = sorted(set(failures.direction.tolist()))
    points = sorted({0.0, *map(float, path_points)})
    lp = path_logprobs(model, text, dirs, points, chunk_size) if dirs else None
    paths = paths_table(t, dirs, points, lp, text.baseline)
    a0 = paths[paths.a == 0.0]
    ex = t.exact.to_numpy()
    a0_err = (
        float(np.max(np.abs(-a0.exact.to_numpy() - ex[a0.direction.to_numpy()])))
        if len(a0)
        else np.nan
    )
    settings = {
        "kinds": list(text.kinds),
        "n_eig": n_eig,
        "n_iter": curv.pairs.n_iter,
        "diagonal": diagonal,
        "n_probes": n_probes if diagonal == "hutchinson" else None,
        "tolerance": tolerance,
        "band": band,
        "seed": seed,
        "n_fisher": n_fisher,
        "hvp_chunk": hvp_chunk,
        "n_failures": n_failures,
        "ratio": ratio,
        "cancel_frac": cancel_frac,
        "error_floor": err_floor,
        "path_points": points,
        "symlog_scale": 1e-3,
        "exact_reused": exact_table(exact, d) is not None,
    }
    return HessianRankingResult(
        tables={
            "directions": t,
            "estimators": estimators,
            "eigen": eigen,
            "minimal_k": minimal_k,
            "failures": failures,
            "paths": paths,
        },
        settings=settings,
        meta=text.meta(
            n_directions=d,
            n_hvp=curv.n_hvp,
            n_backward=curv.n_backward,
            effective_tolerance=tol,
            noise_floor=floor_noise,
            curvature_value_minus_baseline=curv.value - text.baseline,
            grad_minus_first_order_max_abs=float(
                np.max(np.abs(curv.grad - t.first_order.to_numpy()))
            ),
            lanczos_max_rel_error=lanczos_err,
            path_a0_minus_exact_max_abs=a0_err,
            failure_counts=counts,
        ),
    )


hessian_ranking_plugin = (
    run_hessian_ranking  # the name it was registered under before it took ``results`` itself
)
