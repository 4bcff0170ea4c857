"""Text length, rank and where the clipping curve settles: the minimal subspace against writes
per residual dimension.

The writes matrix of a text has ``n_writes = 2 * n_layers * n_tokens`` rows (attention + MLP), so
its SVD basis spans at most ``rank <= min(n_writes, d_model)`` directions, and clipping to any
``k >= rank`` leaves every write unchanged (up to rounding): **no minimal subspace can exceed the
rank**. This experiment takes ONE sampled completion, cuts its continuation to each of ``lengths``
tokens (the same sampled tokens: nested prefixes) and, for each cut text in its own SVD basis
(``experiments.prepare``), measures (``measure_text``):

- the text's size: ``n_tokens``, ``n_scored`` (continuation tokens scored), ``n_writes``,
  ``rank`` (numerical rank of the writes, ``interp.basis.svd_basis``: singular values above
  ``rank_rtol`` of the largest), ``writes_per_dim = n_writes / d`` and ``rank_limited``
  (``n_writes < d``: the answer cannot exceed ``n_writes / d`` of d);
- the noise floor: the clipped pass's float error at k = d (``Text.noise``) and across k
  (``noise_across_k``: the same clip scored alone and in a batch, and, at ``k >= rank`` where the
  clip is the identity on the writes, against the unclipped pass); the tolerance is
  ``max(tolerance, 10 x the larger of the two)``;
- three crossings of the target ``baseline - tol`` (``interp.search.curve_crossings``):
  ``first_k`` (the smallest k that passes: the study's question), ``stable_k`` (the smallest k
  from which every larger k passes), ``frac_fail_above_first`` (the share of k above the first
  crossing that fail again) and ``converged_k`` (the smallest k from which the curve stays within
  1 nat of the baseline: what the study's "converged by ~1500-2000 of 4096" measures);
- ``bisection_k``: the study's binary search (target = the unclipped log-probability exactly).

How the crossings are computed and what they cost: the coarse grid
(``experiments.measure.curve_ks(d, jitter=False)``, 19 points for d = 576), the band scan for the
first crossing (``lazy_scan_first_crossing``: exact, every k near the target below the answer),
then ``interp.search.scan_down``: every k from d down to the last k below both the first crossing
and the convergence point. After it every k that the three numbers depend on has been evaluated,
so all three are every-k answers (``*_exact`` columns say so; they are False only with
``scan=False``, where stable and converged are bounds read off the evaluated k). Cost:
``d - k_stop`` rows a length, k_stop the last k more than 1 nat below the baseline under the first
crossing; on a 64-token text whose curve settles near d that is a few percent of d, on a short text
whose first crossing is a chance dip it is most of d (but such a text is short).

``target_subsets`` separates the target from the basis: ONE full text, its own basis, every write
clipped, the score restricted to its first or last m continuation tokens (``ClipEvaluator.subset``,
one memo for every subset), beside the text cut to m tokens in its own basis.

``TextLengthResult.concat`` pools texts (and models); its figure puts the crossings against writes
per dimension beside the bound ``min(1, n_writes / d)`` and the study's point (1.11 writes per
dimension: 4544 writes of 71 tokens on Llama-3-8B), and, in a second panel, against tokens per
dimension.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from interp import Completion, model_info
from interp.scoring import continuation_logprob
from interp.search import Crossings, ScanResult, curve_crossings, scan_down, study_bisection
from interp.sweeps import clip_sweep

from .base import ExperimentResult, Text, as_text, run_meta
from .facts import (
    STUDY_D_MODEL,
    STUDY_KNOWN_TOKENS,
    STUDY_MAX_NEW_TOKENS,
    STUDY_MIN_K,
    STUDY_N_TOKENS,
    STUDY_WRITES_PER_DIM,
    add_study_band,
    study_band_pct,
)
from .measure import (
    NOISE_FACTOR,
    curve_ks,
    effective_tolerance,
    gap_closure,
    gap_closure_evaluated,
    lazy_scan_first_crossing,
)
from .registry import register
from .texts import cut_continuation, scaled_length

LENGTHS = (2, 8, 32, 64)  # with the scaled length (9 on SmolLM2, 10 on Gemma-3): 5 texts a prompt
SUBSETS = (2, 4, 8, 16, 64)  # target_subsets' m
CONVERGED_NATS = 1.0  # converged_k: the curve stays within this many nats of the baseline


def _gap_label(criterion: str, level: float) -> str:
    return (
        f"gap{round(level * 100):d}_k_frac"
        if criterion == "gap_closed"
        else f"within{level:g}_k_frac"
    )


def study_points(prompt_tokens: dict[str, int] | None = None) -> pd.DataFrame:
    """The study's four minimal subspaces (Llama-3-8B) with their tokens per dimension: known for
    meaning_of_life (71 tokens); for the others only bounded, ``[prompt + 1, prompt + 64]`` tokens
    (BOS + prompt + 1 to 64 new tokens), with the prompt counted by ``prompt_tokens`` (a stand-in
    tokenizer's counts, BOS included; the study's Llama-3 counts are not known either) and the
    point itself drawn at the upper end (the known text used 63 of its 64)."""
    rows = []
    for name, k in STUDY_MIN_K.items():
        n = STUDY_N_TOKENS.get(name)
        p = (prompt_tokens or {}).get(name)
        if n is not None:
            lo = hi = x = n
        elif p is not None:
            lo, hi, x = p + 1, p + STUDY_MAX_NEW_TOKENS, p + STUDY_MAX_NEW_TOKENS
        else:
            lo = hi = x = np.nan
        rows.append(
            {
                "prompt_name": name,
                "min_k": k,
                "min_k_frac": k / STUDY_D_MODEL,
                "d_model": STUDY_D_MODEL,
                "n_tokens": x,
                "n_tokens_known": n is not None,
                "tokens_per_dim": x / STUDY_D_MODEL,
                "tokens_per_dim_lo": lo / STUDY_D_MODEL,
                "tokens_per_dim_hi": hi / STUDY_D_MODEL,
            }
        )
    return pd.DataFrame(rows)


def noise_ks(d: int, rank: int) -> list[int]:
    """Where ``noise_across_k`` measures: a quarter, half and three quarters of d, d - 1, and, for a
    text with fewer writes than dimensions, the rank and halfway from it to d (the clip is the
    identity on the writes there)."""
    ks = {d // 4, d // 2, (3 * d) // 4, d - 1}
    if rank < d:
        ks |= {rank, (rank + d) // 2}
    return sorted(k for k in ks if 0 < k < d)


def noise_across_k(
    text: Text, ks: Sequence[int], *, ordering: str = "singular_value"
) -> pd.DataFrame:
    """The float noise of the clipped pass at several k, not only at k = d.

    Per k: the clip scored in the evaluator's batch (``logprob_batched``) and alone
    (``logprob_alone``, batch 1): ``batch_noise`` = their difference; at ``k >= rank`` the clip is
    the identity on the writes, so ``identity_noise`` = the larger distance of either from the
    unclipped log-probability (NaN below the rank). ``noise`` = the larger of the two."""
    ev = text.evaluator(ordering)
    ks = sorted({int(k) for k in ks})
    if not ks:
        return pd.DataFrame(
            columns=[
                "k",
                "logprob_batched",
                "logprob_alone",
                "batch_noise",
                "identity",
                "identity_noise",
                "noise",
            ]
        )
    batched = ev(ks)
    alone = clip_sweep(
        text.model, text.completion, ev.directions, ks, kinds=text.kinds, chunk_size=1, desc="noise"
    ).logprob.numpy()
    rank = int(text.basis.rank)
    rows = []
    for k, b, a in zip(ks, batched, alone, strict=False):
        ident = k >= rank
        idn = max(abs(b - text.baseline), abs(a - text.baseline)) if ident else float("nan")
        rows.append(
            {
                "k": k,
                "logprob_batched": float(b),
                "logprob_alone": float(a),
                "batch_noise": abs(float(b - a)),
                "identity": ident,
                "identity_noise": idn,
                "noise": max(abs(float(b - a)), 0.0 if np.isnan(idn) else idn),
            }
        )
    return pd.DataFrame(rows)


def noise_floor(text: Text, tolerance: float) -> tuple[pd.DataFrame, float, float]:
    """The text's ``noise_across_k`` table (memoized on the text), its noise at k = d and the
    tolerance ``max(tolerance, 10 x the larger of the two)``."""
    if "_noise_across_k" not in text.__dict__:
        text.__dict__["_noise_across_k"] = noise_across_k(
            text, noise_ks(text.d_model, int(text.basis.rank))
        )
    table = text.__dict__["_noise_across_k"]
    across = float(table.noise.max()) if len(table) else 0.0
    return table, across, effective_tolerance(tolerance, max(text.noise(), across))


def text_size(model: Any, text: Text) -> dict[str, Any]:
    """A prepared text's size: tokens (prompt, continuation = scored, total), d, layers, writes
    (rows of the basis), their numerical rank and its rtol, writes and tokens per dimension."""
    c, b = text.completion, text.basis
    d = text.d_model
    n_tok = int(c.tokens.numel())
    n_writes = int(b.n_rows)
    return {
        "n_prompt_tokens": int(c.n_prompt),
        "n_continuation_tokens": int(c.continuation_tokens.numel()),
        "n_scored": int(c.continuation_tokens.numel()),
        "n_tokens": n_tok,
        "d_model": d,
        "n_layers": int(model.cfg.n_layers),
        "n_writes": n_writes,
        "rank": int(b.rank),
        "rank_rtol": float(np.sqrt(max(n_writes, d) * np.finfo(np.float64).eps)),
        "writes_per_dim": n_writes / d,
        "tokens_per_dim": n_tok / d,
        "rank_limited": n_writes < d,
        "span_frac": min(n_writes, d) / d,
        "rank_frac": int(b.rank) / d,
    }


def crossing_columns(c: Crossings, d: int, rank: int, prefix: str = "") -> dict[str, Any]:
    """``Crossings`` as table columns: k, k / d and k / rank of each crossing, the share failing
    above the first, and whether each is an every-k answer."""
    out: dict[str, Any] = {}
    for name in ("first", "stable", "converged"):
        k = int(getattr(c, name))
        out[f"{prefix}{name}_k"] = k
        out[f"{prefix}{name}_k_frac"] = k / d
        out[f"{prefix}{name}_k_rank"] = k / max(rank, 1)
    out[f"{prefix}frac_fail_above_first"] = c.frac_fail_above_first
    out[f"{prefix}n_above_first"] = c.n_above_first
    out[f"{prefix}stable_exact"] = c.stable_exact
    out[f"{prefix}converged_exact"] = c.converged_exact
    return out


def settle(
    evaluate: Any,
    target: float,
    baseline: float,
    d: int,
    known: Sequence[int],
    *,
    band: float,
    step: int,
    scan: bool = True,
) -> tuple[ScanResult, Crossings]:
    """First crossing (band scan from ``known``), then every k from d down to where the curve leaves
    the convergence band below it (``scan_down``), then the three crossings of everything evaluated.
    ``evaluate`` must expose ``points`` (k -> value) after the calls."""
    first = lazy_scan_first_crossing(evaluate, target, d, known, band=band, step=step)
    if scan:
        scan_down(evaluate, d, first.k, baseline, within=CONVERGED_NATS, step=max(step, 16))
    pts = {k: (v[0] if isinstance(v, tuple) else v) for k, v in evaluate.points.items()}
    return first, curve_crossings(pts, target, baseline, d, within=CONVERGED_NATS)


def measure_text(
    model: Any,
    text: Text,
    *,
    tolerance: float = 1e-4,
    band: float = 5.0,
    step: int = 8,
    bisection: bool = True,
    scan: bool = True,
    full_curve: bool = False,
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """One prepared text's row (``text_size``, noise, tolerance, the three crossings, the study's
    bisection, gap closure columns), its gap-closure table and its noise table."""
    d = text.d_model
    size = text_size(model, text)
    ev = text.evaluator("singular_value")
    grid = curve_ks(d, jitter=False)
    ev(grid)
    noise_t, noise_k, tol = noise_floor(text, tolerance)
    noise_d = text.noise()
    bis = study_bisection(ev, text.baseline, d) if bisection else None
    if full_curve:
        ev.evaluate(range(d + 1))
    _, cross = settle(
        ev, text.baseline - tol, text.baseline, d, grid, band=band, step=step, scan=scan
    )
    points = {k: v[0] for k, v in ev.points.items()}
    if full_curve:
        gc = gap_closure(ev.evaluate(range(d + 1)), text.baseline, d)
        gc = gc.assign(k_prev=gc.k_first - 1, resolution=1, exact=True)[
            ["criterion", "level", "k_first", "k_prev", "resolution", "exact", "k_frac_first"]
        ]
    else:
        gc = gap_closure_evaluated(points, text.baseline, d)
    row = {
        **size,
        "baseline_logprob": text.baseline,
        "logprob_k0": float(ev([0])[0]),
        **crossing_columns(cross, d, size["rank"]),
        "min_k": cross.first,
        "min_k_frac": cross.first / d,
        "bisection_k": bis.k if bis else np.nan,
        "bisection_k_frac": bis.k / d if bis else np.nan,
        "tolerance": tol,
        "noise_at_d": noise_d,
        "noise_across_k": noise_k,
        "noise_floor": max(noise_d, noise_k),
        "band": band,
        "forward_rows": ev.n_rows + len(noise_t),
    }
    for r in gc.itertuples():
        row[_gap_label(r.criterion, r.level)] = float(r.k_frac_first)
    return row, gc, noise_t


def target_subsets(
    model: Any,
    text: Text,
    ms: Sequence[int] = SUBSETS,
    *,
    tolerance: float = 1e-4,
    band: float = 5.0,
    step: int = 8,
    scan: bool = True,
) -> pd.DataFrame:
    """Target size apart from the basis: ONE text, its own basis, every write clipped, the score
    restricted to its first or last ``m`` continuation tokens (m > the continuation: skipped).

    One row per (m, which): the subset's unclipped log-probability (a plain forward pass's, summed
    over those tokens), the three crossings of ``baseline_subset - tol`` (``tol`` as the text's in
    ``measure_text``: noise at d and across k) and the study's bisection. Every subset reads the
    same memoized clipped passes (``ClipEvaluator.subset``)."""
    d = text.d_model
    n = int(text.completion.continuation_tokens.numel())
    with torch.inference_mode():
        plain = continuation_logprob(
            model, text.completion.prompt_tokens, text.completion.continuation_tokens
        )
    per_token = plain.per_token[0].double().cpu().numpy()
    ev = text.evaluator("singular_value")
    grid = curve_ks(d, jitter=False)
    ev(grid)
    _, _, tol = noise_floor(text, tolerance)
    rows = []
    for m in sorted({int(x) for x in ms}):
        if not 1 <= m <= n:
            continue
        for which, pos in (("first", range(m)), ("last", range(n - m, n))):
            if m == n and which == "last":
                continue  # the same tokens as "first"
            sub = ev.subset(pos)
            base = float(per_token[list(pos)].sum())
            _, cross = settle(sub, base - tol, base, d, grid, band=band, step=step, scan=scan)
            bis = study_bisection(sub, base, d)
            rows.append(
                {
                    "m": m,
                    "which": which,
                    "basis": "full text",
                    "n_scored": m,
                    "baseline_logprob": base,
                    "tolerance": tol,
                    **crossing_columns(cross, d, int(text.basis.rank)),
                    "bisection_k": bis.k,
                    "bisection_k_frac": bis.k / d,
                }
            )
    return pd.DataFrame(rows)


def _length_label(n: int, n_full: int, d: int) -> str:
    return "full" if n == n_full else "scaled" if n == scaled_length(d) else str(n)


@dataclass
class TextLengthResult(ExperimentResult):
    """Tables: ``lengths`` (one row per text and continuation length: size, rank, noise, the three
    crossings, the study's bisection), ``gap_closure`` (long: one row per length, criterion and
    level), ``noise`` (``noise_across_k`` per length), ``subsets`` (``target_subsets`` of the full
    text beside the cut texts in their own basis; empty when not asked for), ``curve`` (every
    evaluated k of every length)."""

    name = "text_length"

    @property
    def table(self) -> pd.DataFrame:
        return self.tables["lengths"]

    def summary(self) -> dict[str, Any]:
        t = self.table
        out: dict[str, Any] = {
            "n_texts": int(t.groupby(["model", "prompt_name"], dropna=False).ngroups),
            "n_rows": len(t),
        }
        for r in t.itertuples():
            label = getattr(r, "length_label", str(int(r.n_continuation_tokens)))
            for col in (
                "first_k_frac",
                "stable_k_frac",
                "converged_k_frac",
                "frac_fail_above_first",
                "rank_frac",
                "span_frac",
                "writes_per_dim",
                "tokens_per_dim",
                "bisection_k_frac",
                "n_continuation_tokens",
                "n_writes",
                "rank",
                "noise_floor",
                "tolerance",
            ):
                out[f"{col}[{label}]"] = float(getattr(r, col))
        if len(t):
            dev = (t.stable_k_frac - t.span_frac).abs()
            out["stable_minus_span_abs_max"] = float(dev.max())
            out["stable_within_0.02_of_span_share"] = float((dev <= 0.02).mean())
            out["stable_le_rank_all"] = bool((t.stable_k <= t["rank"]).all())
        return out

    def figures(self) -> dict[str, Any]:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        t = self.table
        fig = make_subplots(
            rows=1,
            cols=2,
            shared_yaxes=True,
            horizontal_spacing=0.06,
            subplot_titles=(
                "against writes per dimension (2 L T / d)",
                "against tokens per dimension (T / d)",
            ),
        )
        xs = np.linspace(0.05, max(2.0, float(t.writes_per_dim.max()) if len(t) else 2.0), 200)
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=np.minimum(1.0, xs),
                mode="lines",
                name="span of the writes: min(1, 2LT/d)",
                line={"color": "grey", "dash": "dash"},
            ),
            row=1,
            col=1,
        )
        for c in (1, 2):
            add_study_band(fig, opacity=0.12, row=1, col=c)
        styles = {
            "stable_k_frac": ("stable crossing", "circle"),
            "first_k_frac": ("first crossing", "x"),
            "converged_k_frac": ("within 1 nat for good", "triangle-up"),
        }
        palette = (
            "#1f77b4",
            "#d62728",
            "#2ca02c",
            "#9467bd",
            "#ff7f0e",
            "#8c564b",
            "#e377c2",
            "#17becf",
        )
        for i, ((model, prompt), g) in enumerate(
            t.groupby(["model", "prompt_name"], sort=False, dropna=False)
        ):
            g = g.sort_values("writes_per_dim")
            color = palette[i % len(palette)]
            hover = [
                f"{int(n)} tokens ({int(c)} scored), {int(w)} writes, rank {int(rk)}"
                for n, c, w, rk in zip(g.n_tokens, g.n_scored, g.n_writes, g["rank"], strict=False)
            ]
            for col, (what, symbol) in styles.items():
                for c, x in ((1, g.writes_per_dim), (2, g.tokens_per_dim)):
                    fig.add_trace(
                        go.Scatter(
                            x=x,
                            y=g[col],
                            mode="lines+markers" if col == "stable_k_frac" else "markers",
                            name=f"{model}: {prompt}, {what}",
                            legendgroup=f"{model}{prompt}{col}",
                            showlegend=c == 1,
                            text=hover,
                            marker={"symbol": symbol, "color": color, "size": 8},
                            line={"color": color},
                            hovertemplate="%{text}<br>x %{x:.3f}<br>k/d %{y:.3f}",
                        ),
                        row=1,
                        col=c,
                    )
        sp = study_points()
        known = sp[sp.n_tokens_known]
        fig.add_trace(
            go.Scatter(
                x=[STUDY_WRITES_PER_DIM] * len(known),
                y=known.min_k_frac,
                mode="markers+text",
                text=known.prompt_name,
                textposition="top left",
                name=(
                    f"study (Llama-3-8B), {STUDY_KNOWN_TOKENS} tokens: {STUDY_WRITES_PER_DIM:.2f} "
                    "writes/dim, bisection in bf16"
                ),
                marker={"symbol": "star", "size": 14, "color": "black"},
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=known.tokens_per_dim,
                y=known.min_k_frac,
                mode="markers",
                showlegend=False,
                marker={"symbol": "star", "size": 14, "color": "black"},
            ),
            row=1,
            col=2,
        )
        fig.update_xaxes(type="log", title_text="writes per residual dimension", row=1, col=1)
        fig.update_xaxes(type="log", title_text="tokens per residual dimension", row=1, col=2)
        fig.update_yaxes(title_text="k / d_model", range=[0, 1.05], row=1, col=1)
        fig.update_layout(
            title=(
                "minimal subspace against the span of the writes (grey band: the study's "
                f"{study_band_pct()})"
            ),
            height=520,
            width=1100,
        )
        gap = self.tables["gap_closure"]
        gfig = go.Figure()
        for (model, prompt, crit, level), g in gap.groupby(
            ["model", "prompt_name", "criterion", "level"], sort=False, dropna=False
        ):
            gfig.add_trace(
                go.Scatter(
                    x=g.writes_per_dim,
                    y=g.k_frac_first,
                    mode="lines+markers",
                    name=f"{model}: {prompt}, {_gap_label(crit, level)[:-7]}",
                )
            )
        gfig.update_layout(
            title="where the clipping curve closes its gap, against writes per dimension",
            xaxis_title="writes per residual dimension",
            xaxis_type="log",
            yaxis_title="k / d_model (first evaluated k)",
            yaxis_range=[0, 1.05],
        )
        figs = {"min_k_vs_writes_per_dim": fig, "gap_closure_vs_writes_per_dim": gfig}
        sub = self.tables.get("subsets")
        if sub is not None and len(sub):
            sfig = go.Figure()
            for (model, prompt, which, basis), g in sub.groupby(
                ["model", "prompt_name", "which", "basis"], sort=False, dropna=False
            ):
                g = g.sort_values("m")
                sfig.add_trace(
                    go.Scatter(
                        x=g.m,
                        y=g.stable_k_frac,
                        mode="lines+markers",
                        name=f"{model}: {prompt}, {which} m, {basis} (stable)",
                    )
                )
                sfig.add_trace(
                    go.Scatter(
                        x=g.m,
                        y=g.first_k_frac,
                        mode="markers",
                        marker={"symbol": "x"},
                        name=f"{model}: {prompt}, {which} m, {basis} (first)",
                    )
                )
            sfig.update_layout(
                title=(
                    "target or basis: the score on m tokens, full text's basis vs the cut "
                    "text's own"
                ),
                xaxis_title="scored continuation tokens m",
                xaxis_type="log",
                yaxis_title="k / d_model",
                yaxis_range=[0, 1.05],
            )
            figs["target_subsets"] = sfig
        return figs

    @classmethod
    def concat(cls, results: Sequence["TextLengthResult"]) -> "TextLengthResult":
        """Several texts' (or models') results as one: tables stacked, settings and meta listed."""
        results = list(results)
        if not results:
            raise ValueError("nothing to concatenate")
        keys = dict.fromkeys(k for r in results for k in r.tables)
        tables = {
            key: pd.concat([r.tables[key] for r in results if key in r.tables], ignore_index=True)
            for key in keys
        }
        return cls(
            tables=tables,
            settings={"texts": [r.settings for r in results]},
            meta={"texts": [r.meta for r in results]},
        )


LEAD = [
    "model",
    "prompt_name",
    "length_label",
    "n_prompt_tokens",
    "n_continuation_tokens",
    "n_tokens",
    "d_model",
    "tokens_per_dim",
    "writes_per_dim",
]


def wanted_lengths(
    lengths: Sequence[int],
    total_lengths: Sequence[int],
    *,
    scaled: bool,
    n_full: int,
    n_prompt: int,
    d: int,
) -> tuple[list[int], list[int], list[int]]:
    """The continuation lengths asked for (``lengths``, ``total_lengths`` less the prompt, and
    with ``scaled`` the study's new tokens per dimension), sorted: (all of them, those in
    1..``n_full`` that are measured, the others, skipped)."""
    wanted = {int(n) for n in lengths} | {int(t) - n_prompt for t in total_lengths}
    if scaled:
        wanted.add(min(scaled_length(d), n_full))
    wanted_sorted = sorted(wanted)
    use = [n for n in wanted_sorted if 1 <= n <= n_full]
    return wanted_sorted, use, [n for n in wanted_sorted if n not in use]


def _measure_lengths(
    model: Any,
    full: Completion,
    prepared: Text | None,
    use: Sequence[int],
    *,
    kinds: tuple[str, ...] | None,
    chunk_size: int | None,
    progress: bool,
    tolerance: float,
    band: float,
    bisection: bool,
    scan: bool,
    full_curve: bool,
) -> list[dict[str, Any]]:
    """The model calls: each length's cut text prepared (the whole one reuses ``prepared``) and
    measured (``measure_text``). One dict a length: ``n``, ``text``, ``row``, ``gap``, ``noise``,
    ``curve`` (the SVD order's evaluated points), ``kinds`` and ``meta``."""
    n_full = int(full.continuation_tokens.numel())
    out = []
    for n in use:
        if n == n_full and prepared is not None:
            text = prepared
        else:
            text = as_text(
                model,
                cut_continuation(model, full, n),
                kinds=kinds,
                chunk_size=chunk_size,
                progress=progress,
            )
        row, gc, noise_t = measure_text(
            model,
            text,
            tolerance=tolerance,
            band=band,
            step=chunk_size or 8,
            bisection=bisection,
            scan=scan,
            full_curve=full_curve,
        )
        meta = {
            "n_continuation_tokens": n,
            "continuation_text": text.completion.continuation_text,
            "baseline_logprob": text.baseline,
            "effective_tolerance": row["tolerance"],
            "noise_floor": row["noise_floor"],
        }
        out.append(
            {
                "n": n,
                "text": text,
                "row": row,
                "gap": gc,
                "noise": noise_t,
                "curve": text.evaluator("singular_value").table(),
                "kinds": list(text.kinds),
                "meta": meta,
            }
        )
    return out


def lengths_tables(
    measured: Sequence[dict[str, Any]], *, name: str, prompt_name: str | None, n_full: int, d: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """No model calls: ``_measure_lengths``' rows as the tidy ``lengths``, ``gap_closure``,
    ``noise`` and ``curve`` tables, each row led by the length's model, prompt and sizes."""
    rows, gaps, noises, curves = [], [], [], []
    for m in measured:
        row = m["row"]
        base = {
            "model": name,
            "prompt_name": prompt_name,
            "length_label": _length_label(m["n"], n_full, d),
            **{k: row[k] for k in LEAD[3:]},
        }
        rows.append({**base, **row})
        gaps.append(m["gap"].assign(**base))
        noises.append(m["noise"].assign(**base))
        curves.append(
            m["curve"].assign(
                **{k: base[k] for k in ("model", "prompt_name", "n_continuation_tokens")}
            )
        )
    lengths_t = pd.DataFrame(rows)
    if len(lengths_t):
        lengths_t = lengths_t[LEAD + [c for c in lengths_t.columns if c not in LEAD]]
    gap_t = pd.concat(gaps, ignore_index=True) if gaps else pd.DataFrame()
    if len(gap_t):
        gap_t = gap_t[LEAD + [c for c in gap_t.columns if c not in LEAD]]
    noise_t = pd.concat(noises, ignore_index=True) if noises else pd.DataFrame()
    curve_t = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    return lengths_t, gap_t, noise_t, curve_t


def subsets_table(
    sub: pd.DataFrame,
    lengths_t: pd.DataFrame,
    *,
    name: str,
    prompt_name: str | None,
    n_full: int,
) -> pd.DataFrame:
    """No model calls: ``target_subsets``' rows with the cut texts in their own basis beside them
    (the lengths equal to an m, as ``which="first"``, ``basis="cut text's own"``)."""
    own = lengths_t[lengths_t.n_continuation_tokens.isin(sub.m)] if len(lengths_t) else lengths_t
    own_rows = (
        own.assign(m=own.n_continuation_tokens, which="first", basis="cut text's own")[
            [c for c in sub.columns if c in own.columns or c in ("m", "which", "basis")]
        ]
        if len(own)
        else own
    )
    sub_t = pd.concat([sub, own_rows], ignore_index=True).assign(
        model=name, prompt_name=prompt_name, n_continuation_tokens_full=n_full
    )
    first = ["model", "prompt_name", "n_continuation_tokens_full"]
    return sub_t[first + [c for c in sub_t.columns if c not in first]]


@register(
    "text_length",
    result=TextLengthResult,
    builtin=True,
    help=(
        "minimal subspace (first, stable, converged) against writes per dimension, the text "
        "cut to --lengths"
    ),
)
def run_text_length(
    model: Any,
    completion: "Completion | Text",
    *,
    lengths: Sequence[int] = LENGTHS,
    total_lengths: Sequence[int] = (),
    scaled: bool = True,
    target_subsets_m: Sequence[int] = (),
    tolerance: float = 1e-4,
    band: float = 5.0,
    seed: int = 0,
    chunk_size: int | None = None,
    progress: bool = False,
    prompt_name: str | None = None,
    kinds: tuple[str, ...] | None = None,
    bisection: bool = True,
    full_curve: bool = False,
    scan: bool = True,
) -> TextLengthResult:
    """The text's continuation cut to each of ``lengths`` tokens (and to ``total_lengths`` tokens in
    all, prompt included; and, with ``scaled``, to the study's new tokens per dimension,
    ``scaled_length(d)``), each measured in its own basis (``measure_text``; see the module
    docstring). ``target_subsets_m``: also ``target_subsets`` of the whole text for these m.

    ``completion``: a Completion or a prepared Text (its completion is cut; a length equal to the
    whole continuation reuses the text itself). Lengths outside 1..the continuation are skipped and
    listed in ``settings["skipped_lengths"]``. ``full_curve``: evaluate every k (d + 1 rows a
    length); ``scan=False``: no ``scan_down`` (stable and converged become bounds). ``seed`` is
    recorded only (nothing here is random)."""
    prepared = completion if isinstance(completion, Text) else None
    full = prepared.completion if prepared is not None else completion
    if prepared is not None:
        prepared.check_model(model)
        kinds = kinds or prepared.kinds
    n_full = int(full.continuation_tokens.numel())
    d = int(model.cfg.d_model)
    wanted_sorted, use, skipped = wanted_lengths(
        lengths, total_lengths, scaled=scaled, n_full=n_full, n_prompt=int(full.n_prompt), d=d
    )
    name = model_info(model).name
    measured = _measure_lengths(
        model,
        full,
        prepared,
        use,
        kinds=kinds,
        chunk_size=chunk_size,
        progress=progress,
        tolerance=tolerance,
        band=band,
        bisection=bisection,
        scan=scan,
        full_curve=full_curve,
    )
    lengths_t, gap_t, noise_t, curve_t = lengths_tables(
        measured, name=name, prompt_name=prompt_name, n_full=n_full, d=d
    )
    used_kinds = measured[-1]["kinds"] if measured else (list(kinds) if kinds else ["attn", "mlp"])
    sub_t = pd.DataFrame()
    if target_subsets_m:
        whole = next((m["text"] for m in measured if m["n"] == n_full), None)
        if whole is None:
            whole = prepared or as_text(
                model, full, kinds=kinds, chunk_size=chunk_size, progress=progress
            )
        sub = target_subsets(
            model,
            whole,
            target_subsets_m,
            tolerance=tolerance,
            band=band,
            step=chunk_size or 8,
            scan=scan,
        )
        sub_t = subsets_table(sub, lengths_t, name=name, prompt_name=prompt_name, n_full=n_full)
    metas = [m["meta"] for m in measured]
    return TextLengthResult(
        tables={
            "lengths": lengths_t,
            "gap_closure": gap_t,
            "noise": noise_t,
            "subsets": sub_t,
            "curve": curve_t,
        },
        settings={
            "lengths": wanted_sorted,
            "skipped_lengths": skipped,
            "total_lengths": [int(t) for t in total_lengths],
            "scaled": scaled,
            "target_subsets_m": [int(m) for m in target_subsets_m],
            "tolerance": tolerance,
            "noise_factor": NOISE_FACTOR,
            "band": band,
            "seed": seed,
            "bisection": bisection,
            "full_curve": full_curve,
            "scan": scan,
            "kinds": used_kinds,
            "converged_nats": CONVERGED_NATS,
            "grid": "experiments.clipping.curve_ks(d, jitter=False)",
        },
        meta=run_meta(model, full, prompt_name=prompt_name, lengths=metas),
    )
