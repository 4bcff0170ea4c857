"""The replication table: the study's claims, one row each, judged over many texts.

A reproduction output folder (``reproduce``: one folder per text, each with its experiments) is
read back into one tidy row per text (``text_metrics``) and one row per subspace pair
(``overlap_pairs``); ``claims`` turns them into the table: for every claim the study's number,
ours as a median [interquartile range] over texts, its null, and a verdict by a rule written
next to it (``RULES``). A claim "holds" only where it beats its null by more than the spread.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

STUDY_MIN_K_FRAC = (0.46, 0.81)  # 1886..3329 of 4096

# The rule behind every verdict, printed beside the table.
RULES = {
    "dominant": "holds if the lower quartile of s2/s3 is >= 2 (two directions at least twice the third) and above "
                "the Gaussian null; 'differs' if its upper quartile is < 2 (then: how many are dominant).",
    "chaotic": "roughness = median |logp(k+1) - logp(k)| over 8 adjacent pairs in a region, divided by what a "
               "smooth monotone curve with the region's net rise changes per unit k (null: about 1, a steep slope "
               "is not chaos). Holds if the lower quartile over texts of roughness below 10% of d is > 3 and of "
               "jitter(k < 10% of d) / jitter(k > 50% of d) is > 2 (calmer at large k); 'differs' if the upper "
               "quartile of roughness below 10% of d is <= 3 (a slope, not chaos) or the lower quartile of the "
               "jitter ratio is <= 1 (no calmer at large k in a quarter of the texts).",
    "converging": "holds if the upper quartile of k_converged/d is < 0.9 and the paired difference random basis - "
                  "SVD basis has a 95% bootstrap interval above 0; 'differs' if the median is >= 0.9.",
    "orig_delta": "holds if, in the lower quartile of texts, max orig_delta exceeds the unclipped one and orig_delta at "
                  "k <= d/64 is below it (upper quartile < 1); 'differs' if the upper quartile of max orig_delta / "
                  "unclipped is <= 1 (never larger) or the lower quartile at k <= d/64 is >= 1 (not small at low k "
                  "in three quarters of the texts).",
    "importance": "exact ablations of every direction only (texts of the exact stage). Holds if the lower quartile "
                  "of Spearman(s, importance) is above the median over texts of the permutation null's 97.5% point "
                  "(importances shuffled over directions) and its upper quartile is below 0.9; 'differs' if that "
                  "lower quartile is at or below the null's point (not correlated in a quarter of the texts) or the "
                  "upper quartile is >= 0.99 (no clear deviations); 'can't tell' without exact texts.",
    "importance_order": "exact importances and exact minimal k (every k scanned near the target) only. Holds if the "
                        "95% bootstrap interval of the paired difference min_k(importance) - min_k(SVD) lies above "
                        "+margin (importance order needs more directions); 'differs' if it lies below -margin; "
                        "'marginal' if an end lies within the margin of 0 (margin: 1 direction, 1/d).",
    "compromise_order": "exact importances and exact minimal k only. Holds if the upper end of the 95% interval of "
                        "min_k(compromise) - min_k(SVD) is above -0.05 + margin (not much better); 'differs' if it "
                        "is below -0.05 - margin; 'marginal' within the margin (1 direction, 1/d).",
    "minimal_k": "holds if the interquartile range of min_k/d overlaps the study's 0.46-0.81 and the SVD basis beats a "
                 "random basis (the median over the text's independent Haar draws; 95% interval of the paired "
                 "difference above 0); 'differs' if the lower quartile "
                 "is > 0.81 + margin; 'marginal' if it is within the margin of 0.81 (margin: the median |grid - "
                 "exact| min_k/d over the exact stage's texts, when the numbers come from the grid search).",
    "overlap": "'can't tell' when the subspaces cover >= 90% of d on average (any subspaces that large overlap as "
               "predicted); else holds if the median |relative error| is <= 2%, 'differs' if it is > 2%.",
    "generation": "'can't tell' when the minimal subspace is >= 95% of d (the clipped model is nearly the model); "
                  "else holds if the median degradation is > 0 nats/token (degraded) and below 2 nats/token; "
                  "'differs' if it is >= 2 nats/token (not usable text).",
    "attention_only": "as 'dominant', on attention-only writes (the study's first, accidental run).",
    "study_procedure": "the study's bisection (tolerance 0) run for real in bfloat16 on the exact stage's texts as "
                       "sampled (64 new tokens). Holds if the 95% bootstrap interval of its median k/d lies inside "
                       "the study's 0.46-0.81; 'differs' if it lies entirely outside; 'marginal' otherwise.",
    "study_procedure_scaled": "as 'study_procedure', on the same texts with the continuation cut to the study's new "
                              "tokens per residual dimension (64 x d / 4096: 9 tokens on d = 576, 10 on d = 640). A "
                              "'holds' here with a 'differs' above says the difference is the text's length per "
                              "dimension, not the model's size.",
    "mean_ablation": "issue 17 (not a claim of the study): exact minimal k (float32) under the mean-fill clip (removed "
                     "directions set to the text's mean write of that layer and kind) minus the study's zero clip, "
                     "paired over the texts of the extension stage. Holds (the need for ~all of d comes from zeroing "
                     "bias-like components) if the 95% bootstrap interval of the median difference lies below -0.05 "
                     "(at least 5% of d fewer); 'differs' if it lies above -0.05; 'marginal' otherwise.",
    "bos_unclipped": "as 'mean_ablation', for the clip with the BOS position's writes left unclipped minus the zero "
                     "clip: holds if the interval lies below -0.05, 'differs' if above, 'marginal' otherwise.",
    "layers_needed": "issue 17: exact minimal k/d when only one third of the layers is clipped. Holds (the directions "
                     "are needed throughout the network) if for every third the 95% bootstrap interval of the median "
                     "lies at or above 0.9; 'differs' if for some third it lies below 0.9; 'marginal' otherwise.",
    "span_of_writes": "issue 27 (not a claim of the study): for every text and length run (the exact stage's texts "
                      "as sampled and cut to 2, 8, 32 and the study's new tokens per dimension; "
                      "replicate --exact-with text_length), the stable minimal k (the smallest k from which every "
                      "larger k reaches the unclipped log-probability within the tolerance) against the span of the "
                      "writes, min(n_writes, d) / d with n_writes = 2 x layers x tokens. Holds if at least 90% of the "
                      "(text, length) rows are within 0.02 of d of it; 'differs' if fewer than 50% are; 'marginal' "
                      "otherwise; 'can't tell' when not run.",
    "hessian_order": "the study's open idea (issue 17): exact minimal k of the order by the second-order estimate "
                     "g_i - H_ii/2 minus the SVD order's, paired. Holds (the Hessian order needs fewer directions) if "
                     "the 95% bootstrap interval of the median difference lies below -1/d; 'differs' if it lies above "
                     "+1/d (needs more); 'marginal' if an end is within 1/d of 0; 'can't tell' when not run "
                     "(replicate --exact-with hessian_ranking).",
}


def gather(run: Path, pattern: str, **read: object) -> pd.DataFrame | None:
    """Every text's ``<run>/<text>/<pattern>`` CSV in one table with a ``text`` column (None if none)."""
    frames = [pd.read_csv(p, **read).assign(text=p.parent.parent.name) for p in sorted(run.glob(f"*/{pattern}"))]
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


