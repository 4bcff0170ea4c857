"""Does the model need ~all of d because of bias-like (sink) components, particular positions, or
particular layers? (issue 17)

The study's clip zeroes every component of every write outside the top-k span of the text's SVD
basis, at every position, in every layer. A *clip variant* changes one thing (``ClipVariant``):

- ``fill``: what the removed directions are set to: ``zero`` (the study's clip), ``mean_text``
  (the mean of that layer's and kind's writes over the text's own positions: mean ablation) or
  ``mean_corpus`` (the mean over a reference corpus: the prompts of
  ``experiments.prompts.REPLICATION_PROMPTS``, prompt tokens only, BOS included, no
  sampling; computed once per model and cached in memory). Both means include the BOS position
  (every position counts once);
- ``keep_first``: the first n positions are left unclipped (``keep_bos``: n = 1, ``keep_first_4``);
- ``layers``: only one third of the layers is clipped (``np.array_split(range(n_layers), 3)``);
- ``kinds``: only the attention (or only the MLP) writes are clipped.

Every variant uses the text's own basis (``text.basis``: SVD of all writes of the text's kinds)
and clips to its top k: ``clip(w) = P_k w + (I - P_k) fill`` (``interp.clip_variants``). For each
variant: the exact minimal k (smallest k with ``logp(k) >= baseline - tol``, ``tol`` =
``effective_tolerance(tolerance, text.noise())``) by ``lazy_scan_first_crossing`` from the coarse
grid ``curve_ks(d, jitter=False)``, and the gap closure read off the evaluated k
(``gap_closure_evaluated``: 50/90/99% of the variant's own gap between k = 0 and the unclipped
log-probability, and within 1/5/10 nats; ``exact`` says whether every k below was evaluated there).

``direction_sources`` (no forward pass) splits each top direction's squared singular value,
``s_i^2 = sum_rows (w_r . v_i)^2``, into the shares of BOS vs other positions, attention vs MLP,
and each layer.
"""

import hashlib
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from interp import Completion, Writes, capture_writes, encode_prompt, prefix_masks
from interp.clip_variants import fill_clip_writes
from interp.scoring import continuation_logprob
from interp.sweeps import auto_chunk_size, count_rows
from interp.writes import model_device

from .base import ExperimentResult, Text, as_text, param_dtype
from .measure import (
    GAP_FRACTIONS,
    WITHIN_NATS,
    effective_tolerance,
    exact_min_k,
    gap_closure_evaluated,
    lazy_scan_first_crossing,
)
from .prompts import REPLICATION_PROMPTS
from .registry import register

FILLS = ("zero", "mean_text", "mean_corpus")
LAYER_THIRDS = ("early", "middle", "late")


@dataclass(frozen=True)
class ClipVariant:
    """One way to clip: what the removed directions become (``fill``), which positions stay
    unclipped (the first ``keep_first``), which layers (``"all"``, a third: ``"early"``,
    ``"middle"``, ``"late"``, or explicit layer numbers) and which kinds (``None``: the text's)
    are clipped. Writes not clipped are left as the model makes them."""

    name: str
    fill: str = "zero"
    keep_first: int = 0
    layers: str | tuple[int, ...] = "all"
    kinds: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(
                f"variant name {self.name!r} must be an identifier (it names summary keys)"
            )
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, got {self.fill!r}")
        if self.keep_first < 0:
            raise ValueError(f"keep_first must be >= 0, got {self.keep_first}")
        if isinstance(self.layers, str) and self.layers not in ("all", *LAYER_THIRDS):
            raise ValueError(
                f"layers must be 'all', one of {LAYER_THIRDS} or layer numbers, got {self.layers!r}"
            )

    def clipped_layers(self, n_layers: int) -> list[int]:
        if self.layers == "all":
            return list(range(n_layers))
        if isinstance(self.layers, str):
            third = np.array_split(np.arange(n_layers), 3)[LAYER_THIRDS.index(self.layers)]
            return [int(x) for x in third]
        return sorted({int(x) for x in self.layers})

    def clipped_positions(self, n_tokens: int) -> list[int] | None:
        return None if self.keep_first == 0 else list(range(self.keep_first, n_tokens))

    def clipped_kinds(self, text_kinds: Sequence[str]) -> tuple[str, ...]:
        return tuple(text_kinds) if self.kinds is None else tuple(self.kinds)

    def describe(self) -> str:
        what = {
            "zero": "removed directions set to 0",
            "mean_text": "removed directions set to the text's mean write",
            "mean_corpus": "removed directions set to the corpus mean write",
        }[self.fill]
        where = [f"layers {self.layers}" if self.layers != "all" else "all layers"]
        where.append("the text's kinds" if self.kinds is None else "+".join(self.kinds) + " only")
        if self.keep_first:
            where.append(f"positions 0..{self.keep_first - 1} unclipped")
        return f"{what}; {', '.join(where)}"


