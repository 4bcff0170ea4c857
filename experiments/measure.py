"""The experiments' ground: measurement helpers shared by several experiments, so that no
experiment imports another for them. Everything here stands on ``interp`` and ``experiments.base``
only.

- tolerances: ``effective_tolerance`` (the criterion's tolerance raised to ``NOISE_FACTOR`` x the
  text's float noise);
- k grids and the clipping curve: ``curve_ks`` (every k, or the adaptive starting grid),
  ``clipping_curve`` (one ordering's tidy curve) and ``curve_figures``;
- minimal k: ``lazy_scan_first_crossing`` (the band scan's exact first crossing at a fraction of
  its cost) and ``exact_min_k`` (one order's exact minimal k from the coarse grid);
- gap closure: ``gap_closure`` (on a curve at every k) and ``gap_closure_evaluated`` (on the
  evaluated k only, with each answer's resolution);
- the study's bisection: ``simulate_bisection`` (on a curve plus Gaussian noise), ``real_bisection``
  (on the model in its dtype), ``cast_copy``, ``score_unclipped``, ``score_clipped``;
- estimator quality and orders: ``ranks_descending``, ``top_k_agreement``, ``estimator_quality``,
  ``orders_from_importance`` (``COMPROMISES``), ``order_in_table``.
"""

import contextlib
import copy
import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from scipy import stats

from interp import Completion
from interp.scoring import continuation_logprob
from interp.search import ScanResult, SearchResult, band_scan_ks, study_bisection
from interp.sweeps import clip_sweep, coarse_k_grid, jitter_pairs

from .base import Text, param_dtype

NOISE_FACTOR = 10.0  # the tolerance is at least this many times the text's float noise
CONVERGED_NATS = (
    1.0  # the curve's convergence point: within this many nats of unclipped from there on
)
GAP_FRACTIONS = (0.5, 0.9, 0.99)  # share of the gap logp(d) - logp(0) closed
WITHIN_NATS = (1.0, 5.0, 10.0)  # nats below the unclipped log-probability


# ------------------------------------------------------------------- tolerances


def effective_tolerance(tolerance: float, noise: float) -> float:
    """The criterion's tolerance (nats), raised to ``NOISE_FACTOR`` x the measured float noise."""
    return max(tolerance, NOISE_FACTOR * noise)


# ----------------------------------------------- k grids and the clipping curve


def curve_ks(d: int, *, exhaustive: bool = False, jitter: bool = True) -> list[int]:
    """Every k, or the adaptive starting grid: the SVD-order curve (``jitter=True``) gets 13 even
    steps, powers of two from both ends and the jitter pairs; the other orderings and the
    random-basis null, which feed only minimal-k searches and a few summary points, 9 even steps
    and the powers of two below d."""
    if exhaustive:
        return list(range(d + 1))
    if not jitter:
        return coarse_k_grid(d, n_linear=9, low=False)
    return sorted(set(coarse_k_grid(d)) | {k for pair in jitter_pairs(d) for k in pair})


def clipping_curve(
    text: Text, ordering: str, order: np.ndarray | None = None, *, ks: Sequence[int]
) -> pd.DataFrame:
    """Tidy curve for one ordering (``order``: basis columns in order of inclusion)."""
    ev = text.evaluator(ordering, order)
    ev(ks)
    t = ev.table()
    t = t[t.k.isin(set(ks))].reset_index(drop=True)
    t.insert(0, "ordering", ordering)
    t.insert(2, "k_frac", t.k / text.d_model)
    t["log_surprise"] = -t.logprob
    return t


def curve_figures(curve: pd.DataFrame, baseline: float, title: str) -> dict[str, Any]:
    import plotly.express as px

    common = dict(x="k", color="ordering", title=title, render_mode="svg")
    surprise = curve.assign(log_surprise=curve.log_surprise.clip(lower=1e-3))
    figs = {
        "clipping_logprob": px.line(curve, y="logprob", **common).update_layout(
            yaxis_title="log p(continuation) (nats)", xaxis_title="k (directions kept)"
        ),
        "clipping_log_surprise": px.line(
            surprise, y="log_surprise", log_y=True, **common
        ).update_layout(
            yaxis_title="-log p(continuation) (nats, log scale)", xaxis_title="k (directions kept)"
        ),
    }
    figs["clipping_logprob"].add_hline(y=baseline, line_dash="dot", annotation_text="unclipped")
    figs["clipping_log_surprise"].add_hline(
        y=-baseline, line_dash="dot", annotation_text="unclipped"
    )
    deltas = curve.melt(
        id_vars=["ordering", "k"],
        value_vars=["orig_delta", "kept_delta"],
        var_name="norm",
        value_name="value",
    )
    figs["clipping_deltas"] = px.line(
        deltas,
        x="k",
        y="value",
        color="norm",
        line_dash="ordering",
        log_y=True,
        title=title,
        render_mode="svg",
    ).update_layout(yaxis_title="norm of all writes (Frobenius)", xaxis_title="k (directions kept)")
    return figs


