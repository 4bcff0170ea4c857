"""An independent reference for the audit: ablate every singular direction of a text's writes with
plain PyTorch hooks on the Hugging Face model (no TransformerLens, no code from ``interp``), and
compare Spearman(s, importance) and every direction's importance with what the package stored.

For Llama-architecture models (SmolLM2): the attention write is ``o_proj``'s output and the MLP
write ``down_proj``'s output (what the residual stream adds). Usage, after ``replicate`` or
``replicate --exact-only`` wrote ``<run>/<text>/exact_importance``:

    python tools/audit_reference.py --model-dir ~/.cache/resid-writes/models/smollm2-135m \\
        --run replication/smollm2-135m --texts history~s0 sql_code~s0

Prints, per text, the reference's Spearman, the package's, and the largest |importance
difference| over the directions (nats).
"""

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats
from transformers import AutoModelForCausalLM


def write_modules(model):
    return [m for layer in model.model.layers for m in (layer.self_attn.o_proj, layer.mlp.down_proj)]


def continuation_logprob(model, tokens: torch.Tensor, n_prompt: int, batch: int) -> torch.Tensor:
    ids = tokens[None].expand(batch, -1)
    logits = model(ids).logits.double()
    lp = torch.log_softmax(logits[:, n_prompt - 1 : -1], -1)
    return lp.gather(-1, ids[:, n_prompt:, None])[..., 0].sum(-1)


def reference(model, tokens: torch.Tensor, n_prompt: int, chunk: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(singular values, importances) of every direction of the text's writes."""
    writes = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: writes.append(out[0].double())) for m in write_modules(model)]
    with torch.inference_mode():
        base = float(continuation_logprob(model, tokens, n_prompt, 1)[0])
    for h in hooks:
        h.remove()
    w = torch.cat(writes)  # (2 * n_layers * n_tokens, d)
    evals, evecs = torch.linalg.eigh(w.T @ w)
    order = torch.argsort(evals, descending=True)
    s = evals[order].clamp_min(0).sqrt().numpy()
    v = evecs[:, order].float()
    imp = np.empty(v.shape[1])
    current = {}

    def ablate(mod, inp, out):  # remove this row's direction from every position's write
        u = current["v"]  # (batch, d)
        return out - torch.einsum("btd,bd->bt", out, u)[..., None] * u[:, None, :]

    hooks = [m.register_forward_hook(ablate) for m in write_modules(model)]
    try:
        with torch.inference_mode():
            for a in range(0, v.shape[1], chunk):
                b = min(a + chunk, v.shape[1])
                current["v"] = v[:, a:b].T.contiguous()
                imp[a:b] = base - continuation_logprob(model, tokens, n_prompt, b - a).numpy()
    finally:
        for h in hooks:
            h.remove()
    return s, imp


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--run", required=True, help="a replicate folder of one model (replication/<model>)")
    p.add_argument("--texts", nargs="+", required=True)
    args = p.parse_args()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(Path(args.model_dir).expanduser(), torch_dtype=torch.float32).eval()
    for name in args.texts:
        stored = json.loads((Path(args.run) / "continuations" / f"{name}.json").read_text())
        tokens = torch.tensor(stored["prompt_tokens"] + stored["continuation_tokens"])
        s, imp = reference(model, tokens, len(stored["prompt_tokens"]))
        ours = pd.read_csv(Path(args.run) / name / "exact_importance" / "importance.csv").sort_values("sv_rank")
        summary = json.loads((Path(args.run) / name / "exact_importance" / "settings.json").read_text())["summary"]
        rho = float(stats.spearmanr(s, imp).statistic)
        diff = np.abs(ours.importance.to_numpy() - imp)
        print(f"{name}: reference Spearman(s, importance) {rho:.4f}; package {summary['spearman_sv_importance']:.4f}; "
              f"max |importance difference| {diff.max():.2e} nats (median {np.median(diff):.1e}); "
              f"singular values rel. diff {np.max(np.abs(ours.singular_value.to_numpy() / s - 1)):.1e}", flush=True)


if __name__ == "__main__":
    main()
