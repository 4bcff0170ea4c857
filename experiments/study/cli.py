"""Command line: ``python -m experiments reproduce`` (everything) or ``run EXPERIMENT`` (one).

Examples:
    python -m experiments reproduce --out results            # offline default model
    python -m experiments reproduce --model gpt2 --device cuda --dtype float32
    python -m experiments run clipping --prompt relativity --out results/one
    python -m experiments run text_length --opt lengths=2,8 --opt scaled=false

Every experiment, built-in or plug-in, is registered in experiments/registry.py and reached the same
way: `run NAME` (any of them), the stages of `reproduce` / `replicate`, `--with`, `extend`.
"""

import argparse
import shlex
import sys
import time
from pathlib import Path

from interp import ModelNotFoundError, load_model, normalize_kinds

from ..prompts import PROMPTS, REPLICATION_PROMPTS
from ..registry import ENV as PLUGINS_ENV
from ..registry import STAGES, OptionError, builtins, get_plugin, jsonable, plugin_names
from .preflight import PROGRESS, UsageError, check_prompts_fit, check_writable, model_limits

# The extensions (issues 16 and 17) replicate runs on the exact stage's texts: registered plug-ins.
EXACT_EXTENSIONS = (
    "study_procedure",
    "clip_variants",
    "text_length",
)  # hessian_ranking: opt-in (d Hessian-vector products a text)
# `extend --with`: the package's extensions (the table reads their numbers)
EXTENDABLE = tuple(
    sorted(
        (n for n, p in builtins().items() if p.stage == "extension"),
        key=lambda n: (n != "hessian_ranking", n),
    )
)
# The built-in experiments `run` takes, by stage (a plug-in's name works too).
RUNNABLE = tuple(
    p.name
    for p in sorted(builtins().values(), key=lambda p: (STAGES.index(p.stage), p.order, p.name))
)


class _Extensions(argparse.Action):
    """``--with`` / ``--exact-with``: extension names (``registry.plugin_names``), looked up only
    when the option is given (``--help`` imports no plug-in; a broken one is skipped with a
    warning)."""

    def __call__(self, parser, namespace, values, option_string=None):
        names = plugin_names()
        for value in values:
            if value not in names:
                parser.error(
                    f"argument {option_string}: invalid choice: {value!r} (choose from "
                    f"{', '.join(map(repr, names))})"
                )
        setattr(namespace, self.dest, values)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="smollm2-135m, gemma-3-270m, a local HF directory, a .gguf file or a hub name "
        "(default: $RESID_WRITES_MODEL, else ../shared/models, else smollm2-135m)",
    )
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)"
    )
    p.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "float16", "bfloat16", "float64"],
        help="the model's dtype (default float32; bfloat16 with --study-procedure)",
    )
    p.add_argument(
        "--processing",
        action="store_true",
        help="apply TransformerLens weight processing (default: raw writes)",
    )
    p.add_argument("--kinds", default="attn,mlp", help="writes to use: attn, mlp or attn,mlp")
    p.add_argument(
        "--out", default="results", help="output folder (rerun with the same folder to resume)"
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="batch rows per forward pass (default: from free memory)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=64,
        help="tokens sampled after each prompt (prompt + these must fit the model's context)",
    )
    _quiet_args(p)
    p.add_argument(
        "--exhaustive",
        action="store_true",
        help=(
            "every k of every clipping curve and every direction's exact importance (slow); "
            "the default refines adaptive grids and screens importances (same numbers within "
            "stated tolerances)"
        ),
    )
    p.add_argument(
        "--n-exact",
        type=int,
        default=None,
        help=(
            "screened importance: number of exact single-direction ablations (default ~8%% of "
            "d_model)"
        ),
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="minimal k: nats below the unclipped log-probability still counted as reaching it "
        "(raised to 10x the clipped pass's float error when that is larger)",
    )


def _quiet_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (the model's fetch, transformers' weight loading, the texts)",
    )
    p.add_argument(
        "--debug",
        action="store_true",
        help="on an unexpected error, print the full traceback instead of one line and a log file",
    )


