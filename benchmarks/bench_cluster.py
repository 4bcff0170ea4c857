"""Benchmark of ``replicate --cluster`` (docs/cluster.md): the same small replicate run serially
and on 1 and 2 Ray workers, side by side in one invocation; and the projection of the whole
exact replication onto 1, 8 and 64 GPUs from measured per-unit costs.

    python benchmarks/bench_cluster.py measure --runs 1 2 2 1   # SmolLM2, the study's 4 prompts
    python benchmarks/bench_cluster.py project                # from docs/results/gpu

``measure`` runs each configuration in a fresh process (wall time from start to table, imports,
Ray start and model loads included) in the order given, each into a fresh folder, and prints
one row per run and the median per configuration (a repeated, reversed order averages out
a machine whose load drifts). Per text it also reads ``timings.csv``: the text's computed
seconds (its phases) and, on a cluster, the transfer overhead.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
STUDY = ["meaning_of_life", "relativity", "launch", "translate"]


class WorkerCPU:
    """CPU seconds of the Ray worker processes (``ray::Worker``), polled from /proc every second
    while a run lasts (their last second may be missed): what the workers computed, whatever
    else the machine runs."""

    def __init__(self) -> None:
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.tick = os.sysconf("SC_CLK_TCK")

    def _poll(self) -> None:
        while not self.stop.wait(1.0):
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    if not (proc / "cmdline").read_bytes().startswith(b"ray::Worker"):
                        continue
                    fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                self.seen[int(proc.name)] = (int(fields[11]) + int(fields[12])) / self.tick

    def __enter__(self) -> "WorkerCPU":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def seconds(self) -> float:
        return sum(self.seen.values())


def measure(args: argparse.Namespace) -> None:
    base = Path(args.out)
    rows = []
    for i, config in enumerate(args.runs):
        out = base / f"run{i}_{config}"
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(str(out) + "_docs", ignore_errors=True)
        cmd = [
            sys.executable,
            "-m",
            "experiments",
            "replicate",
            "--models",
            args.model,
            "--seeds",
            "0",
            "--prompts",
            *args.prompts,
            "--exact-texts",
            "0",
            "--exact-with",
            "--draws",
            str(args.draws),
            "--max-new-tokens",
            str(args.max_new_tokens),
            "--no-images",
            "--no-progress",
            "--out",
            str(out),
            "--docs",
            str(out) + "_docs",
        ]
        if config != "serial":
            cmd += ["--cluster", "local", "--workers", config]
        load0 = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        with WorkerCPU() as workers:
            subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        driver_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        t = pd.concat([pd.read_csv(p) for p in out.glob("*/timings.csv")])
        per_text = t[t.text != "all"]
        over = per_text[per_text.phase == "cluster: transfer + scratch"].seconds
        computed = (
            per_text[per_text.phase != "cluster: transfer + scratch"].groupby("text").seconds.sum()
        )
        rows.append(
            {
                "run": i,
                "config": config,
                "wall_s": wall,
                "cpu_s": driver_cpu + workers.seconds,
                "text_s_median": computed.median(),
                "text_s_sum": computed.sum(),
                "overhead_s_sum": over.sum(),
                "load_before": load0,
                "load_after": os.getloadavg()[0],
            }
        )
        print(pd.DataFrame(rows[-1:]).round(2).to_string(index=False, header=i == 0), flush=True)
    table = pd.DataFrame(rows)
    med = table.groupby("config", sort=False)[
        ["wall_s", "cpu_s", "text_s_sum", "overhead_s_sum"]
    ].median()
    print("\nmedian per configuration:\n" + med.round(1).to_string())
    if {"1", "2"} <= set(med.index):
        print(
            f"\nwall time, 1 worker / 2 workers: {med.wall_s['1'] / med.wall_s['2']:.2f}x; CPU "
            f"seconds, 2 workers (1 thread each) / 1 worker (2 threads): "
            f"{med.cpu_s['2'] / med.cpu_s['1']:.2f}"
        )
    if args.save:
        Path(args.save).write_text(
            json.dumps({"command": " ".join(sys.argv), "runs": rows}, indent=2)
        )


# --- projection ----------------------------------------------------------------------------------
# Per-text rows of the exact stage and of the extensions, relative to d_model, measured on the
# CPU replication (docs/performance.md, "The exact replication's cost"): the exact importances
# are d rows and about 70% of the exact stage's ~830 rows on d = 576-640 (scans: ~0.43 d); the
# ten clip variants scanned 507-1,047 rows a text (~1.3 d at the middle). The study procedure
# (a bfloat16 bisection, ~log2 d rows per order) is left out.
EXACT_ROWS_PER_D = 1.0 + 0.43
EXTENSION_ROWS_PER_D = 1.3


# This replication on CPU workers of one core each: the per-text costs measured on this 2-core
# machine, one thread, 2026-12-03 (docs/performance.md, "The exact replication's cost": built-in
# experiments a text, then the exact stage's and the extensions' additions), and its texts.
CPU_UNITS = {  # model: (texts, exact texts, built-ins s, exact stage +s, extensions +s)
    "smollm2-135m": (32, 8, 117.0, 307.0, 276.0),
    "gemma-3-270m": (16, 8, 239.0, 645.0, 808.0),
}


def makespan(units: list[float], workers: int) -> tuple[float, int]:
    """The driver sends each unit, longest (exact texts) first, to the next free worker."""
    loads = [0.0] * min(workers, len(units))
    for u in sorted(units, reverse=True):
        loads[loads.index(min(loads))] += u
    return max(loads), len(loads)


def project_cpu(args: argparse.Namespace) -> None:
    print(
        "this replication (both models one after the other) on one-core CPU workers, from the "
        "per-text costs measured here:"
    )
    print("| workers | " + " | ".join(CPU_UNITS) + " | both (projection) |")
    print("|---|" + "---|" * (len(CPU_UNITS) + 1))
    for workers in args.gpus:
        spans = []
        for n, n_ex, base, exact, ext in CPU_UNITS.values():
            spans.append(makespan([base + exact + ext] * n_ex + [base] * (n - n_ex), workers)[0])
        cells = " | ".join(f"{x / 3600:.2f} h" for x in spans)
        print(f"| {workers} | {cells} | {sum(spans) / 3600:.2f} h |")


def project(args: argparse.Namespace) -> None:
    bench = json.loads(Path(args.bench).read_text())
    phases = {p["phase"]: p for p in bench["modes"]["default"]["phases"]}
    d = int(bench["model"]["d_model"])
    n_bench = len(bench["forward_ms"])  # texts in the benchmark
    per_text = (
        sum(p["seconds"] for k, p in phases.items() if k not in ("overlap", "report")) / n_bench
    )
    rows = sum(
        phases[k]["forward_rows"]
        for k in ("clipping", "single_direction", "orderings", "minimal_subspace")
    )
    row_s = (
        sum(
            phases[k]["seconds"]
            for k in ("clipping", "single_direction", "orderings", "minimal_subspace")
        )
        / rows
    )
    exact = EXACT_ROWS_PER_D * d * row_s
    ext = EXTENSION_ROWS_PER_D * d * row_s
    tail = phases["overlap"]["seconds"] * len(args.seeds_per_model) + phases["report"]["seconds"]
    n, n_exact = args.texts, args.exact_texts
    units = [per_text + exact + ext] * n_exact + [per_text] * (n - n_exact)
    print(
        f"measured ({args.bench}): default stage {per_text:.1f} s a text ({n_bench} texts), "
        f"{row_s * 1e3:.1f} ms a forward row; d = {d}"
    )
    print(
        f"projected a text: exact stage +{exact:.0f} s ({EXACT_ROWS_PER_D:.2f} d rows), "
        f"extensions +{ext:.0f} s ({EXTENSION_ROWS_PER_D:.2f} d rows); overlap + report at the "
        f"driver {tail:.0f} s"
    )
    print(
        f"\n{n} texts ({n_exact} with the exact stage and extensions): "
        f"{sum(units) / 3600:.2f} GPU-hours of units"
    )
    print(
        "| GPUs | workers busy | units' makespan | + driver's overlap and report "
        "| total (projection) |"
    )
    print("|---|---|---|---|---|")
    for gpus in args.gpus:
        span, busy = makespan(units, gpus)
        print(
            f"| {gpus} | {busy} | {span / 60:.1f} min | {tail / 60:.1f} min | "
            f"{(span + tail) / 60:.1f} min |"
        )
    print()
    project_cpu(args)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--model", default="smollm2-135m")
    m.add_argument("--prompts", nargs="+", default=STUDY)
    m.add_argument("--draws", type=int, default=20)
    m.add_argument("--max-new-tokens", type=int, default=64)
    m.add_argument(
        "--runs",
        nargs="+",
        default=["1", "2", "serial", "2", "1"],
        help="configurations in the order run: serial, or a worker count",
    )
    m.add_argument("--out", default="/tmp/bench_cluster")
    m.add_argument("--save", default=None, help="write the runs as JSON here")
    p = sub.add_parser("project")
    p.add_argument("--bench", default=str(ROOT / "docs/results/gpu/bench_llama3_8b_fp32.json"))
    p.add_argument(
        "--texts", type=int, default=32, help="texts of one model (replicate: 16 prompts x 2 seeds)"
    )
    p.add_argument("--exact-texts", type=int, default=8)
    p.add_argument("--seeds-per-model", nargs="+", default=["0", "1"], help="one overlap per seed")
    p.add_argument("--gpus", type=int, nargs="+", default=[1, 8, 64])
    args = ap.parse_args()
    measure(args) if args.command == "measure" else project(args)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
