"""The report a person reads: ``report.md`` and a self-contained ``report.html`` (one inline copy of
plotly.js, SVG traces only, so it draws offline and in headless browsers).

Order: the replication table (claim, study, ours with spreads, null, verdict), then one short
section per claim with its figure and the numbers in words, then the per-text tables folded away
(and written as CSV beside the report).
"""

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..facts import (
    STUDY_BAND,
    STUDY_CHAOTIC,
    STUDY_CONVERGED,
    STUDY_D_MODEL,
    STUDY_MIN_K,
    STUDY_WRITES_PER_DIM,
    add_study_band,
    study_band_pct,
    study_band_text,
)
from ..overlap import pairwise_overlap_figure
from ..runs import Run, load_run
from ..single_direction import importance_figure
from ..spectrum import spectrum_figure
from .replication import claims, overlap_pairs, text_length_rows, text_metrics
from .tables import (
    html_table as _html_table,
)
from .tables import (
    svg as _svg,
)
from .tables import (
    table_md as _table_md,
)
from .tables import (
    verdict_class as _vclass,
)

SECTIONS = [  # (claim keys, title, figure keys, what the figure shows)
    (
        ("dominant", "attention_only"),
        "1. Spectrum of the writes",
        ("spectrum_ratios", "spectrum_example"),
        "Left: s1/s3 and s2/s3 of every text, by which writes are stacked (dotted: a "
        "Gaussian matrix of the same shape). Right: the singular values of the first text, "
        "descending, log scale.",
    ),
    (
        ("chaotic", "converging", "orig_delta"),
        "2. Clipping to the top-k directions",
        ("clip_curves", "clip_deltas"),
        "Left: how far each text's log-probability falls below the unclipped one when "
        "every write is clipped to the top-k singular directions (log scale; first 8 "
        "texts). Right: attempted (orig_delta) and kept writes' norms, relative to the "
        "unclipped model's.",
    ),
    (
        ("importance",),
        "3. Single-direction importance",
        ("importance_scatter", "importance_spearman"),
        "Left: importance (log-probability lost when one direction is removed from every "
        "write) against its singular value, first text. Right: Spearman correlation of the "
        "two, every text.",
    ),
    (
        ("importance_order", "compromise_order", "minimal_k"),
        "4-5. Orderings and the minimal subspace",
        ("minimal_k", "sensitivity"),
        "Left: minimal k / d per ordering for every text (grey band: the study's "
        f"{study_band_pct()}). Right: median minimal k / d (band: interquartile range) "
        "against the tolerance, SVD basis and a random orthonormal basis.",
    ),
    (
        ("generation",),
        "6. Generating from the clipped model",
        (),
        "Samples of the first text are listed below.",
    ),
    (
        ("overlap",),
        "7. Overlap between texts' minimal subspaces",
        ("overlap",),
        "Observed overlap ||Q_i^T Q_j||_F^2 of two texts' minimal subspaces against the "
        "random-subset prediction k_i k_j / d (dotted: equality).",
    ),
    (
        ("study_procedure", "study_procedure_scaled"),
        "8. Method or scale: the study's procedure on these models",
        ("study_procedure_gap",),
        "Each exact-stage text's clipping curve (SVD order, float32) as the fraction of "
        "its gap (k = 0 to unclipped) "
        "still open, log scale, at every evaluated k: as sampled (64 new tokens) and cut "
        "to the study's new tokens "
        "per residual dimension. Shaded: the study's description of Llama-3-8B (\"stable "
        'but low" '
        f"{STUDY_CHAOTIC:g}-{STUDY_CONVERGED[0]:g} of d, converged "
        f"{STUDY_CONVERGED[0]:g}-{STUDY_CONVERGED[1]:g}) and its "
        f"minimal subspaces ({study_band_text()}).",
    ),
    (
        ("mean_ablation", "bos_unclipped", "layers_needed", "hessian_order"),
        "9. Why every direction: clip variants",
        ("clip_variants_gap",),
        "How far below the unclipped log-probability each clip variant stays (nats, log "
        "scale; median over the exact-stage texts, interpolated between evaluated k; at or "
        "above the target drawn at 1e-4; dotted: 1 and 5 nats), against k / d: the study's "
        "zero clip, mean fills, BOS or the first 4 positions left unclipped, one third of "
        "the layers clipped, one kind of write clipped.",
    ),
]


