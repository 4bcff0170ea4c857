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

from .prompts import PROMPTS, REPLICATION_PROMPTS
from ..registry import ENV as PLUGINS_ENV
from ..registry import get_plugin, plugin_names

# The extensions (issues 16 and 17) replicate runs on the exact stage's texts: registered plug-ins.
EXACT_EXTENSIONS = ("study_procedure", "clip_variants")  # hessian_ranking: opt-in (d Hessian-vector products a text)
EXTENDABLE = ("hessian_ranking", "clip_variants", "study_procedure")  # `extend --with`: the table reads their numbers


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="smollm2-135m, gemma-3-270m, a local HF directory, a .gguf file or a hub name "
                   "(default: $RESID_WRITES_MODEL, else ../shared/models, else smollm2-135m)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16", "float64"],
                   help="the model's dtype (default float32; bfloat16 with --study-procedure)")
    p.add_argument("--processing", action="store_true", help="apply TransformerLens weight processing (default: raw writes)")
    p.add_argument("--kinds", default="attn,mlp", help="writes to use: attn, mlp or attn,mlp")
    p.add_argument("--out", default="results", help="output folder (rerun with the same folder to resume)")
    p.add_argument("--chunk-size", type=int, default=None, help="batch rows per forward pass (default: from free memory)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--exhaustive", action="store_true",
                   help="every k of every clipping curve and every direction's exact importance (slow); the "
                        "default refines adaptive grids and screens importances (same numbers within stated tolerances)")
    p.add_argument("--n-exact", type=int, default=None,
                   help="screened importance: number of exact single-direction ablations (default ~8%% of d_model)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="minimal k: nats below the unclipped log-probability still counted as reaching it "
                        "(raised to 10x the clipped pass's float error when that is larger)")


