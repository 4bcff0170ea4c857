"""The report's section for each plug-in experiment (``reproduce --with NAME``): every text's
``summary()`` as one table row (also written as ``plugin_<name>.csv``) and the first text's
figures."""

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .tables import html_table, svg, table_md


def summary_table(results: Mapping[str, Any]) -> pd.DataFrame:
    """One row per text of ``results`` ({text: the plug-in's result}): the text id and the
    result's summary (nested values flattened as ``outer.inner``)."""
    rows = []
    for text_id, result in results.items():
        summary = result.summary()
        flat = pd.json_normalize(summary, sep=".").iloc[0].to_dict() if summary else {}
        rows.append({"text": text_id, **flat})
    return pd.DataFrame(rows)


def plugin_sections(
    out: Path, run: Any, names: Any, texts: list[str] | None = None
) -> tuple[list[str], list[str]]:
    """Markdown lines and HTML fragments of one section per plug-in, from the results of ``run``
    (``experiments.load_run``) of ``texts`` (default: every text of the run)."""
    md: list[str] = []
    body: list[str] = []
    for name in names:
        results = run.results(name, texts)
        table = summary_table(results)
        table.to_csv(out / f"plugin_{name}.csv", index=False)
        title = f"Plug-in: {name}"
        md += [
            f"## {title}",
            "",
            table_md(table.round(4)) if len(table.columns) > 1 else "(no summary)",
            "",
            f"Every text's summary, also `plugin_{name}.csv`; figures of each text under "
            f"`<text>/{name}/figures/`.",
            "",
        ]
        body += [f"<h2>{html.escape(title)}</h2>", html_table(table.round(4))]
        first = next(iter(results), None)
        figs = results[first].figures() if first is not None else {}
        if figs:
            body.append(
                "<div class='row'>"
                + "".join(
                    "<div class='fig'>"
                    + svg(fig).to_html(full_html=False, include_plotlyjs=False)
                    + "</div>"
                    for fig in figs.values()
                )
                + f"</div><p class='caption'>Figures of {html.escape(first)}.</p>"
            )
    return md, body
