"""Command line: ``python -m experiments reproduce`` (everything) or ``run EXPERIMENT`` (one).

Examples:
    python -m experiments reproduce --out results            # offline default model
    python -m experiments reproduce --model gpt2 --device cuda --dtype float32
    python -m experiments run clipping --prompt relativity --out results/one
"""

import argparse
import sys
import time
from pathlib import Path

from interp import ModelNotFoundError, load_model, normalize_kinds

from .prompts import PROMPTS


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="smollm2-135m, gemma-3-270m, a local HF directory, a .gguf file or a hub name "
                   "(default: $RESID_WRITES_MODEL, else ../shared/models, else smollm2-135m)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"])
    p.add_argument("--processing", action="store_true", help="apply TransformerLens weight processing (default: raw writes)")
    p.add_argument("--kinds", default="attn,mlp", help="writes to use: attn, mlp or attn,mlp")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results", help="output folder (rerun with the same folder to resume)")
    p.add_argument("--chunk-size", type=int, default=None, help="batch rows per forward pass (default: from free memory)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--n-exact", type=int, default=None,
                   help="single-direction importance: exact ablation only for the top-N directions by the "
                        "gradient estimate (default: all directions exact)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="every experiment on the study's four prompts, then overlap and report")
    _model_args(rep)
    rep.add_argument("--prompts", nargs="+", default=list(PROMPTS), choices=list(PROMPTS))
    rep.add_argument("--k-points", type=int, default=None, help="at most this many k per clipping curve")
    rep.add_argument("--samples", type=int, default=3, help="samples per condition in clipped generation")
    rep.add_argument("--draws", type=int, default=200, help="Monte Carlo draws for the overlap nulls")
    rep.add_argument("--png", action="store_true", help="also write PNG figures (needs kaleido)")
    one = sub.add_parser("run", help="one experiment on one prompt, with its own options")
    _model_args(one)
    one.add_argument("experiment", choices=["spectrum", "clipping", "single_direction", "orderings",
                                            "minimal_subspace", "clipped_generation"])
    one.add_argument("--prompt", default="meaning_of_life", help=f"one of {list(PROMPTS)} or any text")
    one.add_argument("--k", type=int, default=None, help="clipped_generation: directions kept (default: minimal)")
    one.add_argument("--compromise", default="rank_product", help="orderings: compromise formula")
    one.add_argument("--no-gradient", action="store_true", help="single_direction: skip the gradient estimate")
    return parser


def _load(args: argparse.Namespace):
    try:
        return load_model(args.model, device=args.device, dtype=args.dtype, processing=args.processing)
    except ModelNotFoundError as err:
        print(err, file=sys.stderr)
        raise SystemExit(2) from err


def cmd_reproduce(args: argparse.Namespace) -> None:
    from .reproduce import Settings, reproduce

    model = _load(args)
    t0 = time.perf_counter()
    settings = Settings(
        prompts=args.prompts, kinds=normalize_kinds(args.kinds), seed=args.seed, max_new_tokens=args.max_new_tokens,
        k_points=args.k_points, chunk_size=args.chunk_size, n_exact=args.n_exact, n_samples=args.samples, overlap_draws=args.draws,
        png=args.png, progress=not args.no_progress,
    )
    out = reproduce(model, args.out, settings)
    print(f"report: {out['report']}  ({time.perf_counter() - t0:.0f} s)")


def cmd_run(args: argparse.Namespace) -> None:
    import experiments as E

    from .base import basis_for

    model = _load(args)
    kinds = normalize_kinds(args.kinds)
    comp = E.get_continuation(model, args.prompt, seed=args.seed, max_new_tokens=args.max_new_tokens,
                              store=Path(args.out) / "continuation.json")
    common = dict(kinds=kinds, chunk_size=args.chunk_size)
    progress = not args.no_progress
    name = args.experiment
    if name == "spectrum":
        result = E.run_spectrum(model, comp)
    elif name == "clipping":
        result = E.run_clipping(model, comp, progress=progress, **common)
    elif name == "single_direction":
        result = E.run_single_direction(model, comp, gradient=not args.no_gradient, n_exact=args.n_exact,
                                        progress=progress, **common)
    elif name == "orderings":
        result = E.run_orderings(model, comp, compromise=args.compromise, progress=progress, **common)
    elif name == "minimal_subspace":
        result = E.run_minimal_subspace(model, comp, prompt_name=args.prompt, **common)
    else:
        basis = basis_for(model, comp, kinds=kinds)
        k = args.k if args.k is not None else E.run_minimal_subspace(model, comp, basis=basis, **common).order()
        result = E.run_clipped_generation(model, comp, basis=basis, k=k, kinds=kinds, seed=args.seed)
    out = Path(args.out) / name
    result.save(out)
    result.save_figures(out / "figures")
    print(f"{name}: {result.summary()}\nsaved to {out}")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    {"reproduce": cmd_reproduce, "run": cmd_run}[args.command](args)


if __name__ == "__main__":
    main()
