"""Loading models: a hub name or a local HF-format directory -> a TransformerLens 4.x bridge.

The rest of the package only needs a model with HookedTransformer hook names
(``blocks.{L}.hook_attn_out``, ``blocks.{L}.hook_mlp_out``, ``blocks.{L}.hook_resid_post``),
a ``hooks(fwd_hooks=...)`` context manager, ``cfg`` with ``n_layers``/``d_model``/``n_ctx``,
and ``ln_final``/``unembed`` modules. A TransformerLens 3.x ``HookedTransformer`` qualifies.
"""

import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

MODEL_ENV = "RESID_WRITES_MODEL"
# Preferred offline defaults, in order, when several models sit in shared/models.
_PREFERRED = ("gpt2", "pythia-160m", "pythia-70m", "gpt2-medium", "Llama-3.2-1B", "Qwen2.5-0.5B")
_REPO_ROOT = Path(__file__).resolve().parents[1]


class ModelNotFoundError(FileNotFoundError):
    """A model name that is neither a local directory nor reachable/cached on the hub."""


def shared_models_dirs() -> list[Path]:
    """Folders searched for offline models: ``../shared/models`` beside the checkout, ``shared/models``."""
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


def default_model() -> str | None:
    """The offline default: ``$RESID_WRITES_MODEL``, else the first model in shared/models, else None."""
    env = os.environ.get(MODEL_ENV)
    if env:
        return env
    models = available_local_models()
    return str(models[0]) if models else None


def no_model_message() -> str:
    dirs = ", ".join(str(d) for d in shared_models_dirs())
    return (
        "No pretrained model is available offline. Put an HF-format model directory "
        f"(config.json, weights, tokenizer files) in one of [{dirs}], set {MODEL_ENV}=/path/to/model, "
        "or pass --model PATH_OR_HUB_NAME (a hub name needs internet or a populated HF cache)."
    )


def _hub_reachable(timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _in_hf_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(name, "config.json")
        return isinstance(hit, str)
    except Exception:
        return False


def resolve_model(name_or_path: str | os.PathLike | None) -> tuple[str, bool]:
    """Return (what to pass to the loader, is_local). Fails at once when nothing can be loaded.

    Local directories are made absolute: TransformerLens maps some bare names (``gpt2``,
    ``neox``...) to hub aliases, so a relative directory name could be silently replaced.
    """
    if name_or_path is None:
        found = default_model()
        if found is None:
            raise ModelNotFoundError(no_model_message())
        name_or_path = found
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not _is_model_dir(path):
            raise ModelNotFoundError(
                f"{path} exists but is not an HF-format model directory (no config.json). "
                "Pass a directory saved with `save_pretrained` (weights + tokenizer)."
            )
        return str(path.resolve()), True
    for root in shared_models_dirs():  # a bare name like "gpt2" found in shared/models
        if _is_model_dir(root / str(name_or_path)):
            return str((root / str(name_or_path)).resolve()), True
    name = str(name_or_path)
    if _in_hf_cache(name):
        return name, False
    if not _hub_reachable():
        raise ModelNotFoundError(
            f"Model {name!r} is not a local directory, not in the HF cache, and the hub cannot be "
            "reached (offline). Pass a local HF-format directory instead, e.g. "
            f"load_model('/path/to/{name.split('/')[-1]}') or --model /path/to/model, or set "
            f"{MODEL_ENV}. Models placed in {shared_models_dirs()[0]} are found by name."
        )
    return name, False


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
    import transformer_lens

    cfg = model.cfg
    meta = getattr(model, "_resid_writes_meta", {})
    param = next(model.parameters())
    return ModelInfo(
        name=str(meta.get("name", getattr(cfg, "model_name", type(model).__name__))),
        architecture=str(getattr(cfg, "architecture", None) or getattr(cfg, "original_architecture", "")),
        n_layers=int(cfg.n_layers),
        d_model=int(cfg.d_model),
        n_ctx=int(cfg.n_ctx),
        d_vocab=int(cfg.d_vocab),
        dtype=str(param.dtype).replace("torch.", ""),
        device=str(param.device),
        processing=bool(meta.get("processing", False)),
        transformer_lens=getattr(transformer_lens, "__version__", "unknown"),
    )


def load_model(
    name_or_path: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    processing: bool = False,
) -> Any:
    """Load a model as a TransformerLens 4.x ``TransformerBridge`` with HookedTransformer hook names.

    Args:
        name_or_path: a hub name (needs internet or the HF cache) or a local HF-format directory.
            ``None`` takes the offline default (``$RESID_WRITES_MODEL`` or ``../shared/models``).
        device: ``"cpu"``, ``"cuda"``...; default: CUDA when available, else CPU.
        dtype: parameter dtype (default float32). Linear algebra in this package runs in
            float32/float64 whatever this is.
        processing: False (default) keeps the model's raw writes. True applies TransformerLens'
            usual processing (fold LayerNorm, center writing weights, center unembed, fold value
            biases), which changes what ``hook_attn_out``/``hook_mlp_out`` contain
            (centering subtracts each write's mean on LayerNorm models).
    """
    from transformer_lens.model_bridge import TransformerBridge

    target, is_local = resolve_model(name_or_path)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    dtype = dtype or torch.float32
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    bridge = TransformerBridge.boot_transformers(target, device=device, dtype=dtype)
    bridge.enable_compatibility_mode(disable_warnings=True, no_processing=not processing)
    bridge.eval()
    if bridge.tokenizer is None:
        raise ValueError(f"{target} has no tokenizer; save one beside the weights (tokenizer.json).")
    bridge._resid_writes_meta = {
        "name": Path(target).name if is_local else target,
        "path": target,
        "processing": processing,
    }
    return bridge