# -------------------------------------------------------------------- minimal k


def lazy_scan_first_crossing(
    evaluate: Any, target: float, d: int, known: Sequence[int], *, band: float = 5.0, step: int = 8
) -> ScanResult:
    """``interp.search.scan_first_crossing``'s answer at a fraction of its cost.

    Evaluates the ``known`` points (with 0 and d); the scan's k are every k inside each interval
    between neighbouring known points where either end is within ``band`` nats of the target (or
    above it), as in ``scan_first_crossing``. Those below the smallest passing known k are
    evaluated in ascending order, ``step`` at a time, and the search stops at the first that
    passes: the smallest passing k of the scan and the known points, which is
    ``scan_first_crossing``'s k (k >= d always passes). ``scanned`` counts the k evaluated by the
    scan.
    """
    ks = sorted(set(int(k) for k in known) | {0, int(d)})
    values = np.asarray(evaluate(ks), dtype=float)
    ok = (values >= target) | (np.asarray(ks) >= d)
    first_known = ks[int(np.argmax(ok))]
    scan = [k for k in band_scan_ks(ks, values, target, band) if k < first_known]
    asked, found = set(ks), first_known
    for a in range(0, len(scan), max(int(step), 1)):
        chunk = scan[a : a + max(int(step), 1)]
        asked |= set(chunk)
        passed = np.asarray(evaluate(chunk), dtype=float) >= target
        if passed.any():
            found = chunk[int(np.argmax(passed))]
            break
    return ScanResult(int(found), len(asked), scanned=len(asked) - len(ks), band=band)


def exact_min_k(
    evaluate: Any, text: Text, *, tolerance: float = 1e-4, band: float = 5.0, step: int = 8
) -> tuple[ScanResult, float]:
    """The exact minimal k of one clipping order of a prepared text: the smallest k with
    ``logp(k) >= baseline - tol``, ``tol = effective_tolerance(tolerance, text.noise())``, by
    ``lazy_scan_first_crossing`` from the coarse grid ``curve_ks(d, jitter=False)``. ``evaluate``:
    the order's memoized evaluator (``text.evaluator(...)`` or any k -> logp). Returns (scan,
    tol)."""
    tol = effective_tolerance(tolerance, text.noise())
    d = text.d_model
    return lazy_scan_first_crossing(
        evaluate, text.baseline - tol, d, curve_ks(d, jitter=False), band=band, step=step
    ), tol


# ------------------------------------------------------------------ gap closure


def _first_and_stable(ok: np.ndarray) -> tuple[int, int]:
    """(first k with ok, smallest k from which every k' >= k is ok); ok[d] is forced True."""
    ok = ok.copy()
    ok[-1] = True
    first = int(np.argmax(ok))
    fails = np.nonzero(~ok)[0]
    stable = int(fails[-1]) + 1 if len(fails) else 0
    return first, stable


def gap_closure(
    curve: Float[np.ndarray, " d_plus_1"],
    baseline: float,
    d: int,
    *,
    fractions: Sequence[float] = GAP_FRACTIONS,
    nats: Sequence[float] = WITHIN_NATS,
) -> pd.DataFrame:
    """Where the clipping curve closes its gap: a scale-free summary of ``curve[k]``, k = 0..d.

    - ``gap_closed`` f: the share of the gap closed at k is
      ``(curve[k] - curve[0]) / (baseline - curve[0])``; the row's k is the smallest k where it is
      at least f (equivalently ``curve[k] >= curve[0] + f * (baseline - curve[0])``, computed as a
      ratio so that f * gap rounding cannot move k). A gap <= 0 (k = 0 already at the baseline)
      is closed at k = 0.
    - ``within_nats`` n: the smallest k with ``curve[k] >= baseline - n``.

    For each, ``k_first`` is that smallest k and ``k_stable`` the smallest k from which every
    larger k also satisfies it (equal on a monotone curve); k = d always counts as satisfying both
    (the unclipped model, up to float error). ``k_frac_*`` are k / d. One row per criterion and
    level.
    """
    curve = np.asarray(curve, dtype=float)
    if len(curve) != d + 1:
        raise ValueError(f"curve must hold logp(k) for k = 0..d ({d + 1} values), got {len(curve)}")
    gap = baseline - curve[0]
    rows = []
    for f in fractions:
        ok = np.ones(d + 1, bool) if gap <= 0 else (curve - curve[0]) / gap >= f
        rows.append(("gap_closed", float(f), curve[0] + f * gap, *_first_and_stable(ok)))
    for n in nats:
        rows.append(
            ("within_nats", float(n), baseline - n, *_first_and_stable(curve >= baseline - n))
        )
    out = pd.DataFrame(
        rows, columns=["criterion", "level", "threshold_logprob", "k_first", "k_stable"]
    )
    return out.assign(k_frac_first=out.k_first / d, k_frac_stable=out.k_stable / d)