def as_run(run: "Path | Run") -> Run:
    """A run folder's results (``experiments.load_run``), or ``run`` as is when already loaded."""
    return run if isinstance(run, Run) else load_run(run)


def figures(run: "Path | Run", m: pd.DataFrame, pairs: pd.DataFrame) -> dict[str, Any]:
    """The report's figures, from the results of ``run`` (a run folder or ``load_run``'s
    ``Run``), the per-text numbers ``m`` and the overlap pairs."""
    import plotly.express as px
    import plotly.graph_objects as go

    from .replication import gaussian_spectrum_null, minimal_k_table

    run = as_run(run)
    figs: dict[str, Any] = {}
    d = int(m.d_model.iloc[0])
    model = m.model.iloc[0]
    long = pd.concat(
        [
            m[["text", f"{tag}s1_s3", f"{tag}s2_s3"]]
            .rename(columns={f"{tag}s1_s3": "s1/s3", f"{tag}s2_s3": "s2/s3"})
            .assign(writes=label)
            for tag, label in (
                ("", "attention + MLP"),
                ("attn_", "attention only"),
                ("mlp_", "MLP only"),
                ("nobos_", "attention + MLP, no BOS"),
            )
            if f"{tag}s1_s3" in m
        ]
    ).melt(id_vars=["text", "writes"], var_name="ratio", value_name="value")
    fig = px.strip(
        long,
        x="writes",
        y="value",
        color="ratio",
        hover_data=["text"],
        log_y=True,
        title=f"{model}: dominant directions",
    )
    null = gaussian_spectrum_null(int(m.n_writes.median()), d)
    fig.add_hline(y=null[0], line_dash="dot", annotation_text="Gaussian null")
    figs["spectrum_ratios"] = fig.update_layout(
        yaxis_title="ratio of singular values", xaxis_title=""
    )
    first = m.text.iloc[0]
    sv = run.result(first, "spectrum").singular_values
    figs["spectrum_example"] = spectrum_figure(
        sv[~sv.exclude_bos], "spectrum_log", f"singular values, {first}"
    )

    curves = []
    for text in m.text.head(8):
        c = run.result(text, "clipping").curve
        base = float(m.set_index("text").baseline_logprob[text])
        unclipped = float(c[c.k == c.k.max()].orig_delta.iloc[0])
        curves.append(
            c.assign(
                text=text,
                gap=(base - c.logprob).clip(lower=1e-3),
                orig=c.orig_delta / unclipped,
                kept=c.kept_delta / unclipped,
            )
        )
    curves = pd.concat(curves, ignore_index=True)
    figs["clip_curves"] = px.line(
        curves,
        x="k_frac",
        y="gap",
        color="text",
        log_y=True,
        render_mode="svg",
        title=f"{model}: clipping in SVD order",
    ).update_layout(xaxis_title="k / d_model", yaxis_title="logp(unclipped) - logp(clipped), nats")
    deltas = curves.melt(
        id_vars=["text", "k_frac"],
        value_vars=["orig", "kept"],
        var_name="writes",
        value_name="norm",
    )
    figs["clip_deltas"] = px.line(
        deltas,
        x="k_frac",
        y="norm",
        color="text",
        line_dash="writes",
        log_y=True,
        render_mode="svg",
        title="orig_delta (solid) and kept_delta (dashed)",
    ).update_layout(xaxis_title="k / d_model", yaxis_title="norm / unclipped orig_delta")

    figs["importance_scatter"] = importance_figure(
        run.result(first, "single_direction").importance,
        f"importance vs singular value, {first}",
        floor=1e-4,
    )
    cols = {
        "est_spearman_sv_importance": "screened estimate (default mode)",
        "exact_spearman_sv_importance": "exact ablations (exact stage)",
    }
    rho = m.melt(
        id_vars=["text"],
        value_vars=[c for c in cols if c in m],
        var_name="how",
        value_name="spearman",
    )
    rho = rho[rho.spearman.notna()].assign(how=lambda t: t.how.map(cols))
    figs["importance_spearman"] = px.strip(
        rho,
        x="how",
        y="spearman",
        hover_data=["text"],
        title="Spearman(singular value, importance)",
    ).update_layout(yaxis_title="Spearman correlation", yaxis_range=[-0.2, 1], xaxis_title="")

    # long form: one value a row, ordering / draw / method / criterion / tolerance
    mk = minimal_k_table(run)
    mk = mk[mk.text.isin(m.text)]
    first = mk[
        (mk.method == "first_crossing") & (mk.criterion == "run")
    ]  # every random-basis draw its own point
    fig = px.strip(
        first,
        x="ordering",
        y="k_frac",
        hover_data=["text", "draw"],
        title=f"{model}: minimal k / d_model",
    )
    add_study_band(fig, annotation_text="study")
    figs["minimal_k"] = fig.update_layout(
        yaxis_title="k / d_model", yaxis_range=[0, 1.05], xaxis_title=""
    )
    rows = []
    for (ordering, tol), g in mk[mk.criterion == "total"].groupby(["ordering", "tolerance"]):
        med, q1, q3 = np.percentile(g.k_frac.dropna(), [50, 25, 75])
        rows.append(
            {"ordering": ordering, "tolerance": float(tol), "median": med, "q1": q1, "q3": q3}
        )
    sens = pd.DataFrame(rows).sort_values("tolerance")
    fig = go.Figure()
    for ordering, g in sens.groupby("ordering"):
        fig.add_trace(
            go.Scatter(
                x=list(g.tolerance) + list(g.tolerance[::-1]),
                y=list(g.q3) + list(g.q1[::-1]),
                fill="toself",
                opacity=0.2,
                line=dict(width=0),
                showlegend=False,
                name=ordering,
            )
        )
        fig.add_trace(go.Scatter(x=g.tolerance, y=g["median"], mode="lines+markers", name=ordering))
    figs["sensitivity"] = fig.update_layout(
        title="minimal k / d against the tolerance",
        xaxis_type="log",
        xaxis_title="tolerance (nats below unclipped)",
        yaxis_title="k / d_model",
        yaxis_range=[0, 1.05],
    )
    if len(pairs):
        figs["overlap"] = pairwise_overlap_figure(pairs, f"{model}: pairwise overlap")
    figs.update(extension_figures(run, m))
    return {k: _svg(v) for k, v in figs.items()}


