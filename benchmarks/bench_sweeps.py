"""Benchmark: the study's one-pass-per-item loops against our batched sweeps (prints ratios).

    python benchmarks/bench_sweeps.py                       # default model, CPU
    python benchmarks/bench_sweeps.py --random-shape gpt2-small
    python benchmarks/bench_sweeps.py --random-shape llama3-8b --device cuda --dtype bfloat16

Times, on one prompt and its continuation, in one run: the naive per-direction ablation loop
vs the batched exact sweep vs the gradient estimate; the naive per-k clipping curve vs the
batched one; bisection vs the batched search. Prints the achieved FLOP/s of the batched sweep
against the measured dense-matmul FLOP/s of the same dtype. Random weights give valid timings
(not findings).
"""

import argparse
import json
import tempfile
import time

import numpy as np
import torch
from scipy import stats

import interp
import interp.testing
from experiments.minimal_subspace import bisect_min_k, model_evaluator, sweep_min_k
from experiments.prompts import PROMPTS
from interp.sweeps import ablation_sweep, auto_chunk_size, clip_sweep, gradient_importance


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def matmul_flops(device, dtype, n):
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    reps = 3 if device.type == "cpu" else 20
    _, t = timed(lambda: [a @ b for _ in range(reps)], device)
    return 2 * n**3 * reps / t