def gap_closure_evaluated(
    points: dict[int, float],
    baseline: float,
    d: int,
    *,
    fractions: Sequence[float] = GAP_FRACTIONS,
    nats: Sequence[float] = WITHIN_NATS,
) -> pd.DataFrame:
    """``gap_closure``'s criteria on the evaluated k only (``points``: k -> logp,
    with k = 0). One row per criterion and level: ``k_first`` (the smallest evaluated k meeting it;
    k = d always counts), ``k_prev`` (the evaluated k before it, -1 for k_first = 0),
    ``resolution = k_first - k_prev`` and ``exact`` (resolution 1: every k up to k_first known, so
    k_first is the every-k first crossing). With every k in ``points`` it equals ``gap_closure``'s
    ``k_first``."""
    if 0 not in points:
        raise ValueError("gap closure needs logp at k = 0")
    ks = np.array(sorted(points))
    v = np.array([points[k] for k in ks], dtype=float)
    start, gap = points[0], baseline - points[0]
    rows = []
    crits = [
        ("gap_closed", float(f), (np.ones(len(ks), bool) if gap <= 0 else (v - start) / gap >= f))
        for f in fractions
    ]
    crits += [("within_nats", float(n), v >= baseline - n) for n in nats]
    for criterion, level, ok in crits:
        ok = ok | (ks >= d)
        j = int(np.argmax(ok)) if ok.any() else len(ks) - 1
        k_first = int(ks[j])
        k_prev = int(ks[j - 1]) if j > 0 else -1
        rows.append(
            {
                "criterion": criterion,
                "level": level,
                "k_first": k_first,
                "k_prev": k_prev,
                "resolution": k_first - k_prev,
                "exact": bool(k_first - k_prev == 1),
                "k_frac_first": k_first / d,
            }
        )
    return pd.DataFrame(rows)


# -------------------------------------------------------- the study's bisection


def simulate_bisection(
    curve: Float[np.ndarray, " d_plus_1"],
    target: float,
    noise_sd: float,
    n_draws: int,
    rng: np.random.Generator,
    *,
    reference_noise: bool = True,
) -> Int[np.ndarray, " n_draws"]:
    """The k the study's bisection returns on ``curve + noise``, for ``n_draws`` independent runs.

    ``curve[k]`` is the exact log-probability at k = 0..d. Noise model: every measured
    log-probability is its exact value plus independent N(0, noise_sd^2). Each run measures the
    unclipped reference once (``target + noise``, drawn once per run, shared by all its probes, as
    the study scored the unclipped text once; ``reference_noise=False`` keeps it exact) and each
    probed k once, with fresh noise (a bisection never probes a k twice). The comparison
    ``logp(k) >= reference`` is therefore noisy on both sides: its error has sd
    ``sqrt(2) * noise_sd`` (``noise_sd`` with an exact reference). With ``noise_sd = 0`` every run
    equals ``study_bisection`` on the clean curve. All runs step in parallel (vectorized).
    """
    curve = np.asarray(curve, dtype=float)
    d = len(curve) - 1
    ref = np.full(n_draws, float(target))
    if reference_noise:
        ref = ref + noise_sd * rng.standard_normal(n_draws)
    lo = np.zeros(n_draws, dtype=np.int64)
    hi = np.full(n_draws, d, dtype=np.int64)
    while True:
        active = hi - lo > 1
        if not active.any():
            return hi
        mid = (lo + hi) // 2
        value = curve[mid] + noise_sd * rng.standard_normal(n_draws)
        ok = value >= ref
        hi = np.where(active & ok, mid, hi)
        lo = np.where(active & ~ok, mid, lo)


def cast_copy(model: Any, dtype: str) -> Any:
    """``model`` itself when it already has ``dtype``, else a deep copy cast to it (the caller's
    model is never touched; TransformerLens' "Changing model dtype" print is swallowed)."""
    if param_dtype(model) == dtype:
        return model
    with contextlib.redirect_stdout(io.StringIO()):
        out = copy.deepcopy(model).to(getattr(torch, dtype))
    out.eval()
    return out


