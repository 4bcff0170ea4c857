"""Method or scale? How much of the study's minimal subspace (46-81% of d_model on Llama-3-8B) can
its procedure explain: a bisection with zero tolerance, run in a low-precision dtype.

For one text (``docs/method_sensitivity.md`` has the definitions and how to run it):

1. **The study's procedure, exactly** (``study_bisection``): binary search over k in 1..d for the
   smallest k with ``logp(k) >= logp_unclipped`` (tolerance 0), assuming a monotone curve; k = d is
   never evaluated (it is the search's upper end and counts as passing), nor is k = 0.
2. **Noise, measured** (``measure_noise``): the unclipped and clipped log-probability of the text in
   every dtype asked for (a deep copy of the model cast to it; the caller's model is never cast), at
   every batch size and batch position, with its deviation from the same dtype's batch-1 value and
   from float32's batch-1 value, in nats per text and per continuation token.
3. **What the noise does** (``simulate_bisection``): the exact float32 curve at every k (one
   batched sweep of the text's memoized evaluator) plus Gaussian noise of the measured size,
   bisected ``n_draws`` times (seeded); and the real bisection in the study's dtype (default
   bfloat16) under several batch compositions. Both against the exact float32 first crossing.
4. **A scale-free summary of the curve** (``gap_closure``): the k/d at which 50/90/99% of the gap
   between k = 0 and the unclipped log-probability is closed, and where the curve comes within
   1/5/10 nats of it.

The math (the searches, the simulator, the gap closure, the pooled spreads) is pure numpy; the
figures only draw the tables. The simulator, the gap closure and the real bisection live in
``experiments.measure``, shared with other experiments.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int

from interp import Completion
from interp.search import study_bisection

from .base import ExperimentResult, Text, as_text, param_dtype
from .facts import STUDY_DTYPE
from .measure import (
    cast_copy,
    gap_closure,
    real_bisection,
    score_clipped,
    score_unclipped,
    simulate_bisection,
)
from .registry import register

NOISE_GRID = (0.01, 0.1, 1.0, 10.0)  # nats: extra simulated noise levels beside the measured ones
DTYPES = ("float32", "bfloat16", "float16")


# ----------------------------------------------------------------------------- pure functions


def exact_first_crossing(curve: Float[np.ndarray, " d_plus_1"], target: float) -> int:
    """The smallest k in 1..d with ``curve[k] >= target`` (k = d counts as reaching it: the same
    convention as the bisection, whose upper end is never evaluated)."""
    curve = np.asarray(curve, dtype=float)
    ok = curve[1:] >= target
    ok[-1] = True
    return int(np.argmax(ok)) + 1


def pooled_sd(values: Float[np.ndarray, " n"], groups: Sequence[Any]) -> float:
    """The within-group standard deviation, pooled: sqrt(sum of squared deviations from each
    group's mean / (n - number of groups)); 0 when no group has two values."""
    frame = pd.DataFrame({"v": np.asarray(values, dtype=float), "g": list(groups)})
    dev = frame.v - frame.groupby("g").v.transform("mean")
    dof = len(frame) - frame.g.nunique()
    return float(np.sqrt((dev**2).sum() / dof)) if dof > 0 else 0.0


def summarize_draws(k: Int[np.ndarray, " n"], d: int, exact_k: int) -> dict[str, float]:
    """Median, IQR, 5-95% range of k / d over draws, and the share equal to ``exact_k``."""
    frac = np.asarray(k, dtype=float) / d
    q05, q25, q50, q75, q95 = np.percentile(frac, [5, 25, 50, 75, 95])
    return {
        "median_k_frac": float(q50),
        "q25_k_frac": float(q25),
        "q75_k_frac": float(q75),
        "q05_k_frac": float(q05),
        "q95_k_frac": float(q95),
        "min_k_frac": float(frac.min()),
        "max_k_frac": float(frac.max()),
        "share_equal_exact": float(np.mean(np.asarray(k) == exact_k)),
        "exact_k_frac": exact_k / d,
    }


def headline(dtype: str, noise_sd: float, sim: dict[str, float]) -> str:
    return (
        f"with {dtype} noise of {noise_sd:.3g} nats, the study's procedure returns a "
        f"median of {sim['median_k_frac']:.1%} of d [IQR "
        f"{sim['q25_k_frac']:.1%}-{sim['q75_k_frac']:.1%}] on a model whose exact answer "
        f"is {sim['exact_k_frac']:.1%}"
    )


# ----------------------------------------------------------------------------- model side


def noise_batches(noise_ks: Sequence[int], batch_size: int) -> list[list[int]]:
    """The batches that score the clipped ``noise_ks`` at one batch size: one batch with the ks
    repeated in turn (``[a, b, a, b, ...]``) when ``batch_size >= len(noise_ks)``, else one batch
    per k, rotated so that each k leads one batch (``[a, b], [b, c], [c, a]``; batch size 1: each
    alone). Every row shares its batch with other k."""
    n = len(noise_ks)
    if batch_size >= n:
        return [[int(noise_ks[i % n]) for i in range(batch_size)]]
    return [[int(noise_ks[(j + i) % n]) for i in range(batch_size)] for j in range(n)]


def measure_noise(
    models: dict[str, Any],
    completion: Completion,
    directions: torch.Tensor,
    *,
    batch_sizes: Sequence[int],
    noise_ks: Sequence[int],
    kinds: Sequence[str],
) -> pd.DataFrame:
    """The log-probability of the text in every dtype, batch size and batch position: unclipped (no
    hooks, k = d, every row the same) and clipped to each of ``noise_ks`` (``noise_batches``). One
    row per batch row: dtype, kind, k, batch_size, batch_index (which batch of that size),
    position_in_batch, logprob. ``add_deviations`` adds the deviations."""
    d = int(directions.shape[1])
    rows = []
    for dtype, model in models.items():
        for b in batch_sizes:
            for pos, lp in enumerate(score_unclipped(model, completion, b)):
                rows.append((dtype, "unclipped", d, b, 0, pos, float(lp)))
            for j, ks in enumerate(noise_batches(noise_ks, b)):
                for pos, (k, lp) in enumerate(
                    zip(
                        ks,
                        score_clipped(model, completion, directions, ks, kinds=kinds),
                        strict=False,
                    )
                ):
                    rows.append((dtype, "clipped", k, b, j, pos, float(lp)))
    columns = ["dtype", "kind", "k", "batch_size", "batch_index", "position_in_batch", "logprob"]
    return pd.DataFrame(rows, columns=columns)


def add_deviations(
    noise: pd.DataFrame, n_cont: int, *, reference_dtype: str = "float32"
) -> pd.DataFrame:
    """Deviations of every row (nats per text, and per continuation token = / ``n_cont``):

    - ``dev_same_dtype``: from the same dtype, kind and k at batch size 1 (its first such row);
    - ``dev_float32``: from ``reference_dtype`` (float32) at batch size 1, same kind and k;
    - ``comparison_error``: the error of the study's comparison at this row, relative to float32 at
      batch 1: ``(logprob - unclipped_dtype_b1) - (logprob_f32_b1(k) - unclipped_f32_b1)``, where
      ``unclipped_dtype_b1`` is the dtype's unclipped batch-1 value (the reference the bisection
      compares with). Zero for the unclipped rows' own batch-1 row.
    """
    key = ["dtype", "kind", "k"]
    b1 = noise[noise.batch_size == 1].drop_duplicates(key)[key + ["logprob"]]
    out = noise.merge(b1.rename(columns={"logprob": "_same"}), on=key, how="left")
    f32 = b1[b1.dtype == reference_dtype].drop(columns="dtype").rename(columns={"logprob": "_f32"})
    out = out.merge(f32, on=["kind", "k"], how="left")
    ref = b1[b1.kind == "unclipped"].set_index("dtype").logprob
    f32_ref = float(ref[reference_dtype])
    out["dev_same_dtype"] = out.logprob - out._same
    out["dev_float32"] = out.logprob - out._f32
    out["comparison_error"] = (out.logprob - out.dtype.map(ref)) - (out._f32 - f32_ref)
    for col in ("dev_same_dtype", "dev_float32", "comparison_error"):
        out[f"{col}_per_token"] = out[col] / n_cont
    return out.drop(columns=["_same", "_f32"])


def noise_summary(noise: pd.DataFrame, n_cont: int) -> pd.DataFrame:
    """Per dtype: the largest |deviation| from its own batch-1 value and from float32's (nats per
    text and per token), the pooled spread over batch compositions (``composition_sd``: the sd of
    the log-probability of one (kind, k) across batch sizes and positions, pooled over (kind, k)),
    and ``comparison_sd``: the per-measurement noise the float32 curve must carry to reproduce the
    dtype's comparison errors, ``rms(comparison_error of the clipped rows) / sqrt(2)`` (under
    ``simulate_bisection``'s model a comparison error has variance 2 sd^2)."""
    rows = []
    for dtype, g in noise.groupby("dtype", sort=False):
        clipped = g[g.kind == "clipped"]
        rms = float(np.sqrt(np.mean(clipped.comparison_error**2))) if len(clipped) else 0.0
        sd = pooled_sd(g.logprob.to_numpy(), list(zip(g.kind, g.k, strict=False)))
        rows.append(
            {
                "dtype": dtype,
                "rows": len(g),
                "max_abs_dev_same_dtype": float(g.dev_same_dtype.abs().max()),
                "max_abs_dev_same_dtype_per_token": float(g.dev_same_dtype.abs().max()) / n_cont,
                "max_abs_dev_float32": float(g.dev_float32.abs().max()),
                "max_abs_dev_float32_per_token": float(g.dev_float32.abs().max()) / n_cont,
                "composition_sd": sd,
                "composition_sd_per_token": sd / n_cont,
                "max_abs_comparison_error": float(clipped.comparison_error.abs().max())
                if len(clipped)
                else 0.0,
                "comparison_sd": rms / np.sqrt(2),
                "comparison_sd_per_token": rms / np.sqrt(2) / n_cont,
            }
        )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- result


@dataclass
class MethodSensitivityResult(ExperimentResult):
    """Tables: ``curve`` (float32, every k), ``noise`` (every scored row, with deviations),
    ``noise_summary`` (per dtype), ``bisection`` (every probe of every real bisection),
    ``minimal_k`` (exact first crossing, bisection on the exact curve, real bisections),
    ``simulation`` (one row per simulated run and noise level), ``simulation_summary``,
    ``gap_closure``."""

    name = "method_sensitivity"

    @property
    def d(self) -> int:
        return int(self.tables["curve"].k.max())

    def summary(self) -> dict[str, Any]:
        mk = self.tables["minimal_k"]
        out: dict[str, Any] = {}
        for r in mk.itertuples():
            out[f"k_frac[{r.method}:{r.dtype}:{r.composition}]"] = float(r.k_frac)
        for r in self.tables["noise_summary"].itertuples():
            out[f"max_abs_dev_same_dtype[{r.dtype}]"] = float(r.max_abs_dev_same_dtype)
            out[f"max_abs_dev_float32[{r.dtype}]"] = float(r.max_abs_dev_float32)
            out[f"composition_sd[{r.dtype}]"] = float(r.composition_sd)
            out[f"comparison_sd[{r.dtype}]"] = float(r.comparison_sd)
        sims = self.tables["simulation_summary"]
        for r in sims.itertuples():
            out[f"sim_median_k_frac[{r.noise}]"] = float(r.median_k_frac)
            out[f"sim_iqr_k_frac[{r.noise}]"] = [float(r.q25_k_frac), float(r.q75_k_frac)]
        for r in self.tables["gap_closure"].itertuples():
            out[f"{r.criterion}[{r.level:g}]_k_frac"] = float(r.k_frac_first)
        study = self.settings.get("study_dtype", STUDY_DTYPE)
        for label, key in (
            ("headline", f"{study}:comparison"),
            ("headline_composition", f"{study}:composition"),
        ):
            row = sims[sims.noise == key]
            if len(row):
                out[label] = headline(study, float(row.noise_sd.iloc[0]), row.iloc[0].to_dict())
        return out

    def figures(self) -> dict[str, Any]:
        import plotly.express as px
        import plotly.graph_objects as go

        name = self.meta.get("model", {}).get("name", "")
        d = self.d
        curve = self.tables["curve"]
        base = float(self.meta.get("baseline_logprob", curve.logprob.iloc[-1]))
        fig_curve = go.Figure(
            go.Scatter(x=curve.k / d, y=curve.logprob - base, mode="lines", name="float32, every k")
        )
        probes = self.tables["bisection"]
        for (dtype, comp), g in probes.groupby(["dtype", "composition"], sort=False):
            fig_curve.add_trace(
                go.Scatter(
                    x=g.k / d,
                    y=g.logprob - g.target,
                    mode="markers",
                    name=f"{dtype} bisection, {comp}",
                )
            )
        fig_curve.add_hline(y=0, line_dash="dot").update_layout(
            title=f"{name}: clipping curve and the study's bisection probes",
            xaxis_title="k / d_model",
            yaxis_title="logp(k) - unclipped logp (nats; probes: their dtype's)",
            yaxis_range=[-20, 5],
        )
        sim = self.tables["simulation"]
        exact = float(self.tables["simulation_summary"].exact_k_frac.iloc[0])
        fig_sim = px.histogram(
            sim,
            x="k_frac",
            color="noise",
            barmode="overlay",
            nbins=60,
            title=f"{name}: k / d the study's bisection returns on the float32 curve + noise",
        )
        fig_sim.add_vline(x=exact, line_dash="dot").update_layout(
            xaxis_title="returned k / d_model"
        )
        noise = self.tables["noise"]
        fig_noise = px.strip(
            noise.assign(batch=noise.batch_size.astype(str)),
            x="dtype",
            y="dev_same_dtype",
            color="batch",
            facet_col="kind",
            hover_data=["k", "position_in_batch", "dev_float32"],
            title=f"{name}: log-probability across batch sizes and positions",
        )
        fig_noise.update_layout(yaxis_title="logp - same dtype's batch-1 logp (nats)")
        gap = self.tables["gap_closure"].assign(
            label=lambda t: t.criterion + " " + t.level.map("{:g}".format)
        )
        fig_gap = px.bar(
            gap,
            x="label",
            y=["k_frac_first", "k_frac_stable"],
            barmode="group",
            title=f"{name}: where the float32 clipping curve closes its gap",
        )
        fig_gap.update_layout(yaxis_title="k / d_model", yaxis_range=[0, 1.05], xaxis_title="")
        return {
            "method_curve": fig_curve,
            "simulated_k": fig_sim,
            "dtype_noise": fig_noise,
            "gap_closure": fig_gap,
        }


@register(
    "method_sensitivity",
    result=MethodSensitivityResult,
    builtin=True,
    stage="alone",
    order=0,
    help="method or scale: the minimal k under dtype and batch noise, simulated and measured",
)
def real_bisections(
    model: Any, text: Text, target: float, *, batch_sizes: Sequence[int], seed: int, dtype: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The real bisection in ``model`` (the study's dtype), per batch composition, against
    ``target`` (tolerance 0): its minimal-k rows and every probe it made (model calls)."""
    rows, probes = [], []
    for b in batch_sizes:
        composition = "batch1" if b == 1 else f"batch{b}_random"
        res, recs = real_bisection(
            model,
            text.completion,
            text.basis.vectors,
            target,
            batch_size=b,
            kinds=text.kinds,
            rng=np.random.default_rng([seed, b]),
        )
        rows.append(
            {
                "method": "bisection",
                "dtype": dtype,
                "composition": composition,
                "k": res.k,
                "evaluations": res.evaluations,
            }
        )
        probes += [{"dtype": dtype, "composition": composition, "batch_size": b, **r} for r in recs]
    return rows, probes


def bisection_table(
    probes: list[dict[str, Any]], curve: np.ndarray, target: float, target32: float
) -> pd.DataFrame:
    """Each probe of the real bisections beside the float32 curve at its k: passed in its own
    dtype, in float32, and the comparison's error (no model call)."""
    bis = pd.DataFrame(probes)
    bis["target"] = target
    bis["logprob_float32"] = curve[bis.k.to_numpy()]
    bis["passed"] = bis.logprob >= bis.target
    bis["passed_float32"] = bis.logprob_float32 >= target32
    bis["comparison_error"] = (bis.logprob - bis.target) - (bis.logprob_float32 - target32)
    return bis


def noise_levels(
    noise: pd.DataFrame,
    summ: pd.DataFrame,
    bis: pd.DataFrame,
    study_dtype: str,
    noise_grid: Sequence[float],
) -> dict[str, float]:
    """The noise sizes the simulation uses: none, the study dtype's measured comparison and
    composition noise, and the grid's."""
    study_row = summ.set_index("dtype").loc[study_dtype]
    err = np.concatenate(
        [
            noise[
                (noise.dtype == study_dtype) & (noise.kind == "clipped")
            ].comparison_error.to_numpy(),
            bis.comparison_error.to_numpy(),
        ]
    )
    return {
        "none": 0.0,
        f"{study_dtype}:comparison": float(np.sqrt(np.mean(err**2)) / np.sqrt(2)),
        f"{study_dtype}:composition": float(study_row.composition_sd),
        **{f"grid:{s:g}": float(s) for s in noise_grid},
    }


def simulation_tables(
    curve: np.ndarray,
    target32: float,
    levels: dict[str, float],
    *,
    n_draws: int,
    seed: int,
    d: int,
    exact_k: int,
    n_cont: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The simulated bisection on the float32 curve plus noise of each level (``n_draws`` runs,
    seeded by ``seed``): every draw, and a summary per level (no model call)."""
    rng = np.random.default_rng(seed)
    sims, sim_rows = [], []
    for label, sd in levels.items():
        ks = simulate_bisection(curve, target32, sd, n_draws, rng)
        sims.append(
            pd.DataFrame(
                {
                    "noise": label,
                    "noise_sd": sd,
                    "draw": np.arange(n_draws),
                    "k": ks,
                    "k_frac": ks / d,
                }
            )
        )
        sim_rows.append(
            {
                "noise": label,
                "noise_sd": sd,
                "noise_sd_per_token": sd / n_cont,
                "n_draws": n_draws,
                **summarize_draws(ks, d, exact_k),
            }
        )
    return pd.concat(sims, ignore_index=True), pd.DataFrame(sim_rows)


def run_method_sensitivity(
    model: Any,
    completion: "Completion | Text",
    *,
    dtypes: Sequence[str] = DTYPES,
    batch_sizes: Sequence[int] = (1, 4, 16),
    n_draws: int = 1000,
    seed: int = 0,
    chunk_size: int | None = None,
    progress: bool = False,
    study_dtype: str = STUDY_DTYPE,
    noise_ks: Sequence[int] | None = None,
    noise_grid: Sequence[float] = NOISE_GRID,
    kinds: tuple[str, ...] | None = None,
    prompt_name: str | None = None,
) -> MethodSensitivityResult:
    """Method or scale, for one text of a float32 ``model`` (see the module docstring).

    ``dtypes``: the dtypes whose noise is measured (float32 is always included: it is the
    reference); ``batch_sizes``: batch sizes of the noise table and of the real bisections (1 is
    always included); ``study_dtype``: the dtype of the real bisections and of the measured noise
    the simulation uses; ``noise_ks``: the clipped k of the noise table (default d//2 and 3d//4);
    ``noise_grid``: further simulated noise levels (nats); ``n_draws`` simulated runs per level,
    seeded by ``seed``. Cost: d + 1 float32 rows (the curve) plus, per dtype, about
    ``2 * sum(batch_sizes)`` rows, plus about ``log2(d) * sum(batch_sizes)`` rows of the study's
    dtype.
    """
    if param_dtype(model) != "float32":
        raise ValueError(
            f"run_method_sensitivity needs the float32 model (the exact curve's), got "
            f"{param_dtype(model)}: load it with dtype='float32'; the other dtypes are cast copies"
        )
    text = as_text(model, completion, kinds=kinds, chunk_size=chunk_size, progress=progress)
    d = text.d_model
    comp = text.completion
    n_cont = int(comp.continuation_tokens.numel())
    dtypes = list(dict.fromkeys(["float32", *dtypes]))
    if study_dtype not in dtypes:
        dtypes.append(study_dtype)
    batch_sizes = sorted({1, *(int(b) for b in batch_sizes)})
    noise_ks = [int(k) for k in (noise_ks if noise_ks is not None else (d // 2, (3 * d) // 4))]

    # (1) + the exact reference: the float32 curve at every k (memoized on the text)
    ev = text.evaluator("singular_value")
    curve = ev.evaluate(range(d + 1))
    target32 = text.baseline
    exact_k = exact_first_crossing(curve, target32)
    on_curve = study_bisection(lambda ks: curve[list(ks)], target32, d)
    minimal = [
        {
            "method": "exact_first_crossing",
            "dtype": "float32",
            "composition": "every_k",
            "k": exact_k,
            "evaluations": d + 1,
        },
        {
            "method": "bisection_exact_curve",
            "dtype": "float32",
            "composition": "every_k",
            "k": on_curve.k,
            "evaluations": on_curve.evaluations,
        },
    ]

    # (2) noise, in cast copies (never the caller's model)
    directions = text.basis.vectors
    models = {dt: cast_copy(model, dt) for dt in dtypes}
    noise = measure_noise(
        models, comp, directions, batch_sizes=batch_sizes, noise_ks=noise_ks, kinds=text.kinds
    )
    noise = add_deviations(noise, n_cont)
    # (3a) the real bisection in the study's dtype, per batch composition, against that dtype's
    # unclipped batch-1 log-probability (tolerance 0)
    ref = noise[(noise.kind == "unclipped") & (noise.batch_size == 1)].drop_duplicates("dtype")
    target_study = float(ref.set_index("dtype").logprob[study_dtype])
    rows, probes = real_bisections(
        models[study_dtype],
        text,
        target_study,
        batch_sizes=batch_sizes,
        seed=seed,
        dtype=study_dtype,
    )
    minimal += rows
    models.clear()  # the cast copies
    text.check_model(model)  # the caller's model kept its dtype
    bis = bisection_table(probes, curve, target_study, target32)
    mk = pd.DataFrame(minimal).assign(k_frac=lambda t: t.k / d, exact_k=exact_k)

    # (3b) the simulated bisection on curve + noise of the measured sizes
    summ = noise_summary(noise, n_cont)
    levels = noise_levels(noise, summ, bis, study_dtype, noise_grid)
    sims, sim_summary = simulation_tables(
        curve, target32, levels, n_draws=n_draws, seed=seed, d=d, exact_k=exact_k, n_cont=n_cont
    )

    # (4) gap closure of the exact curve
    gap = gap_closure(curve, target32, d)
    curve_table = ev.table()
    curve_table = curve_table[curve_table.k <= d].assign(k_frac=lambda t: t.k / d)
    return MethodSensitivityResult(
        tables={
            "curve": curve_table,
            "noise": noise,
            "noise_summary": summ,
            "bisection": bis,
            "minimal_k": mk,
            "simulation": sims,
            "simulation_summary": sim_summary,
            "gap_closure": gap,
        },
        settings={
            "kinds": list(text.kinds),
            "dtypes": dtypes,
            "batch_sizes": batch_sizes,
            "n_draws": n_draws,
            "seed": seed,
            "study_dtype": study_dtype,
            "noise_ks": noise_ks,
            "noise_grid": list(noise_grid),
            "tolerance": 0.0,
            "reference_noise": True,
        },
        meta=text.meta(
            prompt_name=prompt_name,
            d_model=d,
            n_continuation_tokens=n_cont,
            exact_first_crossing=exact_k,
            simulated_noise_sd=levels,
            unclipped_logprob={dt: float(v) for dt, v in ref.set_index("dtype").logprob.items()},
        ),
    )