def bootstrap_median_ci(x: np.ndarray, *, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
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
    """(s1/s3, s2/s3) of an n x d Gaussian matrix: what a spectrum with no dominant direction gives."""
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
        mk = pd.read_csv(ms_dir / "minimal_k.csv")
        sens = pd.read_csv(ms_dir / "sensitivity.csv")
        gen_path = d_text / "clipped_generation" / "settings.json"
        gen = _load(gen_path)["summary"] if gen_path.exists() else {}
        d = int(ms_meta["model"]["d_model"])
        first = mk[mk.method == "first_crossing"].set_index("ordering").k_frac
        conv = mk[mk.method == "converged"].set_index("ordering").k_frac
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
        for variant, tag in (("attn+mlp", ""), ("attn", "attn_"), ("mlp", "mlp_"), ("attn+mlp/no_bos", "nobos_")):
            if variant in spec.index:
                v = spec.loc[variant]
                row.update({f"{tag}s1_s3": float(v.s1_over_s3), f"{tag}s2_s3": float(v.s2_over_s3),
                            f"{tag}n90_frac": float(v.n90_frac), f"{tag}n_writes": int(v.n_writes)})
        row.update({k: clip.get(k, float("nan")) for k in ("roughness_low", "roughness_mid", "roughness_high")})
        row.update({k: clip[k] for k in ("jitter_low", "jitter_mid", "jitter_high", "k_converged_frac",
                                         "max_orig_delta_over_unclipped", "low_k_orig_delta_over_unclipped")})
        row["est_spearman_sv_importance"] = single["spearman_sv_importance"]  # screened estimate (default mode)
        row["importance_exact_fraction"] = single["n_exact"] / max(single["n_directions"], 1)
        for ordering, frac in first.items():
            row[f"min_k_frac[{ordering.split('_rank')[0]}]"] = float(frac)
        for ordering, frac in conv.items():
            row[f"k_converged_frac[{ordering.split('_rank')[0]}]"] = float(frac)
        # the random-basis null: the median over this text's independent draws
        draws = [o for o in first.index if o.split("#")[0] == "random_basis"]
        row["random_draws"] = len(draws)
        if draws:
            row["min_k_frac[random_basis]"] = float(np.median([first[o] for o in draws]))
            row["k_converged_frac[random_basis]"] = float(np.median([conv[o] for o in draws]))
        for r in sens.itertuples():
            unit = "" if r.criterion == "total" else "/tok"
            row[f"min_k_frac[{r.ordering}]@{r.tolerance:g}{unit}"] = float(r.k_frac)
        row["gen_degradation"] = gen.get("degradation_nats_per_token", float("nan"))
        row["gen_k_frac"] = gen.get("k_frac", float("nan"))
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"{run_dir} holds no finished texts (no */minimal_subspace/settings.json)")
    m = pd.DataFrame(rows)
    for extra in (exact_metrics(run_dir), study_procedure_metrics(run_dir), extension_metrics(run_dir),
                  text_length_metrics(run_dir)):
        if len(extra):
            m = m.merge(extra, on="text", how="left")
    return m


