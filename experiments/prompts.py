"""The study's four prompts (Llama 3's text-completion examples), exactly as in STUDY.md, and
each model's own continuation of them, sampled once with a seed and stored for exact reruns."""

import json
from pathlib import Path
from typing import Any

from interp import Completion, sample_continuation, tokenizer_fingerprint

# Inside the multi-line prompts every indented line starts with 8 spaces.
PROMPTS: dict[str, str] = {
    "meaning_of_life": "I believe the meaning of life is",
    "relativity": "Simply put, the theory of relativity states that ",
    "launch": "A brief message congratulating the team on the launch:\n\n        Hi everyone,\n\n        I just ",
    "translate": (
        "Translate English to French:\n\n"
        "        sea otter => loutre de mer\n"
        "        peppermint => menthe poivrée\n"
        "        plush girafe => girafe peluche\n"
        "        cheese =>"
    ),
}

# The study's numbers (Llama-3-8B, d_model 4096), for reports.
STUDY_MIN_K = {"meaning_of_life": 1886, "relativity": 3329, "launch": 2696, "translate": 2518}
STUDY_D_MODEL = 4096

SAMPLING = {"max_new_tokens": 64, "temperature": 0.6, "top_p": 0.9}


def get_continuation(
    model: Any,
    prompt: str,
    *,
    seed: int = 0,
    store: str | Path | None = None,
    **sampling: Any,
) -> Completion:
    """The model's own continuation of ``prompt`` (a key of PROMPTS or raw text).

    With ``store`` (a JSON file), a stored continuation is reused when it was made by this
    model's tokenizer with the same settings, and a new one is saved otherwise.
    """
    text = PROMPTS.get(prompt, prompt)
    settings = {**SAMPLING, **sampling, "seed": seed}
    path = Path(store) if store is not None else None
    if path is not None and path.exists():
        stored = json.loads(path.read_text())
        same = stored.get("meta", {}).get("tokenizer") == tokenizer_fingerprint(model.tokenizer)
        same = same and all(stored["meta"].get(k) == v for k, v in settings.items())
        if same and stored["prompt"] == text:
            return Completion.from_dict(stored, model)
    completion = sample_continuation(model, text, **settings)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(completion.to_dict(), indent=2, ensure_ascii=False))
    return completion