def _cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="run the texts on Ray workers (pip install -e '.[cluster]'; "
                        "docs/cluster.md): 'local' starts Ray on this machine, 'auto' or "
                        "ray://HOST:10001 joins a running cluster")
    p.add_argument("--workers", type=int, default=None,
                   help="with --cluster: workers (each holds one loaded model; default: one per "
                        "GPU, else one per two CPU cores)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="every experiment on the study's four prompts, then overlap and report")
    _model_args(rep)
    rep.add_argument("--prompts", nargs="+", default=None,
                     help=f"prompt names (default: the study's four; shipped: {', '.join(REPLICATION_PROMPTS)}; "
                          "or names from --prompts-file)")
    rep.add_argument("--prompts-file", default=None,
                     help="your own prompts: one per line, or JSONL objects with 'text' (and 'name'); all are run "
                          "unless --prompts picks some")
    rep.add_argument("--seeds", type=int, nargs="+", default=[0], help="sampled continuations per prompt, by seed")
    rep.add_argument("--samples", type=int, default=3, help="samples per condition in clipped generation")
    rep.add_argument("--draws", type=int, default=50, help="Monte Carlo draws for the overlap nulls (the analytic mean and sd are exact)")
    rep.add_argument("--random-draws", type=int, default=1,
                     help="independent random orthonormal bases per text for the minimal-subspace null (replicate: 3)")
    rep.add_argument("--png", action="store_true", help="also write PNG figures (needs kaleido)")
    # --- plug-in experiments (experiments/registry.py) ---
    rep.add_argument("--with", dest="plugins", nargs="+", default=[], choices=plugin_names(), metavar="NAME",
                     help=f"also run these plug-in experiments on every text (found: {', '.join(plugin_names()) or 'none'}; "
                          f"see ${PLUGINS_ENV})")
    rep2 = sub.add_parser("replicate", help="the replication table: every model x prompt x seed, exported to docs")
    _model_args(rep2)
    rep2.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma-3-270m"])
    rep2.add_argument("--prompts", nargs="+", default=None, help="default: all shipped replication prompts")
    rep2.add_argument("--prompts-file", default=None)
    rep2.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    rep2.add_argument("--model-seeds", nargs="+", default=[], metavar="MODEL=S,S",
                      help="other seeds for one model, e.g. gemma-3-270m=0 (a larger model, fewer samples)")
    rep2.add_argument("--samples", type=int, default=3)
    rep2.add_argument("--draws", type=int, default=100)
    rep2.add_argument("--random-draws", type=int, default=3,
                      help="independent random orthonormal bases per text for the minimal-subspace null")
    rep2.add_argument("--docs", default="docs/results", help="where the small outputs and the table go")
    rep2.add_argument("--exact-texts", type=int, default=8,
                      help="the audit's exact stage (every direction ablated, every k scanned near the target) on "
                           "the first N texts of each model (seed 0 first, prompts in order); the importance claims "
                           "use only these texts")
    rep2.add_argument("--exact-with", dest="exact_plugins", nargs="*", default=list(EXACT_EXTENSIONS), metavar="NAME",
                      choices=plugin_names(),
                      help="plug-in experiments run on the exact stage's texts only (default: "
                           f"{' '.join(EXACT_EXTENSIONS)}; --exact-with alone runs none)")
    rep2.add_argument("--band", type=float, default=5.0,
                      help="exact stage: scan every k wherever the curve is within this many nats of the target")
    rep2.add_argument("--exact-only", action="store_true",
                      help="run only the exact stage (resumable; a later full replicate reuses it), no table")
    rep2.add_argument("--no-images", action="store_true", help="skip the SVG figures (they need kaleido + chromium)")
    rep2.add_argument("--png", action="store_true", help=argparse.SUPPRESS)
    _cluster_args(rep2)
    ext = sub.add_parser(
        "extend", help="add a plug-in to docs/results' exact texts without rebuilding the replication",
        description="Run a plug-in (default hessian_ranking) on the exact texts of a finished docs/results: each text "
                    "is re-sampled, checked against the exported token count, log-probability and singular values, "
                    "and given the exported exact ablations; then every claim is recomputed from texts.csv and "
                    "overlap_pairs.csv and the table rewritten. Resumable; --texts splits the work across processes.")
    ext.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma-3-270m"])
    ext.add_argument("--with", dest="plugin", default="hessian_ranking", choices=EXTENDABLE,
                     help="the plug-in (one whose per-text numbers the table reads)")
    ext.add_argument("--texts", nargs="+", default=None, help="only these text ids (default: every exact text)")
    ext.add_argument("--out", default="replication", help="the replication folder (results go to <out>/<model>/<text>/)")
    ext.add_argument("--docs", default="docs/results")
    ext.add_argument("--table-only", action="store_true",
                     help="compute nothing: recompute the table from the finished texts in --out")
    ext.add_argument("--no-table", action="store_true", help="compute only (for one of several parallel processes)")
    ext.add_argument("--no-images", action="store_true", help="skip the SVG figure (it needs kaleido + chromium)")
    ext.add_argument("--device", default=None, help="cpu, cuda, ... (the texts are checked against the docs either way)")
    ext.add_argument("--no-progress", action="store_true")
    _cluster_args(ext)
    one = sub.add_parser("run", help="one experiment on one prompt, with its own options")
    _model_args(one)
    one.add_argument("experiment", choices=["spectrum", "clipping", "single_direction", "orderings",
                                            "minimal_subspace", "clipped_generation", "exact_importance",
                                            "method_sensitivity",
                                            *plugin_names()],
                     help=f"a built-in experiment or a plug-in (${PLUGINS_ENV}, docs/extending.md)")
    one.add_argument("--prompt", default="meaning_of_life", help=f"one of {list(REPLICATION_PROMPTS)} or any text")
    one.add_argument("--seed", type=int, default=0)
    one.add_argument("--k", type=int, default=None, help="clipped_generation: directions kept (default: minimal)")
    one.add_argument("--compromise", default="rank_product", help="orderings: compromise formula")
    one.add_argument("--study-procedure", action="store_true",
                     help="minimal_subspace: also the study's own search (bisection over 1..d, clipped >= unclipped "
                          "with no tolerance), in bfloat16 unless --dtype says otherwise")
    return parser


# The `run` options that change its numbers (the others pick an experiment or how to show it).
RUN_KEYED = ("model", "dtype", "processing", "kinds", "max_new_tokens", "prompt", "seed", "exhaustive", "tolerance",
             "n_exact", "study_procedure")


class UsageError(ValueError):
    """Bad command-line input: printed as one line ``error: <what> (<how to fix>)``, exit status 2."""


def _positive(args: argparse.Namespace, name: str, minimum: int = 1) -> None:
    value = getattr(args, name, None)
    if value is not None and value < minimum:
        flag = "--" + name.replace("_", "-")
        raise UsageError(f"{flag} {value} is below {minimum} (give {flag} {minimum} or more)")


def _check_device(device: str | None) -> None:
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise UsageError(f"--device {device!r} is not a device (use cpu, cuda or cuda:N)") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: this torch ({torch.__version__}) has no usable CUDA "
                             "(use --device cpu, or install a CUDA build of torch: see README, GPU install)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here "
                             f"(use cuda:0 ... cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available here (use --device cpu)")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {device}: unsupported device type {dev.type!r} (use cpu or cuda)")


