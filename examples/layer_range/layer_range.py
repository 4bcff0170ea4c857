"""A plug-in experiment living outside the package: clip the writes of a range of layers to the
top-k directions of a *local* basis (the SVD of those layers' writes only) or of the text's
global basis, all other writes untouched.

Run it beside the built-in experiments::

    export RESID_WRITES_PLUGINS=examples/layer_range/layer_range.py
    python -m experiments run layer_range --prompt relativity --out results/one
    python -m experiments reproduce --with layer_range --out results

Only public names are used (``interp``, ``experiments``); see docs/extending.md.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

import experiments as E
from interp import (
    continuation_logprob,
    model_device,
    prefix_masks,
    project,
    write_basis,
    write_hook_name,
)

GAP_NATS = 1.0  # summary: the smallest k within this many nats of the unclipped log-probability


@contextmanager
def clip_layers(
    model: Any,
    directions: Float[Tensor, "d_model r"],
    layers: Sequence[int],
    *,
    mask: Float[Tensor, "batch r"] | None = None,
    kinds: Sequence[str] = ("attn", "mlp"),
) -> Iterator[None]:
    """Inside, the writes of ``layers`` (and ``kinds``) are projected onto the columns of
    ``directions`` kept by ``mask`` (one mask row per batch row); the hooks go on exit."""
    v = directions.to(model_device(model), torch.float32)
    m = None if mask is None else mask.to(v.device)

    def hook(x: Tensor, *, hook: Any) -> Tensor:
        return project(x.float(), v, m).to(x.dtype)  # the pure function does the math

    names = [write_hook_name(layer, kind) for layer in layers for kind in kinds]
    with model.hooks(fwd_hooks=[(name, hook) for name in names]):
        yield


def default_ranges(n_layers: int) -> dict[str, range]:
    """First half, second half and all layers."""
    half = n_layers // 2
    return {"early": range(0, half), "late": range(half, n_layers), "all": range(n_layers)}


def default_ks(d: int) -> list[int]:
    return sorted({0, 1, d // 16, d // 8, d // 4, d // 2, 3 * d // 4, d})


@dataclass
class LayerRangeResult(E.ExperimentResult):
    name = "layer_range"

    @property
    def curve(self) -> pd.DataFrame:
        return self.tables["curve"]

    def summary(self) -> dict[str, Any]:
        """Per (layers, basis): the smallest k of the grid within GAP_NATS of the unclipped
        model."""
        base = self.meta["baseline_logprob"]
        out = {}
        for (layers, basis), g in self.curve.groupby(["layers", "basis"], sort=True):
            ok = g[g.logprob >= base - GAP_NATS].k
            out[f"k_within_{GAP_NATS:g}_nats[{layers}/{basis}]"] = (
                int(ok.min()) if len(ok) else None
            )
        return out

    def figures(self) -> dict[str, Any]:
        import plotly.express as px

        return {
            "layer_range": px.line(
                self.curve,
                x="k",
                y="logprob",
                color="layers",
                line_dash="basis",
                markers=True,
                render_mode="svg",
                title=f"{self.meta['model']['name']}: clipping a range of layers",
            )
        }


@E.register(
    "layer_range",
    result=LayerRangeResult,
    help="clip a range of layers in a local or the global basis",
)
def run_layer_range(
    model: Any,
    text: "E.Text",
    *,
    ranges: dict[str, Sequence[int]] | None = None,
    ks: Sequence[int] | None = None,
) -> LayerRangeResult:
    """One batched forward pass per (layer range, basis): every k of ``ks`` is a batch row."""
    if not isinstance(text, E.Text):
        text = E.prepare(model, text)
    n_layers, d = int(model.cfg.n_layers), text.d_model
    ranges = ranges if ranges is not None else default_ranges(n_layers)
    ks = list(ks) if ks is not None else default_ks(d)
    masks = prefix_masks(ks, d)
    idx = text.writes.index
    comp = text.completion
    rows = []
    for label, layers in ranges.items():
        local = write_basis(
            text.writes.select(idx.layer.isin(list(layers)) & idx.kind.isin(text.kinds))
        )
        for basis_name, basis in (("local", local), ("global", text.basis)):
            with (
                torch.inference_mode(),
                clip_layers(model, basis.vectors, layers, mask=masks, kinds=text.kinds),
            ):
                lp = continuation_logprob(
                    model, comp.prompt_tokens, comp.continuation_tokens, batch_size=len(ks)
                )
            rows += [
                {"layers": label, "basis": basis_name, "k": k, "logprob": float(v)}
                for k, v in zip(ks, lp.total.cpu(), strict=False)
            ]
    return LayerRangeResult(
        tables={"curve": pd.DataFrame(rows)},
        settings={
            "ranges": {k: list(v) for k, v in ranges.items()},
            "ks": ks,
            "kinds": list(text.kinds),
            "gap_nats": GAP_NATS,
        },
        meta=text.meta(),
    )


__all__ = ["LayerRangeResult", "clip_layers", "default_ks", "default_ranges", "run_layer_range"]
