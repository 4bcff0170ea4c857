"""Searches over a clipping curve ``k -> logp(k)`` for where it reaches a target.

Every search takes ``evaluate(ks) -> logps`` (batched; ``interp.sweeps.ClipEvaluator`` memoizes,
so searches share what others already computed) and the target log-probability. k = d (the
unclipped model, up to float error) always counts as reaching it.

- ``first_crossing``: the smallest k with logp(k) >= target. Starts from the known points (a
  coarse grid, or every k), then refines the first interval where the curve crosses by batched
  probes; exact when every k is known.
- ``stable_crossing``: the smallest k from which every k' >= k reaches the target (refined
  between the last failing and the next passing point). Equal to the first crossing on a
  monotone curve.
- ``bisect_min_k``: the study's binary search (assumes a monotone curve; one k per step).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Evaluate = Callable[[Sequence[int]], np.ndarray]


@dataclass
class SearchResult:
    k: int
    evaluations: int  # distinct k asked for


def _probes(lo: int, hi: int, width: int) -> list[int]:
    inside = np.linspace(lo, hi, width + 2).round().astype(int)[1:-1]
    return sorted({int(k) for k in inside if lo < k < hi}) or [(lo + hi) // 2]


def _passes(evaluate: Evaluate, ks: Sequence[int], target: float, d: int) -> np.ndarray:
    ks = list(ks)
    ok = np.asarray(evaluate(ks)) >= target
    return ok | (np.asarray(ks) >= d)


def first_crossing(
    evaluate: Evaluate, target: float, d: int, known: Sequence[int], *, width: int = 6
) -> SearchResult:
    """Smallest k reaching ``target`` among the ``known`` points, refined inside the first
    interval between a failing and a passing known point (assumes one crossing inside it)."""
    ks = sorted(set(int(k) for k in known) | {d})
    asked = set(ks)
    ok = _passes(evaluate, ks, target, d)
    j = int(np.argmax(ok))
    if j == 0:
        return SearchResult(ks[0], len(asked))
    lo, hi = ks[j - 1], ks[j]  # lo fails, hi passes
    while hi - lo > 1:
        probes = _probes(lo, hi, width)
        asked |= set(probes)
        pk = _passes(evaluate, probes, target, d)
        if pk.any():
            first = int(np.argmax(pk))
            hi = probes[first]
            lo = probes[first - 1] if first > 0 else lo
        else:
            lo = probes[-1]
    return SearchResult(hi, len(asked))


def stable_crossing(
    evaluate: Evaluate, target: float, d: int, known: Sequence[int], *, width: int = 6
) -> SearchResult:
    """Smallest k from which every known (and refined) k' >= k reaches ``target``."""
    ks = sorted(set(int(k) for k in known) | {d})
    asked = set(ks)
    ok = _passes(evaluate, ks, target, d)
    if ok.all():
        return SearchResult(ks[0], len(asked))
    f = int(np.nonzero(~ok)[0][-1])
    lo, hi = ks[f], ks[f + 1]  # lo: the last failure; hi: the next (passing) point
    while hi - lo > 1:
        probes = _probes(lo, hi, width)
        asked |= set(probes)
        pk = _passes(evaluate, probes, target, d)
        if (~pk).any():
            last = int(np.nonzero(~pk)[0][-1])
            lo = probes[last]
            hi = probes[last + 1] if last + 1 < len(probes) else hi
        else:
            hi = probes[0]
    return SearchResult(hi, len(asked))


def bisect_min_k(evaluate: Evaluate, target: float, d: int) -> SearchResult:
    """The study's bisection for the smallest k with logp(k) >= target (monotone assumption),
    with a first probe at k = 0 (returned when it passes); otherwise ``study_bisection``."""
    if d <= 0:
        return SearchResult(0, 0)
    if bool(np.asarray(evaluate([0]))[0] >= target):
        return SearchResult(0, 1)
    res = study_bisection(evaluate, target, d)
    return SearchResult(res.k, res.evaluations + 1)


def study_bisection(evaluate: Evaluate, target: float, d: int) -> SearchResult:
    """The study's binary search: the smallest k in 1..d with ``evaluate([k]) >= target``,
    assuming the curve is monotone.

    Invariant: ``lo`` fails, ``hi`` passes; it starts at ``lo = 0``, ``hi = d`` with neither
    evaluated (k = d is the unclipped model and counts as passing; k = 0 is not a candidate) and
    probes ``mid = (lo + hi) // 2`` until ``hi - lo == 1``. One k per step, about log2(d) steps.
    It is ``bisect_min_k`` without that function's first probe at k = 0: the two
    probe the same k and return the same k whenever ``logp(0) < target``.
    """
    asked: set[int] = set()
    lo, hi = 0, int(d)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        asked.add(mid)
        if bool(np.asarray(evaluate([mid]))[0] >= target):
            hi = mid
        else:
            lo = mid
    return SearchResult(hi, len(asked))


@dataclass
class ScanResult(SearchResult):
    scanned: int  # k evaluated one by one inside the band
    band: float  # nats: intervals with an end within this of the target were scanned at every k


