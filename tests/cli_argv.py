"""Command lines for the CLI tests, written as keyword arguments rather than long lists of flags.

``argv("run", "clipping", prompt="relativity", out=p, max_new_tokens=5)`` gives
``["run", "clipping", "--device", "cpu", "--no-progress", "--prompt", "relativity", "--out", "<p>",
"--max-new-tokens", "5"]``: a keyword becomes its flag (``_`` -> ``-``, a trailing one dropped:
``with_`` is ``--with``); True gives the bare flag,
False or None leaves it out, a list or tuple gives the flag and then its items (an empty one: the
bare flag, as ``--exact-with`` alone), anything else its ``str``. Every test run is on the CPU and
without progress bars unless it says otherwise (``device=None``, ``no_progress=False``).
"""

from typing import Any


def argv(command: str, *names: str, **flags: Any) -> list[str]:
    out = [command, *names]
    for key, value in {"device": "cpu", "no_progress": True, **flags}.items():
        flag = "--" + key.rstrip("_").replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            out.append(flag)
        elif isinstance(value, (list, tuple)):
            out += [flag, *map(str, value)]
        else:
            out += [flag, str(value)]
    return out


def tiny_replicate(model: Any, out: Any, **flags: Any) -> list[str]:
    """``replicate`` of two study prompts (seed 0) at test size: 6 new tokens, one sample, five
    overlap draws, no images, the exact stage on the first text, docs beside ``out``; ``flags``
    added or overriding."""
    tiny = {
        "models": model,
        "seeds": 0,
        "prompts": ["meaning_of_life", "translate"],
        "out": out,
        "docs": f"{out}_docs",
        "max_new_tokens": 6,
        "samples": 1,
        "draws": 5,
        "no_images": True,
        "exact_texts": 1,
    }
    return argv("replicate", **{**tiny, **flags})
