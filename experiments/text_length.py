"""Scale or text length? The minimal subspace against tokens per residual dimension.

The writes matrix of a text has ``2 * n_layers * n_tokens`` rows and every token's writes are
clipped, so a longer text (on the same d_model) constrains more directions. The study's first text
had 71 tokens on d_model = 4096 (0.017 tokens per dimension); a 64-token text on SmolLM2-135M
(d_model 576) has about 0.13, 7x more. This experiment takes ONE sampled completion and cuts its
continuation to each of ``lengths`` tokens (the same sampled tokens, so the texts are nested
prefixes), and for each cut text, with a fresh SVD basis of that text's own writes
(``experiments.prepare``):

- ``min_k``: the exact minimal k, the smallest k with ``logp(k) >= baseline - tol`` (``tol`` as in
  ``experiments.minimal_subspace.effective_tolerance``: the larger of ``tolerance`` and 10x the
  clipped pass's float noise), by ``lazy_scan_first_crossing``: the coarse grid
  (``experiments.clipping.curve_ks(d, jitter=False)``), then every k inside each grid interval
  with an end within ``band`` nats of the target, in ascending order, stopping at the first k that
  passes. It returns exactly the k of ``interp.search.scan_first_crossing`` (tested), evaluating
  only the k below the answer.
- ``bisection_k``: the study's binary search (``interp.search.study_bisection``, target = the
  unclipped log-probability exactly, no tolerance).
- gap closure (``gap_closure_evaluated``): where the curve closes 50/90/99% of the gap between
  k = 0 and the unclipped log-probability, and where it comes within 1/5/10 nats of it, read off
  the evaluated k (the grid, the bisection's probes and the scanned k). ``k_first`` is the
  smallest evaluated k meeting the criterion: an upper bound on the every-k answer, exact when the
  evaluated k before it is ``k_first - 1`` (``exact`` column; ``resolution``: the distance to it).
  With ``full_curve=True`` every k is evaluated and the numbers are
  ``experiments.method_sensitivity.gap_closure``'s.

``TextLengthResult.concat`` pools several texts (and models) into one result, whose figure puts
min_k / d against n_tokens / d_model beside the study's four points (``STUDY_POINTS``).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from interp import Completion, model_info
from interp.search import ScanResult, band_scan_ks, study_bisection

from .base import ExperimentResult, Text, as_text, run_meta
from .clipping import curve_ks
from .method_sensitivity import GAP_FRACTIONS, WITHIN_NATS, gap_closure
from .minimal_subspace import effective_tolerance
from .study.prompts import STUDY_D_MODEL, STUDY_MIN_K

LENGTHS = (4, 8, 16, 32, 64, 128)
STUDY_BAND = (0.46, 0.81)  # the study's minimal k / d_model on its four texts (Llama-3-8B)
# Tokens (prompt + continuation, BOS included) of the study's texts. Only the first is known: its
# attention-only writes matrix had 2272 = 32 layers x 71 tokens rows (shared/STUDY.md). The other
# three were sampled with at most 64 new tokens; their lengths were not reported.
STUDY_N_TOKENS: dict[str, int | None] = {"meaning_of_life": 71, "relativity": None, "launch": None,
                                         "translate": None}
STUDY_MAX_NEW_TOKENS = 64


def cut_continuation(model: Any, completion: Completion, n: int) -> Completion:
    """The completion with its continuation cut to its first ``n`` tokens (the prompt and the
    sampled tokens unchanged; the text decoded with ``model``'s tokenizer when given)."""
    n_full = int(completion.continuation_tokens.numel())
    if not 1 <= n <= n_full:
        raise ValueError(f"cannot cut a {n_full}-token continuation to {n} tokens (need 1 <= n <= {n_full})")
    cont = completion.continuation_tokens[:n].clone()
    text = model.tokenizer.decode(cont.tolist()) if model is not None else ""
    return Completion(completion.prompt, completion.prompt_tokens.clone(), cont, text,
                      meta={**completion.meta, "cut_to": n, "cut_from": n_full})


def lazy_scan_first_crossing(evaluate: Any, target: float, d: int, known: Sequence[int], *, band: float = 5.0,
                             step: int = 8) -> ScanResult:
    """``interp.search.scan_first_crossing``'s answer at a fraction of its cost.

    Evaluates the ``known`` points (with 0 and d); the scan's k are every k inside each interval
    between neighbouring known points where either end is within ``band`` nats of the target (or
    above it), as in ``scan_first_crossing``. Those below the smallest passing known k are
    evaluated in ascending order, ``step`` at a time, and the search stops at the first that
    passes: the smallest passing k of the scan and the known points, which is
    ``scan_first_crossing``'s k (k >= d always passes). ``scanned`` counts the k evaluated by the scan.
    """
    ks = sorted(set(int(k) for k in known) | {0, int(d)})
    values = np.asarray(evaluate(ks), dtype=float)
    ok = (values >= target) | (np.asarray(ks) >= d)
    first_known = ks[int(np.argmax(ok))]
    scan = [k for k in band_scan_ks(ks, values, target, band) if k < first_known]
    asked, found = set(ks), first_known
    for a in range(0, len(scan), max(int(step), 1)):
        chunk = scan[a:a + max(int(step), 1)]
        asked |= set(chunk)
        passed = np.asarray(evaluate(chunk), dtype=float) >= target
        if passed.any():
            found = chunk[int(np.argmax(passed))]
            break
    return ScanResult(int(found), len(asked), scanned=len(asked) - len(ks), band=band)


def exact_min_k(evaluate: Any, text: Text, *, tolerance: float = 1e-4, band: float = 5.0,
                step: int = 8) -> tuple[ScanResult, float]:
    """The exact minimal k of one clipping order of a prepared text: the smallest k with
    ``logp(k) >= baseline - tol``, ``tol = effective_tolerance(tolerance, text.noise())``, by
    ``lazy_scan_first_crossing`` from the coarse grid ``curve_ks(d, jitter=False)``. ``evaluate``:
    the order's memoized evaluator (``text.evaluator(...)`` or any k -> logp). Returns (scan, tol)."""
    tol = effective_tolerance(tolerance, text.noise())
    d = text.d_model
    return lazy_scan_first_crossing(evaluate, text.baseline - tol, d, curve_ks(d, jitter=False), band=band,
                                    step=step), tol


def gap_closure_evaluated(points: dict[int, float], baseline: float, d: int, *,
                          fractions: Sequence[float] = GAP_FRACTIONS,
                          nats: Sequence[float] = WITHIN_NATS) -> pd.DataFrame:
    """``method_sensitivity.gap_closure``'s criteria on the evaluated k only (``points``: k -> logp,
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
    crits = [("gap_closed", float(f), (np.ones(len(ks), bool) if gap <= 0 else (v - start) / gap >= f))
             for f in fractions]
    crits += [("within_nats", float(n), v >= baseline - n) for n in nats]
    for criterion, level, ok in crits:
        ok = ok | (ks >= d)
        j = int(np.argmax(ok)) if ok.any() else len(ks) - 1
        k_first = int(ks[j])
        k_prev = int(ks[j - 1]) if j > 0 else -1
        rows.append({"criterion": criterion, "level": level, "k_first": k_first, "k_prev": k_prev,
                     "resolution": k_first - k_prev, "exact": bool(k_first - k_prev == 1),
                     "k_frac_first": k_first / d})
    return pd.DataFrame(rows)


def _gap_label(criterion: str, level: float) -> str:
    return f"gap{round(level * 100):d}_k_frac" if criterion == "gap_closed" else f"within{level:g}_k_frac"


def study_points(prompt_tokens: dict[str, int] | None = None) -> pd.DataFrame:
    """The study's four minimal subspaces (Llama-3-8B) with their tokens per dimension: known for
    meaning_of_life (71 tokens); for the others only bounded, ``[prompt + 1, prompt + 64]`` tokens
    (BOS + prompt + 1 to 64 new tokens), with the prompt counted by ``prompt_tokens`` (a stand-in
    tokenizer's counts, BOS included; the study's Llama-3 counts are not known either) and the
    point itself drawn at the upper end (the known text used 63 of its 64)."""
    rows = []
    for name, k in STUDY_MIN_K.items():
        n = STUDY_N_TOKENS.get(name)
        p = (prompt_tokens or {}).get(name)
        if n is not None:
            lo = hi = x = n
        elif p is not None:
            lo, hi, x = p + 1, p + STUDY_MAX_NEW_TOKENS, p + STUDY_MAX_NEW_TOKENS
        else:
            lo = hi = x = np.nan
        rows.append({"prompt_name": name, "min_k": k, "min_k_frac": k / STUDY_D_MODEL, "d_model": STUDY_D_MODEL,
                     "n_tokens": x, "n_tokens_known": n is not None, "tokens_per_dim": x / STUDY_D_MODEL,
                     "tokens_per_dim_lo": lo / STUDY_D_MODEL, "tokens_per_dim_hi": hi / STUDY_D_MODEL})
    return pd.DataFrame(rows)


@dataclass
class TextLengthResult(ExperimentResult):
    """Tables: ``lengths`` (one row per text and continuation length), ``gap_closure`` (long: one
    row per length, criterion and level), ``curve`` (every evaluated k of every length)."""

    name = "text_length"

    @property
    def table(self) -> pd.DataFrame:
        return self.tables["lengths"]

    def summary(self) -> dict[str, Any]:
        t = self.table
        out: dict[str, Any] = {"n_texts": int(t.groupby(["model", "prompt_name"], dropna=False).ngroups),
                               "n_rows": len(t)}
        for r in t.itertuples():
            key = f"{r.model}:{r.prompt_name}:{int(r.n_continuation_tokens)}"
            out[f"min_k_frac[{key}]"] = float(r.min_k_frac)
            out[f"bisection_k_frac[{key}]"] = float(r.bisection_k_frac)
        low = t[t.tokens_per_dim <= 0.04]
        if len(low):
            out["min_k_frac_range_at_tokens_per_dim_le_0.04"] = [float(low.min_k_frac.min()),
                                                                  float(low.min_k_frac.max())]
            out["share_in_study_band_at_tokens_per_dim_le_0.04"] = float(
                ((low.min_k_frac >= STUDY_BAND[0]) & (low.min_k_frac <= STUDY_BAND[1])).mean())
        return out

    def figures(self) -> dict[str, Any]:
        import plotly.graph_objects as go

        t = self.table
        fig = go.Figure()
        fig.add_hrect(y0=STUDY_BAND[0], y1=STUDY_BAND[1], fillcolor="grey", opacity=0.15, line_width=0,
                      annotation_text="study: 46-81% (Llama-3-8B)", annotation_position="top left")
        symbols = ("circle", "square", "diamond", "triangle-up", "x", "cross")
        for i, ((model, prompt), g) in enumerate(t.groupby(["model", "prompt_name"], sort=False, dropna=False)):
            g = g.sort_values("tokens_per_dim")
            label = f"{model}: {prompt}"
            fig.add_trace(go.Scatter(x=g.tokens_per_dim, y=g.min_k_frac, mode="lines+markers", name=label,
                                     legendgroup=label, marker_symbol=symbols[i % len(symbols)],
                                     text=[f"{int(n)} tokens ({int(c)} continuation)" for n, c in
                                           zip(g.n_tokens, g.n_continuation_tokens)],
                                     hovertemplate="%{text}<br>tokens/dim %{x:.3f}<br>min k/d %{y:.3f}"))
            fig.add_trace(go.Scatter(x=g.tokens_per_dim, y=g.bisection_k_frac, mode="markers",
                                     name=f"{label} (bisection)",
                                     legendgroup=label, showlegend=False, opacity=0.5,
                                     marker={"symbol": "circle-open", "size": 9}))
        prompt_tokens = (t.drop_duplicates("prompt_name").set_index("prompt_name").n_prompt_tokens.astype(int).to_dict()
                         if len(t) else {})
        sp = study_points(prompt_tokens)
        for known, g in sp.groupby("n_tokens_known"):
            g = g.dropna(subset=["tokens_per_dim"])
            fig.add_trace(go.Scatter(
                x=g.tokens_per_dim, y=g.min_k_frac, mode="markers+text", text=g.prompt_name, textposition="top right",
                name="study (Llama-3-8B), " + ("71 tokens: known" if known else "tokens unknown: prompt + 1..64"),
                marker={"symbol": "star" if known else "star-open", "size": 14, "color": "black"},
                error_x=None if known else {"type": "data", "symmetric": False,
                                            "array": g.tokens_per_dim_hi - g.tokens_per_dim,
                                            "arrayminus": g.tokens_per_dim - g.tokens_per_dim_lo}))
        fig.update_layout(title="minimal subspace against text length per residual dimension (open circles: bisection)",
                          xaxis_title="tokens per residual dimension (n_tokens / d_model)", xaxis_type="log",
                          yaxis_title="minimal k / d_model", yaxis_range=[0, 1.05])
        gap = self.tables["gap_closure"]
        gfig = go.Figure()
        for (model, prompt, crit, level), g in gap.groupby(["model", "prompt_name", "criterion", "level"], sort=False,
                                                           dropna=False):
            gfig.add_trace(go.Scatter(x=g.tokens_per_dim, y=g.k_frac_first, mode="lines+markers",
                                      name=f"{model}: {prompt}, {_gap_label(crit, level)[:-7]}"))
        gfig.update_layout(title="where the clipping curve closes its gap, against text length",
                           xaxis_title="tokens per residual dimension", xaxis_type="log",
                           yaxis_title="k / d_model (first evaluated k)", yaxis_range=[0, 1.05])
        return {"min_k_vs_tokens_per_dim": fig, "gap_closure_vs_tokens_per_dim": gfig}

    @classmethod
    def concat(cls, results: Sequence["TextLengthResult"]) -> "TextLengthResult":
        """Several texts' (or models') results as one: tables stacked, settings and meta listed."""
        results = list(results)
        if not results:
            raise ValueError("nothing to concatenate")
        tables = {key: pd.concat([r.tables[key] for r in results], ignore_index=True) for key in results[0].tables}
        return cls(tables=tables, settings={"texts": [r.settings for r in results]},
                   meta={"texts": [r.meta for r in results]})


def run_text_length(
    model: Any,
    completion: "Completion | Text",
    *,
    lengths: Sequence[int] = LENGTHS,
    tolerance: float = 1e-4,
    band: float = 5.0,
    seed: int = 0,
    chunk_size: int | None = None,
    progress: bool = False,
    prompt_name: str | None = None,
    kinds: tuple[str, ...] | None = None,
    bisection: bool = True,
    full_curve: bool = False,
    **_: Any,
) -> TextLengthResult:
    """Minimal k / d, the study's bisection and the gap closure of one sampled text, its
    continuation cut to each of ``lengths`` tokens (see the module docstring).

    ``completion``: a Completion (or a prepared Text: its completion is used, its basis is not:
    every cut text gets its own). Lengths longer than the continuation (it may have stopped at EOS)
    are skipped and listed in ``settings["skipped_lengths"]``. ``band``: nats, the scan's (see
    ``lazy_scan_first_crossing``); ``full_curve``: evaluate every k (d + 1 rows a length) for an
    exact gap closure. ``seed`` is recorded only (nothing here is random). Cost per length: the 19
    grid points, ~log2(d) bisection probes, 1 + chunk rows for the noise, the scanned k."""
    full = completion.completion if isinstance(completion, Text) else completion
    if isinstance(completion, Text):
        completion.check_model(model)
        kinds = kinds or completion.kinds
    n_full = int(full.continuation_tokens.numel())
    wanted = sorted({int(n) for n in lengths})
    use = [n for n in wanted if 1 <= n <= n_full]
    skipped = [n for n in wanted if n not in use]
    name = model_info(model).name
    rows, gaps, curves, metas = [], [], [], []
    used_kinds: list[str] = list(kinds) if kinds else ["attn", "mlp"]
    for n in use:
        cut = cut_continuation(model, full, n)
        text = as_text(model, cut, kinds=kinds, chunk_size=chunk_size, progress=progress)
        d = text.d_model
        noise = text.noise()
        ev = text.evaluator("singular_value")
        ev(curve_ks(d, jitter=False))
        bis = study_bisection(ev, text.baseline, d) if bisection else None
        scan, tol = exact_min_k(ev, text, tolerance=tolerance, band=band, step=chunk_size or 8)
        if full_curve:
            curve = ev.evaluate(range(d + 1))
            gc = gap_closure(curve, text.baseline, d)
            gc = gc.assign(k_prev=gc.k_first - 1, resolution=1, exact=True)[
                ["criterion", "level", "k_first", "k_prev", "resolution", "exact", "k_frac_first"]]
        else:
            gc = gap_closure_evaluated({k: v[0] for k, v in ev.points.items()}, text.baseline, d)
        n_prompt, n_tok = cut.n_prompt, int(cut.tokens.numel())
        n_layers = int(model.cfg.n_layers)
        base = {"model": name, "prompt_name": prompt_name, "n_prompt_tokens": n_prompt, "n_continuation_tokens": n,
                "n_tokens": n_tok, "d_model": d, "tokens_per_dim": n_tok / d}
        row = {**base, "n_writes_rows": len(text.kinds) * n_layers * n_tok, "baseline_logprob": text.baseline,
               "logprob_k0": float(ev([0])[0]), "min_k": scan.k, "min_k_frac": scan.k / d,
               "bisection_k": bis.k if bis else np.nan, "bisection_k_frac": bis.k / d if bis else np.nan,
               "tolerance": tol, "noise_at_d": noise, "band": band, "scanned": scan.scanned,
               "forward_rows": ev.n_rows}
        for r in gc.itertuples():
            row[_gap_label(r.criterion, r.level)] = float(r.k_frac_first)
        rows.append(row)
        gaps.append(gc.assign(**base))
        curves.append(ev.table().assign(**{k: base[k] for k in ("model", "prompt_name", "n_continuation_tokens")}))
        used_kinds = list(text.kinds)
        metas.append({"n_continuation_tokens": n, "continuation_text": cut.continuation_text,
                      "baseline_logprob": text.baseline, "effective_tolerance": tol, "noise_at_d": noise})
    lead = list(base) if rows else []
    gap_t = pd.concat(gaps, ignore_index=True) if gaps else pd.DataFrame()
    if len(gap_t):
        gap_t = gap_t[lead + [c for c in gap_t.columns if c not in lead]]
    return TextLengthResult(
        tables={"lengths": pd.DataFrame(rows), "gap_closure": gap_t,
                "curve": pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()},
        settings={"lengths": wanted, "skipped_lengths": skipped, "tolerance": tolerance, "band": band, "seed": seed,
                  "bisection": bisection, "full_curve": full_curve, "kinds": used_kinds,
                  "grid": "experiments.clipping.curve_ks(d, jitter=False)"},
        meta=run_meta(model, full, prompt_name=prompt_name, lengths=metas),
    )


def basis_swap(
    model: Any,
    completion: "Completion | Text",
    n: int,
    *,
    tolerance: float = 1e-4,
    band: float = 5.0,
    chunk_size: int | None = None,
    kinds: tuple[str, ...] | None = None,
    prompt_name: str | None = None,
) -> pd.DataFrame:
    """Which half of "text length" moves the minimal subspace: the basis or the target?

    Cutting a continuation to ``n`` tokens changes two things at once: the *target* (fewer tokens
    to predict, a smaller unclipped log-probability to reach) and the *basis* (the SVD of fewer
    writes). This crosses them: the minimal k (``lazy_scan_first_crossing``, every k within
    ``band`` nats of the target, tolerance as ``effective_tolerance``) of the cut text and of the
    full text, each clipped in the cut text's basis and in the full text's basis. The diagonal
    (own basis) is ``run_text_length``'s answer; ``target = cut`` with the full basis asks whether
    the same few tokens need more directions when the basis was spread over the whole text's
    writes; ``target = full`` with the cut basis whether the whole text can do with the directions
    the first ``n`` tokens' writes span. One row per (target, basis)."""
    full_text = as_text(model, completion, kinds=kinds, chunk_size=chunk_size)
    cut_text = as_text(model, cut_continuation(model, full_text.completion, n), kinds=full_text.kinds,
                       chunk_size=chunk_size)
    d = full_text.d_model
    bases = {"cut": cut_text.basis.vectors, "full": full_text.basis.vectors}
    rows = []
    for target_name, text in (("cut", cut_text), ("full", full_text)):
        for basis_name, v in bases.items():
            ev = text.evaluator(f"basis_of_{basis_name}_text", directions=v)
            scan, tol = exact_min_k(ev, text, tolerance=tolerance, band=band, step=chunk_size or 8)
            within1 = min((k for k, p in ev.points.items() if p[0] >= text.baseline - 1.0), default=d)
            rows.append({"model": model_info(model).name, "prompt_name": prompt_name,
                         "n_continuation_tokens": int(text.completion.continuation_tokens.numel()),
                         "target": target_name, "basis": basis_name, "baseline_logprob": text.baseline,
                         "tolerance": tol, "min_k": scan.k, "min_k_frac": scan.k / d,
                         "within1_k_frac_evaluated": within1 / d, "evaluations": scan.evaluations})
    return pd.DataFrame(rows)