def _cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cluster",
        default=None,
        metavar="ADDRESS",
        help="run the texts on Ray workers (pip install -e '.[cluster]'; "
        "docs/cluster.md): 'local' starts Ray on this machine, 'auto' or "
        "ray://HOST:10001 joins a running cluster",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="with --cluster: workers (each holds one loaded model; default: one per "
        "GPU, else one per two CPU cores)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser(
        "reproduce", help="every experiment on the study's four prompts, then overlap and report"
    )
    _model_args(rep)
    rep.add_argument(
        "--prompts",
        nargs="+",
        default=None,
        help=f"prompt names (default: the study's four; shipped: {', '.join(REPLICATION_PROMPTS)}; "
        "or names from --prompts-file)",
    )
    rep.add_argument(
        "--prompts-file",
        default=None,
        help=(
            "your own prompts: one per line, or JSONL objects with 'text' (and 'name'); all "
            "are run unless --prompts picks some"
        ),
    )
    rep.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="sampled continuations per prompt, by seed",
    )
    rep.add_argument(
        "--samples", type=int, default=3, help="samples per condition in clipped generation"
    )
    rep.add_argument(
        "--draws",
        type=int,
        default=50,
        help="Monte Carlo draws for the overlap nulls (the analytic mean and sd are exact)",
    )
    rep.add_argument(
        "--random-draws",
        type=int,
        default=1,
        help=(
            "independent random orthonormal bases per text for the minimal-subspace null "
            "(replicate: 3)"
        ),
    )
    rep.add_argument("--png", action="store_true", help="also write PNG figures (needs kaleido)")
    rep.add_argument(
        "--exact-texts",
        type=int,
        default=0,
        help="the exact stage (every direction ablated, every k scanned near the "
        "target) on the first N texts: the importance rows of the report need it "
        "(default 0: estimates only)",
    )
    # --- plug-in experiments (experiments/registry.py) ---
    rep.add_argument(
        "--with",
        dest="plugins",
        nargs="+",
        default=[],
        action=_Extensions,
        metavar="NAME",
        help=f"also run these extensions on every text: {', '.join(EXTENDABLE)} or a plug-in "
        f"(${PLUGINS_ENV}, docs/extending.md)",
    )
    rep2 = sub.add_parser(
        "replicate", help="the replication table: every model x prompt x seed, exported to docs"
    )
    _model_args(rep2)
    rep2.add_argument(
        "--models",
        nargs="+",
        default=["smollm2-135m", "gemma-3-270m"],
        help="models, each as --model takes it (results in <out>/<model>/)",
    )
    rep2.add_argument(
        "--prompts", nargs="+", default=None, help="default: all shipped replication prompts"
    )
    rep2.add_argument("--prompts-file", default=None, help="your own prompts, as for reproduce")
    rep2.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2, 3],
        help="sampled continuations per prompt, by seed",
    )
    rep2.add_argument(
        "--model-seeds",
        nargs="+",
        default=[],
        metavar="MODEL=S,S",
        help="other seeds for one model, e.g. gemma-3-270m=0 (a larger model, fewer samples)",
    )
    rep2.add_argument(
        "--samples", type=int, default=3, help="samples per condition in clipped generation"
    )
    rep2.add_argument(
        "--draws", type=int, default=100, help="Monte Carlo draws for the overlap nulls"
    )
    rep2.add_argument(
        "--random-draws",
        type=int,
        default=3,
        help="independent random orthonormal bases per text for the minimal-subspace null",
    )
    rep2.add_argument(
        "--docs",
        default=None,
        help="where the small outputs and the table go (default: <out>/docs; give "
        "docs/results to publish: a folder holding another run's results is "
        "refused)",
    )
    rep2.add_argument(
        "--exact-texts",
        type=int,
        default=8,
        help=(
            "the audit's exact stage (every direction ablated, every k scanned near the "
            "target) on the first N texts of each model (seed 0 first, prompts in order); the "
            "importance claims use only these texts"
        ),
    )
    rep2.add_argument(
        "--exact-with",
        dest="exact_plugins",
        nargs="*",
        default=list(EXACT_EXTENSIONS),
        metavar="NAME",
        action=_Extensions,
        help="plug-in experiments run on the exact stage's texts only (default: "
        f"{' '.join(EXACT_EXTENSIONS)}; --exact-with alone runs none)",
    )
    rep2.add_argument(
        "--band",
        type=float,
        default=5.0,
        help="exact stage: scan every k wherever the curve is within this many nats of the target",
    )
    rep2.add_argument(
        "--exact-only",
        action="store_true",
        help="run only the exact stage (resumable; a later full replicate reuses it), no table",
    )
    rep2.add_argument(
        "--no-images",
        action="store_true",
        help="skip the SVG figures (they need kaleido + chromium)",
    )
    rep2.add_argument("--png", action="store_true", help=argparse.SUPPRESS)
    _cluster_args(rep2)
    ext = sub.add_parser(
        "extend",
        help="add a plug-in to docs/results' exact texts without rebuilding the replication",
        description=(
            "Run a plug-in (default hessian_ranking) on the exact texts of a finished "
            "docs/results: each text is re-sampled, checked against the exported token count, "
            "log-probability and singular values, and given the exported exact ablations; then "
            "every claim is recomputed from texts.csv and overlap_pairs.csv and the table "
            "rewritten. Resumable; --texts splits the work across processes."
        ),
    )
    ext.add_argument(
        "--models", nargs="+", default=["smollm2-135m", "gemma-3-270m"], help="models to extend"
    )
    ext.add_argument(
        "--with",
        dest="plugin",
        default="hessian_ranking",
        choices=EXTENDABLE,
        help="the plug-in (one whose per-text numbers the table reads)",
    )
    ext.add_argument(
        "--texts", nargs="+", default=None, help="only these text ids (default: every exact text)"
    )
    ext.add_argument(
        "--out",
        default="replication",
        help="the replication folder (results go to <out>/<model>/<text>/)",
    )
    ext.add_argument(
        "--docs",
        default=None,
        help="the published folder to extend in place (default: docs/results is read "
        "and the extended copy written to <out>/docs)",
    )
    ext.add_argument(
        "--table-only",
        action="store_true",
        help="compute nothing: recompute the table from the finished texts in --out",
    )
    ext.add_argument(
        "--no-table",
        action="store_true",
        help="compute only (for one of several parallel processes)",
    )
    ext.add_argument(
        "--no-images", action="store_true", help="skip the SVG figure (it needs kaleido + chromium)"
    )
    ext.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, ... (the texts are checked against the docs either way)",
    )
    _quiet_args(ext)
    _cluster_args(ext)
    one = sub.add_parser("run", help="one experiment on one prompt, with its own options")
    _model_args(one)
    one.add_argument(
        "experiment",
        metavar="NAME",
        help=f"a built-in experiment ({', '.join(RUNNABLE)}) or a plug-in (${PLUGINS_ENV}, "
        "docs/extending.md)",
    )
    one.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set one of the experiment's declared options (repeatable; e.g. --opt n_samples=1); "
        "checked against its declaration before the model loads, and part of the run key",
    )
    one.add_argument(
        "--prompt",
        default="meaning_of_life",
        help=f"one of {list(REPLICATION_PROMPTS)} or any text",
    )
    one.add_argument("--seed", type=int, default=0, help="the sampled continuation's seed")
    one.add_argument(
        "--k", type=int, default=None, help="clipped_generation: directions kept (default: minimal)"
    )
    one.add_argument(
        "--compromise", default=None, help="orderings: compromise formula (default rank_product)"
    )
    one.add_argument(
        "--lengths",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help=(
            "text_length: continuation lengths to cut the text to (default 2 8 32 64, and the "
            "study's new tokens per dimension); give --max-new-tokens at least the largest"
        ),
    )
    one.add_argument(
        "--total-lengths",
        type=int,
        nargs="+",
        default=None,
        metavar="T",
        help=(
            "text_length: also cut to T tokens in all (BOS + prompt + continuation), e.g. 16 "
            "32 48 64 71 128"
        ),
    )
    one.add_argument(
        "--target-subsets",
        type=int,
        nargs="+",
        default=None,
        metavar="M",
        help=(
            "text_length: also score the whole text on its first / last M continuation tokens "
            "only, in its own basis (target size apart from the basis), e.g. 2 4 8 16 64"
        ),
    )
    one.add_argument(
        "--study-procedure",
        action="store_true",
        help=(
            "minimal_subspace: also the study's own search (bisection over 1..d, clipped >= "
            "unclipped with no tolerance), in bfloat16 unless --dtype says otherwise"
        ),
    )
    return parser


