"""What the exact replication costs, from a (possibly unfinished) ``replicate`` folder.

    python benchmarks/replicate_cost.py [replication] [--cores 2] [--target-hours 2]

Reads ``<run>/<model>/timings.csv`` (one row per computed phase and text, with the forward rows
and token rows it ran) and prints, per model:

1. per phase: texts done, seconds, token rows (batch rows x text tokens) and the phase's speed
   (milliseconds per token row, the median over texts: a text slowed by something else on the
   machine, or paused, does not move it);
2. the median cost of one text at those speeds, in three parts: the built-in experiments (every
   text runs them), the exact stage (``exact_importance``: every direction ablated, every k
   scanned near the target; the first ``--exact-texts`` texts) and the extensions replicate runs
   on the exact-stage texts (``--exact-with``: the study's procedure, clip variants);
3. the projected total for all texts of the run (the sampled continuations say how many), with
   and without the extensions, and the ratio to the target wall time on ``--cores`` cores,
   counting one thread per core, the arrangement that gets the most from this CPU
   (docs/performance.md). A clip-variants phase timed before its rows were counted (commit
   1b8687f) is counted as measured.

The total counts core-seconds: two models run side by side with one thread each take about
``(total_a + total_b) / 2`` wall when balanced. Continuation sampling and the report are counted
as measured (once per model)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

PER_MODEL = ("continuations (one batch per seed)", "report", "overlap")
EXTENSIONS = ("study_procedure", "clip_variants", "hessian_ranking")  # replicate --exact-with


def load(run: Path) -> pd.DataFrame:
    frames = []
    for path in sorted(run.glob("*/timings.csv")):
        t = pd.read_csv(path)
        t = t[~t.loaded.astype(bool)].copy()
        t["model"] = path.parent.name
        frames.append(t)
    if not frames:
        raise SystemExit(f"no */timings.csv under {run}: pass the folder given to replicate --out")
    return pd.concat(frames, ignore_index=True)


def planned_texts(run: Path, model: str) -> int | None:
    """The number of texts the run was started for: replicate samples every text's continuation
    first (``<model>/continuations/<text>.json``)."""
    n = len(list((run / model / "continuations").glob("*.json")))
    return n or None


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("run", nargs="?", default="replication")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--target-hours", type=float, default=2.0)
    ap.add_argument(
        "--texts",
        nargs="*",
        default=[],
        metavar="MODEL=N",
        help="texts each model's run has in all (default: the continuations sampled)",
    )
    ap.add_argument("--exact-texts", type=int, default=8)
    ap.add_argument(
        "--minus",
        nargs="*",
        default=[],
        metavar="MODEL:TEXT:PHASE=SECONDS",
        help="take SECONDS off one timed row the run spent paused (e.g. stopped for a CI run)",
    )
    args = ap.parse_args()
    run = Path(args.run)
    t = load(run)
    for spec in args.minus:
        key, sec = spec.rsplit("=", 1)
        model, text, phase = key.split(":", 2)
        hit = (t.model == model) & (t.text == text) & (t.phase == phase)
        if hit.sum() != 1:
            raise SystemExit(f"--minus {spec!r}: matches {int(hit.sum())} rows, not 1")
        t.loc[hit, "seconds"] -= float(sec)
    t["per_text"] = ~t.phase.isin(PER_MODEL) & (t.text != "all")
    planned = dict(x.split("=") for x in args.texts)
    grand = grand_core = 0.0
    for model, g in t.groupby("model"):
        texts = g[g.per_text]
        rates = {}
        print(f"\n== {model}")
        print(
            f"{'phase':42s} {'texts':>5s} {'seconds':>9s} {'token rows':>11s} {'ms/token row':>13s}"
        )
        for phase, p in texts.groupby("phase", sort=False):
            tok = p.token_rows.fillna(0).to_numpy(float)
            sec = p.seconds.to_numpy(float)
            r = np.median(sec[tok > 0] / tok[tok > 0]) if (tok > 0).any() else np.nan
            rates[phase] = r
            print(f"{phase:42s} {len(p):5d} {sec.sum():9.0f} {tok.sum():11.0f} {r * 1e3:13.2f}")
        # each text's cost at the phase's median speed (phases without rows: as measured), split
        # into the part every text runs, the exact stage and the extensions on exact-stage texts
        est = texts.apply(
            lambda row: (
                row.token_rows * rates[row.phase]  # noqa: B023 (called in this iteration)
                if row.token_rows and row.token_rows > 0 and np.isfinite(rates[row.phase])  # noqa: B023 (called in this iteration)
                else row.seconds
            ),
            axis=1,
        )
        part = np.where(
            texts.phase == "exact_importance",
            "exact",
            np.where(texts.phase.isin(EXTENSIONS), "extensions", "every text"),
        )
        cost = texts.assign(est=est, part=part).pivot_table(
            index="text", columns="part", values="est", aggfunc="sum"
        )
        phases = texts.groupby("text").phase.apply(set)
        base_done = [x for x, ph in phases.items() if "minimal_subspace" in ph]
        ext_done = [x for x, ph in phases.items() if "clip_variants" in ph]
        med = {
            "every text": cost.loc[base_done, "every text"].median() if base_done else np.nan,
            "exact": cost["exact"].dropna().median() if "exact" in cost else np.nan,
            "extensions": cost.loc[ext_done, "extensions"].median() if ext_done else np.nan,
        }
        once = g[~g.per_text].seconds.sum()
        n_all = int(planned.get(model, planned_texts(run, model) or len(phases)))
        n_ex = min(args.exact_texts, n_all)
        core = once + n_all * med["every text"] + n_ex * med["exact"]
        total = core + n_ex * med["extensions"]
        grand += total
        grand_core += core
        print(
            f"texts: {len(base_done)} of {n_all} through the built-in experiments, "
            f"{int(cost['exact'].notna().sum()) if 'exact' in cost else 0} of {n_ex} "
            f"through the exact stage, {len(ext_done)} of {n_ex} through the extensions"
        )
        print(
            "one text, median at the median speeds: built-in experiments "
            f"{med['every text']:.0f} s, exact stage +{med['exact']:.0f} s, extensions "
            f"+{med['extensions']:.0f} s"
        )
        print(
            f"projected for {n_all} texts ({n_ex} exact): {core / 3600:.2f} CPU-hours "
            f"without the extensions, {total / 3600:.2f} with them (once per model: "
            f"{once:.0f} s)"
        )
    for label, value in (("without the extensions", grand_core), ("with the extensions", grand)):
        wall = value / args.cores / 3600
        print(
            f"\nall models, {label}: {value / 3600:.2f} CPU-hours; on {args.cores} cores, "
            f"one thread each: {wall:.2f} h wall; ratio to the {args.target_hours:g}-hour "
            f"target: {wall / args.target_hours:.2f}x"
        )


if __name__ == "__main__":
    main()
