"""Would the study's own procedure report 46-81% on this model? One text, two lengths, three
searches.

The study (Llama-3-8B, d_model 4096) found the smallest k whose clipped model gives the continuation
at least its unclipped log-probability by a binary search with no tolerance, most likely in
bfloat16, on texts of a prompt and 64 sampled tokens. This experiment runs that procedure on one
text of a small model beside the exact answer, under two conditions:

- ``full``: the text as sampled (the study's length in tokens: up to 64 new tokens);
- ``scaled``: its continuation cut to the study's *new tokens per residual dimension*,
  ``round(64 * d_model / 4096)`` tokens (9 on SmolLM2-135M, 10 on Gemma-3-270M), with a fresh SVD
  basis of the cut text's own writes (``experiments.texts.cut_continuation``). The prompt is
  not cut, so the cut text has more tokens per dimension in all than the study's 71 on 4096
  (``tokens_per_dim`` says how many).

Per condition, three answers (``minimal`` table, ``method`` column):

- ``exact_scan`` (float32): the smallest k with ``logp(k) >= unclipped - tol`` (tol as in
  ``experiments.measure.effective_tolerance``), every k scanned where the curve is within
  ``band`` nats of the target (``experiments.measure.lazy_scan_first_crossing``);
- ``study_bisection`` (float32): ``interp.search.study_bisection`` on the same memoized curve,
  target the unclipped log-probability exactly;
- ``study_bisection`` (bfloat16): the same bisection run for real on a bfloat16 copy of the model
  (``experiments.measure.cast_copy``; the caller's model is not touched), every probe
  scored alone (batch 1) against the bfloat16 model's own unclipped log-probability (batch 1). The
  directions are the float32 basis of the text (the same subspaces as the float32 searches).

``gap`` holds where the float32 curve closes 50/90/99% of the gap between k = 0 and the unclipped
log-probability and comes within 1/5/10 nats of it, read off the evaluated k
(``experiments.measure.gap_closure_evaluated``: ``exact`` marks the every-k answers).

The replication table's two "study's procedure" rows are medians over texts of these numbers.
"""

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from interp import Completion, model_info
from interp.search import study_bisection

from .base import ExperimentResult, Text, as_text, param_dtype, run_meta
from .facts import STUDY_BAND, STUDY_D_MODEL, STUDY_DTYPE, add_study_band, study_band_pct
from .measure import (
    cast_copy,
    exact_min_k,
    gap_closure_evaluated,
    real_bisection,
    score_unclipped,
    simulate_bisection,
)
from .registry import register
from .texts import cut_continuation, scaled_length

CONDITIONS = ("full", "scaled")

# One cast copy per (model, dtype), kept while the model lives (a replicate run scores every text
# with the same copy instead of casting the model again per text).
_CASTS: "weakref.WeakKeyDictionary[Any, dict[str, Any]]" = weakref.WeakKeyDictionary()


def cast_cached(model: Any, dtype: str) -> Any:
    """``cast_copy(model, dtype)``, made once per model object and dtype."""
    per = _CASTS.setdefault(model, {})
    if dtype not in per:
        per[dtype] = cast_copy(model, dtype)
    return per[dtype]