EXACT_ORDERINGS = {"singular_value": "singular_value", "importance": "importance",
                   "compromise_rank_product": "compromise"}


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
        row = {"text": folder.parent.name, "exact_spearman_sv_importance": summary["spearman_sv_importance"],
               "exact_perm_q975": summary["null_q975"], "exact_perm_p": summary["p_one_sided"],
               "exact_tolerance": meta["effective_tolerance"],
               "exact_importance_noise_floor": summary.get("importance_noise_floor", float("nan")),
               "exact_n_within_noise_floor": summary.get("n_within_noise_floor", -1),
               "exact_spearman_above_noise_floor": summary.get("spearman_above_noise_floor", float("nan"))}
        for method, tag in (("exact_scan", "exact_min_k_frac"), ("bisection", "exact_bisection_k_frac"),
                            ("grid_first_crossing", "exact_grid_k_frac"), ("stable", "exact_stable_k_frac")):
            for ordering, short in EXACT_ORDERINGS.items():
                row[f"{tag}[{short}]"] = summary[f"{method}_k_frac[{ordering}]"]
        for est in ("first_order", "first_plus_half_fisher", "screened_default"):
            row[f"exact_{est}_spearman"] = summary[f"{est}_spearman"]
            row[f"exact_{est}_top10_recall"] = summary[f"{est}_top10_recall"]
        rows.append(row)
    return pd.DataFrame(rows)


def finished_summaries(run_dir: str | Path, experiment: str) -> list[tuple[str, dict[str, Any]]]:
    """(text id, summary) of every finished ``<text>/<experiment>`` folder (settings.json written)."""
    return [(folder.parent.name, _load(folder / "settings.json")["summary"])
            for folder in sorted(Path(run_dir).glob(f"*/{experiment}")) if (folder / "settings.json").exists()]


