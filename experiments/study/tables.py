"""Tables and figures as the report writes them: a DataFrame as a Markdown or an HTML table, a
plotly figure with SVG traces at the report's size. The bottom of the pipeline's report modules
(``report``, ``plugin_report``, ``export``), which import it and never each other for these."""

import html
from typing import Any

import pandas as pd


def svg(fig: Any) -> Any:
    """Force SVG traces (WebGL draws nothing in many viewers) and a readable size."""
    for trace in fig.data:
        if trace.type == "scattergl":
            raise ValueError("report figures must use SVG traces (render_mode='svg')")
    return fig.update_layout(
        template="plotly_white", height=380, margin=dict(l=60, r=20, t=50, b=50)
    )


def table_md(t: pd.DataFrame) -> str:
    cols = list(t.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in t.itertuples(index=False):
        lines.append(
            "| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in row) + " |"
        )
    return "\n".join(lines)


def verdict_class(verdict: str) -> str:
    return (
        "holds"
        if verdict.startswith("holds")
        else "differs"
        if verdict.startswith("differs")
        else "cant"
    )


def html_table(t: pd.DataFrame, verdict: bool = False) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in t.columns)
    rows = []
    for row in t.itertuples(index=False):
        cells = []
        for col, v in zip(t.columns, row, strict=False):
            text = html.escape(str(v))
            if verdict and col == "verdict":
                text = f"<span class='v {verdict_class(str(v))}'>{text}</span>"
            cells.append(f"<td>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"