_NATS_FLOOR = (
    1e-4  # the study's criterion: a clipped curve at or above its target is drawn here (log axis)
)
# the fraction of the gap still open is drawn on a log scale; at or past the target it is shown here
_FLOOR = 1e-6


def _open_fraction(logprob: pd.Series, lp0: float, baseline: float) -> pd.Series:
    """1 - (logp(k) - logp(0)) / (baseline - logp(0)): 1 at k = 0, 0 at the target, floored for a
    log axis."""
    span = baseline - lp0
    return ((baseline - logprob) / span if span > 0 else logprob * 0).clip(lower=_FLOOR)


def _text_curves(
    run: Run, m: pd.DataFrame, experiment: str, by: str
) -> list[tuple[str, Any, pd.DataFrame, float]]:
    """(text, group, curve sorted by k, unclipped log-probability) for each of ``m``'s texts whose
    ``experiment`` result has a ``curve`` table, one per value of ``by``; the unclipped value is the
    curve's at its largest k (k = d clips nothing)."""
    t = run.table(experiment, "curve")
    if not len(t):
        return []
    out = []
    for (text, key), c in t[t.text.isin(m.text)].groupby(["text", by], sort=False):
        c = c.sort_values("k")
        out.append((text, key, c, float(c.logprob.iloc[-1])))
    return out


