"""Checks the command line makes before a model loads, and how it ends when a run stops.

Everything that can fail without the model's weights fails here, as one line with exit status 2
and nothing written: an output folder that cannot be written, a model that does not exist, a
prompt longer than the model's context (read from its config and tokenizer, no weights), a
``--docs`` folder that holds another run's published results. After the model loads, the same
context check runs once more on the model's own numbers, for every prompt at once, before any
text is computed. An interrupted or failed run says how to go on (``interrupted``, ``error_log``).
"""

import json
import os
import tempfile
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class UsageError(ValueError):
    """Bad command-line input: printed as one line ``error: <what> (<how to fix>)``, exit
    status 2."""


def check_writable(path: str | Path, flag: str = "--out") -> None:
    """Raise ``UsageError`` unless ``path`` is, or can be made as, a folder this process can write
    (its nearest existing ancestor is a folder that takes a file). Writes nothing that stays."""
    path = Path(path).expanduser()
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{flag} {path}: {probe} is a file, not a folder (give a folder path)")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise UsageError(
            f"{flag} {path} cannot be written ({err.strerror or err} in {probe}) "
            "(give a folder you can write to)"
        ) from None


@dataclass(frozen=True)
class ModelLimits:
    """What the checks need to know of a model before its weights load."""

    name: str
    n_ctx: int
    d_model: int | None
    tokenizer: Any


# The config fields TransformerLens reads n_ctx from, in its order (not ``max_length``, which many
# configs carry as a generation default: without the others the loaded model decides).
N_CTX_FIELDS = (
    "n_positions",
    "max_position_embeddings",
    "max_context_length",
    "seq_length",
    "max_sequence_length",
)


def _config_int(config: Any, names: Iterable[str]) -> int | None:
    for cfg in (config, getattr(config, "text_config", None)):
        for name in names:
            value = getattr(cfg, name, None) if cfg is not None else None
            if isinstance(value, int) and value > 0:
                return value
    return None


def model_limits(model: str | None) -> ModelLimits | None:
    """The context length, width and tokenizer of ``model`` (a name or path as ``--model`` takes
    it) without loading weights, or None when they cannot be read that way (then the check runs
    right after the model loads). A model that cannot be found raises ``UsageError``."""
    from interp import ModelNotFoundError
    from interp.models import RANDOM_PREFIX, resolve_model

    if model is not None and str(model).startswith(RANDOM_PREFIX):
        from interp.testing import SHAPES, make_tokenizer

        shape = SHAPES.get(str(model)[len(RANDOM_PREFIX) :])
        if shape is None:
            raise UsageError(
                f"unknown shape {str(model)[len(RANDOM_PREFIX) :]!r} for random weights (--model "
                f"{model}); choose one of {sorted(SHAPES)}, e.g. --model {RANDOM_PREFIX}tiny-gpt2"
            )
        return ModelLimits(str(model), shape[1]["n_ctx"], shape[1]["d_model"], make_tokenizer())
    try:
        resolved = resolve_model(model, progress=True)
    except ModelNotFoundError as err:
        raise UsageError(str(err)) from None
    try:
        from transformers import AutoConfig, AutoTokenizer

        config = AutoConfig.from_pretrained(resolved.target)
        n_ctx = _config_int(config, N_CTX_FIELDS)
        if n_ctx is None:
            return None
        tokenizer = AutoTokenizer.from_pretrained(resolved.target)
    except Exception:  # an unusual layout: the model's own numbers are checked after it loads
        return None
    d_model = _config_int(config, ("hidden_size", "n_embd", "d_model"))
    return ModelLimits(resolved.name, n_ctx, d_model, tokenizer)


