"""Experiment 1: the singular values of the writes matrix.

Variants: attention-only writes (the study's first, accidental run), MLP-only, both; each with
and without the BOS position.
"""

from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np
import pandas as pd

from interp import Completion, normalize_kinds, write_basis

from .base import ExperimentResult, Text, _linalg_device, as_text
from .registry import register

KIND_VARIANTS = (("attn",), ("mlp",), ("attn", "mlp"))


def variant_name(kinds: tuple[str, ...], exclude_bos: bool) -> str:
    return "+".join(kinds) + ("/no_bos" if exclude_bos else "")


def n_for_mass(cumulative_mass: np.ndarray, level: float) -> int:
    """Smallest number of directions whose squared singular values hold ``level`` of the total."""
    return int(np.searchsorted(cumulative_mass, level - 1e-12) + 1)


@dataclass
class SpectrumResult(ExperimentResult):
    name = "spectrum"

    @property
    def singular_values(self) -> pd.DataFrame:
        return self.tables["singular_values"]

    def summary(self) -> dict[str, Any]:
        return {"variants": self.tables["summary"].to_dict(orient="records")}

    def figures(self) -> dict[str, Any]:
        title = f"{self.meta['model']['name']}: {self.meta['prompt'][:40]!r}"
        return {key: spectrum_figure(self.singular_values, key, title) for key in SPECTRUM_FIGURES}


# The spectrum's figures (SpectrumResult.figures; the report's spectrum_example is spectrum_log):
# key -> (column drawn, log x, log y, x title, y title)
SPECTRUM_FIGURES = {
    "spectrum_linear": ("singular_value", False, False, "direction (descending)", "singular value"),
    "spectrum_log": (
        "singular_value",
        False,
        True,
        "direction (descending)",
        "singular value (log)",
    ),
    "spectrum_cumulative": (
        "cumulative_singular_value",
        True,
        False,
        "number of directions (log)",
        "cumulative sum of singular values",
    ),
}


def spectrum_figure(singular_values: pd.DataFrame, key: str, title: str) -> Any:
    """The figure ``key`` of ``SPECTRUM_FIGURES`` from a ``singular_values`` table (nonzero
    singular values, one line per variant, against their rank)."""
    import plotly.express as px

    y, log_x, log_y, x_title, y_title = SPECTRUM_FIGURES[key]
    sv = singular_values.assign(rank=lambda t: t.direction + 1)
    sv = sv[sv.singular_value > 0]
    return px.line(
        sv, x="rank", y=y, color="variant", log_x=log_x, log_y=log_y, title=title, render_mode="svg"
    ).update_layout(xaxis_title=x_title, yaxis_title=y_title)


@register(
    "spectrum",
    result=SpectrumResult,
    builtin=True,
    stage="default",
    order=10,
    help="the singular values of every write, by kind and with or without BOS",
)
def run_spectrum(
    model: Any,
    completion: "Completion | Text",
    *,
    kinds_variants: tuple[tuple[str, ...], ...] = KIND_VARIANTS,
    bos_variants: tuple[bool, ...] = (False, True),
) -> SpectrumResult:
    """Singular values for every (kinds, exclude BOS) variant, with mass summaries. All variants
    come from the one set of writes captured when the text was prepared (no extra forward pass)."""
    text = as_text(model, completion)
    rows, summaries = [], []
    for kinds, exclude_bos in product(kinds_variants, bos_variants):
        kinds = normalize_kinds(kinds)
        writes = text.writes.select(text.writes.index.kind.isin(kinds))
        basis = write_basis(
            writes, exclude_positions=(0,) if exclude_bos else (), device=_linalg_device(model)
        )
        table = basis.table()
        name = variant_name(kinds, exclude_bos)
        table.insert(0, "variant", name)
        table.insert(1, "kinds", "+".join(kinds))
        table.insert(2, "exclude_bos", exclude_bos)
        rows.append(table)
        s = basis.singular_values.numpy()
        cm = table.cumulative_mass.to_numpy()
        d = basis.d_model
        summaries.append(
            {
                "variant": name,
                "kinds": "+".join(kinds),
                "exclude_bos": exclude_bos,
                "n_writes": basis.n_rows,
                "rank": basis.rank,
                "d_model": d,
                "s1": s[0],
                "s1_over_s3": s[0] / s[2],
                "s2_over_s3": s[1] / s[2],
                "s1_mass": float(cm[0]),
                **{f"n{int(p * 100)}": n_for_mass(cm, p) for p in (0.5, 0.9, 0.99)},
                **{f"n{int(p * 100)}_frac": n_for_mass(cm, p) / d for p in (0.5, 0.9, 0.99)},
            }
        )
    return SpectrumResult(
        tables={
            "singular_values": pd.concat(rows, ignore_index=True),
            "summary": pd.DataFrame(summaries),
        },
        settings={
            "kinds_variants": [list(k) for k in kinds_variants],
            "bos_variants": list(bos_variants),
        },
        meta=text.meta(),
    )