VARIANTS: dict[str, ClipVariant] = {
    v.name: v
    for v in (
        ClipVariant("zero"),
        ClipVariant("mean_text", fill="mean_text"),
        ClipVariant("mean_corpus", fill="mean_corpus"),
        ClipVariant("keep_bos", keep_first=1),
        ClipVariant("keep_first_4", keep_first=4),
        ClipVariant("layers_early", layers="early"),
        ClipVariant("layers_middle", layers="middle"),
        ClipVariant("layers_late", layers="late"),
        ClipVariant("attn_only", kinds=("attn",)),
        ClipVariant("mlp_only", kinds=("mlp",)),
    )
}
DEFAULT_VARIANTS: tuple[str, ...] = tuple(VARIANTS)


def resolve_variants(variants: Sequence["str | ClipVariant"]) -> list[ClipVariant]:
    """Names of ``VARIANTS`` or ``ClipVariant`` objects, as specs (names must be unique)."""
    out = []
    for v in variants:
        if isinstance(v, str):
            if v not in VARIANTS:
                raise ValueError(
                    f"unknown clip variant {v!r}; choose from {list(VARIANTS)} or pass a "
                    "ClipVariant"
                )
            v = VARIANTS[v]
        out.append(v)
    names = [v.name for v in out]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique, got {names}")
    return out


# ----------------------------------------------------------------------------------- fills


def mean_writes(writes: Writes) -> dict[tuple[int, str], Tensor]:
    """``{(layer, kind): mean write}`` over every position (BOS included), float64."""
    idx = writes.index
    out = {}
    for (layer, kind), g in idx.groupby(["layer", "kind"], sort=True):
        rows = torch.as_tensor(g.row.to_numpy().copy())
        out[(int(layer), str(kind))] = writes.matrix[rows].double().mean(0)
    return out


_CORPUS_MEANS: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def corpus_mean_writes(
    model: Any, prompts: Mapping[str, str] | None = None
) -> dict[tuple[int, str], Tensor]:
    """``{(layer, kind): mean write}`` over every token of the reference prompts (default: the
    shipped ``REPLICATION_PROMPTS``; prompt tokens only, BOS first, no sampling), pooled over
    prompts (each token counts once), float64. Cached per model (and dtype and prompts) in
    memory."""
    if prompts is None:
        prompts = REPLICATION_PROMPTS
    key = (param_dtype(model), tuple(prompts.items()))
    cache = _CORPUS_MEANS.setdefault(model, {})
    if key not in cache:
        sums: dict[tuple[int, str], Tensor] = {}
        count = 0
        for text in prompts.values():
            w = capture_writes(model, encode_prompt(model, text))
            n = int(w.tokens.numel())
            for k, m in mean_writes(w).items():
                sums[k] = sums.get(k, 0) + m * n
            count += n
        cache[key] = {k: s / count for k, s in sums.items()}
    return cache[key]


def variant_fills(
    text: Text, variant: ClipVariant, corpus: Mapping[str, str] | None = None
) -> dict[tuple[int, str], Tensor] | None:
    """The fill vectors of ``variant`` on ``text`` (``None`` for ``zero``)."""
    if variant.fill == "zero":
        return None
    if variant.fill == "mean_text":
        if "_mean_writes" not in text.__dict__:
            text.__dict__["_mean_writes"] = mean_writes(text.writes)
        return text.__dict__["_mean_writes"]
    return corpus_mean_writes(text.model, corpus)


# ------------------------------------------------------------------------------ evaluation


