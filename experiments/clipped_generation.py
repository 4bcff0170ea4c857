"""Experiment 6: sample from the model clipped to a subspace (the minimal one by default), after
the prompt and from an empty prompt (BOS only), beside the unclipped model's samples."""

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from interp import Basis, Completion, normalize_kinds, project_writes, sample_continuations

from .base import ExperimentResult, basis_for, run_meta


@dataclass
class ClippedGenerationResult(ExperimentResult):
    name = "clipped_generation"

    @property
    def samples(self) -> pd.DataFrame:
        return self.tables["samples"]

    def summary(self) -> dict[str, Any]:
        first = self.samples.groupby(["model", "start"]).text.first()
        return {f"{m}/{s}": t for (m, s), t in first.items()}

    def figures(self) -> dict[str, Any]:
        import plotly.graph_objects as go

        t = self.samples
        fig = go.Figure(
            go.Table(
                header=dict(values=["model", "start", "sample", "text"]),
                cells=dict(values=[t.model, t.start, t["sample"], t.text.str.slice(0, 300)]),
            )
        )
        fig.update_layout(title=f"{self.meta['model']['name']}: samples, clipped to k={self.settings['k']}")
        return {"clipped_samples": fig}


def run_clipped_generation(
    model: Any,
    completion: Completion,
    *,
    k: int,
    basis: Basis | None = None,
    order: list[int] | None = None,
    kinds: tuple[str, ...] = ("attn", "mlp"),
    n_samples: int = 3,
    max_new_tokens: int = 48,
    temperature: float = 0.6,
    top_p: float = 0.9,
    seed: int = 0,
) -> ClippedGenerationResult:
    """``k`` directions of ``basis`` (in ``order``, default singular-value order) are kept."""
    kinds = normalize_kinds(kinds)
    basis = basis or basis_for(model, completion, kinds=kinds)
    cols = torch.as_tensor(order if order is not None else range(basis.d_model))[:k]
    subspace = basis.vectors[:, cols].float()
    settings = dict(num_samples=n_samples, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    rows = []
    for start, prompt in (("prompt", completion.prompt), ("empty", "")):
        for label in ("unclipped", "clipped"):
            if label == "clipped":
                with project_writes(model, subspace, kinds=kinds, record=False):
                    samples = sample_continuations(model, prompt, seed=seed, **settings)
            else:
                samples = sample_continuations(model, prompt, seed=seed, **settings)
            rows += [
                {"model": label, "start": start, "sample": i, "text": s.continuation_text,
                 "n_tokens": s.continuation_tokens.numel()}
                for i, s in enumerate(samples)
            ]
    return ClippedGenerationResult(
        tables={"samples": pd.DataFrame(rows)},
        settings={"k": k, "kinds": list(kinds), "seed": seed, **settings},
        meta=run_meta(model, completion),
    )