# The `run` options that change its numbers (the others pick an experiment or how to show it);
# --opt's options join them when given.
RUN_KEYED = (
    "model",
    "dtype",
    "processing",
    "kinds",
    "max_new_tokens",
    "prompt",
    "seed",
    "exhaustive",
    "tolerance",
    "n_exact",
    "study_procedure",
    "lengths",
    "total_lengths",
    "target_subsets",
)
# `run` flags that set an experiment's option: flag -> (option, the built-in that declares it).
OPTION_FLAGS = {
    "k": ("k", "clipped_generation"),
    "compromise": ("compromise", "orderings"),
    "lengths": ("lengths", "text_length"),
    "total_lengths": ("total_lengths", "text_length"),
    "target_subsets": ("target_subsets_m", "text_length"),
    "study_procedure": ("study_procedure", "minimal_subspace"),
}
# The run's settings `run` hands every experiment (those it declares), each set by its own flag.
CONTEXT_FLAGS = {
    "seed": "--seed",
    "exhaustive": "--exhaustive",
    "tolerance": "--tolerance",
    "chunk_size": "--chunk-size",
    "progress": "--no-progress",
    "prompt_name": "--prompt",
    "n_exact": "--n-exact",
}


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
            raise UsageError(
                f"--device {device}: this torch ({torch.__version__}) has no usable CUDA "
                "(use --device cpu, or install a CUDA build of torch: see README, GPU install)"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here "
                f"(use cuda:0 ... cuda:{torch.cuda.device_count() - 1})"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available here (use --device cpu)")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(
            f"--device {device}: unsupported device type {dev.type!r} (use cpu or cuda)"
        )