class VariantEvaluator:
    """Log-probabilities of one clip variant on one text, memoized by k (one batch row per k,
    chunked), like ``interp.sweeps.ClipEvaluator``. ``points``: k -> (logprob, logprob_mean)."""

    def __init__(
        self,
        text: Text,
        variant: ClipVariant,
        *,
        fills: Mapping[tuple[int, str], Tensor] | None = None,
        chunk_size: int | None = None,
        progress: bool = False,
    ) -> None:
        self.text, self.variant, self.fills = text, variant, fills
        model, comp = text.model, text.completion
        self.chunk = (
            chunk_size
            or text.chunk_size
            or auto_chunk_size(model, comp.tokens.numel(), comp.continuation_tokens.numel())
        )
        self.progress = progress
        self.d = text.d_model
        self.layers = variant.clipped_layers(int(model.cfg.n_layers))
        self.kinds = variant.clipped_kinds(text.kinds)
        self.positions = variant.clipped_positions(int(comp.tokens.numel()))
        self.points: dict[int, tuple[float, float]] = {}
        self.n_rows = 0
        self.n_passes = 0

    def evaluate(self, ks: Sequence[int]) -> np.ndarray:
        """Total log-probabilities at ``ks`` (the new ones computed, batched)."""
        ks = [int(k) for k in ks]
        new = sorted(set(ks) - set(self.points))
        if new:
            self.text.check_model(self.text.model)
            model, comp = self.text.model, self.text.completion
            device = model_device(model)
            v = self.text.basis.vectors.to(device=device, dtype=torch.float32)
            masks = prefix_masks(new, self.d, device=device)
            starts = range(0, len(new), self.chunk)
            for a in tqdm(starts, desc=self.variant.name, disable=not self.progress, leave=False):
                b = min(a + self.chunk, len(new))
                with (
                    torch.inference_mode(),
                    fill_clip_writes(
                        model,
                        v,
                        mask=masks[a:b],
                        kinds=self.kinds,
                        layers=self.layers,
                        fills=self.fills,
                        positions=self.positions,
                        check=False,
                    ),
                ):
                    lp = continuation_logprob(
                        model, comp.prompt_tokens, comp.continuation_tokens, batch_size=b - a
                    )
                for i, k in enumerate(new[a:b]):
                    self.points[k] = (float(lp.total[i]), float(lp.mean[i]))
                count_rows(b - a, comp.tokens.numel())
                self.n_passes += 1
            self.n_rows += len(new)
        return np.array([self.points[k][0] for k in ks])

    __call__ = evaluate

    def table(self) -> pd.DataFrame:
        """Every evaluated k, sorted: k, logprob, logprob_mean."""
        ks = sorted(self.points)
        return pd.DataFrame(
            {
                "k": ks,
                "logprob": [self.points[k][0] for k in ks],
                "logprob_mean": [self.points[k][1] for k in ks],
            }
        )


def _fills_digest(fills: Mapping[tuple[int, str], Tensor] | None) -> str:
    if fills is None:
        return "zero"
    h = hashlib.sha1()
    for key in sorted(fills):
        h.update(repr(key).encode())
        h.update(fills[key].detach().to("cpu", torch.float64).numpy().tobytes())
    return h.hexdigest()[:16]


def variant_evaluator(
    text: Text,
    variant: ClipVariant,
    *,
    corpus: Mapping[str, str] | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
) -> VariantEvaluator:
    """The memoized evaluator of ``variant`` on ``text`` (kept on the text, keyed by the variant's
    spec and a digest of its fills, so a memo never answers for other settings)."""
    text.check_model(text.model)
    fills = variant_fills(text, variant, corpus)
    memo = text.__dict__.setdefault("_clip_variant_evaluators", {})
    key = (variant, _fills_digest(fills))
    if key not in memo:
        memo[key] = VariantEvaluator(
            text, variant, fills=fills, chunk_size=chunk_size, progress=progress
        )
    return memo[key]


# ------------------------------------------------------------------------ direction sources


def direction_sources(text: Text, n_directions: int = 5) -> pd.DataFrame:
    """Where the top ``n_directions`` directions' mass comes from (no forward pass).

    ``s_i^2 = sum_rows (w_r . v_i)^2`` over the rows of the basis's writes matrix (the text's
    kinds, minus the basis's excluded positions). One row per (direction, group_type, group):
    group_type ``position`` (groups ``bos`` = position 0, ``other``), ``kind`` (``attn``, ``mlp``)
    and ``layer`` (``"0"``, ``"1"``, ...); ``share`` = the group's part of ``s_i^2`` (shares sum
    to 1 per direction and group_type), ``row_share`` = the group's share of the rows (what
    ``share`` would be if every row wrote alike), ``sum_sq`` = the group's part itself.
    """
    basis, writes = text.basis, text.writes
    keep = writes.index.kind.isin(basis.kinds) & ~writes.index.position.isin(
        basis.excluded_positions
    )
    w = writes.select(keep)
    n = min(int(n_directions), text.d_model)
    coeff = w.matrix.double() @ basis.vectors[:, :n].double()
    sq = (coeff**2).numpy()
    idx = w.index
    groups = {
        "position": np.where(idx.position.to_numpy() == 0, "bos", "other"),
        "kind": idx.kind.to_numpy().astype(str),
        "layer": idx.layer.to_numpy().astype(str),
    }
    rows = []
    for i in range(n):
        total = float(sq[:, i].sum())
        for group_type, labels in groups.items():
            order = (
                sorted(set(labels), key=lambda g: (len(g), g))
                if group_type == "layer"
                else sorted(set(labels))
            )
            for g in order:
                sel = labels == g
                part = float(sq[sel, i].sum())
                rows.append(
                    {
                        "direction": i,
                        "singular_value": float(basis.singular_values[i]),
                        "sum_sq": part,
                        "group_type": group_type,
                        "group": g,
                        "share": part / total if total > 0 else np.nan,
                        "row_share": float(sel.mean()),
                    }
                )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------- result