def study_procedure_metrics(run_dir: str | Path) -> pd.DataFrame:
    """One row per text with a ``*/study_procedure`` result (experiments.study_procedure): minimal
    k / d by the exact scan (float32), the study's bisection in float32 and in bfloat16, at full
    and scaled length, and the scaled text's size. Columns are prefixed ``sp_``."""
    rows = []
    for text, s in finished_summaries(run_dir, "study_procedure"):
        row = {"text": text}
        for cond in ("full", "scaled"):
            for key, tag in (("exact_scan:float32", "exact"), ("study_bisection:float32", "bisection_f32"),
                             ("study_bisection:bfloat16", "bisection_bf16")):
                row[f"sp_{tag}[{cond}]"] = s.get(f"k_frac[{cond}:{key}]", float("nan"))
            row[f"sp_n_continuation_tokens[{cond}]"] = s.get(f"n_continuation_tokens[{cond}]", float("nan"))
            row[f"sp_tokens_per_dim[{cond}]"] = s.get(f"tokens_per_dim[{cond}]", float("nan"))
            row[f"sp_gap90[{cond}]"] = s.get(f"gap90_k_frac[{cond}]", float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


TEXT_LENGTH_COLUMNS = ("first_k_frac", "stable_k_frac", "converged_k_frac", "frac_fail_above_first", "span_frac",
                       "rank_frac", "writes_per_dim", "tokens_per_dim", "bisection_k_frac", "n_continuation_tokens",
                       "noise_floor")
TEXT_LENGTH_LABELS = ("2", "8", "scaled", "32", "full")  # the lengths replicate/extend run (experiments.text_length)


def text_length_metrics(run_dir: str | Path) -> pd.DataFrame:
    """One row per text with a ``*/text_length`` result: ``tl_<column>[<length>]`` for each length
    run (``2``, ``8``, ``32``, ``scaled``: the study's new tokens per dimension, ``full``: as sampled)."""
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
                rows.append({"text": r["text"], "length": label,
                             **{c: r[f"tl_{c}[{label}]"] for c in TEXT_LENGTH_COLUMNS}})
    return pd.DataFrame(rows)


CLIP_VARIANT_COLUMNS = ("zero", "mean_text", "mean_corpus", "keep_bos", "keep_first_4", "layers_early",
                        "layers_middle", "layers_late", "attn_only", "mlp_only")
HESSIAN_ORDERINGS = ("singular_value", "exact_importance", "hessian", "hessian_eigen_loading", "first_order",
                     "fisher_second_order")
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
# docs/results/<model>/exact_estimators.csv): median Spearman and top-10 recall. Shown beside any
# number a run computed from estimates, so a report without exact ablations says how far to trust it.
ESTIMATOR_ACCURACY = {
    "smollm2-135m": "Spearman 0.76 [0.69, 0.82], top-10 recall 0.6 (8 texts)",
    "gemma-3-270m": "Spearman 0.91 [0.89, 0.92], top-10 recall 0.4 (8 texts)",
}


def _estimator_note(model: str) -> str:
    acc = ESTIMATOR_ACCURACY.get(model)
    measured = acc or "not measured on this model"
    return f"the screened estimator against exact ablations: {measured}; replicate --exact-texts N for exact ones"


def _verdict(holds: bool, differs: bool) -> str:
    return "holds" if holds else "differs" if differs else "can't tell"


def claims(m: pd.DataFrame, pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The replication table for one model: claim, study, ours, null, verdict, rule."""
    d = int(m.d_model.iloc[0])
    rows = []

    def add(key: str, claim: str, study: str, ours: str, null: str, verdict: str, n: int | None = None) -> None:
        rows.append({"key": key, "claim": claim, "study (Llama-3-8B)": study, "ours": ours, "null": null,
                     "verdict": verdict, "n_texts": len(m) if n is None else n, "rule": RULES[key]})

    for key, tag, label in (("dominant", "", "attention + MLP writes"), ("attention_only", "attn_", "attention-only writes")):
        null = gaussian_spectrum_null(int(m[f"{tag}n_writes"].median()), d)
        s13, s23 = m[f"{tag}s1_s3"], m[f"{tag}s2_s3"]
        _, q1, q3 = _median_iqr(s23)
        holds = q1 >= 2 and q1 > null[1]
        differs = q3 < 2
        v = _verdict(holds, differs)
        if differs:
            v += " (one dominant direction)" if _median_iqr(s13)[1] >= 2 else " (none dominant)"
        add(key, f"Two directions far larger than all others ({label})", "two dominant singular values",
            f"s1/s3 {fmt(s13, 1)}; s2/s3 {fmt(s23, 1)}", f"Gaussian matrix: s1/s3 {null[0]:.2f}, s2/s3 {null[1]:.2f}", v)

    ratio = m.jitter_low / m.jitter_high
    _, q1, _ = _median_iqr(ratio)
    rough = m.roughness_low if "roughness_low" in m else pd.Series(np.nan, index=m.index)
    _, r1, r3 = _median_iqr(rough)
    if np.isfinite(r1):
        v = _verdict(r1 > 3 and q1 > 2, r3 <= 3 or q1 <= 1)
        rough_txt = (f"; roughness (jitter / a smooth curve's step) {fmt(rough, 1)} below 10% of d, "
                     f"{fmt(m.roughness_mid, 1)} at 10-50%, {fmt(m.roughness_high, 1)} above 50%")
    else:  # a run from before the roughness measure: it cannot tell chaos from a steep slope
        v, rough_txt = "can't tell (no roughness measure in this run)", ""
    add("chaotic", "Clipping curve chaotic at small k, calmer at large k",
        "chaotic for k < ~300 (7% of d), stable after",
        f"|logp(k+1) - logp(k)|: {fmt(m.jitter_low, 1)} nats below 10% of d, {fmt(m.jitter_mid, 1)} at 10-50%, "
        f"{fmt(m.jitter_high, 2)} above 50%{rough_txt}", "roughness 1 (a smooth monotone curve of the same rise)", v)

    kc = m.k_converged_frac
    diff = m["k_converged_frac[random_basis]"] - m["k_converged_frac[singular_value]"]
    med, lo, hi = bootstrap_median_ci(diff)
    _, _, q3 = _median_iqr(kc)
    add("converging", "Clipping curve converges (within 1 nat of unclipped) well before k = d",
        "converged by k ~ 1500-2000 of 4096 (37-49%)", f"k_converged/d {fmt(kc)}",
        f"random basis: {fmt(m['k_converged_frac[random_basis]'])}; random - SVD {med:+.3f} [{lo:+.3f}, {hi:+.3f}]",
        _verdict(q3 < 0.9 and lo > 0, _median_iqr(kc)[0] >= 0.9))

    _, q1_max, q3_max = _median_iqr(m.max_orig_delta_over_unclipped)
    _, q1_low, q3_low = _median_iqr(m.low_k_orig_delta_over_unclipped)
    add("orig_delta", "Attempted writes (orig_delta) small at low k, larger than unclipped mid-range",
        "small at low k, exploding mid-range, back down when the loss recovers",
        f"max orig_delta / unclipped {fmt(m.max_orig_delta_over_unclipped, 1)}; at k <= d/64 "
        f"{fmt(m.low_k_orig_delta_over_unclipped, 2)}", "1 (the unclipped model's norm)",
        _verdict(q1_max > 1 and q3_low < 1, q3_max <= 1 or q1_low >= 1))

    # --- claims built on importances: exact ablations only (the exact stage's texts) -------------
    ex = m[m["exact_spearman_sv_importance"].notna()] if "exact_spearman_sv_importance" in m else m.iloc[:0]
    n_ex = len(ex)
    if n_ex:
        rho = ex.exact_spearman_sv_importance
        _, q1, q3 = _median_iqr(rho)
        crit = float(ex.exact_perm_q975.median())
        est = (f"; default mode's screened estimate ranks the exact importances at Spearman "
               f"{fmt(ex.exact_screened_default_spearman)}, top-10 recall {fmt(ex.exact_screened_default_top10_recall)}")
        add("importance", "Single-direction importance correlates with singular value, with clear deviations",
            "correlated, clear deviations", f"Spearman(s, exact importance) {fmt(rho)}{est}",
            f"permutation (importances shuffled over directions, 10,000 per text): 97.5% point {crit:.3f}",
            _verdict(q1 > crit and q3 < 0.9, q1 <= crit or q3 >= 0.99), n=n_ex)
    else:
        add("importance", "Single-direction importance correlates with singular value, with clear deviations",
            "correlated, clear deviations",
            f"ESTIMATE only: Spearman(s, screened importance) {fmt(m.est_spearman_sv_importance)} "
            f"({_estimator_note(str(m.model.iloc[0]))})" if "est_spearman_sv_importance" in m
            else "n/a: no exact ablations (replicate --exact-texts N)", "",
            "can't tell (estimates only)", n=0)
    margin = 1.0 / d
    for key, col, claim, study in (
        ("importance_order", "importance", "Importance order reaches the unclipped log-probability more slowly than "
         "SVD order", "much more slowly"),
        ("compromise_order", "compromise", "Compromise order (size and importance) not much better than SVD order",
         "did not work much better"),
    ):
        if not n_ex:
            col_est = f"min_k_frac[{col}]"
            ours = (f"ESTIMATE only (orders from screened importances): min_k/d {fmt(m[col_est])}, minus SVD "
                    f"order's {fmt(m[col_est] - m['min_k_frac[singular_value]'], 3)} "
                    f"({_estimator_note(str(m.model.iloc[0]))})") if col_est in m else \
                "n/a: no exact ablations (replicate --exact-texts N)"
            add(key, claim, study, ours, "", "can't tell (estimates only)", n=0)
            continue
        diff = ex[f"exact_min_k_frac[{col}]"] - ex["exact_min_k_frac[singular_value]"]
        med, lo, hi = bootstrap_median_ci(diff)
        if key == "importance_order":
            v = "holds" if lo > margin else "differs" if hi < -margin else (
                "marginal" if min(abs(lo), abs(hi)) <= margin else "can't tell")
        else:
            v = "holds" if hi > -0.05 + margin else "differs" if hi < -0.05 - margin else "marginal"
        bis = ex[f"exact_bisection_k_frac[{col}]"] - ex["exact_bisection_k_frac[singular_value]"]
        b_med, b_q1, b_q3 = _median_iqr(bis)
        add(key, claim, study, f"exact min_k/d {fmt(ex[f'exact_min_k_frac[{col}]'])}; minus SVD order's: {med:+.3f} "
            f"[{lo:+.3f}, {hi:+.3f}] (95% CI of the median); by the study's bisection: {b_med:+.3f} "
            f"[IQR {b_q1:+.3f}, {b_q3:+.3f}]",
            f"SVD order (exact): {fmt(ex['exact_min_k_frac[singular_value]'])}", v, n=n_ex)
    mk = m["min_k_frac[singular_value]"]
    diff = m["min_k_frac[random_basis]"] - mk
    med, lo, hi = bootstrap_median_ci(diff)
    _, q1, q3 = _median_iqr(mk)
    overlaps_study = q1 <= STUDY_MIN_K_FRAC[1] and q3 >= STUDY_MIN_K_FRAC[0]
    method_err, exact_note = 0.0, ""
    if n_ex:  # the grid search's own error, measured on the exact stage's texts
        err = (ex["min_k_frac[singular_value]"] - ex["exact_min_k_frac[singular_value]"]).abs()
        method_err = float(err.median())
        exact_note = (f"; exact (every k near the target) on {n_ex} texts {fmt(ex['exact_min_k_frac[singular_value]'])}, "
                      f"study's bisection {fmt(ex['exact_bisection_k_frac[singular_value]'])}, grid minus exact "
                      f"median {method_err:.3f}")
    v = _verdict(overlaps_study and lo > 0, q1 > STUDY_MIN_K_FRAC[1] + method_err)
    if not overlaps_study and abs(q1 - STUDY_MIN_K_FRAC[1]) <= method_err:
        v = "marginal"
    add("minimal_k", "Minimal subspace reaching the unclipped log-probability is a large fraction of d",
        "46%, 81%, 66%, 61% of d", f"min_k/d {fmt(mk)} (tolerance {fmt(m.tolerance, 5)} nats){exact_note}",
        f"random basis: {fmt(m['min_k_frac[random_basis]'])}; random - SVD {med:+.3f} [{lo:+.3f}, {hi:+.3f}]", v)

    if pairs is not None and len(pairs):
        rel = pairs.rel_err_analytic.abs()
        kfrac = float(np.mean(np.r_[pairs.k_a, pairs.k_b]) / d)
        forced = kfrac >= 0.9
        add("overlap", "Pairwise overlap of two texts' minimal subspaces = k_i k_j / d (random subsets) to ~1%",
            "about 1% error", f"|relative error| {fmt(rel, 4, pct=True)}; z {fmt(pairs.z_analytic, 1)} "
            f"({len(pairs)} pairs; subspaces {kfrac:.0%} of d on average)",
            "analytic k_i k_j / d; Monte Carlo and spectrum-matched in the pair table",
            "can't tell (forced: subspaces this large overlap as predicted whatever they are)" if forced
            else _verdict(_median_iqr(rel)[0] <= 0.02, _median_iqr(rel)[0] > 0.02))
    else:
        add("overlap", "Pairwise overlap of two texts' minimal subspaces = k_i k_j / d (random subsets) to ~1%",
            "about 1% error", "n/a (fewer than two texts)", "", "can't tell")

    for key, cond, claim in (
        ("study_procedure", "full", "The study's procedure (bisection, tolerance 0, bfloat16) finds 46-81% of d on "
         "these models too"),
        ("study_procedure_scaled", "scaled", "... and on texts cut to the study's new tokens per residual dimension"),
    ):
        col = f"sp_bisection_bf16[{cond}]"
        sp = m[m[col].notna()] if col in m else m.iloc[:0]
        if not len(sp):
            add(key, claim, "46%, 81%, 66%, 61% of d (4 texts)", "n/a: not run (replicate --exact-with study_procedure)",
                "", "can't tell", n=0)
            continue
        med, lo, hi = bootstrap_median_ci(sp[col].to_numpy())
        inside = lo >= STUDY_MIN_K_FRAC[0] and hi <= STUDY_MIN_K_FRAC[1]
        outside = hi < STUDY_MIN_K_FRAC[0] or lo > STUDY_MIN_K_FRAC[1]
        n_in = int(((sp[col] >= STUDY_MIN_K_FRAC[0]) & (sp[col] <= STUDY_MIN_K_FRAC[1])).sum())
        def get(name: str) -> pd.Series:
            return sp.get(f"sp_{name}[{cond}]", pd.Series(np.nan, index=sp.index))

        size = f"{fmt(get('n_continuation_tokens'), 0)} new tokens, {fmt(get('tokens_per_dim'), 3)} tokens per dimension"
        tl = "full" if cond == "full" else "scaled"
        if f"tl_stable_k_frac[{tl}]" in sp and sp[f"tl_stable_k_frac[{tl}]"].notna().any():
            size += (f", {fmt(sp[f'tl_writes_per_dim[{tl}]'], 2)} writes per dimension (span "
                     f"{fmt(sp[f'tl_span_frac[{tl}]'], 3)} of d); stable crossing {fmt(sp[f'tl_stable_k_frac[{tl}]'], 3)}, "
                     f"first {fmt(sp[f'tl_first_k_frac[{tl}]'], 3)}, within 1 nat for good from "
                     f"{fmt(sp[f'tl_converged_k_frac[{tl}]'], 3)} (text_length, tolerance with noise across k)")
        add(key, claim, "46%, 81%, 66%, 61% of d (4 texts; 71 tokens on d = 4096 in the one reported: 0.017 per "
            "dimension)",
            f"bfloat16 bisection k/d {fmt(sp[col])}, median {med:.2f} [{lo:.2f}, {hi:.2f}] (95% CI); {n_in} of "
            f"{len(sp)} texts inside 46-81%; float32 bisection {fmt(get('bisection_f32'))}; exact (every k near the "
            f"target, float32) {fmt(get('exact'))}; texts: {size}",
            "the study's range 0.46-0.81", "holds" if inside else "differs" if outside else "marginal", n=len(sp))

    _span_claim(m, add)
    _extension_claims(m, add, d)

    gk = m.gen_k_frac
    deg = m.gen_degradation
    near_all = _median_iqr(gk)[0] >= 0.95
    add("generation", "The clipped model still generates text: on topic but degraded",
        "vaguely on topic, degraded", f"log p under the unclipped model, clipped minus unclipped samples: "
        f"{fmt(-deg, 2)} nats/token at k/d {fmt(gk)}", "0 (the unclipped model's own samples)",
        "can't tell (k is nearly d)" if near_all else _verdict(0 < _median_iqr(deg)[0] < 2, _median_iqr(deg)[0] >= 2),
        n=int(deg.notna().sum()))
    return pd.DataFrame(rows)


def _span_claim(m: pd.DataFrame, add: Any) -> None:
    """Issue 27's row: the stable minimal subspace against the span of the writes, min(2LT, d)."""
    claim = "The stable minimal subspace is the span of the writes, min(2 x layers x tokens, d)"
    study = ("not measured; its one known text had 1.11 writes per dimension (4544 writes on d = 4096): "
             "predicted stable k/d ~1.00 there (docs/text_length.md)")
    t = text_length_rows(m)
    if not len(t):
        add("span_of_writes", claim, study, "n/a: not run (replicate --exact-with text_length)", "", "can't tell", n=0)
        return
    dev = t.stable_k_frac - t.span_frac
    share = float((dev.abs() <= 0.02).mean())
    full, cut = t[t.length == "full"], t[t.length != "full"]
    limited = t[t.span_frac < 1]
    below = int((limited.stable_k_frac <= limited.span_frac + 1e-12).sum())
    n_texts = t.text.nunique()
    ours = (f"stable k/d minus span {fmt(dev, 3)}; within 0.02 of d on {int((dev.abs() <= 0.02).sum())} of {len(t)} "
            f"(text, length) rows ({n_texts} texts); as sampled: stable {fmt(full.stable_k_frac, 3)}, span "
            f"{fmt(full.span_frac, 3)} ({fmt(full.writes_per_dim, 2)} writes/dim); cut (2-32 tokens): stable "
            f"{fmt(cut.stable_k_frac, 3)}, span {fmt(cut.span_frac, 3)}; {len(limited)} rows with fewer writes "
            f"than d, stable <= span on {below}; first crossing {fmt(t.first_k_frac, 3)}, share of k above it "
            f"failing again {fmt(t.frac_fail_above_first)}, within 1 nat for good from {fmt(t.converged_k_frac, 3)}")
    v = "holds" if share >= 0.9 else "differs" if share < 0.5 else "marginal"
    add("span_of_writes", claim, study, ours, "min(n_writes, d) / d (the span of the writes)", v, n=n_texts)


def _extension_claims(m: pd.DataFrame, add: Any, d: int) -> None:
    """Issue 17's rows (not claims of the study): why the model needs ~all of d."""
    not_study = "not tested in the study"
    zero = "cv_min_k_frac[zero]"
    cv = m[m[zero].notna()] if zero in m else m.iloc[:0]
    for key, variant, claim in (
        ("mean_ablation", "mean_text", "Zeroing bias-like components is why ~all of d is needed: a mean-fill clip "
         "needs far fewer directions"),
        ("bos_unclipped", "keep_bos", "The BOS position is why ~all of d is needed: leaving its writes unclipped needs "
         "far fewer directions"),
    ):
        col = f"cv_min_k_frac[{variant}]"
        if not len(cv) or col not in cv:
            add(key, claim, not_study, "n/a: not run (replicate --exact-with clip_variants)", "", "can't tell", n=0)
            continue
        diff = cv[col] - cv[zero]
        med, lo, hi = bootstrap_median_ci(diff.to_numpy())
        v = "holds" if hi < -0.05 else "differs" if lo > -0.05 else "marginal"
        add(key, claim, not_study, f"exact min_k/d {fmt(cv[col])} vs zero clip {fmt(cv[zero])}; difference {med:+.3f} "
            f"[{lo:+.3f}, {hi:+.3f}] (95% CI of the median); within 5 nats at k/d {fmt(cv[f'cv_within5[{variant}]'])} "
            f"vs {fmt(cv['cv_within5[zero]'])}", "the study's zero clip, same texts (-0.05: 5% of d fewer)", v,
            n=len(cv))
    claim = "The directions are needed throughout the network: clipping any one third of the layers needs > 90% of d"
    if not len(cv):
        add("layers_needed", claim, not_study, "n/a: not run (replicate --exact-with clip_variants)", "", "can't tell",
            n=0)
    else:
        parts, above, below = [], True, False
        for third in ("early", "middle", "late"):
            x = cv[f"cv_min_k_frac[layers_{third}]"].to_numpy()
            med, lo, hi = bootstrap_median_ci(x)
            above &= lo >= 0.9
            below |= hi < 0.9
            parts.append(f"{third} {fmt(x)} (median CI [{lo:.2f}, {hi:.2f}])")
        kinds = f"; attention only {fmt(cv['cv_min_k_frac[attn_only]'])}, MLP only {fmt(cv['cv_min_k_frac[mlp_only]'])}"
        add("layers_needed", claim, not_study, "exact min_k/d with one third clipped: " + ", ".join(parts) + kinds,
            "0.9 of d", "holds" if above else "differs" if below else "marginal", n=len(cv))
    hcol = "hr_k_frac[hessian]"
    hr = m[m[hcol].notna()] if hcol in m else m.iloc[:0]
    claim = "Ranking directions by second-order (Hessian) structure reaches the target with fewer directions"
    study = "proposed as future work, not run"
    if not len(hr):
        add("hessian_order", claim, study, "n/a: not run (replicate --exact-with hessian_ranking)", "", "can't tell",
            n=0)
        return
    diff = hr[hcol] - hr["hr_k_frac[singular_value]"]
    med, lo, hi = bootstrap_median_ci(diff.to_numpy())
    margin = 1.0 / d
    v = "holds" if hi < -margin else "differs" if lo > margin else (
        "marginal" if min(abs(lo), abs(hi)) <= margin else "can't tell")
    # beside the SVD order (the rule's null): the study's other two orders on the same texts
    others = []
    for label, col in (("exact importance order", "hr_k_frac[exact_importance]"),
                       ("compromise order", "exact_min_k_frac[compromise]")):
        if col in hr and hr[col].notna().all():
            m2, lo2, hi2 = bootstrap_median_ci((hr[hcol] - hr[col]).to_numpy())
            others.append(f"Hessian minus {label} {m2:+.3f} [{lo2:+.3f}, {hi2:+.3f}]")
    add("hessian_order", claim, study,
        f"exact min_k/d by the Hessian order {fmt(hr[hcol])}, SVD order {fmt(hr['hr_k_frac[singular_value]'])}, exact "
        f"importance order {fmt(hr['hr_k_frac[exact_importance]'])}; Hessian minus SVD {med:+.3f} [{lo:+.3f}, {hi:+.3f}] "
        f"(95% CI of the median){''.join('; ' + o for o in others)}; Spearman with exact importances: Hessian "
        f"{fmt(hr['hr_spearman[hessian_second_order]'])}, "
        f"first order + Fisher/2 {fmt(hr['hr_spearman[fisher_second_order]'])}, first order "
        f"{fmt(hr['hr_spearman[first_order]'])}", "SVD order, same texts", v, n=len(hr))


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
        out[label] = [f"{t.loc[k, 'ours']} (null: {t.loc[k, 'null']})" if t.loc[k, "null"] else t.loc[k, "ours"]
                      for k in out.key]
        verdicts.append((label, t.verdict))
    out["verdict"] = ["; ".join(f"{label}: {v.loc[k]}" for label, v in verdicts) for k in out.key]
    return out