def forward_flops_per_row(model, n_tokens, n_cont, n_write_dirs):
    """Matmul FLOPs of one sequence: weights (2 per MAC per token), attention, projections, unembed."""
    cfg = model.cfg
    d, L = int(cfg.d_model), int(cfg.n_layers)
    block_params = sum(p.numel() for n, p in model.original_model.named_parameters()
                       if p.ndim == 2 and "emb" not in n and "wte" not in n and "wpe" not in n
                       and "lm_head" not in n and "embed_out" not in n)
    attn = 2 * 2 * L * n_tokens * n_tokens * d
    proj = 2 * L * 2 * n_tokens * d * n_write_dirs * 2
    unembed = 2 * d * int(cfg.d_vocab) * n_cont
    return 2 * block_params * n_tokens + attn + proj + unembed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--random-shape", default=None, choices=sorted(interp.testing.SHAPES))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--prompt", default="meaning_of_life")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--n-naive", type=int, default=64, help="directions/ks timed one pass each (extrapolated)")
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    if args.random_shape:
        model = interp.testing.random_model(args.random_shape, tempfile.mkdtemp(), device=args.device, dtype=dtype)
    else:
        model = interp.load_model(args.model, device=args.device, dtype=dtype)
    device = next(model.parameters()).device
    info = interp.model_info(model)
    comp = interp.sample_continuation(model, PROMPTS[args.prompt], max_new_tokens=args.new_tokens, seed=0,
                                      stop_at_eos=False)
    d = info.d_model
    n_tok, n_cont = comp.tokens.numel(), comp.continuation_tokens.numel()
    chunk = args.chunk_size or auto_chunk_size(model, n_tok, n_cont)
    print(f"model {info.name} ({info.architecture}) d_model={d} layers={info.n_layers} dtype={info.dtype} "
          f"device={info.device}; {n_tok} tokens ({n_cont} scored); chunk={chunk} rows/pass")
    basis = interp.write_basis(interp.capture_writes(model, comp.tokens))
    v = basis.vectors
    n_naive = min(args.n_naive, d)
    res = {"model": info.to_dict(), "n_tokens": n_tok, "chunk": chunk}

    # warm-up
    ablation_sweep(model, comp, v, columns=range(2), chunk_size=2)

    # 1. single-direction importance: naive loop vs batched exact sweep vs gradient
    naive, t_naive = timed(lambda: ablation_sweep(model, comp, v, columns=range(n_naive), chunk_size=1), device)
    t_naive_all = t_naive / n_naive * d
    exact, t_batched = timed(lambda: ablation_sweep(model, comp, v, chunk_size=chunk), device)
    diff = (naive.logprob - exact.logprob[:n_naive]).abs().max().item()
    if dtype == torch.float32:  # low-precision kernels round differently at other batch sizes
        assert diff < 1e-3, diff
    grad, t_grad = timed(lambda: gradient_importance(model, comp, v), device)
    base = clip_sweep(model, comp, v, [d], chunk_size=1).logprob[0]
    exact_delta = (exact.logprob - base).numpy()
    rho = stats.spearmanr(grad.numpy(), exact_delta).statistic
    top = lambda a, k: set(np.argsort(a)[:k])  # most negative change = most important
    agree = {k: len(top(grad.numpy(), k) & top(exact_delta, k)) / k for k in (10, 100)}
    print(f"\n[importance of all {d} directions]")
    print(f"  naive loop (1 pass/direction): {t_naive_all:8.2f} s  (timed {n_naive}, extrapolated)")
    print(f"  batched exact sweep          : {t_batched:8.2f} s  ({exact.n_passes} passes)  -> {t_naive_all / t_batched:6.1f}x faster")
    print(f"  gradient estimate (fwd+bwd)  : {t_grad:8.2f} s  -> {t_naive_all / t_grad:6.1f}x vs naive, "
          f"{t_batched / t_grad:6.1f}x vs batched; spearman vs exact {rho:.3f}, top-10/100 agreement "
          f"{agree[10]:.2f}/{agree[100]:.2f}")
    print(f"  max |naive - batched| log-prob over the timed directions: {diff:.2e} nats ({args.dtype}); "
          f"median |exact importance| {np.median(np.abs(exact_delta)):.2e}, max {np.abs(exact_delta).max():.2e} nats")

    # FLOP/s of the batched sweep against dense matmul of the same dtype
    flops = forward_flops_per_row(model, n_tok, n_cont, 1) * d
    peak = matmul_flops(device, dtype, 2048 if device.type == "cpu" else 8192)
    achieved = flops / t_batched
    print(f"  batched sweep: {achieved / 1e12:.3f} TFLOP/s achieved; dense {args.dtype} matmul {peak / 1e12:.3f} "
          f"TFLOP/s measured -> {achieved / peak:.1%} of matmul")

    # 2. clipping curve: naive per-k vs batched
    ks = list(range(0, d + 1, max(1, d // 256)))
    nk = min(n_naive, len(ks))
    _, t_k_naive = timed(lambda: clip_sweep(model, comp, v, ks[:nk], chunk_size=1), device)
    t_k_naive_all = t_k_naive / nk * len(ks)
    _, t_k_batched = timed(lambda: clip_sweep(model, comp, v, ks, chunk_size=chunk), device)
    print(f"\n[clipping curve, {len(ks)} values of k]")
    print(f"  naive (1 pass/k): {t_k_naive_all:8.2f} s (timed {nk}, extrapolated); batched: {t_k_batched:8.2f} s "
          f"-> {t_k_naive_all / t_k_batched:6.1f}x faster")

    # 3. minimal k: bisection vs batched search
    target = float(base) - 1e-4
    evaluate = model_evaluator(model, comp, v, kinds=("attn", "mlp"), chunk_size=chunk)
    b, t_b = timed(lambda: bisect_min_k(evaluate, target, d), device)
    s, t_s = timed(lambda: sweep_min_k(evaluate, target, d), device)
    print(f"\n[minimal k] bisection k={b.k} in {t_b:.2f} s ({b.passes} passes); batched search k={s.k} "
          f"(stable {s.stable_k}) in {t_s:.2f} s ({s.passes} passes, {s.evaluations} k evaluated)")
    res.update(max_diff_naive_batched=diff, median_abs_importance=float(np.median(np.abs(exact_delta))), t_naive_all=t_naive_all, t_batched=t_batched, t_grad=t_grad, speedup=t_naive_all / t_batched,
               spearman_grad=rho, top10=agree[10], top100=agree[100], achieved_flops=achieved, matmul_flops=peak,
               t_clip_naive=t_k_naive_all, t_clip_batched=t_k_batched, bisect=(b.k, b.passes, t_b),
               sweep=(s.k, s.passes, t_s))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=float)


if __name__ == "__main__":
    main()
