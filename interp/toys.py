"""Toy models: random-init models saved as HF-format directories (with a tokenizer), and random
weights of a real model's shape (``load_model("random:<shape>")``), for tests and benchmarks.
Nothing here is a finding: random weights reproduce no result of the study.

Architectures: ``gpt2`` (LayerNorm, biases, learned positions), ``llama`` (RMSNorm, rotary,
no biases, GQA) and ``neox`` (GPT-NeoX, parallel attention + MLP, rotary).

Of the package it imports only ``interp.compat``: ``interp.models`` imports it (for the
``random:`` names) and ``interp.testing`` re-exports it beside ``tiny_model``.
"""

from pathlib import Path
from typing import Any

import torch

# Text the toy tokenizer is trained on: the study's prompts and a little English.
_CORPUS = [
    "I believe the meaning of life is to be happy and to help others.",
    "Simply put, the theory of relativity states that the laws of physics are the same.",
    "A brief message congratulating the team on the launch:\n\n        Hi everyone,\n"
    "\n        I just ",
    "Translate English to French:\n\n        sea otter => loutre de mer\n        "
    "peppermint => menthe poivrée\n        plush girafe => girafe peluche\n        cheese "
    "=>",
    "The quick brown fox jumps over the lazy dog. 0123456789 !?,.;:'\"()[]{}",
]


def make_tokenizer(vocab_size: int = 384) -> Any:
    """A byte-level BPE tokenizer (BOS = EOS = ``<|endoftext|>``, id 0) trained on a tiny corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


def make_config(
    arch: str,
    *,
    vocab_size: int,
    d_model: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    d_mlp: int | None = None,
    n_ctx: int = 256,
    n_kv_heads: int | None = None,
) -> Any:
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

    d_mlp = d_mlp or 4 * d_model
    common = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0)
    if arch == "gpt2":
        return GPT2Config(
            n_embd=d_model,
            n_layer=n_layers,
            n_head=n_heads,
            n_inner=d_mlp,
            n_positions=n_ctx,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **common,
        )
    if arch == "llama":
        return LlamaConfig(
            hidden_size=d_model,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            num_key_value_heads=n_kv_heads or max(1, n_heads // 2),
            intermediate_size=d_mlp,
            max_position_embeddings=n_ctx,
            tie_word_embeddings=False,
            **common,
        )
    if arch == "neox":
        return GPTNeoXConfig(
            hidden_size=d_model,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            intermediate_size=d_mlp,
            max_position_embeddings=n_ctx,
            use_parallel_residual=True,
            rotary_pct=0.25,
            **common,
        )
    raise ValueError(f"unknown toy architecture {arch!r}; use gpt2, llama or neox")


# Shapes for ``load_model("random:<shape>")``: real models' shapes for benchmarks with
# random weights (timings do not depend on weights), and tiny ones for tests (the toy
# tokenizer's vocabulary).
SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny-gpt2": ("gpt2", dict(d_model=64, n_layers=2, n_heads=4, n_ctx=256, vocab_size=384)),
    "tiny-llama": ("llama", dict(d_model=64, n_layers=2, n_heads=4, n_ctx=256, vocab_size=384)),
    "tiny-neox": ("neox", dict(d_model=64, n_layers=2, n_heads=4, n_ctx=256, vocab_size=384)),
    "gpt2-small": (
        "gpt2",
        dict(d_model=768, n_layers=12, n_heads=12, d_mlp=3072, n_ctx=1024, vocab_size=50257),
    ),
    "pythia-160m": (
        "neox",
        dict(d_model=768, n_layers=12, n_heads=12, d_mlp=3072, n_ctx=2048, vocab_size=50304),
    ),
    "smollm2-135m": (
        "llama",
        dict(
            d_model=576,
            n_layers=30,
            n_heads=9,
            n_kv_heads=3,
            d_mlp=1536,
            n_ctx=8192,
            vocab_size=49152,
        ),
    ),
    "llama3-8b": (
        "llama",
        dict(
            d_model=4096,
            n_layers=32,
            n_heads=32,
            n_kv_heads=8,
            d_mlp=14336,
            n_ctx=8192,
            vocab_size=128256,
        ),
    ),
}


def random_model(
    shape: str,
    path: str | Path,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Any:
    """A bridge around a random-init model of a real model's shape, built directly on ``device``.

    Only the config and the toy tokenizer are written to ``path`` (no weights on disk); the
    vocabulary of the config is the real model's, token ids come from the toy tokenizer.
    """
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM

    from .compat import patch_bridge_kv_cache

    if shape not in SHAPES:
        raise ValueError(
            f"unknown shape {shape!r} for random weights; choose one of {sorted(SHAPES)} "
            "(e.g. load_model('random:tiny-gpt2'))"
        )
    arch, sizes = SHAPES[shape]
    sizes = dict(sizes)
    vocab = sizes.pop("vocab_size")
    path = Path(path)
    tokenizer = make_tokenizer()
    config = make_config(arch, vocab_size=vocab, **sizes)
    config.torch_dtype = dtype
    path.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(path)
    tokenizer.save_pretrained(path)
    torch.manual_seed(seed)
    with torch.device(device):
        hf = AutoModelForCausalLM.from_config(config, torch_dtype=dtype)
    hf.eval()
    bridge = TransformerBridge.boot_transformers(
        str(path.resolve()), hf_model=hf, device=device, dtype=dtype
    )
    bridge.enable_compatibility_mode(disable_warnings=True, no_processing=True)
    bridge.eval()
    patch_bridge_kv_cache(bridge)
    bridge._resid_writes_meta = {"name": f"random-{shape}", "path": str(path), "processing": False}
    return bridge


def make_model_dir(
    path: str | Path, arch: str = "gpt2", *, seed: int = 0, tokenizer_vocab: int = 384, **sizes: Any
) -> Path:
    """Save a random-init model of ``arch`` plus toy tokenizer to ``path``; return the path.

    ``sizes`` go to ``make_config``; its ``vocab_size`` defaults to the tokenizer's (a larger one,
    e.g. a real model's, keeps the unembedding's real cost; the extra ids are never produced
    by the tokenizer but can be sampled).
    """
    from transformers import AutoModelForCausalLM

    path = Path(path)
    tokenizer = make_tokenizer(tokenizer_vocab)
    sizes.setdefault("vocab_size", len(tokenizer))
    if sizes["vocab_size"] < len(tokenizer):
        raise ValueError(
            f"vocab_size {sizes['vocab_size']} is smaller than the tokenizer's {len(tokenizer)}"
        )
    config = make_config(arch, **sizes)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # larger-than-default writes so that interventions matter visibly
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(2.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