def _prompt_texts(args: argparse.Namespace) -> dict[str, str] | None:
    """The prompts of --prompts-file, or None; a missing, empty or undecodable file is a usage
    error."""
    if not getattr(args, "prompts_file", None):
        return None
    from ..prompts import load_prompts_file

    path = Path(args.prompts_file)
    if not path.is_file():
        raise UsageError(
            f"--prompts-file {path}: no such file (give a text file, one prompt per line, or JSONL)"
        )
    try:
        return load_prompts_file(path)
    except UnicodeDecodeError as err:
        raise UsageError(f"--prompts-file {path} is not UTF-8 text (save it as UTF-8)") from err
    except ValueError as err:
        raise UsageError(f"--prompts-file: {err}") from err


def validate(args: argparse.Namespace) -> dict[str, str] | None:
    """Every check that needs no model, run before one loads; returns the --prompts-file prompts."""
    try:
        args.kinds = normalize_kinds(args.kinds)
    except ValueError as err:
        raise UsageError(
            f"--kinds {args.kinds!r} is not attn, mlp or attn,mlp (e.g. --kinds attn,mlp)"
        ) from err
    for name in ("max_new_tokens", "chunk_size", "samples", "draws", "random_draws"):
        _positive(args, name)
    for name in ("n_exact", "k", "exact_texts"):
        _positive(args, name, 0)
    if hasattr(
        args, "experiment"
    ):  # run: the experiment and its options, checked against its declaration
        args.options = run_options(args)
    study = getattr(args, "options", {}).get("study_procedure", False)
    if args.dtype is None:  # the study most likely ran bfloat16 (Meta's reference code on CUDA)
        args.dtype = "bfloat16" if study else "float32"
    for name in ("lengths", "total_lengths", "target_subsets"):
        values = getattr(args, name, None)
        flag = "--" + name.replace("_", "-")
        if values is not None and min(values) < 1:
            raise UsageError(f"{flag} {min(values)} is below 1 (give token counts of 1 or more)")
    lengths = getattr(args, "lengths", None)
    if lengths and max(lengths) > args.max_new_tokens:
        raise UsageError(
            f"--lengths {max(args.lengths)} is longer than --max-new-tokens "
            f"{args.max_new_tokens} (give --max-new-tokens {max(args.lengths)})"
        )
    if getattr(args, "band", 1.0) < 0:
        raise UsageError(f"--band {args.band} must be >= 0 nats (e.g. --band 5)")
    if args.tolerance < 0 or args.tolerance != args.tolerance:
        raise UsageError(f"--tolerance {args.tolerance} must be >= 0 nats (e.g. --tolerance 1e-4)")
    if any(seed < 0 for seed in getattr(args, "seeds", None) or [getattr(args, "seed", 0)]):
        raise UsageError("seeds must be >= 0 (e.g. --seeds 0 1)")
    _check_device(args.device)
    if getattr(args, "png", False):
        from ..base import check_png_export

        try:
            check_png_export()
        except RuntimeError as err:
            raise UsageError(f"--png: {err}") from None
    texts = _prompt_texts(args)
    names = getattr(args, "prompts", None) or []
    known = {**REPLICATION_PROMPTS, **(texts or {})}
    unknown = [p for p in names if p not in known]
    if unknown:
        raise UsageError(
            f"--prompts: unknown prompt {unknown[0]!r} (choose from {', '.join(known)}, "
            "or pass your own with --prompts-file)"
        )
    check_writable(args.out)
    return texts


