"""Experiment 5: the smallest k whose clipped model gives the continuation at least its unclipped
log-probability, per ordering; a random-basis null; and how k depends on the tolerance.

Criterion: ``logp(k) >= baseline - tol`` with ``tol = max(tolerance, NOISE_FACTOR * noise)``, where
``noise = |logp(k = d) - baseline|`` is the clipped pass's own float error on this text (on
Gemma-3-270M in float32 it can exceed the 1e-4 nats default; differences below it are not
resolved). The tolerance used is reported in every row.

Methods, over one memoized evaluator per ordering (``interp.search``): ``first_crossing`` (the
smallest k reaching the target; the number the study reports), ``stable`` (the smallest k from
which every larger k reaches it), ``bisection`` (the study's binary search; with
``bisection=True`` or in exhaustive mode, where it costs nothing), and ``converged``
(the stable crossing 1 nat below the baseline: the curve's convergence point, as in experiment 2).
Orderings: the SVD order, importance and compromise orders (experiment 4), and ``random_basis``: the
same search in Haar-random orthonormal bases, the null a "minimal subspace" must beat:
``random_draws`` independent draws per text (``random_basis``, ``random_basis#1``, ...), each seeded
by the run's seed, the text's tokens and the draw (texts sharing a seed do not share a basis).
``sensitivity``: the first crossing for tolerances from 1e-4 to 10 nats in total and 0.001 to
0.1 nats per continuation token.
"""

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from interp import Completion
from interp.search import bisect_min_k, first_crossing, stable_crossing, study_bisection

from .base import ExperimentResult, Text, _linalg_device, as_text
from .facts import STUDY_D_MODEL, STUDY_MIN_K
from .measure import CONVERGED_NATS, NOISE_FACTOR, curve_ks, effective_tolerance, order_in_table
from .registry import register

TOTAL_TOLERANCES = (1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)  # nats over the whole continuation
PER_TOKEN_TOLERANCES = (0.001, 0.01, 0.1)  # nats per continuation token
SENSITIVITY_ORDERINGS = ("singular_value", "random_basis")


def random_orthonormal(d: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A Haar-random d x d orthogonal matrix (columns: a random orthonormal basis); the numbers
    come from a seeded CPU generator, the QR runs on ``device``; returned on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64).to(device))
    return (q * torch.sign(torch.diagonal(r))[None, :]).float().cpu()


def text_draw_seed(seed: int, tokens: Any, draw: int) -> int:
    """A seed for one random-basis draw of one text: from the run's seed, the text's tokens and the
    draw's index, so that texts sharing a sampling seed still get independent random bases."""
    import hashlib

    key = f"{seed}:{draw}:" + ",".join(
        str(int(t)) for t in torch.as_tensor(tokens).flatten().tolist()
    )
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")


@dataclass
class MinimalSubspaceResult(ExperimentResult):
    name = "minimal_subspace"

    @property
    def table(self) -> pd.DataFrame:
        return self.tables["minimal_k"]

    def summary(self) -> dict[str, Any]:
        t = self.table[self.table.method == "first_crossing"]
        return {
            "tolerance": float(t.tolerance.iloc[0]),
            **{f"k_frac_{o}": float(k) for o, k in zip(t.ordering, t.k_frac, strict=False)},
            **{f"k_{o}": int(k) for o, k in zip(t.ordering, t.k, strict=False)},
        }

    def figures(self) -> dict[str, Any]:
        import plotly.express as px

        study = self.meta.get("study_k_frac")
        title = f"{self.meta['model']['name']}: minimal k / d_model" + (
            f" (study, Llama-3-8B: {study:.0%})" if study else ""
        )
        sens = self.tables["sensitivity"]
        return {
            "minimal_k": px.bar(
                self.table, x="ordering", y="k_frac", color="method", barmode="group", title=title
            ).update_layout(yaxis_title="k / d_model", yaxis_range=[0, 1.05]),
            "tolerance_sensitivity": px.line(
                sens[sens.criterion == "total"],
                x="tolerance",
                y="k_frac",
                color="ordering",
                log_x=True,
                markers=True,
                render_mode="svg",
                title=f"{self.meta['model']['name']}: minimal k / d_model against the tolerance",
            ).update_layout(
                xaxis_title="tolerance (nats below the unclipped log-probability)",
                yaxis_title="k / d_model",
                yaxis_range=[0, 1.05],
            ),
        }

    def order(self, ordering: str = "singular_value", method: str = "first_crossing") -> int:
        row = self.table[(self.table.ordering == ordering) & (self.table.method == method)]
        return int(row.k.iloc[0])


