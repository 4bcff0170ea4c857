"""The replication table: the study's claims, one row each, judged over many texts.

A reproduction output folder (``reproduce``: one folder per text, each with its experiments) is
read back into one row per text (``text_metrics``; its minimal-k columns are made from the long
form ``minimal_k_rows``: ordering, draw, method, criterion, tolerance, one value a row, which the
report's figures read) and one row per subspace pair (``overlap_pairs``); ``claims`` turns them
into the table: for every claim the study's number, ours as a median [interquartile range] over
texts, its null, and a verdict by a rule written next to its code (``CLAIMS``: one ``Claim`` each,
its rule text formatted from the numbers its code reads). A claim "holds" only where it beats its
null by more than the spread. The study's own numbers come from ``experiments.facts``.
"""

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..facts import (
    STUDY_BAND,
    STUDY_CHAOTIC_K,
    STUDY_CONVERGED_K,
    STUDY_D_MODEL,
    STUDY_KNOWN_TOKENS,
    STUDY_NEW_TOKENS,
    STUDY_OVERLAP_ERROR,
    STUDY_WRITES,
    STUDY_WRITES_PER_DIM,
    pct,
    pct_range,
    study_band_pct,
    study_band_text,
    study_min_k_pcts,
)
from ..runs import Run, load_run


def gather(run: Path, pattern: str, **read: object) -> pd.DataFrame | None:
    """Every text's ``<run>/<text>/<pattern>`` CSV in one table with a ``text`` column (None if
    none). A table's own ``text`` column (clipped generation's sampled text) is kept as
    ``<stem>_text`` (``samples_text``), as ``load_run``'s tables keep it, instead of being
    overwritten by the text id."""
    frames = [
        pd.read_csv(p, **read)
        .rename(columns={"text": f"{p.stem}_text"})
        .assign(text=p.parent.parent.name)
        for p in sorted(run.glob(f"*/{pattern}"))
    ]
    return pd.concat(frames, ignore_index=True) if frames else None


def _median_iqr(x: pd.Series | np.ndarray) -> tuple[float, float, float]:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if not len(x):
        return (float("nan"),) * 3
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    return float(med), float(q1), float(q3)


def fmt(x: pd.Series | np.ndarray, digits: int = 2, pct: bool = False) -> str:
    med, q1, q3 = _median_iqr(x)
    if not np.isfinite(med):
        return "n/a"
    f = (lambda v: f"{v:.{max(digits - 2, 0)}%}") if pct else (lambda v: f"{v:.{digits}f}")
    return f"{f(med)} [{f(q1)}, {f(q3)}]"


