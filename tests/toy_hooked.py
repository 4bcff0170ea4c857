"""A minimal non-bridge model built on TransformerLens' HookedRootModule, with HookedTransformer
hook names: the core functions must work on any such model, not just on TransformerBridge."""

from types import SimpleNamespace

import torch
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint


class Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.hook_resid_pre, self.hook_attn_out = HookPoint(), HookPoint()
        self.hook_mlp_out, self.hook_resid_post = HookPoint(), HookPoint()

    def forward(self, x):
        x = self.hook_resid_pre(x)
        h = self.ln1(x)
        scores = self.q(h) @ self.k(h).transpose(-1, -2) / h.shape[-1] ** 0.5
        causal = torch.ones(scores.shape[-2:], dtype=torch.bool).tril()
        attn = scores.masked_fill(~causal, float("-inf")).softmax(-1) @ self.v(h)
        x = x + self.hook_attn_out(self.o(attn))
        x = x + self.hook_mlp_out(self.mlp(self.ln2(x)))
        return self.hook_resid_post(x)


class ToyHooked(HookedRootModule):
    def __init__(self, d_model=16, n_layers=2, d_vocab=50, n_ctx=32):
        super().__init__()
        self.cfg = SimpleNamespace(d_model=d_model, n_layers=n_layers, d_vocab=d_vocab, n_ctx=n_ctx)
        self.embed = nn.Embedding(d_vocab, d_model)
        self.blocks = nn.ModuleList(Block(d_model) for _ in range(n_layers))
        self.ln_final = nn.LayerNorm(d_model)
        self.unembed = nn.Linear(d_model, d_vocab)
        self.tokenizer = None
        self.setup()

    def forward(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_final(x))
