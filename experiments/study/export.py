"""Export a replication to ``docs/results``: each model's small outputs and the combined table.

The one place that joins the two halves of the study pipeline: ``experiments.study.replication``
computes the table (it imports nothing from the report), ``experiments.study.report`` renders tables
it is handed, and this module writes both to the docs folder.
"""

import json
from pathlib import Path

import pandas as pd

from .replication import MODEL_LABELS, claims, combined_table, exact_metrics, gather, overlap_pairs, text_metrics
from .report import _table_md, figures


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
        gather(run, f"exact_importance/{fname}").to_csv(target / f"exact_{fname}", index=False, float_format="%.7g")
    return per_text


def export_results(run_dirs: dict[str, Path], docs: Path, *, command: str, images: bool = True) -> Path:
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
        sizes.append(f"{MODEL_LABELS.get(name, name)}: {len(m)} texts ({m.prompt.nunique()} prompts x "
                     f"{m.seed.nunique()} sampled continuations, seeds {sorted(m.seed.unique().tolist())})")
        m.to_csv(target / "texts.csv", index=False)
        export_exact(run, target)
        table.to_csv(target / "claims.csv", index=False)
        if len(pairs):
            pairs.to_csv(target / "overlap_pairs.csv", index=False)
        for sub, fname in (("minimal_subspace", "minimal_k.csv"), ("minimal_subspace", "sensitivity.csv"),
                           ("spectrum", "summary.csv"), ("clipping", "curve.csv"),
                           # the extensions (replicate --exact-with): their small per-text tables
                           ("study_procedure", "minimal.csv"), ("study_procedure", "gap.csv"),
                           ("clip_variants", "minimal.csv"), ("clip_variants", "gap.csv"), ("clip_variants", "sources.csv"),
                           ("hessian_ranking", "estimators.csv"), ("hessian_ranking", "minimal_k.csv"),
                           ("hessian_ranking", "failures.csv")):
            table = gather(run, f"{sub}/{fname}")
            if table is not None:
                table.to_csv(target / f"{sub}_{fname}", index=False)
        gens = gather(run, "clipped_generation/samples.csv", keep_default_na=False)
        if gens is not None:
            gens.to_csv(target / "clipped_generation_samples.csv", index=False)
        if (run / "report.md").exists():
            (target / "report.md").write_text((run / "report.md").read_text())
        if (run / "environment.json").exists():  # versions, device, dtype, model provenance, commit
            (target / "environment.json").write_text((run / "environment.json").read_text())
        checks = [pd.DataFrame(json.loads(p.read_text())).assign(text=p.parent.name) for p in sorted(run.glob("*/checks.json"))]
        if checks:
            pd.concat(checks, ignore_index=True).to_csv(target / "checks.csv", index=False)
        if images:
            figs = figures(run, m, pairs)
            (target / "figures").mkdir(exist_ok=True)
            try:
                import plotly.io as pio

                pio.write_images(list(figs.values()), [target / "figures" / f"{k}.svg" for k in figs],
                                 width=760, height=420)
            except Exception as err:  # kaleido or a browser missing: tables are still written
                print(f"[resid-writes] figures not written as SVG ({type(err).__name__}: {err}); "
                      "pip install -e '.[images]' and install chromium", flush=True)
    combined = combined_table(per_model)
    lines = [
        "# The study on real models: replication table", "",
        f"Regenerate everything here with `{command}`.", "",
        "Each row is one claim of the study (`shared/STUDY.md`). Ours: median [interquartile range] over texts "
        "(prompts x sampled continuations), with the null it is judged against; differences are medians with a 95% "
        "bootstrap interval. A claim *holds* only where it beats its null by more than the spread; the rule behind "
        "each verdict is in `<model>/claims.csv` (column `rule`).", "",
        "Texts: " + "; ".join(sizes) + ". Continuations: 64 tokens sampled at temperature 0.6, top-p 0.9 (as in "
        "the study); float32 on the CPU; default mode (adaptive k grids, screened importances; see "
        "`docs/performance.md` for how it compares with `--exhaustive`), except the rows on importance, which "
        "use only the exact stage's texts (`--exact-texts`: every direction ablated, minimal k by scanning "
        "every k within `--band` nats of the target; column n_texts of `claims.csv` says how many texts each "
        "row uses; per-text numbers in `exact_texts.csv`).", "",
        _table_md(combined.drop(columns=["key"])), "",
        "Per model: `claims.csv` (this table, with rules), `texts.csv` (every text's numbers), "
        "`minimal_subspace_minimal_k.csv`, `minimal_subspace_sensitivity.csv` (minimal k against the tolerance), "
        "`spectrum_summary.csv`, `clipping_curve.csv`, `overlap_pairs.csv`, `clipped_generation_samples.csv`, "
        "`report.md` and `figures/*.svg`.", "",
    ]
    others = sorted(p for p in docs.iterdir() if p.is_dir() and p.name not in run_dirs)
    if others or (docs / "FINDINGS.md").exists():
        lines += ["## Also here", ""]
        if (docs / "FINDINGS.md").exists():
            lines.append("- [FINDINGS.md](FINDINGS.md): what the table says, claim by claim, in words")
        lines += [f"- `{p.name}/`: " + ", ".join(f"[{f.name}]({p.name}/{f.name})" for f in sorted(p.iterdir()) if f.is_file())
                  for p in others]
        lines.append("")
    for name in run_dirs:
        figs = sorted((docs / name / "figures").glob("*.svg"))
        if figs:
            lines += [f"## {MODEL_LABELS.get(name, name)}", ""] + [f"![{f.stem}]({name}/figures/{f.name})" for f in figs] + [""]
    path = docs / "README.md"
    path.write_text("\n".join(lines))
    return path