def extension_figures(run: "Path | Run", m: pd.DataFrame) -> dict[str, Any]:
    """The issue 16/17 figures, from the exact stage's texts that ran ``study_procedure`` /
    ``clip_variants`` (none when they did not run; ``run``: the run folder or its ``load_run``):
    ``study_procedure_gap`` (every text's curve, as sampled and cut to the study's tokens per
    dimension) and ``clip_variants_gap`` (median over texts per clip variant)."""
    import plotly.express as px
    import plotly.graph_objects as go

    run = as_run(run)
    figs: dict[str, Any] = {}
    model = m.model.iloc[0]
    d = int(m.d_model.iloc[0])
    rows = [
        c.assign(
            text=text,
            k_frac=c.k / d,
            open=_open_fraction(c.logprob, float(c.logprob.iloc[0]), base),
        )
        for text, _, c, base in _text_curves(run, m, "study_procedure", "condition")
    ]
    if rows:
        t = pd.concat(rows, ignore_index=True)
        labels = {
            "full": "as sampled (64 new tokens)",
            "scaled": "cut to the study's tokens per dimension",
        }
        t["condition"] = t.condition.map(lambda c: labels.get(c, c))
        fig = px.line(
            t,
            x="k_frac",
            y="open",
            color="condition",
            line_group="text",
            hover_data=["text", "k"],
            log_y=True,
            render_mode="svg",
            title=f"{model}: the gap still open ({t.text.nunique()} texts, SVD order, float32)",
        )
        for x0, x1, label in (
            (STUDY_CHAOTIC, STUDY_CONVERGED[0], "study: stable but low"),
            (*STUDY_CONVERGED, "study: converged"),
            (*STUDY_BAND, "study: minimal k"),
        ):
            fig.add_vrect(
                x0=x0,
                x1=x1,
                fillcolor="gray",
                opacity=0.12,
                line_width=0,
                annotation_text=label,
                annotation_position="top left" if x0 < 0.4 else "bottom right",
            )
        figs["study_procedure_gap"] = fig.update_traces(opacity=0.6).update_layout(
            xaxis_title="k / d_model",
            yaxis_title="fraction of the gap still open",
            yaxis_range=[np.log10(_FLOOR) - 0.2, 0.1],
        )
    grid = np.linspace(0, 1, 201)
    rows = [
        pd.DataFrame(
            {
                "variant": variant,
                "text": text,
                "k_frac": grid,  # base: the same target for every variant
                "gap": np.interp(grid, c.k / d, (base - c.logprob).clip(lower=_NATS_FLOOR)),
            }
        )
        for text, variant, c, base in _text_curves(run, m, "clip_variants", "variant")
    ]
    if rows:
        t = pd.concat(rows, ignore_index=True)
        med = t.groupby(["variant", "k_frac"], sort=False).gap.median().reset_index()
        fig = go.Figure()
        for variant, g in med.groupby("variant", sort=False):
            dash = (
                "solid"
                if variant == "zero"
                else "dot"
                if variant.startswith(("mean", "keep"))
                else "dash"
            )
            fig.add_trace(
                go.Scatter(x=g.k_frac, y=g.gap, mode="lines", name=variant, line=dict(dash=dash))
            )
        for nats in (1, 5):
            fig.add_hline(y=nats, line_dash="dot", line_color="gray")
        figs["clip_variants_gap"] = fig.update_layout(
            title=f"{model}: clip variants, median over {t.text.nunique()} texts",
            yaxis_type="log",
            xaxis_title="k / d_model",
            yaxis_title="logp(unclipped) - logp(clipped), nats",
        )
    figs.update(hessian_figures(m))
    figs.update(text_length_figures(m))
    return figs


# hessian_ranking's orders beside the study's three (the compromise from the exact stage), as drawn
HESSIAN_FIGURE_ORDERS = (
    ("singular value (SVD)", "hr_k_frac[singular_value]"),
    ("exact importance", "hr_k_frac[exact_importance]"),
    ("compromise (exact)", "exact_min_k_frac[compromise]"),
    ("Hessian: g - H_ii/2", "hr_k_frac[hessian]"),
    ("first order + Fisher/2", "hr_k_frac[fisher_second_order]"),
    ("first order g", "hr_k_frac[first_order]"),
    ("Hessian eigen loading", "hr_k_frac[hessian_eigen_loading]"),
)


