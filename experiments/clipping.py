"""Experiment 2: clip every write to the top-k directions and score the continuation, for a grid
of k; many k per forward pass. Also the engine of experiment 4 (other orders)."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from interp import Basis, Completion, continuation_logprob, normalize_kinds
from interp.sweeps import clip_sweep, default_k_grid

from .base import ExperimentResult, basis_for, run_meta


def baseline_logprob(model: Any, completion: Completion) -> tuple[float, float]:
    """(total, mean) log-probability of the continuation under the unclipped model."""
    with torch.inference_mode():
        lp = continuation_logprob(model, completion.prompt_tokens, completion.continuation_tokens)
    return float(lp.total[0]), float(lp.mean[0])


def clipping_curve(
    model: Any,
    completion: Completion,
    directions: torch.Tensor,
    ks: Sequence[int],
    *,
    ordering: str,
    kinds: Sequence[str],
    chunk_size: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Tidy curve for one ordering of ``directions`` (columns in order of inclusion)."""
    out = clip_sweep(model, completion, directions, ks, kinds=kinds, chunk_size=chunk_size, progress=progress)
    d = directions.shape[0]
    return pd.DataFrame(
        {
            "ordering": ordering,
            "k": list(ks),
            "k_frac": [k / d for k in ks],
            "logprob": out.logprob.numpy(),
            "logprob_mean": out.logprob_mean.numpy(),
            "log_surprise": -out.logprob.numpy(),
            "orig_delta": out.orig_delta.numpy(),
            "kept_delta": out.kept_delta.numpy(),
        }
    )


def curve_figures(curve: pd.DataFrame, baseline: float, title: str) -> dict[str, Any]:
    import plotly.express as px

    figs = {
        "clipping_logprob": px.line(curve, x="k", y="logprob", color="ordering", title=title),
        "clipping_log_surprise": px.line(curve, x="k", y="log_surprise", color="ordering", log_y=True, title=title),
    }
    figs["clipping_logprob"].add_hline(y=baseline, line_dash="dot", annotation_text="unclipped")
    figs["clipping_log_surprise"].add_hline(y=-baseline, line_dash="dot", annotation_text="unclipped")
    deltas = curve.melt(
        id_vars=["ordering", "k"], value_vars=["orig_delta", "kept_delta"], var_name="norm", value_name="value"
    )
    figs["clipping_deltas"] = px.line(
        deltas, x="k", y="value", color="norm", line_dash="ordering", log_y=True, title=title
    ).update_layout(yaxis_title="norm of all writes (Frobenius)")
    return figs


@dataclass
class ClippingResult(ExperimentResult):
    name = "clipping"

    @property
    def curve(self) -> pd.DataFrame:
        return self.tables["curve"]

    def summary(self) -> dict[str, Any]:
        c, base = self.curve, self.meta["baseline_logprob"]
        ok = c[c.logprob >= base - self.settings["tolerance"]]
        return {
            "baseline_logprob": base,
            "d_model": self.meta["model"]["d_model"],
            "first_k_reaching_baseline": int(ok.k.min()) if len(ok) else None,
            "min_logprob": float(c.logprob.min()),
            "k_at_max_orig_delta": int(c.loc[c.orig_delta.idxmax(), "k"]),
            "max_orig_delta_over_unclipped": float(c.orig_delta.max() / c[c.k == c.k.max()].orig_delta.iloc[0]),
        }

    def figures(self) -> dict[str, Any]:
        return curve_figures(self.curve, self.meta["baseline_logprob"], f"{self.meta['model']['name']}: clipping")


def run_clipping(
    model: Any,
    completion: Completion,
    *,
    basis: Basis | None = None,
    ks: Sequence[int] | None = None,
    kinds: Sequence[str] = ("attn", "mlp"),
    tolerance: float = 1e-4,
    chunk_size: int | None = None,
    progress: bool = False,
) -> ClippingResult:
    """Clipping curve in singular-value order (the study's experiment 2)."""
    kinds = normalize_kinds(kinds)
    basis = basis or basis_for(model, completion, kinds=kinds)
    ks = list(ks) if ks is not None else default_k_grid(basis.d_model)
    total, mean = baseline_logprob(model, completion)
    curve = clipping_curve(
        model, completion, basis.vectors, ks, ordering="singular_value", kinds=kinds,
        chunk_size=chunk_size, progress=progress,
    )
    return ClippingResult(
        tables={"curve": curve},
        settings={"kinds": list(kinds), "n_k": len(ks), "tolerance": tolerance, "basis_kinds": list(basis.kinds)},
        meta=run_meta(model, completion, baseline_logprob=total, baseline_logprob_mean=mean),
    )
