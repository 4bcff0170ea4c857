"""Workarounds for upstream defects, each applied where a model is built and each tested.

**KV cache through a TransformerBridge (transformer-lens 4.3.0 with transformers >= 5.24).**
transformers 5.24 renamed the keyword that a decoder layer passes to its attention module from
``past_key_values`` to ``cache`` (the old name is accepted at the model's ``forward`` until 5.40
and renamed on the way in). TransformerLens' ``AttentionBridge._update_kv_cache`` reads only
``past_key_values`` / ``layer_past``, so the bridge's attention never sees the cache: every
cached decoding step attends to the new token alone, and anything sampled with the cache
(``generate``, our batched sampler) is garbage while the uncached forward stays right. Measured on
smollm2-135m: the last position's logits from ``hf(ids[:, -1:], past_key_values=...)`` differ from
``hf(ids)`` by up to 18.5; with the shim below by 1e-5. ``patch_bridge_kv_cache`` makes each
attention bridge of one model read the cache under either name; it changes nothing on versions
that still pass ``past_key_values``. ``tests/test_sampling.py`` checks cached against uncached
decoding on every toy architecture and on the real default model.
"""

import warnings
from typing import Any

import torch


def _reads_cache_kwarg(update: Any) -> Any:
    def update_kv_cache(
        k: torch.Tensor, v: torch.Tensor, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
            kwargs["past_key_values"] = kwargs["cache"]
        return update(k, v, **kwargs)

    update_kv_cache.__wrapped__ = update  # type: ignore[attr-defined]
    return update_kv_cache


def patch_bridge_kv_cache(model: Any) -> int:
    """Let every attention bridge of ``model`` find the KV cache under ``cache`` too (see module
    doc). Idempotent; returns the number of modules patched (0 for a model without bridges)."""
    n = 0
    for module in model.modules():
        update = getattr(module, "_update_kv_cache", None)
        if update is None or hasattr(update, "__wrapped__"):
            continue
        module._update_kv_cache = _reads_cache_kwarg(update)
        n += 1
    return n


@torch.inference_mode()
def cached_decoding_error(model: Any, tokens: torch.Tensor) -> float:
    """Max |logits| difference at the last position between one uncached forward of ``tokens`` and
    a cached forward of all but the last token followed by one step (the check behind the shim)."""
    hf = model.original_model
    ids = tokens.reshape(1, -1).to(next(hf.parameters()).device)
    full = hf(input_ids=ids).logits[:, -1].float()
    past = hf(input_ids=ids[:, :-1], use_cache=True).past_key_values
    with (
        warnings.catch_warnings()
    ):  # transformers >= 5.24 prefers `cache=`; older ones know only this name
        warnings.simplefilter("ignore", FutureWarning)
        step = hf(input_ids=ids[:, -1:], past_key_values=past, use_cache=True).logits[:, -1].float()
    return float((full - step).abs().max())
