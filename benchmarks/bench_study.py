"""Benchmark: the whole study (``python -m experiments reproduce``), phase by phase, default vs
exhaustive. Prints ratios and tables; a script, not a timed test.

    python benchmarks/bench_study.py                      # smollm2-135m, default + exhaustive
    python benchmarks/bench_study.py --model gemma-3-270m --modes default
    OMP_NUM_THREADS=1 python benchmarks/bench_study.py --prompts meaning_of_life   # one core
    python benchmarks/bench_study.py --model random:llama3-8b --device cuda --dtype bfloat16 \\
        --modes default

Each mode runs the CLI in a fresh process (wall time from start to report, model load and
imports included; peak RSS of that process). The unit, one plain forward pass of each text
(batch 1, no hooks), is measured inside each run beside its phases (so it moves with the
machine's speed; also here, best of 5, for the record), and the dense-matmul FLOP/s of the same
dtype here (best of three). Every phase is reported in seconds, in forward-pass equivalents (its
time over one plain forward of the same text) and, for phases made of batched forward rows, in % of
that matmul peak. With both modes, the numbers the replication table uses are compared side by side.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import interp  # noqa: E402
from experiments.study.reproduce import UNIT_PHASE, plain_forward_seconds  # noqa: E402
from interp.tokens import Completion  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_flops(device: torch.device, dtype: torch.dtype) -> float:
    n = 2048 if device.type == "cpu" else 8192
    a, b = (
        torch.randn(n, n, device=device, dtype=dtype),
        torch.randn(n, n, device=device, dtype=dtype),
    )
    a @ b
    reps = 3 if device.type == "cpu" else 20
    best = 0.0
    for _ in range(3):  # best of three: the machine's peak, not its noise
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


def forward_flops(model, n_tokens: int, n_cont: int) -> float:
    """Matmul FLOPs of one plain forward: 2 per weight per token in the blocks, attention scores
    and values, and the unembedding at the scored positions."""
    cfg = model.cfg
    hf = model.original_model
    block = sum(
        p.numel()
        for n, p in hf.named_parameters()
        if p.ndim == 2 and (".layers." in n or ".h." in n)
    )
    d_head = int(getattr(cfg, "d_head", cfg.d_model // cfg.n_heads))
    attn = 2 * 2 * int(cfg.n_layers) * n_tokens * n_tokens * int(cfg.n_heads) * d_head
    return 2 * block * n_tokens + attn + 2 * int(cfg.d_model) * int(cfg.d_vocab) * n_cont


# Runs the CLI and reports the process's own peak RSS when it exits.
WRAPPER = (
    "import atexit, resource, runpy, sys\n"
    "atexit.register(lambda: print('PEAK_RSS_KB', "
    "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr))\n"
    "sys.argv = ['experiments'] + sys.argv[1:]\n"
    "runpy.run_module('experiments', run_name='__main__')\n"
)


def run_mode(mode: str, args: argparse.Namespace, out: Path) -> dict:
    cmd = [
        sys.executable,
        "-c",
        WRAPPER,
        "reproduce",
        "--model",
        args.model,
        "--out",
        str(out),
        "--no-progress",
        "--dtype",
        args.dtype,
    ]
    if args.device:
        cmd += ["--device", args.device]
    if args.prompts:
        cmd += ["--prompts", *args.prompts]
    if args.max_new_tokens:
        cmd += ["--max-new-tokens", str(args.max_new_tokens)]
    if mode == "exhaustive":
        cmd.append("--exhaustive")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    kb = [
        int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KB")
    ]
    return {
        "mode": mode,
        "wall_s": wall,
        "peak_rss_gb": kb[-1] / 2**20 if kb else float("nan"),
        "out": out,
    }


def in_run_units(out: Path) -> dict[str, float]:
    """Seconds of one plain forward per text, as measured inside the run beside its phases."""
    t = pd.read_csv(out / "timings.csv")
    t = t[t.phase == UNIT_PHASE]
    return dict(zip(t.text, t.seconds, strict=False))


def phase_table(
    out: Path, unit: dict[str, float], flops: dict[str, float], peak: float
) -> pd.DataFrame:
    t = pd.read_csv(out / "timings.csv")
    t = t[~t.loaded & (t.phase != UNIT_PHASE)]
    unit = {**unit, **in_run_units(out)}  # the in-run unit wins: it is robust to machine drift
    mean_unit = float(
        np.mean(list(unit.values()))
    )  # phases over all texts ("all"): the mean forward
    rows = []
    for phase, g in t.groupby("phase", sort=False):
        secs = g.seconds.sum()
        equiv = sum(r.seconds / unit.get(r.text, mean_unit) for r in g.itertuples())
        done = sum(r.forward_rows * flops.get(r.text, 0) for r in g.itertuples())
        rows.append(
            {
                "phase": phase,
                "seconds": secs,
                "forward_equivalents": equiv,
                "forward_rows": int(g.forward_rows.sum()),
                "pct_matmul_peak": 100 * done / (secs * peak) if done else float("nan"),
            }
        )
    table = pd.DataFrame(rows)
    table["share"] = table.seconds / table.seconds.sum()
    return table


def replication_numbers(out: Path) -> pd.DataFrame:
    """The per-text numbers the replication table is built from."""
    rows = []
    for ms_dir in sorted(out.glob("*/minimal_subspace")):
        text = ms_dir.parent.name
        ms = pd.read_csv(ms_dir / "minimal_k.csv")
        first = ms[ms.method == "first_crossing"].set_index("ordering").k
        clip = json.loads((out / text / "clipping" / "settings.json").read_text())["summary"]
        imp = pd.read_csv(out / text / "single_direction" / "importance.csv")
        row = {
            "text": text,
            **{f"min_k[{o}]": int(k) for o, k in first.items()},
            "k_converged": clip["k_converged"],
            "top10": sorted(
                imp.sort_values("importance", ascending=False).direction.head(10).tolist()
            ),
        }
        sens = pd.read_csv(ms_dir / "sensitivity.csv")
        for r in sens[
            (sens.ordering == "singular_value") & (sens.criterion == "total")
        ].itertuples():
            row[f"min_k@{r.tolerance:g}"] = int(r.k)
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument(
        "--modes", nargs="+", default=["default", "exhaustive"], choices=["default", "exhaustive"]
    )
    ap.add_argument("--prompts", nargs="+", default=None)
    ap.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="shorter texts (e.g. for an exhaustive run)",
    )
    ap.add_argument("--out", default="bench_out")
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--analyze",
        default=None,
        metavar="RUN_DIR",
        help="no new run: the phase table of an existing reproduce/replicate output folder",
    )
    args = ap.parse_args()
    runs = []
    if args.analyze:  # e.g. a replicate run's per-model folder (wall time and RSS unknown there)
        args.modes = []
        runs.append(
            {
                "mode": f"analyzed {args.analyze}",
                "wall_s": float("nan"),
                "peak_rss_gb": float("nan"),
                "out": Path(args.analyze),
            }
        )
    for mode in args.modes:
        out = Path(args.out) / f"{args.model.replace(':', '_').replace('/', '_')}-{mode}"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        print(f"running {mode} ...", flush=True)
        runs.append(run_mode(mode, args, out))
        print(
            f"  {mode}: {runs[-1]['wall_s']:.1f} s wall, peak RSS {runs[-1]['peak_rss_gb']:.2f} GB",
            flush=True,
        )

    model = interp.load_model(args.model, device=args.device, dtype=args.dtype, progress=False)
    device = next(model.parameters()).device
    peak = matmul_flops(device, getattr(torch, args.dtype))
    unit, flops = {}, {}
    for path in sorted((runs[0]["out"] / "continuations").glob("*.json")):
        comp = Completion.from_dict(json.loads(path.read_text()))
        unit[path.stem] = plain_forward_seconds(model, comp, repeats=5)
        flops[path.stem] = forward_flops(
            model, comp.tokens.numel(), comp.continuation_tokens.numel()
        )
    info = interp.model_info(model)
    print(
        f"\nmodel {info.name} ({info.architecture}, d_model {info.d_model}, "
        f"{info.n_layers} layers), {info.dtype} on {info.device}, "
        f"{torch.get_num_threads()} threads; dense matmul {peak / 1e12:.3f} TFLOP/s "
        "measured"
    )
    print(
        "one plain forward (batch 1): "
        + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in unit.items())
    )
    result = {
        "model": info.to_dict(),
        "matmul_tflops": peak / 1e12,
        "forward_ms": {k: v * 1e3 for k, v in unit.items()},
        "modes": {},
    }
    for run in runs:
        table = phase_table(run["out"], unit, flops, peak)
        if in_run := in_run_units(run["out"]):
            print(
                f"\none plain forward measured inside the {run['mode']} run: "
                + ", ".join(f"{text} {sec * 1e3:.0f} ms" for text, sec in in_run.items())
            )
        total = table.seconds.sum()
        print(
            f"\n== {run['mode']}: {run['wall_s']:.1f} s wall ({total:.1f} s in phases), peak RSS "
            f"{run['peak_rss_gb']:.2f} GB"
        )
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
        result["modes"][run["mode"]] = {
            "wall_s": run["wall_s"],
            "peak_rss_gb": run["peak_rss_gb"],
            "phases": table.to_dict(orient="records"),
        }
    if len(runs) == 2:
        a, b = replication_numbers(runs[0]["out"]), replication_numbers(runs[1]["out"])
        print(
            f"\n== replication numbers: default vs exhaustive (wall time ratio "
            f"{runs[1]['wall_s'] / runs[0]['wall_s']:.1f}x)"
        )
        merged = a.merge(b, on="text", suffixes=("", " (exh)"))
        for col in [c for c in a.columns if c not in ("text", "top10")]:
            diffs = (merged[col] - merged[f"{col} (exh)"]).tolist()
            print(
                f"  {col:32s} default {merged[col].tolist()}  exhaustive "
                f"{merged[f'{col} (exh)'].tolist()}  diff {diffs}"
            )
        recall = [
            len(set(x) & set(y)) for x, y in zip(merged.top10, merged["top10 (exh)"], strict=False)
        ]
        print(f"  top-10 important directions in common: {recall} of 10")
        result["comparison"] = merged.drop(columns=["top10", "top10 (exh)"]).to_dict(
            orient="records"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