def hessian_figures(m: pd.DataFrame) -> dict[str, Any]:
    """``hessian_orders``: each text's exact minimal k / d under every order, one line per text (the
    paired comparison the table's Hessian row makes), from the per-text numbers alone."""
    import plotly.graph_objects as go

    if "hr_k_frac[hessian]" not in m or not m["hr_k_frac[hessian]"].notna().any():
        return {}
    hr = m[m["hr_k_frac[hessian]"].notna()]
    orders = [(label, col) for label, col in HESSIAN_FIGURE_ORDERS if col in hr]
    labels = [label for label, _ in orders]
    fig = go.Figure()
    for _, r in hr.iterrows():
        fig.add_trace(
            go.Scatter(
                x=labels,
                y=[r[col] for _, col in orders],
                mode="lines+markers",
                name=r.text,
                opacity=0.55,
                line=dict(width=1),
            )
        )
    fig.add_trace(
        go.Scatter(
            x=labels,
            y=[hr[col].median() for _, col in orders],
            mode="markers",
            name="median",
            marker=dict(symbol="line-ew-open", size=28, color="black", line=dict(width=3)),
        )
    )
    return {
        "hessian_orders": _svg(fig).update_layout(
            title=f"{m.model.iloc[0]}: exact minimal k under each order ({len(hr)} texts)",
            yaxis_title="minimal k / d_model (every k scanned near the target)",
            xaxis_title="order of inclusion",
        )
    }


def text_length_figures(m: pd.DataFrame) -> dict[str, Any]:
    """``text_length_span``: every (text, length) run's stable crossing (filled), first crossing (x)
    and convergence point (open) against writes per dimension, beside the span of the writes
    min(1, 2LT/d) and the study's 46-81% band (issue 27's row), from the per-text numbers alone."""
    import plotly.graph_objects as go

    t = text_length_rows(m) if "text" in m else pd.DataFrame()
    if not len(t):
        return {}
    fig = go.Figure()
    add_study_band(fig)
    xs = np.geomspace(min(0.3, float(t.writes_per_dim.min())), float(t.writes_per_dim.max()), 200)
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=np.minimum(1.0, xs),
            mode="lines",
            name="span of the writes, min(1, 2LT/d)",
            line=dict(color="grey", dash="dash"),
        )
    )
    for col, label, marker in (
        ("stable_k_frac", "stable crossing", dict(symbol="circle", size=8)),
        ("first_k_frac", "first crossing", dict(symbol="x", size=7)),
        ("converged_k_frac", "within 1 nat for good", dict(symbol="triangle-up-open", size=8)),
    ):
        fig.add_trace(
            go.Scatter(
                x=t.writes_per_dim,
                y=t[col],
                mode="markers",
                name=label,
                marker=marker,
                text=t.text + " (" + t.length + ")",
                hovertemplate="%{text}<br>%{x:.2f} writes/dim<br>k/d %{y:.3f}",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[STUDY_WRITES_PER_DIM],
            y=[STUDY_MIN_K["meaning_of_life"] / STUDY_D_MODEL],
            mode="markers",
            marker=dict(symbol="star", size=14, color="black"),
            name="study: bisection, bf16 (Llama-3-8B, 71 tokens)",
        )
    )
    return {
        "text_length_span": _svg(fig).update_layout(
            title=(
                f"{m.model.iloc[0]}: minimal k against writes per dimension "
                f"({t.text.nunique()} texts, {len(t)} lengths)"
            ),
            xaxis=dict(
                title="writes per residual dimension (2 x layers x tokens / d)",
                type="log",
                tickvals=[0.25, 0.5, 1, 2, 4, 8],
            ),
            yaxis_title="k / d_model",
            yaxis_range=[0, 1.05],
        )
    }


TABLE_COLUMNS = ["claim", "study (Llama-3-8B)", "ours", "null", "verdict"]

# What adds a row a run did not make (its n_texts is 0): reproduce's option, replicate's option.
ADDS = {
    **dict.fromkeys(
        ("importance", "importance_order", "compromise_order"), ("--exact-texts", "--exact-texts")
    ),
    **dict.fromkeys(
        ("study_procedure", "study_procedure_scaled"),
        ("--with study_procedure", "--exact-with study_procedure"),
    ),
    **dict.fromkeys(
        ("mean_ablation", "bos_unclipped", "layers_needed"),
        ("--with clip_variants", "--exact-with clip_variants"),
    ),
    "hessian_order": ("--with hessian_ranking", "--exact-with hessian_ranking"),
}


def not_run(table: pd.DataFrame) -> pd.Series:
    """Rows of ``claims`` a run did not make: no text measured them (an estimate at most)."""
    return table.key.isin(list(ADDS)) & (table.n_texts == 0)