def _gap_key(criterion: str, level: float) -> str:
    return f"gap_{round(level * 100):d}" if criterion == "gap_closed" else f"within_{level:g}"


@dataclass
class ClipVariantsResult(ExperimentResult):
    """Tables: ``curve`` (variant, k, k_frac, logprob, logprob_mean, gap_closed: every evaluated k),
    ``minimal`` (one row per variant: min_k, min_k_frac, tolerance, baseline, logprob_at_0,
    evaluations, ...), ``gap`` (variant, criterion, level, k_first, k_frac, exact, resolution) and
    ``sources`` (``direction_sources``)."""

    name = "clip_variants"

    def min_k(self, variant: str) -> int:
        t = self.tables["minimal"]
        return int(t[t.variant == variant].min_k.iloc[0])

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        mk = self.tables["minimal"]
        if len(mk):
            out["baseline"] = float(mk.baseline.iloc[0])
            out["tolerance"] = float(mk.tolerance.iloc[0])
        for r in mk.itertuples():
            out[f"min_k_{r.variant}"] = int(r.min_k)
            out[f"min_k_frac_{r.variant}"] = float(r.min_k_frac)
            out[f"logprob_at_0_{r.variant}"] = float(r.logprob_at_0)
        for r in self.tables["gap"].itertuples():
            out[f"{_gap_key(r.criterion, r.level)}_{r.variant}"] = float(r.k_frac)
        src = self.tables.get("sources")
        if src is not None and len(src):
            bos = src[(src.group_type == "position") & (src.group == "bos")]
            for r in bos.itertuples():
                out[f"bos_share_direction_{int(r.direction)}"] = float(r.share)
        return out

    def figures(self) -> dict[str, Any]:
        import plotly.express as px
        import plotly.graph_objects as go

        curve, mk = self.tables["curve"], self.tables["minimal"]
        lo, hi = -0.25, 1.05
        fig = go.Figure()
        for variant, g in curve.groupby("variant", sort=False):
            g = g.sort_values("k")
            fig.add_trace(
                go.Scatter(
                    x=g.k_frac,
                    y=g.gap_closed.clip(lo, hi),
                    mode="lines+markers",
                    name=variant,
                    customdata=np.stack([g.k, g.logprob], axis=1),
                    hovertemplate="k=%{customdata[0]}<br>logp=%{customdata[1]:.3f}"
                    "<br>gap closed %{y:.3f}",
                )
            )
        fig.add_hline(y=1.0, line_dash="dot")
        model = self.meta.get("model", {}).get("name", "")
        fig.update_layout(
            title=f"{model}: share of each variant's gap (k = 0 to unclipped) closed, clipped to "
            f"[{lo}, {hi}]",
            xaxis_title="k / d_model",
            yaxis_title="fraction of the gap closed",
            yaxis_range=[lo - 0.02, hi + 0.02],
        )
        bar = px.bar(
            mk,
            x="variant",
            y="min_k_frac",
            text="min_k",
            title=f"{model}: minimal k / d_model per clip variant (logp(k) >= baseline - tol)",
        ).update_layout(yaxis_range=[0, 1.05], yaxis_title="minimal k / d_model")
        return {"clip_variants_gap_closure": fig, "clip_variants_min_k": bar}