def _prompt_texts(args: argparse.Namespace) -> dict[str, str] | None:
    """The prompts of --prompts-file, or None; a missing, empty or undecodable file is a usage error."""
    if not getattr(args, "prompts_file", None):
        return None
    from .prompts import load_prompts_file

    path = Path(args.prompts_file)
    if not path.is_file():
        raise UsageError(f"--prompts-file {path}: no such file (give a text file, one prompt per line, or JSONL)")
    try:
        return load_prompts_file(path)
    except UnicodeDecodeError as err:
        raise UsageError(f"--prompts-file {path} is not UTF-8 text (save it as UTF-8)") from err
    except ValueError as err:
        raise UsageError(f"--prompts-file: {err}") from err


def validate(args: argparse.Namespace) -> dict[str, str] | None:
    """Every check that needs no model, run before one loads; returns the --prompts-file prompts."""
    if args.dtype is None:  # the study most likely ran bfloat16 (Meta's reference code on CUDA)
        args.dtype = "bfloat16" if getattr(args, "study_procedure", False) else "float32"
    if getattr(args, "study_procedure", False) and args.experiment != "minimal_subspace":
        raise UsageError(f"--study-procedure is an option of minimal_subspace, not {args.experiment} "
                         "(run minimal_subspace --study-procedure)")
    try:
        args.kinds = normalize_kinds(args.kinds)
    except ValueError as err:
        raise UsageError(f"--kinds {args.kinds!r} is not attn, mlp or attn,mlp (e.g. --kinds attn,mlp)") from err
    for name in ("max_new_tokens", "chunk_size", "samples", "draws", "random_draws"):
        _positive(args, name)
    for name in ("n_exact", "k", "exact_texts"):
        _positive(args, name, 0)
    if getattr(args, "band", 1.0) < 0:
        raise UsageError(f"--band {args.band} must be >= 0 nats (e.g. --band 5)")
    if args.tolerance < 0 or args.tolerance != args.tolerance:
        raise UsageError(f"--tolerance {args.tolerance} must be >= 0 nats (e.g. --tolerance 1e-4)")
    if any(seed < 0 for seed in getattr(args, "seeds", None) or [getattr(args, "seed", 0)]):
        raise UsageError("seeds must be >= 0 (e.g. --seeds 0 1)")
    _check_device(args.device)
    texts = _prompt_texts(args)
    names = getattr(args, "prompts", None) or []
    known = {**REPLICATION_PROMPTS, **(texts or {})}
    unknown = [p for p in names if p not in known]
    if unknown:
        raise UsageError(f"--prompts: unknown prompt {unknown[0]!r} (choose from {', '.join(known)}, "
                         "or pass your own with --prompts-file)")
    return texts