def run_options(args: argparse.Namespace) -> dict:
    """``run``'s experiment (from the registry: an unknown name is its error) and the options given
    to it, by --opt KEY=VALUE and by the flags that set one (--k, --compromise, --lengths, ...),
    each checked against the experiment's declaration; a usage error before the model loads."""
    try:
        experiment = get_plugin(args.experiment)
    except KeyError as err:
        raise UsageError(err.args[0]) from None
    declared = experiment.options
    options = {}
    for dest, (option, owner) in OPTION_FLAGS.items():
        value = getattr(args, dest, None)
        if value is None or value is False:
            continue
        flag = "--" + dest.replace("_", "-")
        if option not in declared:
            raise UsageError(
                f"{flag} is an option of {owner}, not {args.experiment} (run {owner} {flag}"
                f"{'' if value is True else ' ...'})"
            )
        options[option] = value
    for pair in getattr(args, "opt", None) or []:
        key = pair.partition("=")[0].strip()
        if key in CONTEXT_FLAGS and key in declared:
            raise UsageError(
                f"--opt {key}: set it with {CONTEXT_FLAGS[key]} (e.g. {CONTEXT_FLAGS[key]} ...), "
                "not --opt"
            )
        if key in options:
            raise UsageError(f"--opt {key}: given twice (by its flag and by --opt; give it once)")
    try:
        given = experiment.parse_options(getattr(args, "opt", None))
    except OptionError as err:
        raise UsageError(str(err)) from None
    args.opt_values = {k: jsonable(v) for k, v in sorted(given.items())}
    return {**options, **given}


def _cluster(args: argparse.Namespace):
    """The Ray cluster of --cluster (experiments/study/cluster.py), or None without it."""
    if args.cluster is None:
        if args.workers is not None:
            raise UsageError("--workers needs --cluster (e.g. --cluster local --workers 2)")
        return None
    from .cluster import RAY_MISSING, Cluster, ray_available

    _positive(args, "workers")
    if args.device not in (None, "cpu", "cuda"):
        raise UsageError(
            f"--device {args.device} with --cluster: each worker uses its own device "
            "(give cpu, cuda or nothing)"
        )
    if not ray_available():
        raise UsageError(RAY_MISSING)
    return Cluster(args.cluster, args.workers, progress=not args.no_progress)


def _spec(args: argparse.Namespace, name: str):
    from .cluster import ModelSpec

    return ModelSpec(
        name,
        device=args.device,
        dtype=getattr(args, "dtype", "float32"),
        processing=getattr(args, "processing", False),
    )


def _labelled(
    args: argparse.Namespace, prompts: list[str], texts: dict[str, str] | None
) -> list[tuple[str, str]]:
    """(how to name it in an error, text) of every prompt a command runs: a --prompts-file prompt
    by its line number."""
    lines = {}
    if getattr(args, "prompts_file", None):
        from ..prompts import read_prompts_file

        lines = {name: i for i, name, _ in read_prompts_file(args.prompts_file)}
    out = []
    for p in prompts:
        if texts and p in texts:
            label = f"--prompts-file {args.prompts_file} line {lines.get(p, '?')} ({p})"
            out.append((label, texts[p]))
        else:
            out.append((f"prompt {p!r}", REPLICATION_PROMPTS[p]))
    return out


def _check_model(args: argparse.Namespace, model: str | None, prompts: list[tuple[str, str]]):
    """Before the weights load: the model exists, and every prompt fits its context (read from its
    config and tokenizer when they can be read without weights). Returns what was read, or None."""
    limits = model_limits(model)
    if limits is not None:
        check_prompts_fit(prompts, limits, args.max_new_tokens)
    return limits


def _check_loaded(args: argparse.Namespace, model, prompts: list[tuple[str, str]]) -> None:
    """Right after the load, before any text is computed: the same check on the model's own
    numbers."""
    from interp import model_info

    from .preflight import ModelLimits

    info = model_info(model)
    limits = ModelLimits(info.name, info.n_ctx, info.d_model, model.tokenizer)
    check_prompts_fit(prompts, limits, args.max_new_tokens)


def _load(args: argparse.Namespace, model: str | None = None):
    try:
        return load_model(
            args.model if model is None else model,
            device=args.device,
            dtype=args.dtype,
            processing=args.processing,
            progress=not args.no_progress,
        )
    except ModelNotFoundError as err:
        raise UsageError(str(err)) from err


def published_docs() -> Path | None:
    """This checkout's published results (``docs/results``), if it has them."""
    path = Path(__file__).resolve().parents[2] / "docs" / "results"
    return path if (path / "README.md").is_file() else None


def _shared_settings(args: argparse.Namespace) -> dict:
    """The ``Settings`` fields that ``reproduce`` and ``replicate`` take from the same flags."""
    return dict(
        kinds=args.kinds,
        max_new_tokens=args.max_new_tokens,
        exhaustive=args.exhaustive,
        tolerance=args.tolerance,
        chunk_size=args.chunk_size,
        n_exact=args.n_exact,
        n_samples=args.samples,
        overlap_draws=args.draws,
        random_draws=args.random_draws,
        progress=not args.no_progress,
        exact_texts=args.exact_texts,
    )


