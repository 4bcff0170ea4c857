"""Extension example: clip only the writes of some layers (and kinds), all others untouched.

Shows how a new hook-based experiment is built from the core: a pure function from
``interp.projection``, a context manager that registers thin hooks through ``model.hooks`` (so
they are always removed), and a typed result with tidy tables. See docs/extending.md.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from interp import Completion, continuation_logprob, normalize_kinds, prefix_masks, project
from interp.sweeps import count_rows
from interp.writes import model_device, write_hook_name

from .base import ExperimentResult, Text, as_text


@contextmanager
def clip_layers(model: Any, directions: torch.Tensor, layers: Sequence[int], *, mask: torch.Tensor | None = None,
                kinds: Sequence[str] = ("attn", "mlp")) -> Iterator[None]:
    """Like ``project_writes``, restricted to ``layers``."""
    v = directions.to(model_device(model), torch.float32)
    m = None if mask is None else mask.to(v.device)

    def hook(x: torch.Tensor, *, hook: Any) -> torch.Tensor:
        return project(x.float(), v, m).to(x.dtype)

    names = [write_hook_name(layer, kind) for layer in layers for kind in normalize_kinds(kinds)]
    with model.hooks(fwd_hooks=[(n, hook) for n in names]):
        yield


@dataclass
class LayerClippingResult(ExperimentResult):
    name = "layer_clipping"

    def figures(self) -> dict[str, Any]:
        import plotly.express as px

        return {"layer_clipping": px.line(self.tables["curve"], x="k", y="logprob", color="layers", render_mode="svg",
                                          title="clipping only some layers' writes")}


def run_layer_clipping(model: Any, completion: "Completion | Text", *, layer_sets: dict[str, Sequence[int]],
                       ks: Sequence[int], kinds: tuple[str, ...] | None = None) -> LayerClippingResult:
    """One clipping curve (over ``ks``, batched) per named set of layers (``kinds``: the text's)."""
    text = as_text(model, completion, kinds=kinds)
    kinds = text.kinds
    basis, completion = text.basis, text.completion
    masks = prefix_masks(ks, basis.d_model)
    rows = []
    for label, layers in layer_sets.items():
        with torch.inference_mode(), clip_layers(model, basis.vectors, layers, mask=masks, kinds=kinds):
            lp = continuation_logprob(model, completion.prompt_tokens, completion.continuation_tokens, batch_size=len(ks))
        count_rows(len(ks), completion.tokens.numel())
        rows += [{"layers": label, "k": k, "logprob": float(v)} for k, v in zip(ks, lp.total.cpu())]
    return LayerClippingResult(
        tables={"curve": pd.DataFrame(rows)},
        settings={"layer_sets": {k: list(v) for k, v in layer_sets.items()}, "ks": list(ks), "kinds": list(kinds)},
        meta=text.meta(),
    )
