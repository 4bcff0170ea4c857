"""Experiment 6: sample from the model clipped to a subspace (the minimal one by default), after
the prompt and from an empty prompt (BOS only), beside the unclipped model's samples."""

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from interp import (
    Completion,
    continuation_logprob,
    prefix_masks,
    project_writes,
    sample_continuations,
)

from .base import ExperimentResult, Text, as_text
from .registry import register


@dataclass
class ClippedGenerationResult(ExperimentResult):
    name = "clipped_generation"

    @property
    def samples(self) -> pd.DataFrame:
        return self.tables["samples"]

    def summary(self) -> dict[str, Any]:
        t = self.samples
        first = t.groupby(["model", "start"]).text.first()
        out: dict[str, Any] = {f"{m}/{s}": x for (m, s), x in first.items()}
        after = t[t.start == "prompt"].groupby("model").logprob_per_token.mean()
        if {"clipped", "unclipped"} <= set(after.index):
            # how much less likely the unclipped model finds the clipped model's text (nats/token)
            out["degradation_nats_per_token"] = float(after["unclipped"] - after["clipped"])
        out["k"] = self.settings["k"]
        out["k_frac"] = self.settings["k"] / self.meta["model"]["d_model"]
        return out

    def figures(self) -> dict[str, Any]:
        import plotly.graph_objects as go

        t = self.samples
        fig = go.Figure(
            go.Table(
                header=dict(values=["model", "start", "sample", "text"]),
                cells=dict(values=[t.model, t.start, t["sample"], t.text.str.slice(0, 300)]),
            )
        )
        fig.update_layout(
            title=f"{self.meta['model']['name']}: samples, clipped to k={self.settings['k']}"
        )
        return {"clipped_samples": fig}


def _score(model: Any, sample: Completion) -> float:
    """Mean log-probability per token of a sample under the unclipped model."""
    if sample.continuation_tokens.numel() == 0:
        return float("nan")
    with torch.inference_mode():
        return float(
            continuation_logprob(model, sample.prompt_tokens, sample.continuation_tokens).mean[0]
        )


def run_clipped_generation(
    model: Any,
    completion: "Completion | Text",
    *,
    k: int,
    order: list[int] | None = None,
    kinds: tuple[str, ...]
    | None = None,  # default: the prepared text's (attention + MLP for a completion)
    n_samples: int = 3,
    max_new_tokens: int = 32,
    temperature: float = 0.6,
    top_p: float = 0.9,
    seed: int = 0,
) -> ClippedGenerationResult:
    """``k`` directions of the text's basis (in ``order``, default singular-value order) are kept;
    samples after the prompt and from BOS alone, clipped and unclipped, in one batch with paired
    randomness (the KV cache is used; the hooks clip each new token's writes).
    Samples after the prompt are scored under the unclipped model (``logprob_per_token``)."""
    text = as_text(model, completion, kinds=kinds)
    if not 0 <= k <= text.d_model:
        raise ValueError(f"k must be in 0..{text.d_model}, got {k}")
    order = torch.as_tensor(order if order is not None else range(text.d_model))
    directions = text.basis.vectors[:, order].float()
    settings = dict(
        num_samples=n_samples, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p
    )
    # one batch: (prompt, empty start) x (unclipped, clipped) x samples; the clipped rows keep the
    # first k directions, the unclipped rows all of them (exactly the model: see
    # projection.compact). Row i of every group shares its random numbers, so clipped and unclipped
    # samples are paired.
    conditions = [
        ("prompt", "unclipped"),
        ("prompt", "clipped"),
        ("empty", "unclipped"),
        ("empty", "clipped"),
    ]
    keep = prefix_masks(
        [text.d_model if label == "unclipped" else k for _, label in conditions], text.d_model
    )
    mask = keep.repeat_interleave(n_samples, dim=0)
    starts = {"prompt": text.completion.prompt, "empty": ""}
    with project_writes(model, directions, mask=mask, kinds=text.kinds, record=False):
        samples = sample_continuations(
            model, [starts[start] for start, _ in conditions], seed=seed, use_cache=True, **settings
        )
    rows = []
    for i, s in enumerate(samples):
        start, label = conditions[i // n_samples]
        rows.append(
            {
                "model": label,
                "start": start,
                "sample": i % n_samples,
                "text": s.continuation_text,
                "n_tokens": s.continuation_tokens.numel(),
                "logprob_per_token": _score(model, s) if start == "prompt" else float("nan"),
            }
        )
    return ClippedGenerationResult(
        tables={"samples": pd.DataFrame(rows)},
        settings={"k": k, "kinds": list(text.kinds), "seed": seed, **settings},
        meta=text.meta(clipped_by="hooks, KV cache, one batch with the unclipped samples"),
    )


@register(
    "clipped_generation",
    result=ClippedGenerationResult,
    builtin=True,
    stage="default",
    order=60,
    generation=True,
    help="text sampled with the writes clipped to the minimal subspace, beside unclipped",
)
def clipped_generation_experiment(
    model: Any,
    text: "Completion | Text",
    *,
    results: Any = None,
    k: int | None = None,
    n_samples: int = 3,
    generation_tokens: int = 32,
    temperature: float = 0.6,
    top_p: float = 0.9,
    seed: int = 0,
    tolerance: float = 1e-4,
    exhaustive: bool = False,
) -> ClippedGenerationResult:
    """``run_clipped_generation`` keeping ``k`` directions: by default the minimal k of the text's
    ``minimal_subspace`` result (singular-value order), else of one computed here (no random null);
    ``generation_tokens`` new tokens a sample (the pipeline: at most 32 and its own continuation
    length)."""
    from .minimal_subspace import run_minimal_subspace

    if k is None:
        found = (results or {}).get("minimal_subspace")
        k = (
            found.order("singular_value")
            if found is not None
            else run_minimal_subspace(
                model, text, tolerance=tolerance, random_null=False, exhaustive=exhaustive
            ).order()
        )
    return run_clipped_generation(
        model,
        text,
        k=k,
        n_samples=n_samples,
        max_new_tokens=generation_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
    )
