"""An independent reference for the audit: ablate every singular direction of a text's writes with
plain PyTorch hooks on the Hugging Face model (no TransformerLens, no code from ``interp``), and
compare Spearman(s, importance) and every direction's importance with what the package stored;
with ``--scan``, also clip every write to the top-k directions for every k = 0..d and compare the
smallest k whose log-probability reaches the package's target (its baseline minus its stated
tolerance) with the package's exact minimal k (SVD order).

The writes are what the residual stream adds: for Llama-architecture models (SmolLM2) the output
of ``o_proj`` and ``down_proj``; for Gemma 3, whose blocks normalise each branch before adding
it, the output of ``post_attention_layernorm`` and ``post_feedforward_layernorm``. Usage, after
``replicate`` or ``replicate --exact-only`` wrote ``<run>/<text>/exact_importance``:

    python tools/audit_reference.py --model-dir ~/.cache/resid-writes/models/smollm2-135m \\
        --run replication/smollm2-135m --texts history~s0 sql_code~s0 --scan

Prints, per text, the reference's Spearman, the package's, the largest |importance difference|
over the directions (nats) and, with ``--scan``, both minimal k. Cost: d ablation rows a text,
and d + 1 more with ``--scan``.

``--text-length LABEL ...`` checks ``text_length`` instead (issue 27): for each named length of
``<run>/<text>/text_length/lengths.csv`` (``2``, ``8``, ``scaled``, ``full``, ...) the text cut to
that many continuation tokens gets its own float64 SVD here, its numerical rank (singular values
above sqrt(max(n, d) eps64) of the largest), an every-k clipping scan, and the first, stable and
converged (within 1 nat for good) crossings of the package's target, each printed beside the
package's. Cost: d + 1 rows of the cut text a length.
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
    """The modules whose outputs the residual stream adds, attention then MLP, layer by layer."""
    layers = model.model.layers
    if hasattr(layers[0], "post_feedforward_layernorm"):  # Gemma 2/3: sandwich norms
        return [
            m
            for layer in layers
            for m in (layer.post_attention_layernorm, layer.post_feedforward_layernorm)
        ]
    return [m for layer in layers for m in (layer.self_attn.o_proj, layer.mlp.down_proj)]


def continuation_logprob(model, tokens: torch.Tensor, n_prompt: int, batch: int) -> torch.Tensor:
    ids = tokens[None].expand(batch, -1)
    logits = model(ids).logits.double()
    lp = torch.log_softmax(logits[:, n_prompt - 1 : -1], -1)
    return lp.gather(-1, ids[:, n_prompt:, None])[..., 0].sum(-1)


def reference(
    model, tokens: torch.Tensor, n_prompt: int, chunk: int = 16
) -> tuple[np.ndarray, np.ndarray, float, torch.Tensor]:
    """(singular values, importances, baseline logp, right singular vectors as columns) of the
    text's writes."""
    writes = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: writes.append(out[0].double()))
        for m in write_modules(model)
    ]
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
    if chunk <= 0:  # the basis only
        return s, imp, base, v
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
    return s, imp, base, v


def every_k_scan(
    model, tokens: torch.Tensor, n_prompt: int, v: torch.Tensor, chunk: int = 16
) -> np.ndarray:
    """log p(continuation) with every write projected onto the top-k columns of ``v``, k = 0..d."""
    d = v.shape[1]
    lp = np.empty(d + 1)
    current = {}

    def clip(mod, inp, out):  # (batch, t, d): coefficients in the basis, columns >= k zeroed
        c = torch.einsum("btd,de->bte", out, v) * current["mask"][:, None, :]
        return torch.einsum("bte,de->btd", c, v)

    hooks = [m.register_forward_hook(clip) for m in write_modules(model)]
    try:
        with torch.inference_mode():
            for a in range(0, d + 1, chunk):
                b = min(a + chunk, d + 1)
                current["mask"] = (torch.arange(d)[None, :] < torch.arange(a, b)[:, None]).float()
                lp[a:b] = continuation_logprob(model, tokens, n_prompt, b - a).numpy()
    finally:
        for h in hooks:
            h.remove()
    return lp


def scan_min_k(lp: np.ndarray, target: float) -> int:
    """The smallest k of an every-k scan (``lp[k]``, k = 0..d) with ``lp[k] >= target``; k = d
    always counts (it clips nothing: the package skips the projection there)."""
    ok = lp >= target
    ok[len(lp) - 1] = True
    return int(np.argmax(ok))


