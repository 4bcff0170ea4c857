"""Tiny random-init models saved as HF-format directories (with a tokenizer), for tests and
benchmarks. Nothing here is a finding: random weights reproduce no result of the study.

Architectures: ``gpt2`` (LayerNorm, biases, learned positions), ``llama`` (RMSNorm, rotary,
no biases, GQA) and ``neox`` (GPT-NeoX, parallel attention + MLP, rotary). The builders live in
``interp.toys`` (below ``interp.models``, which loads ``random:<shape>`` names with them);
``tiny_model`` builds one and loads it.
"""

from pathlib import Path
from typing import Any

from .models import load_model
from .toys import SHAPES, make_config, make_model_dir, make_tokenizer, random_model

__all__ = [
    "SHAPES",
    "make_config",
    "make_model_dir",
    "make_tokenizer",
    "random_model",
    "tiny_model",
]


def tiny_model(
    arch: str = "gpt2",
    path: str | Path | None = None,
    *,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
    **sizes: Any,
) -> Any:
    """A tiny random-init model of ``arch`` (``gpt2``, ``llama``, ``neox``), saved to ``path`` (a
    temporary directory by default) by ``make_model_dir`` and loaded with ``load_model``: the same
    toys the package's own tests use (d_model 64, 2 layers, toy tokenizer; a second or two).

    >>> model = tiny_model("llama")          # doctest: +SKIP
    >>> model.cfg.d_model, model.cfg.n_layers  # doctest: +SKIP
    (64, 2)
    """
    import tempfile

    path = Path(path) if path is not None else Path(tempfile.mkdtemp(prefix=f"tiny-{arch}-"))
    if not (path / "config.json").exists():
        make_model_dir(path, arch, seed=seed, **sizes)
    return load_model(path, device=device, progress=progress)
