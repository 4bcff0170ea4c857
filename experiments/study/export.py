"""Export a replication to ``docs/results``: each model's small outputs and the combined table.

The one place that joins the two halves of the study pipeline: ``experiments.study.replication``
computes the table (it imports nothing from the report), ``experiments.study.report`` renders tables
it is handed, and this module writes both to the docs folder.
"""

import json
from pathlib import Path
from typing import Any

import pandas as pd

from .replication import (
    MODEL_LABELS,
    claims,
    combined_table,
    exact_metrics,
    extension_metrics,
    gather,
    overlap_pairs,
    study_procedure_metrics,
    text_length_metrics,
    text_metrics,
)
from .report import figures, hessian_figures, text_length_figures
from .tables import table_md

# The extensions' small per-text tables (replicate --exact-with, or extend), copied to docs
# as <sub>_<file>.
EXTENSION_TABLES = (
    ("study_procedure", "minimal.csv"),
    ("study_procedure", "gap.csv"),
    ("clip_variants", "minimal.csv"),
    ("clip_variants", "gap.csv"),
    ("clip_variants", "sources.csv"),
    ("hessian_ranking", "estimators.csv"),
    ("hessian_ranking", "minimal_k.csv"),
    ("hessian_ranking", "failures.csv"),
    ("text_length", "lengths.csv"),
    ("text_length", "noise.csv"),
)
# The per-direction columns of hessian_ranking's directions table kept in docs (the rest are their
# ranks): enough to re-derive every Spearman and top-10 recall the Hessian row cites.
HESSIAN_DIRECTION_COLUMNS = (
    "direction",
    "singular_value",
    "exact",
    "grad",
    "hessian_diag",
    "first_order",
    "fisher",
    "fisher_second_order",
    "hessian_second_order",
    "hessian_eigen_loading",
)


def _export_hessian_directions(run: Path, target: Path) -> None:
    directions = gather(run, "hessian_ranking/directions.csv")
    if directions is not None:
        directions[[*HESSIAN_DIRECTION_COLUMNS, "text"]].to_csv(
            target / "hessian_ranking_directions.csv", index=False, float_format="%.7g"
        )


