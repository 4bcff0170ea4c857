"""Extension example: clip only the writes of some layers (and kinds), all others untouched.

Shows how a new hook-based experiment is built from the core: a pure function from
``interp.projection``, a context manager that registers thin hooks through ``model.hooks`` (so
they are always removed), and a typed result with tidy tables. It lives outside the package and
uses only public names (``interp``, ``experiments``); registered as a plug-in, the CLI runs it
beside the built-in experiments::

    export RESID_WRITES_PLUGINS=examples/layer_clipping/layer_clipping.py
    python -m experiments run layer_clipping --prompt relativity --out results/one

See docs/extending.md; examples/layer_range/ is the complete example, with its own tests.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

import experiments as E
from interp import (
    Completion,
    continuation_logprob,
    model_device,
    normalize_kinds,
    prefix_masks,
    project,
    write_hook_name,
)
from interp.sweeps import count_rows


@contextmanager
def clip_layers(
    model: Any,
    directions: torch.Tensor,
    layers: Sequence[int],
    *,
    mask: torch.Tensor | None = None,
    kinds: Sequence[str] = ("attn", "mlp"),
) -> Iterator[None]:
    """Like ``project_writes``, restricted to ``layers``."""
    v = directions.to(model_device(model), torch.float32)
    m = None if mask is None else mask.to(v.device)

    def hook(x: torch.Tensor, *, hook: Any) -> torch.Tensor:
        return project(x.float(), v, m).to(x.dtype)

    names = [write_hook_name(layer, kind) for layer in layers for kind in normalize_kinds(kinds)]
    with model.hooks(fwd_hooks=[(n, hook) for n in names]):
        yield


@dataclass
class LayerClippingResult(E.ExperimentResult):
    name = "layer_clipping"

    def figures(self) -> dict[str, Any]:
        import plotly.express as px

        return {
            "layer_clipping": px.line(
                self.tables["curve"],
                x="k",
                y="logprob",
                color="layers",
                render_mode="svg",
                title="clipping only some layers' writes",
            )
        }


def default_layer_sets(n_layers: int) -> dict[str, range]:
    """The first layer, the first half, the second half and all layers."""
    half = n_layers // 2
    return {
        "first": range(0, 1),
        "early": range(0, half),
        "late": range(half, n_layers),
        "all": range(n_layers),
    }


@E.register(
    "layer_clipping",
    result=LayerClippingResult,
    help="clip only some layers' writes, all others untouched",
)
def run_layer_clipping(
    model: Any,
    completion: "Completion | E.Text",
    *,
    layer_sets: dict[str, Sequence[int]] | None = None,
    ks: Sequence[int] | None = None,
    kinds: tuple[str, ...] | None = None,
) -> LayerClippingResult:
    """One clipping curve (over ``ks``, batched) per named set of layers (``kinds``: the text's).
    Defaults: ``default_layer_sets`` and k = 0, d/16, d/8, d/4, d/2, 3d/4, d."""
    text = E.as_text(model, completion, kinds=kinds)
    kinds = text.kinds
    basis, completion = text.basis, text.completion
    d = basis.d_model
    if layer_sets is None:
        layer_sets = default_layer_sets(int(model.cfg.n_layers))
    if ks is None:
        ks = sorted({0, d // 16, d // 8, d // 4, d // 2, 3 * d // 4, d})
    ks = list(ks)
    masks = prefix_masks(ks, d)
    rows = []
    for label, layers in layer_sets.items():
        with (
            torch.inference_mode(),
            clip_layers(model, basis.vectors, layers, mask=masks, kinds=kinds),
        ):
            lp = continuation_logprob(
                model, completion.prompt_tokens, completion.continuation_tokens, batch_size=len(ks)
            )
        count_rows(len(ks), completion.tokens.numel())
        rows += [
            {"layers": label, "k": k, "logprob": float(v)}
            for k, v in zip(ks, lp.total.cpu(), strict=False)
        ]
    return LayerClippingResult(
        tables={"curve": pd.DataFrame(rows)},
        settings={
            "layer_sets": {k: list(v) for k, v in layer_sets.items()},
            "ks": list(ks),
            "kinds": list(kinds),
        },
        meta=text.meta(),
    )