def _with_option(command: str, option: str, n_texts: int) -> str:
    """``command`` with ``option`` added (a name joins an existing list, ``--exact-texts`` is
    set)."""
    import shlex

    words = shlex.split(command)
    flag, _, value = option.partition(" ")
    value = value or str(n_texts)
    if flag in words:
        i = words.index(flag)
        if flag == "--exact-texts":
            words[i + 1 : i + 2] = [value]
        elif value not in words[i + 1 :]:
            words.insert(i + 1, value)
    else:
        words += [flag, *value.split()]
    return shlex.join(words)


def published_rows(published: Path | None, model: str) -> dict[str, list[str]]:
    """Each claim's published value (``<published>/<model>/claims.csv``; every published model's
    when this model has none), as ``published (<folder>, <model>, n = N): ours; verdict``."""
    from .replication import MODEL_LABELS

    if published is None or not published.is_dir():
        return {}
    folders = (
        [published / model]
        if (published / model / "claims.csv").is_file()
        else sorted(p for p in published.iterdir() if (p / "claims.csv").is_file())
    )
    out: dict[str, list[str]] = {}
    for folder in folders:
        t = pd.read_csv(folder / "claims.csv", keep_default_na=False)
        for r in t.itertuples(index=False):
            label = MODEL_LABELS.get(folder.name, folder.name)
            out.setdefault(r.key, []).append(
                f"published ({'/'.join(published.parts[-2:])}, {label}, n = {r.n_texts}): "
                f"{r.ours}; verdict {r.verdict}"
            )
    return out


def not_run_lines(
    table: pd.DataFrame,
    n_texts: int,
    command: str | None,
    published: Path | None,
    model: str,
    exact_with: tuple[str, ...] = (),
) -> list[tuple[str, str, str, list[str]]]:
    """(claim, what was estimated here or "", the command that adds it, published values) of
    each row the run did not make (``exact_with``: the plug-ins a replicate ran on its exact
    texts)."""
    import shlex

    replicate = bool(command) and " replicate" in f" {command}"
    values = published_rows(published, model)
    out = []
    for r in table[not_run(table)].itertuples(index=False):
        option = ADDS[r.key][1 if replicate else 0]
        given = shlex.split(command or "")
        if replicate and option.startswith("--exact-with") and "--exact-with" not in given:
            option = "--exact-with " + " ".join(dict.fromkeys([*exact_with, option.split()[1]]))
        if command:
            how = _with_option(command, option, n_texts)
        else:
            flag = option if " " in option else f"{option} {n_texts}"
            how = f"python -m experiments {'replicate' if replicate else 'reproduce'} ... {flag}"
        estimate = r.ours if str(r.ours).startswith("ESTIMATE") else ""
        out.append((r.claim, estimate, how, values.get(r.key, [])))
    return out