def bootstrap_median_ci(
    x: np.ndarray, *, n: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Median and 95% percentile-bootstrap interval of the median (texts resampled)."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if not len(x):
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    meds = np.median(rng.choice(x, size=(n, len(x)), replace=True), axis=1)
    lo, hi = np.percentile(meds, [2.5, 97.5])
    return float(np.median(x)), float(lo), float(hi)


def gaussian_spectrum_null(n: int, d: int, *, seed: int = 0) -> tuple[float, float]:
    """(s1/s3, s2/s3) of an n x d Gaussian matrix: what a spectrum with no dominant direction
    gives."""
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(n, d, generator=gen, dtype=torch.float64)
    s = torch.linalg.eigvalsh(m.T @ m).flip(0).clamp_min(0).sqrt().numpy()
    return float(s[0] / s[2]), float(s[1] / s[2])


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def text_metrics(run_dir: str | Path) -> pd.DataFrame:
    """One row per text of a reproduction output folder: every number the claims use."""
    run_dir = Path(run_dir)
    rows = []
    for ms_dir in sorted(run_dir.glob("*/minimal_subspace")):
        d_text = ms_dir.parent
        if not (ms_dir / "settings.json").exists():
            continue
        ms_meta = _load(ms_dir / "settings.json")["meta"]
        spec = pd.read_csv(d_text / "spectrum" / "summary.csv").set_index("variant")
        clip = _load(d_text / "clipping" / "settings.json")["summary"]
        single = _load(d_text / "single_direction" / "settings.json")["summary"]
        gen_path = d_text / "clipped_generation" / "settings.json"
        gen = _load(gen_path)["summary"] if gen_path.exists() else {}
        d = int(ms_meta["model"]["d_model"])
        row = {
            "text": d_text.name,
            "prompt": ms_meta.get("prompt_name") or d_text.name.split("~")[0],
            "seed": int(ms_meta.get("sampling", {}).get("seed", 0)),
            "model": ms_meta["model"]["name"],
            "d_model": d,
            "n_tokens": len(ms_meta["prompt_tokens"]) + len(ms_meta["continuation_tokens"]),
            "baseline_logprob": ms_meta["baseline_logprob"],
            "tolerance": ms_meta["effective_tolerance"],
        }
        for variant, tag in (
            ("attn+mlp", ""),
            ("attn", "attn_"),
            ("mlp", "mlp_"),
            ("attn+mlp/no_bos", "nobos_"),
        ):
            if variant in spec.index:
                v = spec.loc[variant]
                row.update(
                    {
                        f"{tag}s1_s3": float(v.s1_over_s3),
                        f"{tag}s2_s3": float(v.s2_over_s3),
                        f"{tag}n90_frac": float(v.n90_frac),
                        f"{tag}n_writes": int(v.n_writes),
                    }
                )
        row.update(
            {
                k: clip.get(k, float("nan"))
                for k in ("roughness_low", "roughness_mid", "roughness_high")
            }
        )
        row.update(
            {
                k: clip[k]
                for k in (
                    "jitter_low",
                    "jitter_mid",
                    "jitter_high",
                    "k_converged_frac",
                    "max_orig_delta_over_unclipped",
                    "low_k_orig_delta_over_unclipped",
                )
            }
        )
        row["est_spearman_sv_importance"] = single[
            "spearman_sv_importance"
        ]  # screened estimate (default mode)
        row["importance_exact_fraction"] = single["n_exact"] / max(single["n_directions"], 1)
        row.update(
            minimal_k_columns(
                minimal_k_rows(
                    pd.read_csv(ms_dir / "minimal_k.csv"), pd.read_csv(ms_dir / "sensitivity.csv")
                )
            )
        )
        row["gen_degradation"] = gen.get("degradation_nats_per_token", float("nan"))
        row["gen_k_frac"] = gen.get("k_frac", float("nan"))
        rows.append(row)
    if not rows:
        raise FileNotFoundError(
            f"{run_dir} holds no finished texts (no */minimal_subspace/settings.json)"
        )
    m = pd.DataFrame(rows)
    for extra in (
        exact_metrics(run_dir),
        study_procedure_metrics(run_dir),
        extension_metrics(run_dir),
        text_length_metrics(run_dir),
    ):
        if len(extra):
            m = m.merge(extra, on="text", how="left")
    return m


# Minimal k / d per text in long form (``minimal_k_rows``): one value a row, its meaning in columns.
MINIMAL_K_COLUMNS = ("ordering", "draw", "method", "criterion", "tolerance", "k_frac")
MINIMAL_K_METRICS = {
    "first_crossing": "min_k_frac",
    "converged": "k_converged_frac",
}  # method -> texts.csv name


def minimal_k_rows(minimal_k: pd.DataFrame, sensitivity: pd.DataFrame) -> pd.DataFrame:
    """One text's minimal k / d (its ``minimal_subspace`` result's ``minimal_k`` and
    ``sensitivity`` tables) in long form: ``ordering``
    (singular_value, importance, compromise, random_basis), ``draw`` (the random basis's
    independent draw; 0 for the fixed orders), ``method`` (``first_crossing``: reaches the target;
    ``converged``: within 1 nat for good), ``criterion`` (``run``: at the run's own tolerance;
    ``total`` / ``per_token``: the sensitivity scan's), ``tolerance`` (nats for ``run``; the scan's
    nominal value otherwise) and ``k_frac``."""
    rows = []
    for method in MINIMAL_K_METRICS:
        for r in minimal_k[minimal_k.method == method].itertuples():
            ordering, _, draw = r.ordering.split("_rank")[0].partition("#")
            rows.append(
                (ordering, int(draw or 0), method, "run", float(r.tolerance), float(r.k_frac))
            )
    rows += [
        (r.ordering, 0, "first_crossing", r.criterion, float(r.tolerance), float(r.k_frac))
        for r in sensitivity.itertuples()
    ]
    return pd.DataFrame(rows, columns=list(MINIMAL_K_COLUMNS))


def minimal_k_table(run: str | Path | Run) -> pd.DataFrame:
    """Every finished text's ``minimal_k_rows`` in one tidy table, with a ``text`` column first
    (``run``: a run folder or its ``load_run``)."""
    if not isinstance(run, Run):
        run = load_run(run)
    frames = [
        minimal_k_rows(r.tables["minimal_k"], r.tables["sensitivity"]).assign(text=text)
        for text, r in run.results("minimal_subspace").items()
    ]
    columns = ["text", *MINIMAL_K_COLUMNS]
    return (
        pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    )


def minimal_k_column(
    ordering: str, draw: int, method: str, criterion: str, tolerance: float
) -> str:
    """The ``texts.csv`` column of one long row: ``min_k_frac[<ordering>]`` (``k_converged_frac``
    when converged; ``#<draw>`` for a random basis's later draws), with ``@<tolerance>`` (``/tok``:
    per token) for the sensitivity scan's rows."""
    name = f"{MINIMAL_K_METRICS[method]}[{ordering}{f'#{draw}' if draw else ''}]"
    return (
        name
        if criterion == "run"
        else f"{name}@{tolerance:g}{'' if criterion == 'total' else '/tok'}"
    )


def minimal_k_columns(rows: pd.DataFrame) -> dict[str, float]:
    """One text's ``minimal_k_rows`` as its ``texts.csv`` columns (the published wide form): each
    row under ``minimal_k_column``, except that ``[random_basis]`` is the random-basis null, the
    median over the text's independent draws (``random_draws`` of them)."""

    def named(t: pd.DataFrame) -> dict[str, float]:
        return {
            minimal_k_column(*key): v
            for *key, v in t[list(MINIMAL_K_COLUMNS)].itertuples(index=False)
        }

    run = rows[rows.criterion == "run"]
    out: dict[str, Any] = named(run)
    random = run[run.ordering == "random_basis"]
    out["random_draws"] = int((random.method == "first_crossing").sum())
    if out["random_draws"]:
        for method, g in random.groupby("method", sort=False):
            out[minimal_k_column("random_basis", 0, method, "run", np.nan)] = float(
                np.median(g.k_frac)
            )
    return {**out, **named(rows[rows.criterion != "run"])}


EXACT_ORDERINGS = {
    "singular_value": "singular_value",
    "importance": "importance",
    "compromise_rank_product": "compromise",
}


def exact_metrics(run_dir: str | Path) -> pd.DataFrame:
    """One row per text of the audit's exact stage (``*/exact_importance``): Spearman(s, exact
    importance) and its permutation null, the estimators' accuracy against the exact values, and
    minimal k by the every-k-near-target scan, the study's bisection and the coarse grid, per order.
    Columns are prefixed ``exact_`` so that no claim can take them for the screened estimates."""
    rows = []
    for folder in sorted(Path(run_dir).glob("*/exact_importance")):
        if not (folder / "settings.json").exists():
            continue
        payload = _load(folder / "settings.json")
        summary, meta = payload["summary"], payload["meta"]
        row = {
            "text": folder.parent.name,
            "exact_spearman_sv_importance": summary["spearman_sv_importance"],
            "exact_perm_q975": summary["null_q975"],
            "exact_perm_p": summary["p_one_sided"],
            "exact_tolerance": meta["effective_tolerance"],
            "exact_importance_noise_floor": summary.get("importance_noise_floor", float("nan")),
            "exact_n_within_noise_floor": summary.get("n_within_noise_floor", -1),
            "exact_spearman_above_noise_floor": summary.get(
                "spearman_above_noise_floor", float("nan")
            ),
        }
        for method, tag in (
            ("exact_scan", "exact_min_k_frac"),
            ("bisection", "exact_bisection_k_frac"),
            ("grid_first_crossing", "exact_grid_k_frac"),
            ("stable", "exact_stable_k_frac"),
        ):
            for ordering, short in EXACT_ORDERINGS.items():
                row[f"{tag}[{short}]"] = summary[f"{method}_k_frac[{ordering}]"]
        for est in ("first_order", "first_plus_half_fisher", "screened_default"):
            row[f"exact_{est}_spearman"] = summary[f"{est}_spearman"]
            row[f"exact_{est}_top10_recall"] = summary[f"{est}_top10_recall"]
        rows.append(row)
    return pd.DataFrame(rows)


def finished_summaries(run_dir: str | Path, experiment: str) -> list[tuple[str, dict[str, Any]]]:
    """(text id, summary) of every finished ``<text>/<experiment>`` folder (settings.json
    written)."""
    return [
        (folder.parent.name, _load(folder / "settings.json")["summary"])
        for folder in sorted(Path(run_dir).glob(f"*/{experiment}"))
        if (folder / "settings.json").exists()
    ]


def study_procedure_metrics(run_dir: str | Path) -> pd.DataFrame:
    """One row per text with a ``*/study_procedure`` result (experiments.study_procedure): minimal
    k / d by the exact scan (float32), the study's bisection in float32 and in bfloat16, at full
    and scaled length, and the scaled text's size. Columns are prefixed ``sp_``."""
    rows = []
    for text, s in finished_summaries(run_dir, "study_procedure"):
        row = {"text": text}
        for cond in ("full", "scaled"):
            for key, tag in (
                ("exact_scan:float32", "exact"),
                ("study_bisection:float32", "bisection_f32"),
                ("study_bisection:bfloat16", "bisection_bf16"),
            ):
                row[f"sp_{tag}[{cond}]"] = s.get(f"k_frac[{cond}:{key}]", float("nan"))
            row[f"sp_n_continuation_tokens[{cond}]"] = s.get(
                f"n_continuation_tokens[{cond}]", float("nan")
            )
            row[f"sp_tokens_per_dim[{cond}]"] = s.get(f"tokens_per_dim[{cond}]", float("nan"))
            row[f"sp_gap90[{cond}]"] = s.get(f"gap90_k_frac[{cond}]", float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


TEXT_LENGTH_COLUMNS = (
    "first_k_frac",
    "stable_k_frac",
    "converged_k_frac",
    "frac_fail_above_first",
    "span_frac",
    "rank_frac",
    "writes_per_dim",
    "tokens_per_dim",
    "bisection_k_frac",
    "n_continuation_tokens",
    "noise_floor",
)
TEXT_LENGTH_LABELS = (
    "2",
    "8",
    "scaled",
    "32",
    "full",
)  # the lengths replicate/extend run (experiments.text_length)


def text_length_metrics(run_dir: str | Path) -> pd.DataFrame:
    """One row per text with a ``*/text_length`` result: ``tl_<column>[<length>]`` for each length
    run (``2``, ``8``, ``32``, ``scaled``: the study's new tokens per dimension, ``full``: as
    sampled)."""
    rows = []
    for text, s in finished_summaries(run_dir, "text_length"):
        row: dict[str, Any] = {"text": text}
        for label in TEXT_LENGTH_LABELS:
            for col in TEXT_LENGTH_COLUMNS:
                row[f"tl_{col}[{label}]"] = s.get(f"{col}[{label}]", float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


def text_length_rows(m: pd.DataFrame) -> pd.DataFrame:
    """``texts.csv``'s ``tl_`` columns back in long form: one row per (text, length) run."""
    rows = []
    for r in m.to_dict("records"):
        for label in TEXT_LENGTH_LABELS:
            if pd.notna(r.get(f"tl_stable_k_frac[{label}]", np.nan)):
                rows.append(
                    {
                        "text": r["text"],
                        "length": label,
                        **{c: r[f"tl_{c}[{label}]"] for c in TEXT_LENGTH_COLUMNS},
                    }
                )
    return pd.DataFrame(rows)


CLIP_VARIANT_COLUMNS = (
    "zero",
    "mean_text",
    "mean_corpus",
    "keep_bos",
    "keep_first_4",
    "layers_early",
    "layers_middle",
    "layers_late",
    "attn_only",
    "mlp_only",
)
HESSIAN_ORDERINGS = (
    "singular_value",
    "exact_importance",
    "hessian",
    "hessian_eigen_loading",
    "first_order",
    "fisher_second_order",
)
HESSIAN_ESTIMATORS = ("first_order", "fisher_second_order", "hessian_second_order")


def extension_metrics(run_dir: str | Path) -> pd.DataFrame:
    """One row per text with an issue-17 extension result: ``cv_min_k_frac[<variant>]`` and
    ``cv_within5[<variant>]`` from ``*/clip_variants``, ``hr_k_frac[<ordering>]`` and
    ``hr_spearman[<estimator>]`` from ``*/hessian_ranking``."""
    rows: dict[str, dict[str, Any]] = {}
    for text, s in finished_summaries(run_dir, "clip_variants"):
        row = rows.setdefault(text, {"text": text})
        for v in CLIP_VARIANT_COLUMNS:
            row[f"cv_min_k_frac[{v}]"] = s.get(f"min_k_frac_{v}", float("nan"))
            row[f"cv_within5[{v}]"] = s.get(f"within_5_{v}", float("nan"))
        row["cv_bos_share_direction_0"] = s.get("bos_share_direction_0", float("nan"))
    for text, s in finished_summaries(run_dir, "hessian_ranking"):
        row = rows.setdefault(text, {"text": text})
        for o in HESSIAN_ORDERINGS:
            row[f"hr_k_frac[{o}]"] = s.get(f"k_frac[{o}]", float("nan"))
        for e in HESSIAN_ESTIMATORS:
            row[f"hr_spearman[{e}]"] = s.get(f"{e}_spearman", float("nan"))
            row[f"hr_top10[{e}]"] = s.get(f"{e}_top10_recall", float("nan"))
    return pd.DataFrame(list(rows.values()))


def overlap_pairs(run_dir: str | Path) -> pd.DataFrame:
    """Every subspace pair of every overlap folder (one per seed), SVD-order subspaces only."""
    frames = []
    for folder in sorted(Path(run_dir).glob("overlap*")):
        if (folder / "pairs.csv").exists():
            p = pd.read_csv(folder / "pairs.csv")
            p = p[~p.a.str.contains("/") & ~p.b.str.contains("/")]  # different texts, SVD order
            frames.append(p.assign(group=folder.name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# The screened estimator against exact ablations of every direction (the exact stage's texts in
# docs/results/<model>/exact_estimators.csv): median Spearman and top-10 recall. Shown beside
# any number a run computed from estimates, so a report without exact ablations says how far to
# trust it.
ESTIMATOR_ACCURACY = {
    "smollm2-135m": "Spearman 0.76 [0.69, 0.82], top-10 recall 0.6 (8 texts)",
    "gemma-3-270m": "Spearman 0.91 [0.89, 0.92], top-10 recall 0.4 (8 texts)",
}


def _estimator_note(model: str) -> str:
    acc = ESTIMATOR_ACCURACY.get(model)
    measured = acc or "not measured on this model"
    return (
        f"the screened estimator against exact ablations: {measured}; replicate --exact-texts "
        "N for exact ones"
    )


def _verdict(holds: bool, differs: bool) -> str:
    return "holds" if holds else "differs" if differs else "can't tell"


# --- the claims: each one its words, its null, its rule in words and the code that applies it ---


@dataclass(frozen=True)
class Tables:
    """What the claims read: the per-text table ``m``, the overlap pairs, d and the exact stage's
    texts (``ex``: the rows with exact ablations of every direction)."""

    m: pd.DataFrame
    pairs: pd.DataFrame | None
    d: int
    ex: pd.DataFrame

    @classmethod
    def of(cls, m: pd.DataFrame, pairs: pd.DataFrame | None = None) -> "Tables":
        ex = (
            m[m["exact_spearman_sv_importance"].notna()]
            if "exact_spearman_sv_importance" in m
            else m.iloc[:0]
        )
        return cls(m, pairs, int(m.d_model.iloc[0]), ex)


@dataclass(frozen=True)
class Finding:
    """One claim's row on one model: ours, the null's value, the verdict and the texts it rests on
    (``n``: None for every text); ``study`` replaces the claim's study number where a branch quotes
    it otherwise."""

    ours: str
    null: str
    verdict: str
    n: int | None = None
    study: str | None = None


# What a rule's text may quote besides its own numbers: the study's, from experiments.facts.
FACT_FIELDS: dict[str, Any] = {
    "band": STUDY_BAND,
    "study_d": STUDY_D_MODEL,
    "new_tokens": STUDY_NEW_TOKENS,
    "scaled": {d: round(STUDY_NEW_TOKENS * d / STUDY_D_MODEL) for d in (576, 640)},
}


@dataclass(frozen=True)
class Claim:
    """One row of the replication table: the claim in words, the study's number, the null it must
    beat (in words), the verdict rule (``template``, its numbers as ``{fields}``) and ``judge``, the
    code that applies it. ``params`` are the rule's numbers: the rule text is formatted from them
    (and from ``FACT_FIELDS``) and ``judge`` reads them, so the words and the code cannot drift."""

    key: str
    words: str
    study: str
    null: str
    template: str
    judge: Callable[["Claim", Tables], Finding]
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def rule(self) -> str:
        return self.template.format(**FACT_FIELDS, **self.params)

    def __getitem__(self, name: str) -> Any:
        return self.params[name]

    def row(self, t: Tables) -> dict[str, Any]:
        f = self.judge(self, t)
        return {
            "key": self.key,
            "claim": self.words,
            "study (Llama-3-8B)": self.study if f.study is None else f.study,
            "ours": f.ours,
            "null": f.null,
            "verdict": f.verdict,
            "n_texts": len(t.m) if f.n is None else f.n,
            "rule": self.rule,
        }


def _dominant(c: Claim, t: Tables, tag: str = "") -> Finding:
    m, ratio = t.m, c["ratio"]
    null = gaussian_spectrum_null(int(m[f"{tag}n_writes"].median()), t.d)
    s13, s23 = m[f"{tag}s1_s3"], m[f"{tag}s2_s3"]
    _, q1, q3 = _median_iqr(s23)
    differs = q3 < ratio
    v = _verdict(q1 >= ratio and q1 > null[1], differs)
    if differs:
        v += " (one dominant direction)" if _median_iqr(s13)[1] >= ratio else " (none dominant)"
    return Finding(
        f"s1/s3 {fmt(s13, 1)}; s2/s3 {fmt(s23, 1)}",
        f"Gaussian matrix: s1/s3 {null[0]:.2f}, s2/s3 {null[1]:.2f}",
        v,
    )


def _chaotic(c: Claim, t: Tables) -> Finding:
    m = t.m
    _, q1, _ = _median_iqr(m.jitter_low / m.jitter_high)
    rough = m.roughness_low if "roughness_low" in m else pd.Series(np.nan, index=m.index)
    _, r1, r3 = _median_iqr(rough)
    if np.isfinite(r1):
        v = _verdict(r1 > c["rough"] and q1 > c["calmer"], r3 <= c["rough"] or q1 <= c["same"])
        rough_txt = (
            f"; roughness (jitter / a smooth curve's step) {fmt(rough, 1)} below 10% of d, "
            f"{fmt(m.roughness_mid, 1)} at 10-50%, {fmt(m.roughness_high, 1)} above 50%"
        )
    else:  # a run from before the roughness measure: it cannot tell chaos from a steep slope
        v, rough_txt = "can't tell (no roughness measure in this run)", ""
    return Finding(
        f"|logp(k+1) - logp(k)|: {fmt(m.jitter_low, 1)} nats below 10% of d, "
        f"{fmt(m.jitter_mid, 1)} at 10-50%, {fmt(m.jitter_high, 2)} above 50%{rough_txt}",
        "roughness 1 (a smooth monotone curve of the same rise)",
        v,
    )


def _converging(c: Claim, t: Tables) -> Finding:
    m = t.m
    kc = m.k_converged_frac
    med, lo, hi = bootstrap_median_ci(
        m["k_converged_frac[random_basis]"] - m["k_converged_frac[singular_value]"]
    )
    _, _, q3 = _median_iqr(kc)
    return Finding(
        f"k_converged/d {fmt(kc)}",
        f"random basis: {fmt(m['k_converged_frac[random_basis]'])}; random - SVD {med:+.3f} "
        f"[{lo:+.3f}, {hi:+.3f}]",
        _verdict(q3 < c["frac"] and lo > 0, _median_iqr(kc)[0] >= c["frac"]),
    )


def _orig_delta(c: Claim, t: Tables) -> Finding:
    m, one = t.m, c["unclipped"]
    _, q1_max, q3_max = _median_iqr(m.max_orig_delta_over_unclipped)
    _, q1_low, q3_low = _median_iqr(m.low_k_orig_delta_over_unclipped)
    return Finding(
        f"max orig_delta / unclipped {fmt(m.max_orig_delta_over_unclipped, 1)}; at k <= d/64 "
        f"{fmt(m.low_k_orig_delta_over_unclipped, 2)}",
        "1 (the unclipped model's norm)",
        _verdict(q1_max > one and q3_low < one, q3_max <= one or q1_low >= one),
    )


_NO_EXACT = "n/a: no exact ablations (replicate --exact-texts N)"


def _importance(c: Claim, t: Tables) -> Finding:
    """Exact ablations only (the exact stage's texts); the screened estimate is shown, never
    judged."""
    m, ex = t.m, t.ex
    if not len(ex):
        return Finding(
            f"ESTIMATE only: Spearman(s, screened importance) {fmt(m.est_spearman_sv_importance)} "
            f"({_estimator_note(str(m.model.iloc[0]))})"
            if "est_spearman_sv_importance" in m
            else _NO_EXACT,
            "",
            "can't tell (estimates only)",
            n=0,
        )
    rho = ex.exact_spearman_sv_importance
    _, q1, q3 = _median_iqr(rho)
    crit = float(ex.exact_perm_q975.median())
    est = (
        "; default mode's screened estimate ranks the exact importances at Spearman "
        f"{fmt(ex.exact_screened_default_spearman)}, top-10 recall "
        f"{fmt(ex.exact_screened_default_top10_recall)}"
    )
    return Finding(
        f"Spearman(s, exact importance) {fmt(rho)}{est}",
        "permutation (importances shuffled over directions, 10,000 per text): 97.5% point "
        f"{crit:.3f}",
        _verdict(q1 > crit and q3 < c["deviates"], q1 <= crit or q3 >= c["no_deviations"]),
        n=len(ex),
    )


def _order(c: Claim, t: Tables, col: str, decide: Callable[[float, float, float], str]) -> Finding:
    """An order's exact minimal k minus the SVD order's, paired over the exact stage's texts;
    ``decide(lo, hi, margin)`` gives the verdict from the 95% interval of the median difference."""
    m, ex = t.m, t.ex
    if not len(ex):
        col_est = f"min_k_frac[{col}]"
        ours = (
            (
                "ESTIMATE only (orders from screened importances): min_k/d "
                f"{fmt(m[col_est])}, minus SVD order's "
                f"{fmt(m[col_est] - m['min_k_frac[singular_value]'], 3)} "
                f"({_estimator_note(str(m.model.iloc[0]))})"
            )
            if col_est in m
            else _NO_EXACT
        )
        return Finding(ours, "", "can't tell (estimates only)", n=0)
    med, lo, hi = bootstrap_median_ci(
        ex[f"exact_min_k_frac[{col}]"] - ex["exact_min_k_frac[singular_value]"]
    )
    b_med, b_q1, b_q3 = _median_iqr(
        ex[f"exact_bisection_k_frac[{col}]"] - ex["exact_bisection_k_frac[singular_value]"]
    )
    return Finding(
        f"exact min_k/d {fmt(ex[f'exact_min_k_frac[{col}]'])}; minus SVD order's: {med:+.3f} "
        f"[{lo:+.3f}, {hi:+.3f}] (95% CI of the median); by the study's bisection: {b_med:+.3f} "
        f"[IQR {b_q1:+.3f}, {b_q3:+.3f}]",
        f"SVD order (exact): {fmt(ex['exact_min_k_frac[singular_value]'])}",
        decide(lo, hi, c["margin_dirs"] / t.d),
        n=len(ex),
    )


def _importance_order(c: Claim, t: Tables) -> Finding:
    return _order(
        c,
        t,
        "importance",
        lambda lo, hi, margin: (
            "holds"
            if lo > margin
            else "differs"
            if hi < -margin
            else "marginal"
            if min(abs(lo), abs(hi)) <= margin
            else "can't tell"
        ),
    )


def _compromise_order(c: Claim, t: Tables) -> Finding:
    gain = c["much_better"]
    return _order(
        c,
        t,
        "compromise",
        lambda lo, hi, margin: (
            "holds" if hi > gain + margin else "differs" if hi < gain - margin else "marginal"
        ),
    )


def _minimal_k(c: Claim, t: Tables) -> Finding:
    m, ex, (lo_band, hi_band) = t.m, t.ex, STUDY_BAND
    mk = m["min_k_frac[singular_value]"]
    med, lo, hi = bootstrap_median_ci(m["min_k_frac[random_basis]"] - mk)
    _, q1, q3 = _median_iqr(mk)
    overlaps_study = q1 <= hi_band and q3 >= lo_band
    method_err, exact_note = 0.0, ""
    if len(ex):  # the grid search's own error, measured on the exact stage's texts
        method_err = float(
            (ex["min_k_frac[singular_value]"] - ex["exact_min_k_frac[singular_value]"])
            .abs()
            .median()
        )
        exact_note = (
            f"; exact (every k near the target) on {len(ex)} texts "
            f"{fmt(ex['exact_min_k_frac[singular_value]'])}, study's bisection "
            f"{fmt(ex['exact_bisection_k_frac[singular_value]'])}, grid minus exact median "
            f"{method_err:.3f}"
        )
    v = _verdict(overlaps_study and lo > 0, q1 > hi_band + method_err)
    if not overlaps_study and abs(q1 - hi_band) <= method_err:
        v = "marginal"
    return Finding(
        f"min_k/d {fmt(mk)} (tolerance {fmt(m.tolerance, 5)} nats){exact_note}",
        f"random basis: {fmt(m['min_k_frac[random_basis]'])}; random - SVD {med:+.3f} "
        f"[{lo:+.3f}, {hi:+.3f}]",
        v,
    )


def _overlap(c: Claim, t: Tables) -> Finding:
    pairs = t.pairs
    if pairs is None or not len(pairs):
        return Finding("n/a (fewer than two texts)", "", "can't tell")
    rel = pairs.rel_err_analytic.abs()
    kfrac = float(np.mean(np.r_[pairs.k_a, pairs.k_b]) / t.d)
    err = _median_iqr(rel)[0]
    return Finding(
        f"|relative error| {fmt(rel, 4, pct=True)}; z {fmt(pairs.z_analytic, 1)} "
        f"({len(pairs)} pairs; subspaces {kfrac:.0%} of d on average)",
        "analytic k_i k_j / d; Monte Carlo and spectrum-matched in the pair table",
        "can't tell (forced: subspaces this large overlap as predicted whatever they are)"
        if kfrac >= c["forced"]
        else _verdict(err <= c["error"], err > c["error"]),
    )


def _study_procedure(c: Claim, t: Tables, cond: str) -> Finding:
    m, (lo_band, hi_band) = t.m, STUDY_BAND
    col = f"sp_bisection_bf16[{cond}]"
    sp = m[m[col].notna()] if col in m else m.iloc[:0]
    if not len(sp):
        return Finding(
            "n/a: not run (replicate --exact-with study_procedure)",
            "",
            "can't tell",
            n=0,
            study=f"{study_min_k_pcts()} of d (4 texts)",
        )
    med, lo, hi = bootstrap_median_ci(sp[col].to_numpy())
    inside = lo >= lo_band and hi <= hi_band
    outside = hi < lo_band or lo > hi_band
    n_in = int(((sp[col] >= lo_band) & (sp[col] <= hi_band)).sum())

    def get(name: str) -> pd.Series:
        return sp.get(f"sp_{name}[{cond}]", pd.Series(np.nan, index=sp.index))

    size = (
        f"{fmt(get('n_continuation_tokens'), 0)} new tokens, {fmt(get('tokens_per_dim'), 3)} "
        "tokens per dimension"
    )
    if f"tl_stable_k_frac[{cond}]" in sp and sp[f"tl_stable_k_frac[{cond}]"].notna().any():
        size += (
            f", {fmt(sp[f'tl_writes_per_dim[{cond}]'], 2)} writes per dimension (span "
            f"{fmt(sp[f'tl_span_frac[{cond}]'], 3)} of d); stable crossing "
            f"{fmt(sp[f'tl_stable_k_frac[{cond}]'], 3)}, first "
            f"{fmt(sp[f'tl_first_k_frac[{cond}]'], 3)}, within 1 nat for good from "
            f"{fmt(sp[f'tl_converged_k_frac[{cond}]'], 3)} (text_length, tolerance with "
            "noise across k)"
        )
    return Finding(
        f"bfloat16 bisection k/d {fmt(sp[col])}, median {med:.2f} [{lo:.2f}, {hi:.2f}] "
        f"(95% CI); {n_in} of {len(sp)} texts inside {study_band_pct()}; float32 bisection "
        f"{fmt(get('bisection_f32'))}; exact (every k near the target, float32) "
        f"{fmt(get('exact'))}; texts: {size}",
        f"the study's range {study_band_text()}",
        "holds" if inside else "differs" if outside else "marginal",
        n=len(sp),
    )


def _span_of_writes(c: Claim, t: Tables) -> Finding:
    """Issue 27's row: the stable minimal subspace against the span of the writes, min(2LT, d)."""
    tl = text_length_rows(t.m)
    if not len(tl):
        return Finding("n/a: not run (replicate --exact-with text_length)", "", "can't tell", n=0)
    dev = tl.stable_k_frac - tl.span_frac
    within = dev.abs() <= c["within"]
    share = float(within.mean())
    full, cut = tl[tl.length == "full"], tl[tl.length != "full"]
    limited = tl[tl.span_frac < 1]
    below = int((limited.stable_k_frac <= limited.span_frac + 1e-12).sum())
    n_texts = tl.text.nunique()
    ours = (
        f"stable k/d minus span {fmt(dev, 3)}; within {c['within']:g} of d on "
        f"{int(within.sum())} of {len(tl)} (text, length) rows ({n_texts} texts); as "
        f"sampled: stable {fmt(full.stable_k_frac, 3)}, span {fmt(full.span_frac, 3)} "
        f"({fmt(full.writes_per_dim, 2)} writes/dim); cut (2-32 tokens): stable "
        f"{fmt(cut.stable_k_frac, 3)}, span {fmt(cut.span_frac, 3)}; {len(limited)} rows "
        f"with fewer writes than d, stable <= span on {below}; first crossing "
        f"{fmt(tl.first_k_frac, 3)}, share of k above it failing again "
        f"{fmt(tl.frac_fail_above_first)}, within 1 nat for good from "
        f"{fmt(tl.converged_k_frac, 3)}"
    )
    v = (
        "holds"
        if share >= c["holds_share"]
        else "differs"
        if share < c["differs_share"]
        else "marginal"
    )
    return Finding(ours, "min(n_writes, d) / d (the span of the writes)", v, n=n_texts)


_CV_ZERO = "cv_min_k_frac[zero]"
_NO_CV = "n/a: not run (replicate --exact-with clip_variants)"


def _clip_variants(t: Tables) -> pd.DataFrame:
    """The texts with clip_variants results (issue 17)."""
    return t.m[t.m[_CV_ZERO].notna()] if _CV_ZERO in t.m else t.m.iloc[:0]


def _clip_variant(c: Claim, t: Tables, variant: str) -> Finding:
    """Issue 17: a clip variant's exact minimal k minus the study's zero clip's, paired."""
    cv, col, fewer = _clip_variants(t), f"cv_min_k_frac[{variant}]", c["fewer"]
    if not len(cv) or col not in cv:
        return Finding(_NO_CV, "", "can't tell", n=0)
    med, lo, hi = bootstrap_median_ci((cv[col] - cv[_CV_ZERO]).to_numpy())
    return Finding(
        f"exact min_k/d {fmt(cv[col])} vs zero clip {fmt(cv[_CV_ZERO])}; difference {med:+.3f} "
        f"[{lo:+.3f}, {hi:+.3f}] (95% CI of the median); within 5 nats at k/d "
        f"{fmt(cv[f'cv_within5[{variant}]'])} vs {fmt(cv['cv_within5[zero]'])}",
        f"the study's zero clip, same texts (-{fewer:g}: {fewer:.0%} of d fewer)",
        "holds" if hi < -fewer else "differs" if lo > -fewer else "marginal",
        n=len(cv),
    )


def _layers_needed(c: Claim, t: Tables) -> Finding:
    cv, needed = _clip_variants(t), c["needed"]
    if not len(cv):
        return Finding(_NO_CV, "", "can't tell", n=0)
    parts, above, below = [], True, False
    for third in ("early", "middle", "late"):
        x = cv[f"cv_min_k_frac[layers_{third}]"].to_numpy()
        med, lo, hi = bootstrap_median_ci(x)
        above &= lo >= needed
        below |= hi < needed
        parts.append(f"{third} {fmt(x)} (median CI [{lo:.2f}, {hi:.2f}])")
    kinds = (
        f"; attention only {fmt(cv['cv_min_k_frac[attn_only]'])}, MLP only "
        f"{fmt(cv['cv_min_k_frac[mlp_only]'])}"
    )
    return Finding(
        "exact min_k/d with one third clipped: " + ", ".join(parts) + kinds,
        f"{needed:g} of d",
        "holds" if above else "differs" if below else "marginal",
        n=len(cv),
    )


def _hessian_order(c: Claim, t: Tables) -> Finding:
    hcol = "hr_k_frac[hessian]"
    hr = t.m[t.m[hcol].notna()] if hcol in t.m else t.m.iloc[:0]
    if not len(hr):
        return Finding(
            "n/a: not run (replicate --exact-with hessian_ranking)", "", "can't tell", n=0
        )
    med, lo, hi = bootstrap_median_ci((hr[hcol] - hr["hr_k_frac[singular_value]"]).to_numpy())
    margin = c["margin_dirs"] / t.d
    v = (
        "holds"
        if hi < -margin
        else "differs"
        if lo > margin
        else ("marginal" if min(abs(lo), abs(hi)) <= margin else "can't tell")
    )
    # beside the SVD order (the rule's null): the study's other two orders on the same texts
    others = []
    for label, col in (
        ("exact importance order", "hr_k_frac[exact_importance]"),
        ("compromise order", "exact_min_k_frac[compromise]"),
    ):
        if col in hr and hr[col].notna().all():
            m2, lo2, hi2 = bootstrap_median_ci((hr[hcol] - hr[col]).to_numpy())
            others.append(f"Hessian minus {label} {m2:+.3f} [{lo2:+.3f}, {hi2:+.3f}]")
    return Finding(
        f"exact min_k/d by the Hessian order {fmt(hr[hcol])}, SVD order "
        f"{fmt(hr['hr_k_frac[singular_value]'])}, exact importance order "
        f"{fmt(hr['hr_k_frac[exact_importance]'])}; Hessian minus SVD {med:+.3f} "
        f"[{lo:+.3f}, {hi:+.3f}] (95% CI of the "
        f"median){''.join('; ' + o for o in others)}; Spearman with exact importances: "
        f"Hessian {fmt(hr['hr_spearman[hessian_second_order]'])}, first order + Fisher/2 "
        f"{fmt(hr['hr_spearman[fisher_second_order]'])}, first order "
        f"{fmt(hr['hr_spearman[first_order]'])}",
        "SVD order, same texts",
        v,
        n=len(hr),
    )


def _generation(c: Claim, t: Tables) -> Finding:
    gk, deg = t.m.gen_k_frac, t.m.gen_degradation
    med = _median_iqr(deg)[0]
    return Finding(
        f"log p under the unclipped model, clipped minus unclipped samples: {fmt(-deg, 2)} "
        f"nats/token at k/d {fmt(gk)}",
        "0 (the unclipped model's own samples)",
        "can't tell (k is nearly d)"
        if _median_iqr(gk)[0] >= c["nearly_all"]
        else _verdict(0 < med < c["unusable"], med >= c["unusable"]),
        n=int(deg.notna().sum()),
    )


_NOT_STUDY = "not tested in the study"
_MARGIN = {"margin_dirs": 1}  # one direction: 1/d
_DOMINANT = {"ratio": 2}
_FEWER = {"fewer": 0.05}  # 5% of d fewer directions than the zero clip
_LAYERS_NEEDED = {"needed": 0.9}
_STUDY_RUN = (
    f"{study_min_k_pcts()} of d (4 texts; {STUDY_KNOWN_TOKENS} tokens on d = "
    f"{STUDY_D_MODEL} in the one reported: {STUDY_KNOWN_TOKENS / STUDY_D_MODEL:.3f} per "
    "dimension)"
)

CLAIMS: tuple[Claim, ...] = (
    Claim(
        "dominant",
        "Two directions far larger than all others (attention + MLP writes)",
        "two dominant singular values",
        "a Gaussian matrix of the same shape (no dominant direction)",
        "holds if the lower quartile of s2/s3 is >= {ratio:g} (two directions at least "
        "twice the third) and above the Gaussian null; 'differs' if its upper quartile is "
        "< {ratio:g} (then: how many are dominant).",
        _dominant,
        _DOMINANT,
    ),
    Claim(
        "attention_only",
        "Two directions far larger than all others (attention-only writes)",
        "two dominant singular values",
        "a Gaussian matrix of the same shape (no dominant direction)",
        "as 'dominant', on attention-only writes (the study's first, accidental run).",
        partial(_dominant, tag="attn_"),
        _DOMINANT,
    ),
    Claim(
        "chaotic",
        "Clipping curve chaotic at small k, calmer at large k",
        f"chaotic for k < ~{STUDY_CHAOTIC_K} ({pct(STUDY_CHAOTIC_K / STUDY_D_MODEL)} of "
        "d), stable after",
        "a smooth monotone curve of the same rise (roughness 1)",
        "roughness = median |logp(k+1) - logp(k)| over 8 adjacent pairs in a region, "
        "divided by what a smooth monotone curve with the region's net rise changes per "
        "unit k (null: about 1, a steep slope is not chaos). Holds if the lower quartile "
        "over texts of roughness below 10% of d is > {rough:g} and of jitter(k < 10% of d) "
        "/ jitter(k > 50% of d) is > {calmer:g} (calmer at large k); 'differs' if the "
        "upper quartile of roughness below 10% of d is <= {rough:g} (a slope, not chaos) "
        "or the lower quartile of the jitter ratio is <= {same:g} (no calmer at large k in "
        "a quarter of the texts).",
        _chaotic,
        {"rough": 3, "calmer": 2, "same": 1},
    ),
    Claim(
        "converging",
        "Clipping curve converges (within 1 nat of unclipped) well before k = d",
        f"converged by k ~ {STUDY_CONVERGED_K[0]}-{STUDY_CONVERGED_K[1]} of {STUDY_D_MODEL} "
        f"({pct_range(*(k / STUDY_D_MODEL for k in STUDY_CONVERGED_K))})",
        "a random orthonormal basis (the median over the text's independent draws)",
        "holds if the upper quartile of k_converged/d is < {frac:g} and the paired "
        "difference random basis - SVD basis has a 95% bootstrap interval above 0; "
        "'differs' if the median is >= {frac:g}.",
        _converging,
        {"frac": 0.9},
    ),
    Claim(
        "orig_delta",
        "Attempted writes (orig_delta) small at low k, larger than unclipped mid-range",
        "small at low k, exploding mid-range, back down when the loss recovers",
        "the unclipped model's norm (ratio 1)",
        "holds if, in the lower quartile of texts, max orig_delta exceeds the unclipped "
        "one and orig_delta at k <= d/64 is below it (upper quartile < {unclipped:g}); "
        "'differs' if the upper quartile of max orig_delta / unclipped is <= {unclipped:g} "
        "(never larger) or the lower quartile at k <= d/64 is >= {unclipped:g} (not small "
        "at low k in three quarters of the texts).",
        _orig_delta,
        {"unclipped": 1},
    ),
    Claim(
        "importance",
        "Single-direction importance correlates with singular value, with clear deviations",
        "correlated, clear deviations",
        "importances shuffled over directions (permutation, 97.5% point)",
        "exact ablations of every direction only (texts of the exact stage). Holds if the "
        "lower quartile of Spearman(s, importance) is above the median over texts of the "
        "permutation null's 97.5% point (importances shuffled over directions) and its "
        "upper quartile is below {deviates:g}; 'differs' if that lower quartile is at or "
        "below the null's point (not correlated in a quarter of the texts) or the upper "
        "quartile is >= {no_deviations:g} (no clear deviations); 'can't tell' without "
        "exact texts.",
        _importance,
        {"deviates": 0.9, "no_deviations": 0.99},
    ),
    Claim(
        "importance_order",
        "Importance order reaches the unclipped log-probability more slowly than SVD order",
        "much more slowly",
        "the SVD order on the same texts (paired)",
        "exact importances and exact minimal k (every k scanned near the target) only. "
        "Holds if the 95% bootstrap interval of the paired difference min_k(importance) - "
        "min_k(SVD) lies above +margin (importance order needs more directions); 'differs' "
        "if it lies below -margin; 'marginal' if an end lies within the margin of 0 "
        "(margin: {margin_dirs:g} direction, {margin_dirs:g}/d).",
        _importance_order,
        _MARGIN,
    ),
    Claim(
        "compromise_order",
        "Compromise order (size and importance) not much better than SVD order",
        "did not work much better",
        "the SVD order on the same texts (paired)",
        "exact importances and exact minimal k only. Holds if the upper end of the 95% "
        "interval of min_k(compromise) - min_k(SVD) is above {much_better:g} + margin (not "
        "much better); 'differs' if it is below {much_better:g} - margin; 'marginal' "
        "within the margin ({margin_dirs:g} direction, {margin_dirs:g}/d).",
        _compromise_order,
        {**_MARGIN, "much_better": -0.05},
    ),
    Claim(
        "minimal_k",
        "Minimal subspace reaching the unclipped log-probability is a large fraction of d",
        f"{study_min_k_pcts()} of d",
        "a random orthonormal basis (the median over the text's independent draws)",
        "holds if the interquartile range of min_k/d overlaps the study's "
        "{band[0]:g}-{band[1]:g} and the SVD basis beats a random basis (the median over "
        "the text's independent Haar draws; 95% interval of the paired difference above "
        "0); 'differs' if the lower quartile is > {band[1]:g} + margin; 'marginal' if it "
        "is within the margin of {band[1]:g} (margin: the median |grid - exact| min_k/d "
        "over the exact stage's texts, when the numbers come from the grid search).",
        _minimal_k,
    ),
    Claim(
        "overlap",
        f"Pairwise overlap of two texts' minimal subspaces = k_i k_j / d (random subsets) to "
        f"~{pct(STUDY_OVERLAP_ERROR)}",
        f"about {pct(STUDY_OVERLAP_ERROR)} error",
        "random subsets of the same sizes: k_i k_j / d",
        "'can't tell' when the subspaces cover >= {forced:.0%} of d on average (any "
        "subspaces that large overlap as predicted); else holds if the median |relative "
        "error| is <= {error:.0%}, 'differs' if it is > {error:.0%}.",
        _overlap,
        {"forced": 0.9, "error": 0.02},
    ),
    Claim(
        "study_procedure",
        f"The study's procedure (bisection, tolerance 0, bfloat16) finds {study_band_pct()} of d "
        "on these models too",
        _STUDY_RUN,
        f"the study's range {study_band_text()}",
        "the study's bisection (tolerance 0) run for real in bfloat16 on the exact stage's "
        "texts as sampled (64 new tokens). Holds if the 95% bootstrap interval of its "
        "median k/d lies inside the study's {band[0]:g}-{band[1]:g}; 'differs' if it lies "
        "entirely outside; 'marginal' otherwise.",
        partial(_study_procedure, cond="full"),
    ),
    Claim(
        "study_procedure_scaled",
        "... and on texts cut to the study's new tokens per residual dimension",
        _STUDY_RUN,
        f"the study's range {study_band_text()}",
        "as 'study_procedure', on the same texts with the continuation cut to the study's "
        "new tokens per residual dimension ({new_tokens} x d / {study_d}: {scaled[576]} "
        "tokens on d = 576, {scaled[640]} on d = 640). A 'holds' here with a 'differs' "
        "above says the difference is the text's length per dimension, not the model's "
        "size.",
        partial(_study_procedure, cond="scaled"),
    ),
    Claim(
        "span_of_writes",
        "The stable minimal subspace is the span of the writes, min(2 x layers x tokens, d)",
        f"not measured; its one known text had {STUDY_WRITES_PER_DIM:.2f} writes per "
        f"dimension ({STUDY_WRITES} writes on d = {STUDY_D_MODEL}): predicted stable k/d "
        f"~{min(1.0, STUDY_WRITES_PER_DIM):.2f} there (docs/text_length.md)",
        "min(n_writes, d) / d (the span of the writes)",
        "issue 27 (not a claim of the study): for every text and length run (the exact "
        "stage's texts as sampled and cut to {lengths} and the study's new tokens per "
        "dimension; replicate --exact-with text_length), the stable minimal k (the "
        "smallest k from which every larger k reaches the unclipped log-probability within "
        "the tolerance) against the span of the writes, min(n_writes, d) / d with n_writes "
        "= 2 x layers x tokens. Holds if at least {holds_share:.0%} of the (text, length) "
        "rows are within {within:g} of d of it; 'differs' if fewer than "
        "{differs_share:.0%} are; 'marginal' otherwise; 'can't tell' when not run.",
        _span_of_writes,
        {
            "lengths": ", ".join(x for x in TEXT_LENGTH_LABELS if x.isdigit()),
            "holds_share": 0.9,
            "within": 0.02,
            "differs_share": 0.5,
        },
    ),
    Claim(
        "mean_ablation",
        "Zeroing bias-like components is why ~all of d is needed: a mean-fill clip needs far "
        "fewer directions",
        _NOT_STUDY,
        "the study's zero clip on the same texts (paired)",
        "issue 17 (not a claim of the study): exact minimal k (float32) under the "
        "mean-fill clip (removed directions set to the text's mean write of that layer and "
        "kind) minus the study's zero clip, paired over the texts of the extension stage. "
        "Holds (the need for ~all of d comes from zeroing bias-like components) if the 95% "
        "bootstrap interval of the median difference lies below -{fewer:g} (at least "
        "{fewer:.0%} of d fewer); 'differs' if it lies above -{fewer:g}; 'marginal' "
        "otherwise.",
        partial(_clip_variant, variant="mean_text"),
        _FEWER,
    ),
    Claim(
        "bos_unclipped",
        "The BOS position is why ~all of d is needed: leaving its writes unclipped needs far "
        "fewer directions",
        _NOT_STUDY,
        "the study's zero clip on the same texts (paired)",
        "as 'mean_ablation', for the clip with the BOS position's writes left unclipped "
        "minus the zero clip: holds if the interval lies below -{fewer:g}, 'differs' if "
        "above, 'marginal' otherwise.",
        partial(_clip_variant, variant="keep_bos"),
        _FEWER,
    ),
    Claim(
        "layers_needed",
        "The directions are needed throughout the network: clipping any one third of the layers "
        f"needs > {_LAYERS_NEEDED['needed']:.0%} of d",
        _NOT_STUDY,
        "a fixed fraction of d",
        "issue 17: exact minimal k/d when only one third of the layers is clipped. Holds "
        "(the directions are needed throughout the network) if for every third the 95% "
        "bootstrap interval of the median lies at or above {needed:g}; 'differs' if for "
        "some third it lies below {needed:g}; 'marginal' otherwise.",
        _layers_needed,
        _LAYERS_NEEDED,
    ),
    Claim(
        "hessian_order",
        "Ranking directions by second-order (Hessian) structure reaches the target with fewer "
        "directions",
        "proposed as future work, not run",
        "the SVD order on the same texts (paired)",
        "the study's open idea (issue 17): exact minimal k of the order by the "
        "second-order estimate g_i - H_ii/2 minus the SVD order's, paired. Holds (the "
        "Hessian order needs fewer directions) if the 95% bootstrap interval of the median "
        "difference lies below -{margin_dirs:g}/d; 'differs' if it lies above "
        "+{margin_dirs:g}/d (needs more); 'marginal' if an end is within {margin_dirs:g}/d "
        "of 0; 'can't tell' when not run (replicate --exact-with hessian_ranking).",
        _hessian_order,
        _MARGIN,
    ),
    Claim(
        "generation",
        "The clipped model still generates text: on topic but degraded",
        "vaguely on topic, degraded",
        "the unclipped model's own samples (0 nats/token)",
        "'can't tell' when the minimal subspace is >= {nearly_all:.0%} of d (the clipped "
        "model is nearly the model); else holds if the median degradation is > 0 "
        "nats/token (degraded) and below {unusable:g} nats/token; 'differs' if it is >= "
        "{unusable:g} nats/token (not usable text).",
        _generation,
        {"nearly_all": 0.95, "unusable": 2},
    ),
)
CLAIM = {c.key: c for c in CLAIMS}
# The rule behind every verdict, printed beside the table (derived: each claim holds its own).
RULES = {c.key: c.rule for c in CLAIMS}


def claims(m: pd.DataFrame, pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The replication table for one model: one row per claim of ``CLAIMS`` (claim, study, ours,
    null, verdict, texts, rule)."""
    t = Tables.of(m, pairs)
    return pd.DataFrame([c.row(t) for c in CLAIMS])


# --- the replication over models: one command regenerates docs/results -----------------------

MODEL_LABELS = {"smollm2-135m": "SmolLM2-135M", "gemma-3-270m": "Gemma-3-270M"}


def combined_table(per_model: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Claim x model: the study's number, ours per model, and each model's verdict."""
    first = next(iter(per_model.values()))
    out = first[["key", "claim", "study (Llama-3-8B)"]].copy()
    verdicts = []
    for name, table in per_model.items():
        label = MODEL_LABELS.get(name, name)
        t = table.set_index("key")
        out[label] = [
            f"{t.loc[k, 'ours']} (null: {t.loc[k, 'null']})"
            if t.loc[k, "null"]
            else t.loc[k, "ours"]
            for k in out.key
        ]
        verdicts.append((label, t.verdict))
    out["verdict"] = ["; ".join(f"{label}: {v.loc[k]}" for label, v in verdicts) for k in out.key]
    return out