def _cluster(args: argparse.Namespace):
    """The Ray cluster of --cluster (experiments/study/cluster.py), or None without it."""
    if args.cluster is None:
        if args.workers is not None:
            raise UsageError("--workers needs --cluster (e.g. --cluster local --workers 2)")
        return None
    from .cluster import RAY_MISSING, Cluster, ray_available

    _positive(args, "workers")
    if args.device not in (None, "cpu", "cuda"):
        raise UsageError(f"--device {args.device} with --cluster: each worker uses its own device "
                         "(give cpu, cuda or nothing)")
    if not ray_available():
        raise UsageError(RAY_MISSING)
    return Cluster(args.cluster, args.workers, progress=not args.no_progress)


def _spec(args: argparse.Namespace, name: str):
    from .cluster import ModelSpec

    return ModelSpec(name, device=args.device, dtype=getattr(args, "dtype", "float32"),
                     processing=getattr(args, "processing", False))


def _load(args: argparse.Namespace):
    try:
        return load_model(args.model, device=args.device, dtype=args.dtype, processing=args.processing)
    except ModelNotFoundError as err:
        raise UsageError(str(err)) from err


def cmd_reproduce(args: argparse.Namespace) -> None:
    from .reproduce import Settings, reproduce

    texts = validate(args)
    prompts = args.prompts or (list(texts) if texts else list(PROMPTS))
    settings = Settings(
        prompts=prompts, prompt_texts=texts, seeds=args.seeds, kinds=args.kinds,
        max_new_tokens=args.max_new_tokens, exhaustive=args.exhaustive, tolerance=args.tolerance,
        chunk_size=args.chunk_size, n_exact=args.n_exact, n_samples=args.samples, overlap_draws=args.draws,
        random_draws=args.random_draws, png=args.png, progress=not args.no_progress, plugins=tuple(args.plugins),
    )
    for p in settings.prompts:  # a typo fails before the model loads
        settings.text_of(p)
    model = _load(args)
    t0 = time.perf_counter()
    out = reproduce(model, args.out, settings)
    print(f"report: {out['report']}  ({time.perf_counter() - t0:.0f} s)")


def folder_name(model: str) -> str:
    """The output folder of one model in ``replicate``: the name itself for a named or hub model
    (``/`` -> ``--``), the last part of a local path (never the path: an absolute one would put the
    results inside the model's own folder)."""
    path = Path(model).expanduser()
    if path.exists():
        return path.resolve().name
    return model.strip("/").replace("/", "--")