def run_minimal_subspace(
    model: Any,
    completion: "Completion | Text",
    *,
    orderings: ExperimentResult
    | None = None,  # an OrderingsResult (experiment 4): its orders table
    kinds: tuple[str, ...]
    | None = None,  # default: the prepared text's (attention + MLP for a completion)
    tolerance: float = 1e-4,
    random_null: bool = True,
    random_draws: int = 3,
    bisection: bool = False,
    study_procedure: bool = False,
    seed: int = 0,
    exhaustive: bool = False,
    chunk_size: int | None = None,
    prompt_name: str | None = None,
    progress: bool = False,
) -> MinimalSubspaceResult:
    text = as_text(model, completion, kinds=kinds, chunk_size=chunk_size, progress=progress)
    d = text.d_model
    noise = text.noise()
    tol = effective_tolerance(tolerance, noise)
    target = text.baseline - tol
    evaluators = {"singular_value": text.evaluator("singular_value")}
    if orderings is not None:
        orders = orderings.tables["orders"]
        for name in orders.ordering.unique():
            evaluators[name] = text.evaluator(name, order_in_table(orders, name))
    if (
        random_null
    ):  # independent Haar draws per text (seeded by the run's seed, the text and the draw)
        for draw in range(max(random_draws, 1)):
            name = "random_basis" if draw == 0 else f"random_basis#{draw}"
            q = random_orthonormal(
                d, text_draw_seed(seed, text.completion.tokens, draw), _linalg_device(model)
            )
            evaluators[name] = text.evaluator(name, directions=q)
    grid = curve_ks(d, exhaustive=exhaustive, jitter=False)
    # Every search starts from a fixed grid (the SVD order's also from experiment 2's curve grid),
    # never from whatever the shared evaluators already hold: the result, and its evaluation
    # counts, do not depend on what ran on the text before (the memo only saves forward passes).
    starts = {
        name: sorted(set(grid) | set(curve_ks(d, exhaustive=exhaustive)))
        if name == "singular_value"
        else grid
        for name in evaluators
    }
    rows = []
    for name, ev in evaluators.items():
        known = starts[name]
        ev(known)
        searches = {
            "first_crossing": first_crossing(ev, target, d, known),
            "stable": stable_crossing(ev, target, d, known),
        }
        if bisection or exhaustive:  # free when every k is known; else ~log2(d) sequential passes
            searches["bisection"] = bisect_min_k(ev, target, d)
        tols = {method: tol for method in searches}
        if study_procedure and name == "singular_value":
            # The study's own procedure: binary search over 1..d for the smallest k whose clipped
            # log-probability is at least the unclipped one, no tolerance, in the model's dtype.
            searches["study_bisection"] = study_bisection(ev, text.baseline, d)
            tols["study_bisection"] = 0.0
        for method, res in searches.items():
            rows.append(
                {
                    "ordering": name,
                    "method": method,
                    "k": res.k,
                    "k_frac": res.k / d,
                    "tolerance": tols[method],
                    "evaluations": res.evaluations,
                }
            )
        # the curve's convergence point (as in experiment 2), for every ordering and the null
        conv = stable_crossing(ev, text.baseline - CONVERGED_NATS, d, known)
        rows.append(
            {
                "ordering": name,
                "method": "converged",
                "k": conv.k,
                "k_frac": conv.k / d,
                "tolerance": CONVERGED_NATS,
                "evaluations": conv.evaluations,
            }
        )
    n_cont = int(text.completion.continuation_tokens.numel())
    sens = []
    for name in SENSITIVITY_ORDERINGS:
        if name not in evaluators:
            continue
        ev = evaluators[name]
        per_token = (
            PER_TOKEN_TOLERANCES if name == "singular_value" else ()
        )  # the null: totals only
        for criterion, tols, scale in (
            ("total", TOTAL_TOLERANCES, 1.0),
            ("per_token", per_token, n_cont),
        ):
            for t in tols:
                nats = max(t * scale, NOISE_FACTOR * noise)
                k = first_crossing(ev, text.baseline - nats, d, starts[name]).k
                sens.append(
                    {
                        "ordering": name,
                        "criterion": criterion,
                        "tolerance": t,
                        "tolerance_nats": nats,
                        "k": k,
                        "k_frac": k / d,
                    }
                )
    study = STUDY_MIN_K.get(prompt_name or "")
    return MinimalSubspaceResult(
        tables={"minimal_k": pd.DataFrame(rows), "sensitivity": pd.DataFrame(sens)},
        settings={
            "kinds": list(text.kinds),
            "tolerance": tolerance,
            "noise_factor": NOISE_FACTOR,
            "exhaustive": exhaustive,
            "random_null": random_null,
            "random_null_seed": seed if random_null else None,
            "random_draws": random_draws if random_null else 0,
            "study_procedure": study_procedure,
            "orderings": list(evaluators),
        },
        meta=text.meta(
            prompt_name=prompt_name,
            noise_at_d=noise,
            effective_tolerance=tol,
            study_k=study,
            study_k_frac=(study / STUDY_D_MODEL) if study else None,
            forward_rows={name: ev.n_rows for name, ev in evaluators.items()},
        ),
    )


@register(
    "minimal_subspace",
    result=MinimalSubspaceResult,
    builtin=True,
    stage="default",
    order=50,
    help=(
        "the smallest k whose clip reaches the unclipped log-probability, per ordering, beside "
        "a random null"
    ),
)
def minimal_subspace_experiment(
    model: Any,
    text: "Completion | Text",
    *,
    results: Any = None,
    tolerance: float = 1e-4,
    random_null: bool = True,
    random_draws: int = 3,
    bisection: bool = False,
    study_procedure: bool = False,
    seed: int = 0,
    exhaustive: bool = False,
    prompt_name: str | None = None,
) -> MinimalSubspaceResult:
    """``run_minimal_subspace`` under the orderings of the text's ``orderings`` result when the run
    has one."""
    return run_minimal_subspace(
        model,
        text,
        orderings=(results or {}).get("orderings"),
        tolerance=tolerance,
        random_null=random_null,
        random_draws=random_draws,
        bisection=bisection,
        study_procedure=study_procedure,
        seed=seed,
        exhaustive=exhaustive,
        prompt_name=prompt_name,
    )
