"""The study's four prompts (Llama 3's text-completion examples), exactly as in STUDY.md, and
each model's own continuation of them, sampled once with a seed and stored for exact reruns."""

import json
from pathlib import Path
from typing import Any

from interp import Completion, sample_continuation, sample_continuations, tokenizer_fingerprint

# Inside the multi-line prompts every indented line starts with 8 spaces.
PROMPTS: dict[str, str] = {
    "meaning_of_life": "I believe the meaning of life is",
    "relativity": "Simply put, the theory of relativity states that ",
    "launch": (
        "A brief message congratulating the team on the launch:\n\n        Hi everyone,\n"
        "\n        I just "
    ),
    "translate": (
        "Translate English to French:\n\n"
        "        sea otter => loutre de mer\n"
        "        peppermint => menthe poivrée\n"
        "        plush girafe => girafe peluche\n"
        "        cheese =>"
    ),
}

# The replication set: the study's four and twelve more, varied in genre and language, so that
# claims are judged over many texts (with several sampled continuations each), not four.
REPLICATION_PROMPTS: dict[str, str] = {
    **PROMPTS,
    "recipe": "To make a simple tomato soup, you will need",
    "history": "The Roman Empire fell in the West in 476 AD because",
    "python_code": 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    "sql_code": "-- Find the ten customers who spent the most last year\nSELECT",
    "dialogue": "Customer: Hi, my order arrived damaged.\nAgent: I'm sorry to hear that. Could you",
    "shopping_list": "Shopping list for the week:\n1. Eggs\n2. Milk\n3.",
    "poem": "Roses are red, violets are blue,",
    "news": "BREAKING: Scientists announced today that",
    "german": "Es war einmal ein kleines Mädchen, das",
    "spanish": "La ciudad de Barcelona es famosa por",
    "math": "Solve for x: 3x + 7 = 22.\nSolution:",
    "email": "Dear Professor Smith,\n\nI am writing to ask whether",
}


SAMPLING = {"max_new_tokens": 64, "temperature": 0.6, "top_p": 0.9}


def load_prompts_file(path: str | Path) -> dict[str, str]:
    """Prompts from a file: JSONL (objects with ``text`` or ``prompt``, optional ``name``) or plain
    text, one prompt per line (``\\n`` in a line stands for a newline). Names default to p01,
    p02..."""
    return {name: text for _, name, text in read_prompts_file(path)}


def read_prompts_file(path: str | Path) -> list[tuple[int, str, str]]:
    """``load_prompts_file``'s prompts as (line number in the file, name, text), in file order;
    blank lines are skipped (they number no prompt)."""
    prompts: list[tuple[int, str, str]] = []
    text = Path(path).read_text(encoding="utf-8")
    lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise ValueError(
            f"{path} holds no prompts: give one per line, or JSONL objects with a 'text' field."
        )
    names: set[str] = set()
    for n, (i, line) in enumerate(lines, 1):
        name = f"p{n:02d}"
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path}, line {i}: not valid JSON ({err.msg}); use one JSON object per line, "
                    "or plain text lines"
                ) from err
            text = obj.get("text", obj.get("prompt"))
            if text is None:
                raise ValueError(
                    f"{path}, line {i}: a JSON object needs a 'text' (or 'prompt') field"
                )
            name = str(obj.get("name", name))
        else:
            text = line.replace("\\n", "\n")
        if name in names:
            raise ValueError(f"{path}, line {i}: the name {name!r} is used twice")
        names.add(name)
        prompts.append((i, name, text))
    return prompts


def _stored(model: Any, path: Path, text: str, settings: dict[str, Any]) -> Completion | None:
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    same = stored.get("meta", {}).get("tokenizer") == tokenizer_fingerprint(model.tokenizer)
    same = same and all(stored["meta"].get(k) == v for k, v in settings.items())
    return Completion.from_dict(stored, model) if same and stored["prompt"] == text else None


def sample_missing(model: Any, items: list[tuple[str, int, Path]], **sampling: Any) -> None:
    """Sample and store, in one batch per seed, every (text, seed, store) not stored yet.

    Each row draws from the seed's stream of uniform numbers, shared by the rows (see
    ``interp.sample_token``), so a text gets the same continuation as ``get_continuation`` alone
    would give it (up to float rounding in the padded batch); generation is memory-bound on a
    CPU, so a batch costs about what one text costs.
    """
    for seed in sorted({seed for _, seed, _ in items}):
        settings = {**SAMPLING, **sampling, "seed": seed}
        todo = [
            (t, p) for t, sd, p in items if sd == seed and _stored(model, p, t, settings) is None
        ]
        if not todo:
            continue
        for (_t, path), comp in zip(
            todo,
            sample_continuations(model, [t for t, _ in todo], use_cache=True, **settings),
            strict=False,
        ):
            comp.meta["sample"] = 0
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(comp.to_dict(), indent=2, ensure_ascii=False))


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
    text = REPLICATION_PROMPTS.get(prompt, prompt)
    settings = {**SAMPLING, **sampling, "seed": seed}
    path = Path(store) if store is not None else None
    if path is not None and (found := _stored(model, path, text, settings)) is not None:
        return found
    completion = sample_continuation(model, text, use_cache=True, **settings)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(completion.to_dict(), indent=2, ensure_ascii=False))
    return completion