def cmd_reproduce(args: argparse.Namespace) -> None:
    from .reproduce import Settings, reproduce

    texts = validate(args)
    prompts = args.prompts or (list(texts) if texts else list(PROMPTS))
    settings = Settings(
        prompts=prompts,
        prompt_texts=texts,
        seeds=args.seeds,
        png=args.png,
        plugins=tuple(args.plugins),
        **_shared_settings(args),
    )
    for p in settings.prompts:  # a typo fails before the model loads
        settings.text_of(p)
    labelled = _labelled(args, list(settings.prompts), texts)
    _check_model(args, args.model, labelled)
    PROGRESS.total = len(settings.text_ids())
    model = _load(args)
    _check_loaded(args, model, labelled)
    t0 = time.perf_counter()
    out = reproduce(
        model, args.out, settings, command=args.command_line, published=published_docs()
    )
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
    from .preflight import published_difference
    from .reproduce import ADDED_SETTINGS, Settings, keyed_settings, reproduce

    texts = validate(args)
    docs = Path(args.docs) if args.docs else Path(args.out) / "docs"
    check_writable(docs, "--docs")
    prompts = args.prompts or (list(texts) if texts else list(REPLICATION_PROMPTS))
    model_seeds = {}
    for spec in args.model_seeds:
        name, sep, seeds = spec.partition("=")
        numbers = all(x.isdigit() for x in seeds.split(","))
        if not sep or name not in args.models or not seeds or not numbers:
            raise UsageError(
                f"--model-seeds {spec!r} is not MODEL=S[,S...] with MODEL one of --models "
                "(e.g. --model-seeds gemma-3-270m=0)"
            )
        model_seeds[name] = [int(x) for x in seeds.split(",")]
    cluster = _cluster(args)
    plan = {}
    for name in args.models:
        settings = Settings(
            prompts=prompts,
            prompt_texts=texts,
            seeds=model_seeds.get(name, args.seeds),
            generation_seeds=model_seeds.get(name, args.seeds)[:1],
            band=args.band,
            **_shared_settings(args),
            only=("exact_importance",) if args.exact_only else None,
            exact_plugins=tuple(args.exact_plugins),
        )
        for p in settings.prompts:
            settings.text_of(p)
        plan[name] = settings
    labelled = _labelled(args, prompts, texts)
    for name in args.models:  # every model is found and fits every prompt before the first loads
        _check_model(args, name, labelled)
    if args.docs:  # publishing: never over another run's results
        exports = {
            folder_name(n): ([t for t, _, _ in s.text_ids()], keyed_settings(s))
            for n, s in plan.items()
        }
        diff = published_difference(docs, exports, ADDED_SETTINGS)
        if diff:
            raise UsageError(
                f"--docs {docs} holds the published results of another run "
                f"(differs in {'; '.join(diff)}) (give another --docs, or leave it "
                "out to write to <out>/docs)"
            )
    counts = [len(s.text_ids()) for s in plan.values()]
    PROGRESS.total = sum(
        min(n, s.exact_texts) if args.exact_only else n
        for n, s in zip(counts, plan.values(), strict=True)
    )
    runs = {}
    for name, settings in plan.items():
        args.model = name
        model = None
        if cluster is None:
            model = _load(args)
            _check_loaded(args, model, labelled)
        t0 = time.perf_counter()
        folder = folder_name(name)
        out = Path(args.out) / folder
        if cluster is None:
            reproduce(model, out, settings, command=args.command_line)
        else:
            cluster.reproduce(_spec(args, name), out, settings)
        print(f"{name}: {out / 'report.html'} ({time.perf_counter() - t0:.0f} s)", flush=True)
        runs[folder] = out
        del model
    if cluster is not None:
        cluster.close()
    if args.exact_only:
        for name, out in runs.items():
            if len(export_exact(out, docs / name)):
                print(f"exact stage: {docs / name / 'exact_texts.csv'}")
        return
    command = "python -m experiments replicate " + " ".join(
        [
            f"--models {' '.join(args.models)}",
            f"--seeds {' '.join(map(str, args.seeds))}",
            f"--out {args.out}",
        ]
        + ([f"--docs {args.docs}"] if args.docs else [])
        + ([f"--model-seeds {' '.join(args.model_seeds)}"] if args.model_seeds else [])
        + ([f"--prompts {' '.join(args.prompts)}"] if args.prompts else [])
        + ([f"--prompts-file {args.prompts_file}"] if args.prompts_file else [])
        + (["--exhaustive"] if args.exhaustive else [])
        + [f"--exact-texts {args.exact_texts}"]
        + ([f"--band {args.band:g}"] if args.band != 5.0 else [])
        + ([f"--random-draws {args.random_draws}"] if args.random_draws != 3 else [])
        + (
            [f"--exact-with {' '.join(args.exact_plugins)}"]
            if list(args.exact_plugins) != list(EXACT_EXTENSIONS)
            else []
        )
    )
    print(f"table: {export_results(runs, docs, command=command, images=not args.no_images)}")


