"""The experiments' ground: texts cut to a length (the same sampled tokens, nested prefixes) and
the study's length scaled to a model's width. Stands on ``interp`` and ``experiments.facts``
only."""

from typing import Any

from interp import Completion

from .facts import STUDY_D_MODEL, STUDY_NEW_TOKENS


def scaled_length(
    d_model: int, *, new_tokens: int = STUDY_NEW_TOKENS, study_d_model: int = STUDY_D_MODEL
) -> int:
    """The study's new tokens per residual dimension on a model of width ``d_model``:
    ``round(new_tokens * d_model / study_d_model)``, at least 1 (9 for d = 576, 10 for d = 640)."""
    return max(1, int(round(new_tokens * d_model / study_d_model)))


def cut_continuation(model: Any, completion: Completion, n: int) -> Completion:
    """The completion with its continuation cut to its first ``n`` tokens (the prompt and the
    sampled tokens unchanged; the text decoded with ``model``'s tokenizer when given)."""
    n_full = int(completion.continuation_tokens.numel())
    if not 1 <= n <= n_full:
        raise ValueError(
            f"cannot cut a {n_full}-token continuation to {n} tokens (need 1 <= n <= {n_full})"
        )
    cont = completion.continuation_tokens[:n].clone()
    text = model.tokenizer.decode(cont.tolist()) if model is not None else ""
    return Completion(
        completion.prompt,
        completion.prompt_tokens.clone(),
        cont,
        text,
        meta={**completion.meta, "cut_to": n, "cut_from": n_full},
    )
