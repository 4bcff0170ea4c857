"""One report (``report.md`` and a self-contained ``report.html``) laying our numbers beside the
study's. Figures are embedded with one inline copy of plotly.js, so the page works offline."""

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from .prompts import STUDY_D_MODEL, STUDY_MIN_K

STUDY_NOTES = {
    "spectrum": "Llama-3-8B: two directions far larger than all others; most singular values non-negligible; "
    "cumulative sum roughly logarithmic.",
    "clipping": "Llama-3-8B: chaotic and low below k~300, stable but low to ~1500, converged by ~2000 of 4096; "
    "orig_delta small at low k, exploding mid-range, back down when the loss recovers.",
    "single_direction": "Llama-3-8B: importance correlated with singular value, with clear deviations.",
    "orderings": "Llama-3-8B: importance order less chaotic but reached good performance much more slowly; "
    "the compromise order did not work much better.",
    "minimal_subspace": "Llama-3-8B: 1886, 3329, 2696, 2518 of 4096 (46%, 81%, 66%, 61%).",
    "clipped_generation": "Llama-3-8B: vaguely on topic but degraded after the prompt; drifting to the prompt's "
    "theme from no prompt.",
    "overlap": "Llama-3-8B: stacked spectrum a uniform mixture; pairwise overlap predicted by k_i k_j / d to about 1%.",
}


def key_numbers(per_prompt: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for name, pr in per_prompt.items():
        r = pr.results
        spec = r["spectrum"].tables["summary"].set_index("variant").loc["+".join(pr.basis.kinds)]
        ms = r["minimal_subspace"].table
        sv = ms[(ms.ordering == "singular_value") & (ms.method == "sweep")].iloc[0]
        bis = ms[(ms.ordering == "singular_value") & (ms.method == "bisection")].iloc[0]
        sd = r["single_direction"].summary()
        study = STUDY_MIN_K.get(name)
        rows.append(
            {
                "prompt": name,
                "n_tokens": pr.completion.tokens.numel(),
                "n_writes": int(spec.n_writes),
                "s1/s3": round(float(spec.s1_over_s3), 2),
                "s2/s3": round(float(spec.s2_over_s3), 2),
                "n90/d": round(float(spec.n90_frac), 3),
                "min_k (sweep)": int(sv.k),
                "min_k/d": round(float(sv.k_frac), 3),
                "min_k (bisection)": int(bis.k),
                "passes sweep/bisection": f"{int(sv.forward_passes)}/{int(bis.forward_passes)}",
                "study k (Llama-3-8B)": study,
                "study k/d": round(study / STUDY_D_MODEL, 3) if study else None,
                "spearman(s, importance)": round(sd["spearman_sv_importance"], 3),
                "gradient spearman": round(sd.get("gradient_spearman", float("nan")), 3),
            }
        )
    return pd.DataFrame(rows)


def write_report(
    out: Path, per_prompt: dict[str, Any], overlap: Any, info: dict[str, Any], settings: Any, *, elapsed: float
) -> Path:
    numbers = key_numbers(per_prompt)
    numbers.to_csv(out / "key_numbers.csv", index=False)
    settings_dict = {k: v for k, v in vars(settings).items() if k != "extra"}
    md = [
        f"# resid-writes reproduction on {info['name']}",
        "",
        f"Model: `{info['name']}` ({info['architecture']}, {info['n_layers']} layers, d_model {info['d_model']}, "
        f"{info['dtype']} on {info['device']}, weight processing: {info['processing']}). "
        f"Settings: `{json.dumps(settings_dict, default=str)}`. Wall time of this run: {elapsed:.0f} s "
        "(experiments loaded from a previous run take no time).",
        "",
        "## Key numbers beside the study's (Llama-3-8B, d_model 4096)",
        "",
        numbers.to_markdown(index=False) if _has_tabulate() else numbers.to_string(index=False),
        "",
    ]
    if overlap is not None:
        osum = overlap.summary()
        md += [
            "## Cross-prompt overlap",
            "",
            f"Mean |relative error| of the analytic null k_i k_j / d over cross-prompt pairs: "
            f"{osum.get('mean_abs_rel_err_analytic', float('nan')):.2%} (study: about 1%); "
            f"Monte Carlo: {osum.get('mean_abs_rel_err_monte_carlo', float('nan')):.2%}; "
            f"spectral (anisotropic) null: {osum.get('mean_abs_rel_err_spectral', float('nan')):.2%}.",
            "",
        ]
    for name, pr in per_prompt.items():
        md += [f"## {name}", "", f"Continuation: {pr.completion.continuation_text!r}", ""]
        for exp, res in pr.results.items():
            md += [f"- **{exp}**: {STUDY_NOTES[exp]} Ours: `{json.dumps(res.summary(), default=str)[:600]}`"]
        md.append("")
    (out / "report.md").write_text("\n".join(md))
    return _write_html(out, md, numbers, per_prompt, overlap)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401

        return True
    except ImportError:
        return False


def _write_html(out: Path, md: list[str], numbers: pd.DataFrame, per_prompt: dict[str, Any], overlap: Any) -> Path:
    import plotly.offline

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>resid-writes report</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto} pre{white-space:pre-wrap}"
        " table{border-collapse:collapse;font-size:12px} td,th{border:1px solid #ccc;padding:2px 6px}</style>",
        f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>",
        f"<pre>{html.escape(chr(10).join(md[:4]))}</pre>",
        numbers.to_html(index=False),
    ]
    sections = [(name, pr.results) for name, pr in per_prompt.items()]
    if overlap is not None:
        parts.append(f"<pre>{html.escape(json.dumps(overlap.summary(), indent=1))}</pre>")
        parts.append(overlap.pairs.round(4).to_html(index=False))
        sections.append(("cross-prompt", {"overlap": overlap}))
    for name, results in sections:
        parts.append(f"<h2>{html.escape(name)}</h2>")
        for exp, res in results.items():
            parts.append(f"<h3>{exp}</h3><p><i>Study:</i> {html.escape(STUDY_NOTES[exp])}</p>")
            for fig in res.figures().values():
                parts.append(fig.to_html(full_html=False, include_plotlyjs=False))
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts))
    return path