@register(
    "clip_variants",
    result=ClipVariantsResult,
    builtin=True,
    help=(
        "issue 17: minimal k and gap closure of clip variants (mean fills, BOS kept, layer "
        "thirds, one kind)"
    ),
)
def run_clip_variants(
    model: Any,
    text_or_completion: "Text | Completion",
    *,
    variants: Sequence["str | ClipVariant"] = DEFAULT_VARIANTS,
    tolerance: float = 1e-4,
    band: float = 5.0,
    chunk_size: int | None = None,
    progress: bool = False,
    seed: int = 0,
    n_sources: int = 5,
    corpus: Mapping[str, str] | None = None,
    refine_gap: bool = False,
) -> ClipVariantsResult:
    """Minimal k and gap closure of each clip variant on one text (see the module docstring).

    ``text_or_completion``: a prepared text (its basis, baseline and noise are reused) or a
    completion (prepared now, both kinds). ``variants``: names of ``VARIANTS`` or ``ClipVariant``
    specs. ``band``: nats, ``lazy_scan_first_crossing``'s. ``corpus``: the reference prompts of
    ``mean_corpus`` (default: ``REPLICATION_PROMPTS``). ``refine_gap``: also scan each gap-closure
    target (``lazy_scan_first_crossing`` at each criterion's log-probability) so that ``k_first``
    is exact where the curve is monotone near it (more forward rows). ``seed`` is recorded only.
    Cost per variant: the 19 grid points plus the scanned k (one batch row each)."""
    text = as_text(model, text_or_completion, chunk_size=chunk_size, progress=progress)
    specs = resolve_variants(variants)
    n_layers = int(model.cfg.n_layers)
    # a variant that clips nothing on this model (a third of fewer than 3 layers, a kind the text
    # lacks) would report k = 0: left out, and listed in the settings
    skipped = [
        v.name
        for v in specs
        if not v.clipped_layers(n_layers) or not set(v.clipped_kinds(text.kinds)) & set(text.kinds)
    ]
    specs = [v for v in specs if v.name not in skipped]
    d = text.d_model
    noise = text.noise()
    tol = effective_tolerance(tolerance, noise)  # exact_min_k's, for the settings
    step = chunk_size or 8
    curves, minimal, gaps = [], [], []
    for spec in specs:
        ev = variant_evaluator(text, spec, corpus=corpus, chunk_size=chunk_size, progress=progress)
        scan, _ = exact_min_k(ev, text, tolerance=tolerance, band=band, step=step)
        lp0 = float(ev([0])[0])
        if refine_gap:
            gap = text.baseline - lp0
            targets = [lp0 + f * gap for f in GAP_FRACTIONS if gap > 0] + [
                text.baseline - n for n in WITHIN_NATS
            ]
            for t in targets:
                lazy_scan_first_crossing(ev, t, d, sorted(ev.points), band=band, step=step)
        gc = gap_closure_evaluated({k: v[0] for k, v in ev.points.items()}, text.baseline, d)
        gaps.append(
            pd.DataFrame(
                {
                    "variant": spec.name,
                    "criterion": gc.criterion,
                    "level": gc.level,
                    "k_first": gc.k_first,
                    "k_frac": gc.k_frac_first,
                    "exact": gc.exact,
                    "resolution": gc.resolution,
                }
            )
        )
        t = ev.table()
        span = text.baseline - lp0
        curves.append(
            pd.DataFrame(
                {
                    "variant": spec.name,
                    "k": t.k,
                    "k_frac": t.k / d,
                    "logprob": t.logprob,
                    "logprob_mean": t.logprob_mean,
                    "gap_closed": (t.logprob - lp0) / span if span > 0 else 1.0,
                }
            )
        )
        minimal.append(
            {
                "variant": spec.name,
                "min_k": scan.k,
                "min_k_frac": scan.k / d,
                "tolerance": tol,
                "baseline": text.baseline,
                "logprob_at_0": lp0,
                "evaluations": len(ev.points),
                "scanned": scan.scanned,
                "band": band,
                "n_clipped_layers": len(ev.layers),
                "kinds": "+".join(ev.kinds),
                "fill": spec.fill,
                "keep_first": spec.keep_first,
                "description": spec.describe(),
            }
        )
    sources = direction_sources(text, n_sources)
    settings = {
        "variants": [asdict(s) for s in specs],
        "skipped_variants": skipped,
        "tolerance": tolerance,
        "effective_tolerance": tol,
        "band": band,
        "seed": seed,
        "n_sources": n_sources,
        "refine_gap": refine_gap,
        "kinds": list(text.kinds),
        "grid": "experiments.clipping.curve_ks(d, jitter=False)",
        "corpus": list((REPLICATION_PROMPTS if corpus is None else corpus).keys()),
        "mean_includes_bos": True,
    }
    return ClipVariantsResult(
        tables={
            "curve": pd.concat(curves, ignore_index=True),
            "minimal": pd.DataFrame(minimal),
            "gap": pd.concat(gaps, ignore_index=True),
            "sources": sources,
        },
        settings=settings,
        meta=text.meta(noise_at_d=noise, effective_tolerance=tol),
    )