def write_report(
    out: Path,
    per_prompt: dict[str, Any],
    overlaps: dict[int, Any],
    info: dict[str, Any],
    settings: Any,
    *,
    elapsed: float,
    environment: dict[str, Any] | None = None,
    command: str | None = None,
    published: Path | None = None,
) -> Path:
    """Write ``texts.csv``, ``claims.csv``, ``report.md`` and ``report.html`` into ``out``.

    The table shows the rows the run made; the rows it did not make (``not_run``: the exact stage's
    and the extensions') are listed once under it, each with the command that adds it (``command``
    with one option more; a rerun resumes) and the values published for it in ``published`` (e.g.
    docs/results), labelled as such. ``claims.csv`` keeps every row."""
    import plotly.offline

    m = text_metrics(out)
    pairs = overlap_pairs(out)
    table = claims(m, pairs)
    m.to_csv(out / "texts.csv", index=False)
    table.to_csv(out / "claims.csv", index=False)
    if len(pairs):
        pairs.to_csv(out / "overlap_pairs.csv", index=False)
    run = load_run(out)
    figs = figures(run, m, pairs)
    mode = (
        "exhaustive (every k, every exact importance)"
        if getattr(settings, "exhaustive", False)
        else "default (adaptive k grids, screened importances)"
    )
    head = (
        f"Model `{info['name']}` ({info['architecture']}, {info['n_layers']} layers, "
        f"d_model {info['d_model']}, {info['dtype']} on {info['device']}, weight "
        f"processing {'on' if info['processing'] else 'off'}); {len(m)} texts "
        f"({m.prompt.nunique()} prompts x {m.seed.nunique()} sampled continuations); mode: "
        f"{mode}; this run: {elapsed:.0f} s (results loaded from an earlier run take no "
        "time)."
    )
    by_key = table.set_index("key")
    skipped = set(table.key[not_run(table)])
    ran = table[~table.key.isin(skipped)]
    missing = not_run_lines(
        table,
        len(m),
        command,
        published,
        str(info["name"]),
        tuple(getattr(settings, "exact_plugins", ())),
    )
    prov = provenance_lines(out, environment)
    md = [
        f"# The residual-stream study on {info['name']}",
        "",
        head,
        "",
        *[f"- {line}" for line in prov],
        "",
        "## Replication table",
        "",
        _table_md(ran[TABLE_COLUMNS]),
        "",
        "Ours: median [interquartile range] over texts; differences: median with a 95% "
        "bootstrap interval. Verdict rules are listed in `claims.csv` and under each "
        "section.",
        "",
    ]
    body = [
        f"<h1>The residual-stream study on {html.escape(info['name'])}</h1>",
        f"<p>{html.escape(head).replace('`', '')}</p>",
        "<ul class='prov'>" + "".join(f"<li>{html.escape(line)}</li>" for line in prov) + "</ul>",
        "<h2>Replication table</h2>",
        _html_table(ran[TABLE_COLUMNS], verdict=True),
        "<p class='note'>Ours: median [interquartile range] over texts; differences: "
        "median with a 95% bootstrap interval of the median. Each verdict follows the rule "
        "printed in its section.</p>",
    ]
    if missing:
        rows_ = f"{len(missing)} row{'s' if len(missing) != 1 else ''}"
        intro = (
            f"Not run here ({rows_} of the study's table): the command above each group adds "
            "its rows (rerun into the same folder: finished results load, only the new part "
            "is computed)."
        )
        md += ["### Not run here", "", intro, ""]
        body.append(f"<h3>Not run here</h3><p class='note'>{html.escape(intro)}</p>")
        for how in dict.fromkeys(h for _, _, h, _ in missing):
            rows = [(c, e, v) for c, e, h, v in missing if h == how]
            md += [f"`{how}`:", ""]
            items = []
            for claim, estimate, values in rows:
                md.append(
                    f"- **{claim}.** "
                    + (f"Here: {estimate}. " if estimate else "")
                    + " ".join(f"{v[0].upper()}{v[1:]}." for v in values)
                )
                items.append(
                    f"<li><b>{html.escape(claim)}.</b> "
                    + (f"Here: {html.escape(estimate)}. " if estimate else "")
                    + "".join(
                        f" <span class='pub'>{html.escape(v[0].upper() + v[1:])}.</span>"
                        for v in values
                    )
                    + "</li>"
                )
            md.append("")
            body.append(
                f"<p><code>{html.escape(how)}</code>:</p><ul class='notrun'>{''.join(items)}</ul>"
            )
    for keys, title, fig_keys, caption in SECTIONS:
        keys = tuple(k for k in keys if k not in skipped)
        if not keys and not any(k in figs for k in fig_keys):
            continue  # nothing of this section ran: its rows are listed under the table
        md += [f"## {title}", ""]
        body.append(f"<h2>{html.escape(title)}</h2>")
        for key in keys:
            r = by_key.loc[key]
            sentence = (
                f"**{r.claim}.** Study: {r['study (Llama-3-8B)']}. Ours: {r.ours}. Null: {r.null}. "
                f"Verdict: **{r.verdict}** ({r.rule})"
            )
            md += [sentence, ""]
            body.append(
                f"<p><b>{html.escape(r.claim)}.</b> Study: {html.escape(r['study (Llama-3-8B)'])}. "
                f"Ours: {html.escape(r.ours)}. Null: {html.escape(r.null)}. Verdict: "
                f"<span class='v {_vclass(r.verdict)}'>{html.escape(r.verdict)}</span> "
                f"<span class='rule'>({html.escape(r.rule)})</span></p>"
            )
        shown = [k for k in fig_keys if k in figs]
        if shown:
            body.append(
                "<div class='row'>"
                + "".join(
                    "<div class='fig'>"
                    + figs[k].to_html(full_html=False, include_plotlyjs=False)
                    + "</div>"
                    for k in shown
                )
                + f"</div><p class='caption'>{html.escape(caption)}</p>"
            )
            md += [f"*Figures ({', '.join(shown)}) in report.html:* {caption}", ""]
        if "generation" in keys:
            body.append(_samples_html(run, m))
    # --- plug-in experiments (reproduce --with NAME): a section each, from their summary() and
    # figures ---
    from .plugin_report import plugin_sections

    plugin_md, plugin_body = plugin_sections(
        out, run, settings.plugins_for(), texts=list(per_prompt)
    )
    md += plugin_md
    body += plugin_body
    body.append(
        "<h2>Per-text numbers</h2><details><summary>every text's numbers (also texts.csv)</summary>"
        + _html_table(m.round(4))
        + "</details>"
    )
    if len(pairs):
        body.append(
            "<details><summary>every overlap pair (also overlap_pairs.csv)</summary>"
            + _html_table(
                pairs[
                    [
                        "pair",
                        "k_a",
                        "k_b",
                        "observed",
                        "null_analytic",
                        "null_analytic_sd",
                        "z_analytic",
                        "rel_err_analytic",
                    ]
                ].round(4)
            )
            + "</details>"
        )
    md += [
        "## Per-text numbers",
        "",
        "In `texts.csv` (one row per text) and `overlap_pairs.csv`.",
        "",
    ]
    (out / "report.md").write_text("\n".join(md))
    page = [
        "<!doctype html><html><head><meta charset='utf-8'><title>resid-writes report</title>",
        f"<style>{STYLE}</style>",
        f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>",
        *body,
        "</body></html>",
    ]
    path = out / "report.html"
    path.write_text("\n".join(page))
    return path


