"""Experiment 2: clip every write to the top-k directions and score the continuation, for a grid
of k; many k per forward pass. Also the engine of experiment 4 (other orders).

Default grid (adaptive): ``interp.sweeps.coarse_k_grid`` (0, d, powers of two from both ends,
13 even steps) plus the adjacent pairs of ``jitter_pairs`` that measure how chaotic the curve
is; the minimal-k searches refine it where the curve crosses its targets. ``exhaustive=True``
evaluates every k = 0..d_model. Every number in the summary is defined on points both modes
evaluate, or by a search that is exact when every k is known.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from interp import Completion, continuation_logprob
from interp.search import stable_crossing
from interp.sweeps import jitter_pairs

from .base import ExperimentResult, Text, as_text
from .measure import CONVERGED_NATS, clipping_curve, curve_figures, curve_ks
from .registry import register

REGIONS = ((0.0, 0.1, "low"), (0.1, 0.5, "mid"), (0.5, 1.0, "high"))  # fractions of d_model


def baseline_logprob(model: Any, completion: Completion) -> tuple[float, float]:
    """(total, mean) log-probability of the continuation under the unclipped model."""
    with torch.inference_mode():
        lp = continuation_logprob(model, completion.prompt_tokens, completion.continuation_tokens)
    return float(lp.total[0]), float(lp.mean[0])


def jitter(curve: pd.DataFrame, d: int) -> dict[str, float]:
    """How rough the curve is in each region (below 10% of d, 10-50%, above 50%):

    - ``jitter_<region>``: median |logp(k+1) - logp(k)| over the region's adjacent pairs (nats);
    - ``smooth_step_<region>``: what a smooth monotone curve with the same rise would change per
      unit k there: |logp(end) - logp(start)| / (end - start), start and end the evaluated k
      nearest the region's bounds (the null "a steep slope, not chaos");
    - ``roughness_<region>``: jitter / smooth step. About 1 for a smooth curve however steep;
      much larger where neighbouring k jump around more than the region's net rise explains.
    """
    lp = dict(zip(curve.k, curve.logprob, strict=False))
    ks = np.array(sorted(lp))
    out = {}
    for lo, hi, name in REGIONS:
        diffs = [
            abs(lp[b] - lp[a])
            for a, b in jitter_pairs(d)
            if lo <= a / d < hi and a in lp and b in lp
        ]
        jit = float(np.median(diffs)) if diffs else float("nan")
        inside = ks[(ks >= lo * d) & (ks <= hi * d)]
        if len(inside) >= 2 and inside[-1] > inside[0]:
            step = abs(lp[inside[-1]] - lp[inside[0]]) / float(inside[-1] - inside[0])
        else:
            step = float("nan")
        out[f"jitter_{name}"] = jit
        out[f"smooth_step_{name}"] = step
        out[f"roughness_{name}"] = jit / max(step, 1e-6) if np.isfinite(step) else float("nan")
    return out


def curve_summary(
    text: Text, curve: pd.DataFrame, ordering: str = "singular_value"
) -> dict[str, Any]:
    d, base = text.d_model, text.baseline
    ev = text.evaluator(ordering)
    conv = stable_crossing(
        ev, base - CONVERGED_NATS, d, sorted(curve.k)
    ).k  # from this curve's ks, not the memo's
    unclipped = curve[curve.k == d].orig_delta.iloc[0]
    low = curve[(curve.k > 0) & (curve.k <= max(1, d // 64))]
    return {
        "baseline_logprob": base,
        "d_model": d,
        "k_converged": conv,
        "k_converged_frac": conv / d,
        "converged_nats": CONVERGED_NATS,
        "noise_at_d": abs(float(curve[curve.k == d].logprob.iloc[0]) - base),
        **jitter(curve, d),
        "min_logprob": float(curve.logprob.min()),
        "k_at_max_orig_delta": int(curve.loc[curve.orig_delta.idxmax(), "k"]),
        "max_orig_delta_over_unclipped": float(curve.orig_delta.max() / unclipped),
        "low_k_orig_delta_over_unclipped": float(low.orig_delta.median() / unclipped)
        if len(low)
        else float("nan"),
    }


@dataclass
class ClippingResult(ExperimentResult):
    name = "clipping"

    @property
    def curve(self) -> pd.DataFrame:
        return self.tables["curve"]

    def summary(self) -> dict[str, Any]:
        return dict(self.meta.get("curve_summary", {}))

    def figures(self) -> dict[str, Any]:
        return curve_figures(
            self.curve, self.meta["baseline_logprob"], f"{self.meta['model']['name']}: clipping"
        )


@register(
    "clipping",
    result=ClippingResult,
    builtin=True,
    stage="default",
    order=20,
    help="log-probability of the continuation with the writes clipped to the top k directions",
)
def run_clipping(
    model: Any,
    completion: "Completion | Text",
    *,
    ks: Sequence[int] | None = None,
    kinds: Sequence[str]
    | None = None,  # default: the prepared text's (attention + MLP for a completion)
    exhaustive: bool = False,
    chunk_size: int | None = None,
    progress: bool = False,
) -> ClippingResult:
    """Clipping curve in singular-value order (the study's experiment 2)."""
    text = as_text(model, completion, kinds=kinds, chunk_size=chunk_size, progress=progress)
    ks = list(ks) if ks is not None else curve_ks(text.d_model, exhaustive=exhaustive)
    curve = clipping_curve(text, "singular_value", ks=ks)
    summary = curve_summary(text, curve)
    return ClippingResult(
        tables={"curve": curve},
        settings={
            "kinds": list(text.kinds),
            "n_k": len(ks),
            "exhaustive": exhaustive,
            "converged_nats": CONVERGED_NATS,
        },
        meta=text.meta(curve_summary=summary, forward_rows=text.evaluator("singular_value").n_rows),
    )