def cmd_replicate(args: argparse.Namespace) -> None:
    from .export import export_exact, export_results
    from .reproduce import Settings, reproduce

    texts = validate(args)
    prompts = args.prompts or (list(texts) if texts else list(REPLICATION_PROMPTS))
    model_seeds = {}
    for spec in args.model_seeds:
        name, sep, seeds = spec.partition("=")
        if not sep or name not in args.models or not seeds:
            raise UsageError(f"--model-seeds {spec!r} is not MODEL=S[,S...] with MODEL one of --models "
                             "(e.g. --model-seeds gemma-3-270m=0)")
        model_seeds[name] = [int(x) for x in seeds.split(",")]
    cluster = _cluster(args)
    runs = {}
    for name in args.models:
        args.model = name
        settings = Settings(
            prompts=prompts, prompt_texts=texts, seeds=model_seeds.get(name, args.seeds), kinds=args.kinds,
            max_new_tokens=args.max_new_tokens, exhaustive=args.exhaustive, tolerance=args.tolerance,
            chunk_size=args.chunk_size, n_exact=args.n_exact, n_samples=args.samples, overlap_draws=args.draws,
            random_draws=args.random_draws, generation_seeds=model_seeds.get(name, args.seeds)[:1], progress=not args.no_progress,
            exact_texts=args.exact_texts, band=args.band, only=("exact_importance",) if args.exact_only else None,
            exact_plugins=tuple(args.exact_plugins),
        )
        for p in settings.prompts:
            settings.text_of(p)
        model = _load(args) if cluster is None else None
        t0 = time.perf_counter()
        folder = folder_name(name)
        out = Path(args.out) / folder
        if cluster is None:
            reproduce(model, out, settings)
        else:
            cluster.reproduce(_spec(args, name), out, settings)
        print(f"{name}: {out / 'report.html'} ({time.perf_counter() - t0:.0f} s)", flush=True)
        runs[folder] = out
        del model
    if cluster is not None:
        cluster.close()
    if args.exact_only:
        for name, out in runs.items():
            if len(export_exact(out, Path(args.docs) / name)):
                print(f"exact stage: {Path(args.docs) / name / 'exact_texts.csv'}")
        return
    command = "python -m experiments replicate " + " ".join(
        [f"--models {' '.join(args.models)}", f"--seeds {' '.join(map(str, args.seeds))}", f"--out {args.out}",
         f"--docs {args.docs}"]
        + ([f"--model-seeds {' '.join(args.model_seeds)}"] if args.model_seeds else [])
        + ([f"--prompts {' '.join(args.prompts)}"] if args.prompts else [])
        + ([f"--prompts-file {args.prompts_file}"] if args.prompts_file else [])
        + (["--exhaustive"] if args.exhaustive else [])
        + [f"--exact-texts {args.exact_texts}"] + ([f"--band {args.band:g}"] if args.band != 5.0 else [])
        + ([f"--random-draws {args.random_draws}"] if args.random_draws != 3 else [])
        + ([f"--exact-with {' '.join(args.exact_plugins)}"] if list(args.exact_plugins) != list(EXACT_EXTENSIONS)
           else []))
    print(f"table: {export_results(runs, Path(args.docs), command=command, images=not args.no_images)}")


def cmd_extend(args: argparse.Namespace) -> None:
    import re

    from .export import retabulate_docs
    from .extend import TextMismatchError, extend_exact

    docs = Path(args.docs)
    folders = {name: folder_name(name) for name in args.models}  # docs/<folder>, <out>/<folder>: as replicate
    for folder in folders.values():
        if not (docs / folder / "exact_texts.csv").exists():
            raise UsageError(f"{docs / folder} has no exact_texts.csv (run `python -m experiments replicate` first, "
                             "or give --docs the folder that holds it)")
    runs = {folder: Path(args.out) / folder for folder in folders.values()}
    cluster = _cluster(args) if not args.table_only else None
    if not args.table_only:
        for name, folder in folders.items():
            try:
                if cluster is not None:
                    cluster.extend(_spec(args, name), docs / folder, runs[folder], args.plugin,
                                   texts=args.texts)
                    continue
                model = load_model(name, device=args.device, dtype="float32")
                extend_exact(model, docs / folder, runs[folder], args.plugin, texts=args.texts,
                             progress=not args.no_progress)
            except TextMismatchError as err:
                raise UsageError(str(err)) from None
            del model
        if cluster is not None:
            cluster.close()
    if args.no_table:
        return
    readme = (docs / "README.md").read_text() if (docs / "README.md").exists() else ""
    found = re.search(r"Regenerate everything here with `([^`]+)`", readme)
    command = found.group(1) if found else "python -m experiments replicate"
    plugins = re.search(r"--exact-with ([a-z_ ]+?)(?= --|$)", command)
    names = plugins.group(1).split() if plugins else list(EXACT_EXTENSIONS)
    if args.plugin not in names:
        command = re.sub(r" --exact-with [a-z_ ]+?(?= --|$)", "", command)
        command += " --exact-with " + " ".join([*names, args.plugin])
    added = (f"The `{args.plugin}` results (its rows, their columns in `texts.csv`, `<model>/{args.plugin}_*.csv`) "
             f"were added to this folder by `python -m experiments extend --with {args.plugin} --models "
             f"{' '.join(args.models)}`: the same plug-in on the same exact texts, each re-sampled and checked against "
             "the exported token count, log-probability and every singular value, with the exported exact ablations "
             "reused; every claim was then recomputed from `texts.csv` and `overlap_pairs.csv` (which gives the other "
             "rows unchanged). The command above gives the same in one run.")
    print(f"table: {retabulate_docs(docs, runs, command=command, added=added, plugin=args.plugin, images=not args.no_images)}")