def provenance_lines(out: Path, environment: dict[str, Any] | None) -> list[str]:
    """The short provenance block: versions, model and weights, commit, and the self-checks' worst
    errors."""
    from interp.provenance import environment_lines

    lines = environment_lines(environment) if environment else []
    checks = [c for f in sorted(out.glob("*/checks.json")) for c in json.loads(f.read_text())]
    if checks:
        worst = {}
        for c in checks:
            if c["name"] not in worst or c["measured"] > worst[c["name"]]["measured"]:
                worst[c["name"]] = c
        n = len(list(out.glob("*/checks.json")))
        status = "all passed" if all(c["passed"] for c in checks) else "FAILED"
        lines.append(
            f"self-checks ({status} on {n} texts; worst of each): "
            + "; ".join(
                f"{k} {c['measured']:.2g} {c['unit']} (tol {c['tolerance']:.2g})"
                for k, c in worst.items()
            )
        )
    return lines


STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 "
    "1em;color:#222;line-height:1.45}"
    "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid "
    "#ccc;padding:4px 8px;"
    "vertical-align:top;text-align:left}th{background:#f3f3f3}.row{display:flex;flex-wrap:wrap;gap:8px}"
    ".fig{flex:1 1 560px;min-width:480px}.caption,.note,.rule{color:#555;font-size:13px}"
    ".v{font-weight:600;padding:1px "
    "6px;border-radius:4px}.holds{background:#d9f2d9}.differs{background:#f9dcdc}"
    ".cant{background:#eee}.prov{color:#555;font-size:12px}"
    ".notrun{font-size:13px}.pub{color:#555}"
    "details{margin:1em 0}summary{cursor:pointer}pre{white-space:pre-wrap}"
)


def _samples_html(run: Run, m: pd.DataFrame) -> str:
    first = m.text.iloc[0]
    gen = run.result(first, "clipped_generation")
    if gen is None:
        return ""

    def cell(v: Any) -> str:  # an empty cell reads back as NaN: it is the empty string
        return html.escape("" if pd.isna(v) else str(v))

    items = "".join(
        f"<tr><td>{cell(r.model)}</td><td>{cell(r.start)}</td><td><pre>{cell(r.text)}</pre></td></tr>"
        for r in gen.samples.itertuples()
    )
    return (
        f"<details open><summary>samples of {html.escape(first)}, clipped to k = "
        f"{gen.settings['k']}</summary>"
        f"<table><tr><th>model</th><th>start</th><th>text</th></tr>{items}</table></details>"
    )