@dataclass
class StudyProcedureResult(ExperimentResult):
    """Tables: ``minimal`` (condition x method x dtype: k, k/d, the text's size), ``gap`` (gap
    closure of the float32 curve per condition), ``probes`` (every probe of the real low-precision
    bisections), ``curve`` (every evaluated float32 k per condition)."""

    name = "study_procedure"

    @property
    def table(self) -> pd.DataFrame:
        return self.tables["minimal"]

    def k_frac(self, condition: str, method: str, dtype: str = "float32") -> float:
        t = self.table
        row = t[(t.condition == condition) & (t.method == method) & (t.dtype == dtype)]
        return float(row.k_frac.iloc[0]) if len(row) else float("nan")

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for r in self.table.itertuples():
            out[f"k_frac[{r.condition}:{r.method}:{r.dtype}]"] = float(r.k_frac)
        for cond, g in self.table.groupby("condition", sort=False):
            first = g.iloc[0]
            out[f"n_continuation_tokens[{cond}]"] = int(first.n_continuation_tokens)
            out[f"tokens_per_dim[{cond}]"] = float(first.tokens_per_dim)
            out[f"continuation_tokens_per_dim[{cond}]"] = float(first.continuation_tokens_per_dim)
            out[f"baseline_logprob[{cond}]"] = float(first.baseline_logprob)
        for r in self.tables["gap"].itertuples():
            label = (
                f"gap{round(r.level * 100):d}"
                if r.criterion == "gap_closed"
                else f"within{r.level:g}"
            )
            out[f"{label}_k_frac[{r.condition}]"] = float(r.k_frac_first)
        return out

    def figures(self) -> dict[str, Any]:
        import plotly.graph_objects as go

        t = self.table.assign(label=lambda x: x.method + " (" + x.dtype + ")")
        name = self.meta.get("model", {}).get("name", "")
        fig = go.Figure()
        add_study_band(
            fig,
            annotation_text=f"study: {study_band_pct()} (Llama-3-8B)",
            annotation_position="top left",
        )
        for label, g in t.groupby("label", sort=False):
            fig.add_trace(
                go.Bar(
                    x=g.condition + " (" + g.n_continuation_tokens.astype(str) + " new tokens)",
                    y=g.k_frac,
                    name=label,
                )
            )
        fig.update_layout(
            barmode="group",
            title=f"{name}: minimal k / d by the study's procedure and exactly",
            yaxis_title="minimal k / d_model",
            yaxis_range=[0, 1.05],
        )
        curve = self.tables["curve"]
        cfig = go.Figure()
        for cond, g in curve.groupby("condition", sort=False):
            base = float(t[t.condition == cond].baseline_logprob.iloc[0])
            d = int(t.d_model.iloc[0])
            cfig.add_trace(
                go.Scatter(
                    x=g.k / d, y=g.logprob - base, mode="lines+markers", name=f"{cond}: float32"
                )
            )
        probes = self.tables["probes"]
        for (cond, dtype), g in probes.groupby(["condition", "dtype"], sort=False):
            d = int(t.d_model.iloc[0])
            cfig.add_trace(
                go.Scatter(
                    x=g.k / d,
                    y=g.logprob - g.target,
                    mode="markers",
                    name=f"{cond}: {dtype} bisection probes",
                )
            )
        cfig.add_hline(y=0, line_dash="dot")
        cfig.update_layout(
            title=f"{name}: clipping curves and the study's bisection probes",
            xaxis_title="k / d_model",
            yaxis_title="logp(k) - unclipped logp (nats)",
            yaxis_range=[-20, 5],
        )
        return {"study_procedure": fig, "study_procedure_curves": cfig}


def _condition(
    model: Any,
    text: Text,
    low: Any,
    *,
    condition: str,
    tolerance: float,
    band: float,
    chunk_size: int | None,
    dtype: str,
    rng: np.random.Generator,
) -> tuple[list[dict], pd.DataFrame, list[dict], pd.DataFrame]:
    d = text.d_model
    comp = text.completion
    ev = text.evaluator("singular_value")
    scan, tol = exact_min_k(ev, text, tolerance=tolerance, band=band, step=chunk_size or 8)
    bis = study_bisection(ev, text.baseline, d)
    low_target = float(score_unclipped(low, comp, 1)[0])
    low_bis, probes = real_bisection(
        low, comp, text.basis.vectors, low_target, batch_size=1, kinds=text.kinds, rng=rng
    )
    n_cont = int(comp.continuation_tokens.numel())
    n_tok = int(comp.tokens.numel())
    size = {
        "condition": condition,
        "n_prompt_tokens": comp.n_prompt,
        "n_continuation_tokens": n_cont,
        "n_tokens": n_tok,
        "d_model": d,
        "tokens_per_dim": n_tok / d,
        "continuation_tokens_per_dim": n_cont / d,
        "baseline_logprob": text.baseline,
    }
    rows = [
        {
            **size,
            "method": "exact_scan",
            "dtype": "float32",
            "k": scan.k,
            "k_frac": scan.k / d,
            "tolerance": tol,
            "target": text.baseline - tol,
            "evaluations": scan.evaluations,
        },
        {
            **size,
            "method": "study_bisection",
            "dtype": "float32",
            "k": bis.k,
            "k_frac": bis.k / d,
            "tolerance": 0.0,
            "target": text.baseline,
            "evaluations": bis.evaluations,
        },
        {
            **size,
            "method": "study_bisection",
            "dtype": dtype,
            "k": low_bis.k,
            "k_frac": low_bis.k / d,
            "tolerance": 0.0,
            "target": low_target,
            "evaluations": low_bis.evaluations,
        },
    ]
    gap = gap_closure_evaluated({k: v[0] for k, v in ev.points.items()}, text.baseline, d).assign(
        condition=condition
    )
    probes = [{**p, "condition": condition, "dtype": dtype, "target": low_target} for p in probes]
    return rows, gap, probes, ev.table().assign(condition=condition)