# Where extend reads the published results without --docs (relative to the working folder).
DOCS = Path("docs/results")


def cmd_extend(args: argparse.Namespace) -> None:
    import re
    import shutil

    import pandas as pd

    from .export import retabulate_docs
    from .extend import TextMismatchError, extend_exact

    source = Path(args.docs) if args.docs else DOCS  # read from
    docs = Path(args.docs) if args.docs else Path(args.out) / "docs"  # written to
    check_writable(args.out)
    check_writable(docs, "--docs")
    _check_device(args.device)
    folders = {
        name: folder_name(name) for name in args.models
    }  # docs/<folder>, <out>/<folder>: as replicate
    for folder in folders.values():
        if not (source / folder / "exact_texts.csv").exists():
            raise UsageError(
                f"{source / folder} has no exact_texts.csv (run `python -m "
                "experiments replicate` first, or give --docs the folder that holds "
                "it)"
            )
    exact = {
        folder: pd.read_csv(source / folder / "exact_texts.csv").text.astype(str).tolist()
        for folder in folders.values()
    }
    unknown = [t for t in args.texts or [] if not any(t in ids for ids in exact.values())]
    if unknown:
        known = dict.fromkeys(t for ids in exact.values() for t in ids)
        raise UsageError(
            f"--texts {unknown[0]!r} is no exact text of "
            f"{', '.join(folders.values())} (choose from {', '.join(known)})"
        )
    runs = {folder: Path(args.out) / folder for folder in folders.values()}
    cluster = _cluster(args) if not args.table_only else None
    if not args.table_only:
        for name in folders:
            model_limits(name)  # every model is found before the first one loads
    if docs != source:  # the published folder stays as it is: extend a copy of it
        for folder in folders.values():
            if not (docs / folder / "texts.csv").exists():
                shutil.copytree(source / folder, docs / folder, dirs_exist_ok=True)
        if (source / "README.md").exists() and not (docs / "README.md").exists():
            shutil.copy2(source / "README.md", docs / "README.md")
    if not args.table_only:
        PROGRESS.total = sum(
            len([t for t in ids if args.texts is None or t in args.texts]) for ids in exact.values()
        )
        for name, folder in folders.items():
            try:
                if cluster is not None:
                    cluster.extend(
                        _spec(args, name),
                        source / folder,
                        runs[folder],
                        args.plugin,
                        texts=args.texts,
                    )
                    continue
                model = load_model(
                    name, device=args.device, dtype="float32", progress=not args.no_progress
                )
                extend_exact(
                    model,
                    source / folder,
                    runs[folder],
                    args.plugin,
                    texts=args.texts,
                    progress=not args.no_progress,
                )
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
    added = (
        f"The `{args.plugin}` results (its rows, their columns in `texts.csv`, "
        f"`<model>/{args.plugin}_*.csv`) were added to this folder by `python -m "
        f"experiments extend --with {args.plugin} --models {' '.join(args.models)}`: the "
        "same plug-in on the same exact texts, each re-sampled and checked against the "
        "exported token count, log-probability and every singular value, with the exported "
        "exact ablations reused; every claim was then recomputed from `texts.csv` and "
        "`overlap_pairs.csv` (which gives the other rows unchanged). The command above "
        "gives the same in one run."
    )
    paragraph = r"The `(\w+)` results \(.*?The command above gives the same in one run\."
    earlier = [
        m.group(0) for m in re.finditer(paragraph, readme, flags=re.S) if m.group(1) != args.plugin
    ]
    added = "\n\n".join([*earlier, added])  # each plug-in added this way keeps its paragraph
    table = retabulate_docs(
        docs, runs, command=command, added=added, plugin=args.plugin, images=not args.no_images
    )
    print(f"table: {table}")


def _result_class(name: str):
    """The result class that loads experiment ``name``'s folder (the registry's)."""
    return get_plugin(name).result