def cmd_run(args: argparse.Namespace) -> None:
    import experiments as E

    from .checks import checked
    from .reproduce import claim_folder

    validate(args)
    model = _load(args)
    if args.k is not None and args.k > model.cfg.d_model:
        raise UsageError(f"--k {args.k} is outside 0..d_model={model.cfg.d_model} (give --k {model.cfg.d_model} or less)")
    # the stored continuation and every result in --out belong to these settings: refuse to mix
    claim_folder(Path(args.out), model, {k: getattr(args, k) for k in RUN_KEYED})
    comp = E.get_continuation(model, args.prompt, seed=args.seed, max_new_tokens=args.max_new_tokens,
                              store=Path(args.out) / "continuation.json")
    text = E.prepare(model, comp, kinds=args.kinds, chunk_size=args.chunk_size, progress=not args.no_progress)
    checked(text, Path(args.out))  # refuses to report from a broken environment
    common = dict(exhaustive=args.exhaustive)
    name = args.experiment
    if name in plugin_names():  # a plug-in experiment (experiments/registry.py)
        result = get_plugin(name)(model, text, seed=args.seed, tolerance=args.tolerance, prompt_name=args.prompt,
                                  chunk_size=args.chunk_size, progress=not args.no_progress, **common)
    elif name == "spectrum":
        result = E.run_spectrum(model, text)
    elif name == "clipping":
        result = E.run_clipping(model, text, **common)
    elif name == "single_direction":
        result = E.run_single_direction(model, text, n_exact=args.n_exact, seed=args.seed, **common)
    elif name == "orderings":
        result = E.run_orderings(model, text, compromise=args.compromise, **common)
    elif name == "minimal_subspace":
        result = E.run_minimal_subspace(model, text, tolerance=args.tolerance, prompt_name=args.prompt,
                                        seed=args.seed, study_procedure=args.study_procedure, **common)
    elif name == "method_sensitivity":
        result = E.run_method_sensitivity(model, text, seed=args.seed, prompt_name=args.prompt,
                                          chunk_size=args.chunk_size, progress=not args.no_progress)
    elif name == "exact_importance":
        result = E.run_exact_importance(model, text, tolerance=args.tolerance, seed=args.seed,
                                        progress=not args.no_progress)
    else:
        k = args.k if args.k is not None else E.run_minimal_subspace(model, text, tolerance=args.tolerance,
                                                                     random_null=False, **common).order()
        result = E.run_clipped_generation(model, text, k=k, seed=args.seed)
    out = Path(args.out) / name
    result.save(out)
    result.save_figures(out / "figures")
    print(f"{name}: {result.summary()}\nsaved to {out}")


def main(argv: list[str] | None = None) -> None:
    """Usage errors end as one line ``error: ...`` with exit status 2; a failed self-check prints its
    report and exits with status 3."""
    from .checks import SelfCheckError
    from .cluster import ClusterError
    from .reproduce import ResultsMismatchError

    args = build_parser().parse_args(argv)
    try:
        {"reproduce": cmd_reproduce, "replicate": cmd_replicate, "extend": cmd_extend, "run": cmd_run}[args.command](args)
    except (UsageError, ResultsMismatchError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except SelfCheckError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(3) from None
    except ClusterError as err:  # replicate/extend --cluster: texts lost or failed (each named)
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
