"""Fast path for a clipped model: fold the projection into the output weights.

Each write is ``y = x W + b`` of an attention's or MLP's output layer (W_O, b_O; W_out, b_out),
so ``P y = x (W P) + b P`` with P = V V^T symmetric. Folding P into those weights clips every
write with no hooks at all, so generation can use the model's own KV cache. Weights are restored
on exit, also on exceptions. Only for architectures whose write is exactly that layer's output
(GPT-2, Llama, GPT-NeoX, ...): ``verify=True`` checks it against the hooked path at entry.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from .hooks import project_writes
from .projection import check_orthonormal
from .scoring import final_residual
from .writes import KINDS, model_device, normalize_kinds

_COMPONENT = {"attn": ("attn", "o"), "mlp": ("mlp", "out")}


def output_layer(model: Any, layer: int, kind: str) -> nn.Module:
    """The module whose output is the write (``blocks.L.attn.o`` / ``blocks.L.mlp.out`` of a
    bridge)."""
    comp = model.blocks[layer]
    for attr in _COMPONENT[kind]:
        comp = getattr(comp, attr, None)
        if comp is None:
            raise NotImplementedError(
                f"no blocks.{layer}.{'.'.join(_COMPONENT[kind])} on this model: folding needs a "
                "TransformerBridge; use project_writes (hooks) instead."
            )
    return getattr(comp, "original_component", None) or comp


def _fold(module: nn.Module, p: Tensor) -> None:
    w = module.weight
    pw = p.to(w.device, torch.float32)
    if isinstance(module, nn.Linear):  # weight (out, in): y = x W^T + b
        w.copy_((pw @ w.float()).to(w.dtype))
    elif w.shape[-1] == p.shape[0]:  # Conv1D-style weight (in, out): y = x W + b
        w.copy_((w.float() @ pw).to(w.dtype))
    else:
        raise NotImplementedError(
            f"cannot fold into {type(module).__name__} with weight {tuple(w.shape)}"
        )
    if getattr(module, "bias", None) is not None:
        module.bias.copy_((pw @ module.bias.float()).to(module.bias.dtype))


@contextmanager
def folded_projection(
    model: Any,
    directions: Float[Tensor, "d_model r"],
    *,
    kinds: Sequence[str] = KINDS,
    verify: bool = True,
    atol: float = 1e-3,
) -> Iterator[Any]:
    """Inside, the model runs clipped to span(directions) with no hooks (weights folded)."""
    kinds = normalize_kinds(kinds)
    check_orthonormal(directions, d_model=int(model.cfg.d_model))
    v = directions.to(model_device(model), torch.float32)
    p = v @ v.T
    modules = [
        output_layer(model, layer, kind)
        for layer in range(int(model.cfg.n_layers))
        for kind in kinds
    ]
    saved = [
        (
            m.weight.detach().clone(),
            None if getattr(m, "bias", None) is None else m.bias.detach().clone(),
        )
        for m in modules
    ]
    probe = torch.arange(min(8, int(model.cfg.n_ctx)), device=model_device(model))[None] % int(
        model.cfg.d_vocab
    )
    try:
        if verify:
            with (
                torch.inference_mode(),
                project_writes(model, v, kinds=kinds, record=False, check=False),
            ):
                hooked = final_residual(model, probe).float()
        with torch.no_grad():
            for m in modules:
                _fold(m, p)
        if verify:
            with torch.inference_mode():
                err = (final_residual(model, probe).float() - hooked).abs().max().item()
            if err > atol * max(1.0, hooked.abs().max().item()):
                raise NotImplementedError(
                    f"folded weights disagree with the hooked projection (max err {err:.2e}): this "
                    "architecture's write is not just its output layer; use project_writes instead."
                )
        yield model
    finally:
        with torch.no_grad():
            for m, (w, b) in zip(modules, saved, strict=False):
                m.weight.copy_(w)
                if b is not None:
                    m.bias.copy_(b)