def band_scan_ks(ks: Sequence[int], values: np.ndarray, target: float, band: float) -> list[int]:
    """Every k strictly inside each interval between neighbouring known ``ks`` (sorted) where
    either end's value is within ``band`` nats of ``target`` or above it: what a band scan
    evaluates."""
    near = np.asarray(values, dtype=float) >= target - band
    return [
        k for j in range(len(ks) - 1) if near[j] or near[j + 1] for k in range(ks[j] + 1, ks[j + 1])
    ]


def scan_first_crossing(
    evaluate: Evaluate, target: float, d: int, known: Sequence[int], *, band: float = 5.0
) -> ScanResult:
    """The smallest k with logp(k) >= ``target``, exact wherever the curve comes near the target.

    Evaluates the ``known`` points, then *every* k inside each interval between neighbouring known
    points where either end is within ``band`` nats of the target (or above it), and returns the
    smallest passing k seen. Exact (equal to an every-k scan) unless the curve rises more than
    ``band`` nats above both ends of an interval between two grid points; with every k known it is
    the every-k scan itself. A non-monotone curve can pass, fail and pass again: every passing k in
    a scanned interval is seen, not only the first crossing of the coarse grid.
    """
    ks = sorted(set(int(k) for k in known) | {0, d})
    asked = set(ks)
    values = np.asarray(evaluate(ks), dtype=float)
    scan = band_scan_ks(ks, values, target, band)
    if scan:
        asked |= set(scan)
    every = sorted(asked)
    ok = _passes(evaluate, every, target, d)
    k = every[int(np.argmax(ok))]
    return ScanResult(k, len(asked), scanned=len(scan), band=band)


@dataclass
class Crossings:
    """Where a clipping curve reaches its target, by three criteria (``curve_crossings``).

    - ``first``: the smallest k that passes (the study's question; k = d always passes);
    - ``stable``: the smallest k from which every k' >= k passes;
    - ``converged``: the smallest k from which every k' >= k stays within ``within`` nats of the
      baseline (the study's "converged by ~1500-2000 of 4096");
    - ``frac_fail_above_first``: the share of the k above ``first`` (up to d) that fail again.

    Each is exact when every k it depends on was evaluated: ``known_from`` is the smallest k such
    that every k in ``known_from..d`` was; ``stable_exact`` / ``converged_exact`` / ``frac_exact``
    say whether that covers the number (otherwise it is a bound: ``stable`` and ``converged`` are
    then lower bounds on the every-k answer, ``frac_fail_above_first`` a share of the evaluated k).
    """

    first: int
    stable: int
    converged: int
    frac_fail_above_first: float
    n_above_first: int
    known_from: int
    stable_exact: bool
    converged_exact: bool
    frac_exact: bool


def curve_crossings(
    points: "dict[int, float]", target: float, baseline: float, d: int, *, within: float = 1.0
) -> Crossings:
    """First, stable and convergence points of a curve given as ``{k: logp(k)}`` (see
    ``Crossings``).

    k >= d always counts as passing and as converged (the unclipped model). Pure: no evaluation."""
    ks = np.array(sorted(int(k) for k in points if 0 <= int(k) <= d))
    if len(ks) == 0 or ks[-1] != d:
        ks = np.append(ks, d)
    v = np.array([points.get(int(k), np.inf) for k in ks], dtype=float)
    top = ks >= d
    ok = (v >= target) | top
    near = (v >= baseline - within) | top
    first = int(ks[int(np.argmax(ok))])
    stable = int(ks[int(np.nonzero(~ok)[0][-1]) + 1]) if (~ok).any() else int(ks[0])
    converged = int(ks[int(np.nonzero(~near)[0][-1]) + 1]) if (~near).any() else int(ks[0])
    # the contiguous run of evaluated k that ends at d
    gaps = np.nonzero(np.diff(ks) != 1)[0]
    known_from = int(ks[gaps[-1] + 1]) if len(gaps) else int(ks[0])
    above = ks > first
    n_above = int(above.sum())
    frac = float((~ok[above]).mean()) if n_above else 0.0
    return Crossings(
        first=first,
        stable=stable,
        converged=converged,
        frac_fail_above_first=frac,
        n_above_first=n_above,
        known_from=known_from,
        stable_exact=known_from <= max(stable - 1, 0),
        converged_exact=known_from <= max(converged - 1, 0),
        frac_exact=known_from <= first + 1,
    )


def scan_down(
    evaluate: Evaluate, d: int, first: int, baseline: float, *, within: float = 1.0, step: int = 16
) -> int:
    """Evaluate every k from d down, ``step`` at a time, until a k below ``first`` lies more than
    ``within`` nats below ``baseline``: then every k the first, stable and convergence points
    depend on is known (``curve_crossings`` exact). Returns the number of k asked for. Costs
    ``d - k_stop`` rows, where k_stop is the last k below both ``first`` and the convergence
    point."""
    asked, hi, step = 0, int(d), max(int(step), 1)
    while hi > 0:
        chunk = list(range(hi - 1, max(hi - 1 - step, -1), -1))
        values = np.asarray(evaluate(chunk), dtype=float)
        asked += len(chunk)
        if any(
            k < first and val < baseline - within for k, val in zip(chunk, values, strict=False)
        ):
            break
        hi = chunk[-1]
    return asked