@register(
    "study_procedure",
    result=StudyProcedureResult,
    builtin=True,
    help=(
        "the study's bisection (bfloat16, tolerance 0) beside the exact minimal k, at full and "
        "scaled length"
    ),
)
def run_study_procedure(
    model: Any,
    completion: "Completion | Text",
    *,
    conditions: Sequence[str] = CONDITIONS,
    dtype: str = STUDY_DTYPE,
    scaled_tokens: int | None = None,
    tolerance: float = 1e-4,
    band: float = 5.0,
    seed: int = 0,
    chunk_size: int | None = None,
    progress: bool = False,
    prompt_name: str | None = None,
    kinds: tuple[str, ...] | None = None,
) -> StudyProcedureResult:
    """The study's procedure on one text of a float32 ``model`` (see the module docstring).

    ``conditions``: ``full`` and/or ``scaled``; ``scaled_tokens``: the cut length of ``scaled``
    (default ``scaled_length(d_model)``; a continuation shorter than that is not cut);
    ``dtype``: the dtype of the real bisection (bfloat16, as the study most likely ran);
    ``seed``: recorded (a batch-1 bisection draws nothing). Cost per condition: the coarse grid
    (19 rows), the scanned k, ~log2(d) float32 bisection probes (most memoized) and ~log2(d) + 1
    rows in ``dtype``."""
    if param_dtype(model) != "float32":
        raise ValueError(
            "run_study_procedure needs the float32 model (the exact search's), got "
            f"{param_dtype(model)}: load it with dtype='float32'; the study's dtype runs "
            "on a cast copy"
        )
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown or not conditions:
        raise ValueError(f"conditions must be among {CONDITIONS}, got {list(conditions)}")
    text = as_text(model, completion, kinds=kinds, chunk_size=chunk_size, progress=progress)
    low = cast_cached(model, dtype)
    rng = np.random.default_rng(seed)
    d = text.d_model
    n_scaled = int(scaled_tokens) if scaled_tokens is not None else scaled_length(d)
    n_full = int(text.completion.continuation_tokens.numel())
    rows, gaps, probes, curves, texts = [], [], [], [], {}
    for cond in conditions:
        if cond == "full":
            t = text
        else:
            cut = cut_continuation(model, text.completion, min(n_scaled, n_full))
            t = as_text(model, cut, kinds=text.kinds, chunk_size=chunk_size, progress=progress)
        r, g, p, c = _condition(
            model,
            t,
            low,
            condition=cond,
            tolerance=tolerance,
            band=band,
            chunk_size=chunk_size,
            dtype=dtype,
            rng=rng,
        )
        rows += r
        gaps.append(g)
        probes += p
        curves.append(c)
        texts[cond] = {
            "continuation_text": t.completion.continuation_text,
            "baseline_logprob": t.baseline,
            "noise_at_d": t.noise(),
        }
    gap = pd.concat(gaps, ignore_index=True)
    gap = gap[["condition"] + [c for c in gap.columns if c != "condition"]]
    return StudyProcedureResult(
        tables={
            "minimal": pd.DataFrame(rows),
            "gap": gap,
            "probes": pd.DataFrame(
                probes,
                columns=[
                    "condition",
                    "dtype",
                    "step",
                    "k",
                    "position_in_batch",
                    "logprob",
                    "target",
                ],
            ),
            "curve": pd.concat(curves, ignore_index=True),
        },
        settings={
            "conditions": list(conditions),
            "dtype": dtype,
            "scaled_tokens": n_scaled,
            "tolerance": tolerance,
            "band": band,
            "seed": seed,
            "kinds": list(text.kinds),
            "grid": "experiments.clipping.curve_ks(d, jitter=False)",
        },
        meta=run_meta(
            model,
            text.completion,
            prompt_name=prompt_name,
            model_name=model_info(model).name,
            conditions=texts,
        ),
    )