def check_prompts_fit(
    prompts: list[tuple[str, str]], limits: ModelLimits, max_new_tokens: int
) -> None:
    """Raise ``UsageError`` naming every prompt (``(label, text)``) whose tokens (BOS first) and
    ``max_new_tokens`` new ones exceed the model's context, and how to fix it. The whole file is
    refused, not the long prompts skipped: a results folder always holds the texts asked for."""
    from types import SimpleNamespace

    from interp.tokens import encode_prompt

    holder = SimpleNamespace(tokenizer=limits.tokenizer)
    long = [(label, len(encode_prompt(holder, text))) for label, text in prompts]
    long = [(label, n) for label, n in long if n + max_new_tokens > limits.n_ctx]
    if not long:
        return
    what = "; ".join(f"{label}: {n} tokens" for label, n in long)
    room = limits.n_ctx - max(n for _, n in long)
    fix = f"shorten or remove {'it' if len(long) == 1 else 'them'}" + (
        f", or give --max-new-tokens {room} or fewer" if room > 0 else ""
    )
    verb = "exceeds" if len(long) == 1 else "exceed"
    raise UsageError(
        f"{what} + {max_new_tokens} new tokens {verb} the context of {limits.name} "
        f"({limits.n_ctx} tokens) ({fix})"
    )


def published_difference(
    docs: Path,
    plan: dict[str, tuple[list[str], dict[str, Any]]],
    added: dict[str, Any] | None = None,
) -> list[str]:
    """How the published results in ``docs`` (``<model>/texts.csv`` and ``environment.json``, as
    ``replicate`` exports them) differ from a run that would export ``plan`` there (model folder
    -> (text ids, the settings that change numbers)); empty when ``docs`` holds none, or the same.
    A setting the published run lacks counts as its ``added`` value (settings added later)."""
    import pandas as pd

    if not docs.is_dir():
        return []
    published = {p.name: p for p in sorted(docs.iterdir()) if (p / "texts.csv").is_file()}
    if not published:
        return []
    diff = []
    if set(published) != set(plan):
        diff.append(f"models: {', '.join(published)} published vs {', '.join(plan)} here")
    for name in [n for n in plan if n in published]:
        texts, settings = plan[name]
        ids = pd.read_csv(published[name] / "texts.csv", usecols=["text"]).text.astype(str).tolist()
        if sorted(ids) != sorted(texts):
            diff.append(
                f"{name} texts: {len(ids)} published ({_some(ids)}) vs {len(texts)} here "
                f"({_some(texts)})"
            )
        env_path = published[name] / "environment.json"
        if env_path.is_file():
            old = json.loads(env_path.read_text()).get("settings") or {}
            old = {**{k: v for k, v in (added or {}).items() if k not in old}, **old}
            diff += [f"{name} {d}" for d in differences({"settings": old}, {"settings": settings})]
    return diff


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")


def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples become lists): saved and new compare."""
    return json.loads(json.dumps(value, default=str))


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def differences(earlier: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Every key (dotted, e.g. ``settings.tolerance``) whose value differs: ``key: old -> new``."""
    a, b = _flat(_plain(earlier), ""), _flat(_plain(now), "")
    missing = "(none)"
    return [
        f"{k}: {json.dumps(a.get(k, missing))} -> {json.dumps(b.get(k, missing))}"
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    ]


@dataclass
class Progress:
    """How many of a command's texts are finished (loaded or computed): the interrupt message."""

    done: int = 0
    total: int = 0


PROGRESS = Progress()


def interrupted() -> str:
    """The one line a Ctrl-C prints."""
    return (
        f"interrupted after {PROGRESS.done} of {PROGRESS.total} texts; rerun the same command "
        "to resume (finished results are kept)"
    )


def error_log(err: BaseException) -> Path | None:
    """Write ``err``'s traceback to a new log file (in the temporary folder, never in ``--out``)
    and return its path, or None if no file can be written there."""
    folder = Path(tempfile.gettempdir()) / "resid-writes"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        path.write_text("".join(traceback.format_exception(type(err), err, err.__traceback__)))
    except OSError:
        return None
    return path