def crossings(lp: np.ndarray, target: float, baseline: float) -> tuple[int, int, int, float]:
    """(first, stable, converged, share failing above first) of an every-k scan; k = d passes."""
    d = len(lp) - 1
    ok, near = lp >= target, lp >= baseline - 1.0
    ok[d] = near[d] = True
    first = int(np.argmax(ok))
    fails, far = np.flatnonzero(~ok), np.flatnonzero(~near)
    stable = int(fails[-1]) + 1 if len(fails) else 0
    converged = int(far[-1]) + 1 if len(far) else 0
    frac = float((~ok[first + 1 :]).mean()) if first < d else 0.0
    return first, stable, converged, frac


def check_text_length(model, run: Path, name: str, labels: list[str]) -> None:
    stored = json.loads((run / "continuations" / f"{name}.json").read_text())
    table = pd.read_csv(
        run / name / "text_length" / "lengths.csv", dtype={"length_label": str}
    ).set_index("length_label")
    for label in labels:
        row = table.loc[label]
        n = int(row.n_continuation_tokens)
        tokens = torch.tensor(stored["prompt_tokens"] + stored["continuation_tokens"][:n])
        n_prompt = len(stored["prompt_tokens"])
        s, _, base, v = reference(model, tokens, n_prompt, chunk=0)
        n_writes = 2 * len(model.model.layers) * len(tokens)
        rank = int((s > s[0] * np.sqrt(max(n_writes, len(s)) * np.finfo(np.float64).eps)).sum())
        lp = every_k_scan(model, tokens, n_prompt, v)
        first, stable, conv, frac = crossings(lp, base - float(row.tolerance), base)
        print(
            f"{name} [{label}: {n} tokens]: writes {n_writes} (package "
            f"{int(row.n_writes)}), rank {rank} ({int(row['rank'])}); first {first} "
            f"({int(row.first_k)}), stable {stable} ({int(row.stable_k)}), converged "
            f"{conv} ({int(row.converged_k)}), share failing above first {frac:.3f} "
            f"({row.frac_fail_above_first:.3f}); baseline {base:.4f} "
            f"({row.baseline_logprob:.4f})",
            flush=True,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument(
        "--run", required=True, help="a replicate folder of one model (replication/<model>)"
    )
    p.add_argument("--texts", nargs="+", required=True)
    p.add_argument(
        "--scan", action="store_true", help="also the every-k clipping scan and its minimal k"
    )
    p.add_argument(
        "--text-length",
        nargs="+",
        default=None,
        metavar="LABEL",
        help="check text_length's rows with these length labels instead (see above)",
    )
    args = p.parse_args()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(
        Path(args.model_dir).expanduser(), dtype=torch.float32
    ).eval()
    for name in args.texts:
        if args.text_length:
            check_text_length(model, Path(args.run), name, args.text_length)
            continue
        stored = json.loads((Path(args.run) / "continuations" / f"{name}.json").read_text())
        tokens = torch.tensor(stored["prompt_tokens"] + stored["continuation_tokens"])
        s, imp, base, v = reference(model, tokens, len(stored["prompt_tokens"]))
        ours = pd.read_csv(
            Path(args.run) / name / "exact_importance" / "importance.csv"
        ).sort_values("sv_rank")
        summary = json.loads(
            (Path(args.run) / name / "exact_importance" / "settings.json").read_text()
        )["summary"]
        rho = float(stats.spearmanr(s, imp).statistic)
        diff = np.abs(ours.importance.to_numpy() - imp)
        print(
            f"{name}: reference Spearman(s, importance) {rho:.4f}; package "
            f"{summary['spearman_sv_importance']:.4f}; max |importance difference| "
            f"{diff.max():.2e} nats (median {np.median(diff):.1e}); singular values rel. "
            f"diff {np.max(np.abs(ours.singular_value.to_numpy() / s - 1)):.1e}",
            flush=True,
        )
        if args.scan:
            mk = pd.read_csv(Path(args.run) / name / "exact_importance" / "minimal_k.csv")
            row = mk[(mk.ordering == "singular_value") & (mk.method == "exact_scan")].iloc[0]
            lp = every_k_scan(model, tokens, len(stored["prompt_tokens"]), v)
            d, tol = len(lp) - 1, float(row.tolerance)
            target = base - tol
            k = scan_min_k(lp, target)
            near = np.flatnonzero(np.abs(lp - target) < 10 * tol)
            print(
                f"{name}: every-k scan (tolerance {tol:.2e}): reference minimal k {k} "
                f"({k / d:.3f} of d), package {int(row.k)}; |logp(d) - baseline| "
                f"{abs(lp[d] - base):.1e}; k within 10x the tolerance of the target: "
                f"{near.tolist()[:8]}; best k < d: logp - target "
                f"{np.max(lp[:d]) - target:+.3g} nats at k = {int(np.argmax(lp[:d]))}",
                flush=True,
            )


if __name__ == "__main__":
    main()