def score_unclipped(
    model: Any, completion: Completion, batch_size: int
) -> Float[np.ndarray, " batch"]:
    """Total log-probability of the continuation, no hooks, in a batch of ``batch_size`` copies."""
    with torch.inference_mode():
        lp = continuation_logprob(
            model, completion.prompt_tokens, completion.continuation_tokens, batch_size=batch_size
        )
    return lp.total.double().cpu().numpy()


def score_clipped(
    model: Any,
    completion: Completion,
    directions: torch.Tensor,
    ks: Sequence[int],
    *,
    kinds: Sequence[str],
) -> Float[np.ndarray, " batch"]:
    """Row i clipped to the first ``ks[i]`` columns of ``directions``, all rows in ONE forward pass
    (``interp.sweeps.clip_sweep``: the projection computed in float32, written back in the model's
    dtype)."""
    out = clip_sweep(model, completion, directions, list(ks), kinds=kinds, chunk_size=len(ks))
    return out.logprob.numpy()


def real_bisection(
    model: Any,
    completion: Completion,
    directions: torch.Tensor,
    target: float,
    *,
    batch_size: int,
    kinds: Sequence[str],
    rng: np.random.Generator,
) -> tuple[SearchResult, list[dict]]:
    """``study_bisection`` on the model itself (in its dtype), every probe k scored as one row of a
    batch of ``batch_size``: alone for 1, else at a random position among ``batch_size - 1`` rows
    clipped to random k in 0..d (fresh for every probe, drawn from ``rng``). Returns the search
    and one record per probe (step, k, position_in_batch, logprob)."""
    d = int(directions.shape[1])
    probes: list[dict] = []

    def evaluate(ks: Sequence[int]) -> np.ndarray:
        (k,) = ks
        pos = int(rng.integers(batch_size))
        rows = [int(x) for x in rng.integers(0, d + 1, batch_size)]
        rows[pos] = int(k)
        lp = float(score_clipped(model, completion, directions, rows, kinds=kinds)[pos])
        probes.append({"step": len(probes), "k": int(k), "position_in_batch": pos, "logprob": lp})
        return np.array([lp])

    return study_bisection(evaluate, target, d), probes


# ------------------------------------------------- estimator quality and orders


def ranks_descending(values: np.ndarray) -> np.ndarray:
    """0 for the largest value (ties broken by position)."""
    order = np.argsort(-values, kind="stable")
    ranks = np.empty_like(order)
    ranks[order] = np.arange(len(values))
    return ranks


def top_k_agreement(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Fraction of the top-k (largest) of ``a`` that are also in the top-k of ``b``."""
    k = min(k, len(a))
    return len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k if k else float("nan")


def estimator_quality(estimate: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    """How well an estimate ranks exact importances: Spearman, top-10 and top-100 recall."""
    return {
        "spearman": float(stats.spearmanr(estimate, exact).statistic),
        "top10_recall": top_k_agreement(estimate, exact, 10),
        "top100_recall": top_k_agreement(estimate, exact, 100),
    }


COMPROMISES: dict[str, Callable[[pd.DataFrame], np.ndarray]] = {
    # smaller score = included earlier
    "rank_product": lambda t: (t.sv_rank.to_numpy() + 1.0) * (t.importance_rank.to_numpy() + 1.0),
    "rank_sum": lambda t: t.sv_rank.to_numpy() + t.importance_rank.to_numpy() + 0.0,
    "sv_times_importance": lambda t: (
        -(t.singular_value.to_numpy() * np.clip(t.importance.to_numpy(), 0, None))
    ),
}


def orders_from_importance(
    importance: pd.DataFrame, compromise: str = "rank_product"
) -> dict[str, np.ndarray]:
    """Permutations of the directions for every ordering (from the single-direction table)."""
    if compromise not in COMPROMISES:
        raise ValueError(f"unknown compromise {compromise!r}; choose one of {sorted(COMPROMISES)}")
    t = importance.sort_values("direction")
    return {
        "singular_value": np.argsort(t.sv_rank.to_numpy(), kind="stable"),
        "importance": np.argsort(t.importance_rank.to_numpy(), kind="stable"),
        f"compromise_{compromise}": np.argsort(COMPROMISES[compromise](t), kind="stable"),
    }


def order_in_table(orders: pd.DataFrame, ordering: str) -> np.ndarray:
    """One ordering's permutation of the directions from an ``orders`` table (columns ordering,
    position, direction: ``OrderingsResult.tables["orders"]``)."""
    return orders[orders.ordering == ordering].sort_values("position").direction.to_numpy()
