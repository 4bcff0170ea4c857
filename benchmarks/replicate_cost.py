"""What the exact replication costs, from a (possibly unfinished) ``replicate`` folder.

    python benchmarks/replicate_cost.py [replication] [--cores 2] [--target-hours 2]

Reads ``<run>/<model>/timings.csv`` (one row per computed phase and text, with the forward rows
and token rows it ran) and prints, per model:

1. per phase: texts done, seconds, token rows, and the phase's speed (microseconds per token row,
   the median over texts: a text slowed by something else on the machine, or paused, does not
   move it);
2. per text kind (exact-stage texts, which run every ablation and every-k scan, and default
   texts): texts done and the median cost of one text, in CPU seconds at that speed;
3. the projected total for all texts of the run (texts not done yet at the median cost of their
   kind), and the ratio to the target wall time on ``--cores`` cores, counting one thread per
   core, the arrangement that gets the most from this CPU (docs/performance.md).

The total counts core-seconds: two models run side by side with one thread each take about
``(total_a + total_b) / 2`` wall when balanced. Continuation sampling and the report are counted
as measured (once per model)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

PER_MODEL = ("continuations (one batch per seed)", "report", "overlap")


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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", default="replication")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--target-hours", type=float, default=2.0)
    ap.add_argument("--texts", nargs="*", default=[], metavar="MODEL=N",
                    help="texts each model's run has in all (default: the continuations sampled)")
    ap.add_argument("--exact-texts", type=int, default=8)
    ap.add_argument("--minus", nargs="*", default=[], metavar="MODEL:TEXT:PHASE=SECONDS",
                    help="take SECONDS off one timed row the run spent paused (e.g. stopped for a CI run)")
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
    grand = 0.0
    for model, g in t.groupby("model"):
        texts = g[g.per_text]
        exact_texts = set(texts[texts.phase == "exact_importance"].text)
        # a text counts as done when its last built-in phase (clipped generation or minimal
        # subspace) and, on exact texts, its extensions are timed; otherwise it is in progress
        rates = {}
        print(f"\n== {model}")
        print(f"{'phase':42s} {'texts':>5s} {'seconds':>9s} {'token rows':>11s} {'us/token row':>13s}")
        for phase, p in texts.groupby("phase", sort=False):
            tok = p.token_rows.fillna(0).to_numpy(float)
            sec = p.seconds.to_numpy(float)
            r = np.median(sec[tok > 0] / tok[tok > 0]) if (tok > 0).any() else np.nan
            rates[phase] = r
            print(f"{phase:42s} {len(p):5d} {sec.sum():9.0f} {tok.sum():11.0f} {r * 1e6:13.1f}")
        # each text's cost at the phase's median speed (phases without rows: as measured)
        est = texts.apply(lambda row: row.token_rows * rates[row.phase]
                          if row.token_rows and row.token_rows > 0 and np.isfinite(rates[row.phase])
                          else row.seconds, axis=1)
        per_text = texts.assign(est=est).groupby("text").est.sum()
        done_phases = texts.groupby("text").phase.apply(set)
        finished = [x for x, ph in done_phases.items()
                    if ("clip_variants" in ph if x in exact_texts else "clipped_generation" in ph or "minimal_subspace" in ph)]
        ex_cost = per_text[[x for x in finished if x in exact_texts]]
        de_cost = per_text[[x for x in finished if x not in exact_texts]]
        once = g[~g.per_text].seconds.sum()
        n_all = int(planned.get(model, planned_texts(run, model) or len(done_phases)))
        n_ex = min(args.exact_texts, n_all)
        ex_med = float(ex_cost.median()) if len(ex_cost) else np.nan
        de_med = float(de_cost.median()) if len(de_cost) else np.nan
        total = once + n_ex * ex_med + (n_all - n_ex) * de_med
        grand += total
        print(f"texts finished: {len(ex_cost)} of {n_ex} exact-stage, {len(de_cost)} of {n_all - n_ex} default "
              f"({len(done_phases) - len(finished)} in progress)")
        print(f"one text at the median speeds: exact stage {ex_med:.0f} s [{ex_cost.min():.0f}-{ex_cost.max():.0f}], "
              f"default {de_med:.0f} s" + (f" [{de_cost.min():.0f}-{de_cost.max():.0f}]" if len(de_cost) else ""))
        print(f"projected: {total / 3600:.2f} CPU-hours for {n_all} texts (once per model: {once:.0f} s)")
    wall = grand / args.cores / 3600
    print(f"\nall models: {grand / 3600:.2f} CPU-hours; on {args.cores} cores, one thread each: {wall:.2f} h wall; "
          f"ratio to the {args.target_hours:g}-hour target: {wall / args.target_hours:.2f}x")


if __name__ == "__main__":
    main()