def _check_resumed(args: argparse.Namespace, result) -> None:
    """A finished result loads only under the experiment's own options it was made with."""
    from .reproduce import ResultsMismatchError

    own = {
        "clipped_generation": {"k": getattr(args, "k", None)},
        "orderings": {"compromise": getattr(args, "compromise", None) or "rank_product"},
    }
    diff = [
        f"--{k} {result.settings.get(k)} -> {v}"
        for k, v in own.get(args.experiment, {}).items()
        if v is not None and result.settings.get(k) != v
    ]
    if diff:
        raise ResultsMismatchError(
            f"{Path(args.out) / args.experiment} holds a finished {args.experiment} made with "
            f"other options ({'; '.join(diff)}); use another --out, or delete that folder to "
            "recompute"
        )


def cmd_run(args: argparse.Namespace) -> None:
    import experiments as E

    from .checks import checked
    from .reproduce import cached, claimed

    validate(args)
    labelled = [
        (
            f"--prompt {args.prompt!r}" if args.prompt in REPLICATION_PROMPTS else "--prompt",
            REPLICATION_PROMPTS.get(args.prompt, args.prompt),
        )
    ]
    limits = _check_model(args, args.model, labelled)
    d = limits.d_model if limits is not None else None
    k = args.options.get("k")
    if k is not None and d is not None and k > d:
        raise UsageError(f"--k {k} is outside 0..d_model={d} (give --k {d} or less)")
    name = args.experiment
    experiment = get_plugin(name)
    cls = experiment.result
    PROGRESS.total = 1
    model = _load(args)
    _check_loaded(args, model, labelled)
    if k is not None and k > model.cfg.d_model:
        raise UsageError(
            f"--k {k} is outside 0..d_model={model.cfg.d_model} (give --k "
            f"{model.cfg.d_model} or less)"
        )
    out = Path(args.out)
    keyed = {key: getattr(args, key) for key in RUN_KEYED}
    if args.opt_values:  # --opt: part of the key (a run without it keeps the key it always had)
        keyed["opt"] = args.opt_values
    # the stored continuation and every result in --out belong to these settings: refuse to mix
    with claimed(out, model, keyed):
        if (out / name / "settings.json").exists():  # finished: resume, as reproduce does
            result = cls.load(out / name)
            _check_resumed(args, result)
            PROGRESS.done = 1
            print(
                f"{name}: {result.summary()}\nloaded from {out / name} (finished earlier; delete "
                "it to recompute)"
            )
            return

        def compute():
            comp = E.get_continuation(
                model,
                args.prompt,
                seed=args.seed,
                max_new_tokens=args.max_new_tokens,
                store=out / "continuation.json",
            )
            progress = not args.no_progress
            text = E.prepare(
                model, comp, kinds=args.kinds, chunk_size=args.chunk_size, progress=progress
            )
            checked(text, out)  # refuses to report from a broken environment
            context = dict(
                seed=args.seed,
                exhaustive=args.exhaustive,
                tolerance=args.tolerance,
                chunk_size=args.chunk_size,
                progress=progress,
                prompt_name=args.prompt,
                n_exact=args.n_exact,
                results={},
            )  # run alone: no other results to reuse
            return experiment.run(model, text, context, args.options)

        result = cached(out / name, cls, compute, False)  # one experiment: plotly.js beside it
        PROGRESS.done = 1
    print(f"{name}: {result.summary()}\nsaved to {out / name}")


def main(argv: list[str] | None = None) -> None:
    """Every failure ends as one line on stderr: usage errors ``error: ...`` with exit status 2
    (before the model loads wherever they can be found then), a failed self-check its report with
    status 3, Ctrl-C how far the run got and how to resume with status 130, anything unexpected
    its type and message and the log file holding the traceback with status 1 (``--debug``: the
    traceback itself)."""
    from .checks import SelfCheckError
    from .cluster import ClusterError
    from .preflight import error_log, interrupted
    from .reproduce import ResultsMismatchError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = "python -m experiments " + shlex.join(argv)
    PROGRESS.done = PROGRESS.total = 0
    try:
        {
            "reproduce": cmd_reproduce,
            "replicate": cmd_replicate,
            "extend": cmd_extend,
            "run": cmd_run,
        }[args.command](args)
    except (UsageError, ResultsMismatchError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except SelfCheckError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(3) from None
    except ClusterError as err:  # replicate/extend --cluster: texts lost or failed (each named)
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(interrupted(), file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as err:
        if args.debug:
            raise
        log = error_log(err)
        what = " ".join(str(err).split())[:300] or "(no message)"
        where = f"full traceback in {log}" if log else "no log file could be written"
        print(
            f"error: unexpected {type(err).__name__}: {what} ({where}; rerun with --debug to "
            "print it)",
            file=sys.stderr,
        )
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
