"""Where does the study's bisection land? Issue 27, item 6, from ``text_length`` results.

The study found its minimal k by a zero-tolerance binary search, most likely in bfloat16. This
simulates that search (``experiments.study_procedure.plateau_bisection``: every probe and the
unclipped reference carry independent Gaussian noise of each size in ``--noise``) on

(a) our models' real float32 curves: every ``text_length`` row of the given run folders (an
    ``extend --with text_length`` or ``replicate`` folder: ``<run>/<text>/text_length/``), the
    evaluated k made an every-k curve by linear interpolation (exact on the stretch the scan
    evaluated at every k, from where the curve last lies 1 nat under its target up to d);
(b) curves shaped like the study's description (d = 4096, within 1 nat of the unclipped value
    from k = 1500, 1750 or 2000 on, essentially exact ~200 directions later:
    ``study_shaped_curve``).

Writes one CSV row per (curve, noise level) and prints a markdown summary. Usage:

    python tools/plateau_bisection.py --runs replication/smollm2-135m replication/gemma-3-270m \\
        --out docs/results/plateau_bisection.csv
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.study.tables import table_md
from experiments.study_procedure import (
    PLATEAU_NOISE,
    interpolated_curve,
    plateau_bisection,
    study_shaped_curve,
)


def real_curves(run: Path) -> dict[str, tuple[np.ndarray, float]]:
    out = {}
    for folder in sorted(run.glob("*/text_length")):
        lengths = pd.read_csv(folder / "lengths.csv", dtype={"length_label": str})
        curve = pd.read_csv(folder / "curve.csv")
        for r in lengths.itertuples():
            c = curve[curve.n_continuation_tokens == r.n_continuation_tokens]
            points = dict(zip(c.k.astype(int), c.logprob.astype(float), strict=False))
            out[f"{r.model}|{folder.parent.name}|{r.length_label}"] = (
                interpolated_curve(points, int(r.d_model)),
                float(r.baseline_logprob),
            )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="*", default=[], help="text_length run folders (one per model)")
    p.add_argument(
        "--noise", type=float, nargs="+", default=list(PLATEAU_NOISE), help="noise sd, nats"
    )
    p.add_argument("--draws", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="plateau_bisection.csv")
    args = p.parse_args()
    curves = {
        f"study-shaped|converged at {k}|of 4096": (study_shaped_curve(4096, k), 0.0)
        for k in (1500, 1750, 2000)
    }
    for run in args.runs:
        curves.update(real_curves(Path(run)))
    t = plateau_bisection(curves, noise_sds=args.noise, n_draws=args.draws, seed=args.seed)
    t[["model", "text", "length"]] = t.curve.str.split("|", expand=True)
    t = t.drop(columns="curve")[
        [
            "model",
            "text",
            "length",
            *[c for c in t.columns if c not in ("model", "text", "length", "curve")],
        ]
    ]
    t.to_csv(args.out, index=False, float_format="%.5g")
    t["group"] = np.where(
        t.model == "study-shaped",
        t.model + " " + t.text,
        t.model + " " + np.where(t.length == "full", "as sampled (64 tokens)", "cut (2-32 tokens)"),
    )
    g = t.groupby(["group", "noise_sd"], sort=False).agg(
        n=("median_k_frac", "size"),
        converged=("converged_k_frac", "median"),
        median=("median_k_frac", "median"),
        q25=("q25_k_frac", "median"),
        q75=("q75_k_frac", "median"),
        in_band=("share_in_study_band", "mean"),
    )
    print(table_md(g.round(3).reset_index()))


if __name__ == "__main__":
    main()
