"""The report's section for each plug-in experiment (``reproduce --with NAME``): every text's
``summary()`` as one table row (also written as ``plugin_<name>.csv``) and the first text's
figures."""

import html
from pathlib import Path
from typing import Any

import pandas as pd

from .tables import html_table, svg, table_md


def summary_table(per_prompt: dict[str, Any], name: str) -> pd.DataFrame:
    """One row per text: the text id and the plug-in result's summary (nested values flattened
    as ``outer.inner``)."""
    rows = []
    for text_id, pr in per_prompt.items():
        result = pr.results.get(name)
        if result is None:
            continue
        summary = result.summary()
        flat = pd.json_normalize(summary, sep=".").iloc[0].to_dict() if summary else {}
        rows.append({"text": text_id, **flat})
    return pd.DataFrame(rows)


def plugin_sections(out: Path, per_prompt: dict[str, Any], names: Any) -> tuple[list[str], list[str]]:
    """Markdown lines and HTML fragments of one section per plug-in."""
    md: list[str] = []
    body: list[str] = []
    for name in names:
        table = summary_table(per_prompt, name)
        table.to_csv(out / f"plugin_{name}.csv", index=False)
        title = f"Plug-in: {name}"
        md += [f"## {title}", "", table_md(table.round(4)) if len(table.columns) > 1 else "(no summary)", "",
               f"Every text's summary, also `plugin_{name}.csv`; figures of each text under `<text>/{name}/figures/`.", ""]
        body += [f"<h2>{html.escape(title)}</h2>", html_table(table.round(4))]
        first = next((pr.results[name] for pr in per_prompt.values() if name in pr.results), None)
        figs = first.figures() if first is not None else {}
        if figs:
            body.append("<div class='row'>" + "".join(
                f"<div class='fig'>{svg(fig).to_html(full_html=False, include_plotlyjs=False)}</div>"
                for fig in figs.values()) + f"</div><p class='caption'>Figures of {html.escape(next(iter(per_prompt)))}.</p>")
    return md, body