def write_svgs(figs: dict[str, Any], folder: Path) -> None:
    """``folder/<name>.svg`` for each figure (kaleido + a browser; without them the tables are still
    written)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import plotly.io as pio

        pio.write_images(
            list(figs.values()), [folder / f"{k}.svg" for k in figs], width=760, height=420
        )
    except Exception as err:  # kaleido or a browser missing
        print(
            f"[resid-writes] figures not written as SVG ({type(err).__name__}: {err}); "
            "pip install -e '.[images]' and install chromium",
            flush=True,
        )


def export_exact(run: Path, target: Path) -> pd.DataFrame:
    """The exact stage's tables for one model: ``exact_texts.csv`` (one row per text: Spearman and
    its permutation null, estimator accuracy, minimal k by every method), ``exact_importance.csv``
    (every direction of every text), ``exact_minimal_k.csv``, ``exact_estimators.csv``."""
    target.mkdir(parents=True, exist_ok=True)
    per_text = exact_metrics(run)
    if not len(per_text):
        return per_text
    per_text.to_csv(target / "exact_texts.csv", index=False)
    for fname in ("importance.csv", "minimal_k.csv", "estimators.csv"):
        gather(run, f"exact_importance/{fname}").to_csv(
            target / f"exact_{fname}", index=False, float_format="%.7g"
        )
    return per_text


def export_results(
    run_dirs: dict[str, Path], docs: Path, *, command: str, images: bool = True
) -> Path:
    """Copy each model's small outputs into ``docs/<model>/`` (CSV tables, report.md, SVG figures)
    and write ``docs/README.md`` with the combined replication table."""
    docs.mkdir(parents=True, exist_ok=True)
    per_model, sizes = {}, []
    for name, run in run_dirs.items():
        target = docs / name
        target.mkdir(parents=True, exist_ok=True)
        m, pairs = text_metrics(run), overlap_pairs(run)
        table = claims(m, pairs)
        per_model[name] = table
        sizes.append(model_sizes(name, m))
        m.to_csv(target / "texts.csv", index=False)
        export_exact(run, target)
        table.to_csv(target / "claims.csv", index=False)
        if len(pairs):
            pairs.to_csv(target / "overlap_pairs.csv", index=False)
        for sub, fname in (
            ("minimal_subspace", "minimal_k.csv"),
            ("minimal_subspace", "sensitivity.csv"),
            ("spectrum", "summary.csv"),
            ("clipping", "curve.csv"),
            *EXTENSION_TABLES,
        ):
            table = gather(run, f"{sub}/{fname}")
            if table is not None:
                table.to_csv(target / f"{sub}_{fname}", index=False)
        _export_hessian_directions(run, target)
        gens = gather(run, "clipped_generation/samples.csv", keep_default_na=False)
        if gens is not None:
            gens.to_csv(target / "clipped_generation_samples.csv", index=False)
        if (run / "report.md").exists():
            (target / "report.md").write_text((run / "report.md").read_text())
        if (run / "environment.json").exists():  # versions, device, dtype, model provenance, commit
            (target / "environment.json").write_text((run / "environment.json").read_text())
        checks = [
            pd.DataFrame(json.loads(p.read_text())).assign(text=p.parent.name)
            for p in sorted(run.glob("*/checks.json"))
        ]
        if checks:
            pd.concat(checks, ignore_index=True).to_csv(target / "checks.csv", index=False)
        if images:
            write_svgs(figures(run, m, pairs), target / "figures")
    return write_readme(docs, per_model, sizes, list(run_dirs), command=command)


def model_sizes(name: str, m: pd.DataFrame) -> str:
    """The README's one-line description of a model's texts."""
    return (
        f"{MODEL_LABELS.get(name, name)}: {len(m)} texts ({m.prompt.nunique()} prompts x "
        f"{m.seed.nunique()} sampled continuations, seeds {sorted(m.seed.unique().tolist())})"
    )


def write_readme(
    docs: Path,
    per_model: dict[str, pd.DataFrame],
    sizes: list[str],
    names: list[str],
    *,
    command: str,
    added: str = "",
) -> Path:
    """``docs/README.md``: the combined replication table of ``per_model``'s claims, how to
    regenerate it (``command``, then ``added``: a paragraph on columns added afterwards), and the
    figures of each model named in ``names``."""
    combined = combined_table(per_model)
    lines = [
        "# The study on real models: replication table",
        "",
        f"Regenerate everything here with `{command}`.",
        "",
        *([added, ""] if added else []),
        "Each row is one claim of the study (`shared/STUDY.md`). Ours: median "
        "[interquartile range] over texts (prompts x sampled continuations), with the null "
        "it is judged against; differences are medians with a 95% bootstrap interval. A "
        "claim *holds* only where it beats its null by more than the spread; the rule "
        "behind each verdict is in `<model>/claims.csv` (column `rule`).",
        "",
        "Texts: "
        + "; ".join(sizes)
        + ". Continuations: 64 tokens sampled at temperature 0.6, top-p 0.9 (as in the "
        "study); float32 on the CPU; default mode (adaptive k grids, screened importances; "
        "see `docs/performance.md` for how it compares with `--exhaustive`), except the "
        "rows on importance, which use only the exact stage's texts (`--exact-texts`: "
        "every direction ablated, minimal k by scanning every k within `--band` nats of "
        "the target; column n_texts of `claims.csv` says how many texts each row uses; "
        "per-text numbers in `exact_texts.csv`).",
        "",
        table_md(combined.drop(columns=["key"])),
        "",
        "Per model: `claims.csv` (this table, with rules), `texts.csv` (every text's "
        "numbers), `minimal_subspace_minimal_k.csv`, `minimal_subspace_sensitivity.csv` "
        "(minimal k against the tolerance), `spectrum_summary.csv`, `clipping_curve.csv`, "
        "`overlap_pairs.csv`, `clipped_generation_samples.csv`, `report.md` and "
        "`figures/*.svg`.",
        "",
    ]
    others = sorted(p for p in docs.iterdir() if p.is_dir() and p.name not in names)
    if others or (docs / "FINDINGS.md").exists():
        lines += ["## Also here", ""]
        if (docs / "FINDINGS.md").exists():
            lines.append(
                "- [FINDINGS.md](FINDINGS.md): what the table says, claim by claim, in words"
            )
        lines += [
            f"- `{p.name}/`: "
            + ", ".join(
                f"[{f.name}]({p.name}/{f.name})" for f in sorted(p.iterdir()) if f.is_file()
            )
            for p in others
        ]
        lines.append("")
    for name in names:
        figs = sorted((docs / name / "figures").glob("*.svg"))
        if figs:
            lines += (
                [f"## {MODEL_LABELS.get(name, name)}", ""]
                + [f"![{f.stem}]({name}/figures/{f.name})" for f in figs]
                + [""]
            )
    path = docs / "README.md"
    path.write_text("\n".join(lines))
    return path


def retabulate(
    docs_model: Path, run: Path | None = None, plugin: str | None = None, *, images: bool = True
) -> pd.DataFrame:
    """Recompute one model's ``claims.csv`` from its per-text numbers (``texts.csv`` and
    ``overlap_pairs.csv``: what ``replicate`` computed the claims from), after merging in the
    per-text extension columns of ``run`` (a folder ``extend`` or ``replicate`` filled: the texts it
    holds take its values) and copying ``plugin``'s per-text tables beside them. Returns the claims.
    On an unchanged folder this rewrites the same claims.csv (tests/test_results_rederive.py)."""
    m = pd.read_csv(docs_model / "texts.csv")
    pairs = (
        pd.read_csv(docs_model / "overlap_pairs.csv")
        if (docs_model / "overlap_pairs.csv").exists()
        else None
    )
    if run is not None:
        frames = [
            f.set_index("text")
            for f in (
                study_procedure_metrics(run),
                extension_metrics(run),
                text_length_metrics(run),
            )
            if len(f)
        ]
        if frames:  # the run's texts take its values; every other text keeps its own
            extra = pd.concat(frames, axis=1)
            columns = [*m.columns, *(c for c in extra.columns if c not in m)]
            m = m.set_index("text")
            m = extra.reindex(index=m.index).combine_first(m).loc[m.index].reset_index()[columns]
            m.to_csv(docs_model / "texts.csv", index=False)
        for sub, fname in EXTENSION_TABLES:
            if sub == plugin and (table := gather(run, f"{sub}/{fname}")) is not None:
                table.to_csv(docs_model / f"{sub}_{fname}", index=False)
        if plugin == "hessian_ranking":
            _export_hessian_directions(run, docs_model)
        drawn = {"hessian_ranking": hessian_figures, "text_length": text_length_figures}.get(
            plugin or ""
        )
        if images and drawn and (figs := drawn(m)):
            write_svgs(figs, docs_model / "figures")
    table = claims(m, pairs)
    table.to_csv(docs_model / "claims.csv", index=False)
    return table


def retabulate_docs(
    docs: Path,
    runs: dict[str, Path | None],
    *,
    command: str,
    added: str = "",
    plugin: str | None = None,
    images: bool = True,
) -> Path:
    """``retabulate`` every model of ``runs`` (``None``: no new columns) and rewrite
    ``docs/README.md``."""
    per_model, sizes = {}, []
    for name, run in runs.items():
        per_model[name] = retabulate(docs / name, run, plugin, images=images)
        sizes.append(model_sizes(name, pd.read_csv(docs / name / "texts.csv")))
    return write_readme(docs, per_model, sizes, list(runs), command=command, added=added)