# --- where does the study's bisection land on a converged plateau? (issue 27) -----------------

PLATEAU_NOISE = (
    0.0,
    0.1,
    0.37,
    1.0,
    2.3,
    13.5,
)  # nats: 0.37 / 13.5: measured bfloat16 comparison noise
# (SmolLM2 / Gemma, docs/method_sensitivity.md); 2.3: Gemma's bfloat16 spread between
# batch compositions


def study_shaped_curve(
    d: int = STUDY_D_MODEL,
    k_converged: int = 1750,
    *,
    gap_at_zero: float = 500.0,
    baseline: float = 0.0,
) -> np.ndarray:
    """A clipping curve shaped like the study's description (Llama-3-8B, d = 4096): far below the
    unclipped log-probability at small k, closing its gap exponentially, within 1 nat of it from
    ``k_converged`` on ("converged between about 1500 and 2000"), within 0.5 nats ~200 directions
    later ("essentially exact above that"), and exact at k = d. ``logp[k]`` for k = 0..d:
    ``baseline - gap(k)``, ``gap(k) = gap_at_zero * exp(-k / tau)`` with ``gap(k_converged) = 1``,
    minus its value at d so that ``logp[d] = baseline``."""
    tau = k_converged / np.log(gap_at_zero)
    k = np.arange(d + 1, dtype=float)
    gap = gap_at_zero * np.exp(-k / tau)
    return baseline - (gap - gap[-1])


def interpolated_curve(points: "dict[int, float]", d: int) -> np.ndarray:
    """An every-k curve from evaluated points (k -> logp, with 0 and d): linear between them. Exact
    wherever every k was evaluated (the stretch ``text_length`` scans near the target)."""
    ks = np.array(sorted(points))
    if ks[0] != 0 or ks[-1] != d:
        raise ValueError("the points must include k = 0 and k = d")
    return np.interp(np.arange(d + 1), ks, np.array([points[k] for k in ks], dtype=float))


def plateau_bisection(
    curves: "dict[str, tuple[np.ndarray, float]]",
    *,
    noise_sds: Sequence[float] = PLATEAU_NOISE,
    n_draws: int = 2000,
    seed: int = 0,
    band: tuple[float, float] = STUDY_BAND,
) -> pd.DataFrame:
    """The study's zero-tolerance bisection (``experiments.measure.simulate_bisection``: every probe
    and the unclipped reference carry independent N(0, sd^2) noise) on each named curve
    (``name -> (logp at k = 0..d, unclipped logp)``) at each noise level. One row per (curve, sd):
    where the curve comes within 1 nat of the unclipped value for good (``converged_k_frac``), its
    stable crossing at zero tolerance, and the landing k / d: median, IQR, 5-95%, the share of runs
    inside the study's 46-81% and the share at or above the convergence point. Seeded, pure
    numpy."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, (curve, baseline) in curves.items():
        curve = np.asarray(curve, dtype=float)
        d = len(curve) - 1
        far = np.nonzero(curve < baseline - 1.0)[0]
        conv = int(far[-1]) + 1 if len(far) else 0
        fail = np.nonzero(curve[:d] < baseline)[0]
        stable = int(fail[-1]) + 1 if len(fail) else 0
        for sd in noise_sds:
            k = simulate_bisection(curve, baseline, float(sd), n_draws, rng)
            f = k / d
            q05, q25, q50, q75, q95 = np.percentile(f, [5, 25, 50, 75, 95])
            rows.append(
                {
                    "curve": name,
                    "d_model": d,
                    "noise_sd": float(sd),
                    "n_draws": n_draws,
                    "converged_k_frac": conv / d,
                    "stable_k_frac": stable / d,
                    "median_k_frac": float(q50),
                    "q25_k_frac": float(q25),
                    "q75_k_frac": float(q75),
                    "q05_k_frac": float(q05),
                    "q95_k_frac": float(q95),
                    "share_in_study_band": float(np.mean((f >= band[0]) & (f <= band[1]))),
                    "share_at_or_above_converged": float(np.mean(k >= conv)),
                }
            )
    return pd.DataFrame(rows)
