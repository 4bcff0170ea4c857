"""The replication table itself: verdicts on synthetic per-text tables whose answer is known.

Each table has the columns ``text_metrics`` produces; a test sets the few that one claim reads
and checks the verdict that claim's rule gives. The importance claims must read only the exact
stage's columns: a table whose screened estimates say one thing and exact ablations another must
follow the exact ones, and one without exact ablations must say "can't tell".
"""

import numpy as np
import pandas as pd
import pytest

from experiments.exact_importance import spearman_permutation_null
from experiments.study.replication import (
    RULES,
    bootstrap_median_ci,
    claims,
    exact_metrics,
    text_metrics,
)

D = 576


def synthetic(
    n: int = 16, *, seed: int = 0, exact: bool = True, **cols: float | np.ndarray
) -> pd.DataFrame:
    """n texts with the columns the claims read; defaults describe the small models' usual answers
    (one dominant direction, min k ~ d), overridden by ``cols`` (scalars get a little spread)."""
    rng = np.random.default_rng(seed)
    base = {
        "s1_s3": 10.0,
        "s2_s3": 1.2,
        "attn_s1_s3": 3.0,
        "attn_s2_s3": 1.1,
        "n_writes": 4000,
        "attn_n_writes": 2000,
        "jitter_low": 5.0,
        "jitter_mid": 1.0,
        "jitter_high": 0.1,
        "k_converged_frac": 0.95,
        "roughness_low": 20.0,
        "roughness_mid": 5.0,
        "roughness_high": 2.0,
        "k_converged_frac[singular_value]": 0.95,
        "k_converged_frac[random_basis]": 0.99,
        "max_orig_delta_over_unclipped": 1.5,
        "low_k_orig_delta_over_unclipped": 0.5,
        "est_spearman_sv_importance": 0.95,
        "importance_exact_fraction": 0.07,
        "min_k_frac[singular_value]": 0.99,
        "min_k_frac[random_basis]": 1.0,
        "min_k_frac[importance]": 0.999,
        "min_k_frac[compromise]": 0.999,
        "tolerance": 1e-4,
        "gen_degradation": 0.1,
        "gen_k_frac": 0.99,
    }
    if exact:
        base.update(
            {
                "exact_spearman_sv_importance": 0.5,
                "exact_perm_q975": 2 / np.sqrt(D),
                "exact_perm_p": 1e-4,
                "exact_min_k_frac[singular_value]": 0.99,
                "exact_min_k_frac[importance]": 0.995,
                "exact_min_k_frac[compromise]": 0.99,
                "exact_bisection_k_frac[singular_value]": 0.99,
                "exact_bisection_k_frac[importance]": 0.995,
                "exact_bisection_k_frac[compromise]": 0.99,
                "exact_screened_default_spearman": 0.8,
                "exact_screened_default_top10_recall": 0.8,
            }
        )
    base.update(cols)
    table = {
        "text": [f"t{i}" for i in range(n)],
        "prompt": [f"p{i}" for i in range(n)],
        "seed": 0,
        "model": "toy",
        "d_model": D,
    }
    for key, value in base.items():
        if np.ndim(value):
            table[key] = np.asarray(value, dtype=float)
        else:  # a small spread that cannot cross any threshold the tests set
            table[key] = value + rng.normal(0, 1e-6, n)
    return pd.DataFrame(table)


def verdict(m: pd.DataFrame, key: str) -> str:
    return claims(m).set_index("key").loc[key, "verdict"]


def test_every_rule_names_every_verdict_its_code_can_give():
    for key, rule in RULES.items():
        if key != "attention_only":
            assert "holds" in rule.lower() and "differs" in rule, key
    for key in (
        "importance_order",
        "compromise_order",
        "minimal_k",
        "study_procedure",
        "mean_ablation",
        "layers_needed",
        "hessian_order",
        "span_of_writes",
    ):  # those that can be "marginal"
        assert "marginal" in RULES[key], key


def test_importance_uses_exact_ablations_only():
    # screened estimates near 1 (they would say "no clear deviations"), exact ones at 0.5: holds
    m = synthetic(est_spearman_sv_importance=0.999, exact_spearman_sv_importance=0.5)
    row = claims(m).set_index("key").loc["importance"]
    assert row.verdict == "holds" and "0.50" in row.ours and row.n_texts == len(m)
    # exact ones uncorrelated: differs, whatever the estimate says
    assert (
        verdict(
            synthetic(est_spearman_sv_importance=0.9, exact_spearman_sv_importance=0.01),
            "importance",
        )
        == "differs"
    )
    # no exact ablations: the estimate is never used
    t = claims(synthetic(exact=False, est_spearman_sv_importance=0.5)).set_index("key")
    for key in (
        "importance",
        "importance_order",
        "compromise_order",
    ):  # labelled, with the estimator's accuracy
        row = t.loc[key]
        assert row.verdict == "can't tell (estimates only)" and row.n_texts == 0, key
        assert row.ours.startswith("ESTIMATE only") and "exact ablations" in row.ours, key


def test_importance_rows_count_only_exact_texts():
    m = synthetic(16)
    m.loc[8:, [c for c in m if c.startswith("exact_")]] = np.nan  # exact stage on the first 8 texts
    t = claims(m).set_index("key")
    assert t.loc["importance", "n_texts"] == 8 and t.loc["compromise_order", "n_texts"] == 8
    assert t.loc["dominant", "n_texts"] == 16


@pytest.mark.parametrize("diff,expected", [(0.2, "holds"), (-0.2, "differs"), (0.0, "marginal")])
def test_importance_order_verdicts(diff, expected):
    m = synthetic(
        **{
            "exact_min_k_frac[singular_value]": 0.7,
            "exact_min_k_frac[importance]": 0.7 + diff,
            "min_k_frac[importance]": 0.7 - diff,
        }
    )  # the grid's numbers say the opposite
    assert verdict(m, "importance_order") == expected


@pytest.mark.parametrize("diff,expected", [(0.0, "holds"), (-0.2, "differs"), (-0.05, "marginal")])
def test_compromise_order_verdicts(diff, expected):
    m = synthetic(
        **{"exact_min_k_frac[singular_value]": 0.9, "exact_min_k_frac[compromise]": 0.9 + diff}
    )
    assert verdict(m, "compromise_order") == expected


def test_orig_delta_can_differ_at_low_k():
    assert verdict(synthetic(), "orig_delta") == "holds"
    assert verdict(synthetic(low_k_orig_delta_over_unclipped=1.19), "orig_delta") == "differs"
    assert verdict(synthetic(max_orig_delta_over_unclipped=0.9), "orig_delta") == "differs"


def test_minimal_k_verdicts():
    assert verdict(synthetic(), "minimal_k") == "differs"  # ~99% of d, well above 0.81
    m = synthetic(
        **{
            "min_k_frac[singular_value]": np.linspace(0.5, 0.7, 16),
            "min_k_frac[random_basis]": 0.95,
            "exact_min_k_frac[singular_value]": np.linspace(0.5, 0.7, 16),
        }
    )
    assert verdict(m, "minimal_k") == "holds"
    m = synthetic(
        **{
            "min_k_frac[singular_value]": np.linspace(0.5, 0.7, 16),
            "min_k_frac[random_basis]": np.linspace(0.5, 0.7, 16),
        }
    )  # no better than a random basis
    assert verdict(m, "minimal_k") == "can't tell"
    # just above the study's range, within the grid's own measured error of it: marginal
    m = synthetic(
        **{
            "min_k_frac[singular_value]": np.full(16, 0.83),
            "exact_min_k_frac[singular_value]": 0.80,
        }
    )
    assert verdict(m, "minimal_k") == "marginal"


def test_chaotic_and_dominant_verdicts():
    assert verdict(synthetic(jitter_low=5.0, jitter_high=0.1), "chaotic") == "holds"
    assert verdict(synthetic(jitter_low=0.1, jitter_high=0.1), "chaotic") == "differs"
    # a steep but smooth low-k curve: big steps, but no more than its slope explains
    assert (
        verdict(synthetic(jitter_low=5.0, jitter_high=0.1, roughness_low=1.2), "chaotic")
        == "differs"
    )
    assert verdict(synthetic().drop(columns=["roughness_low"]), "chaotic").startswith("can't tell")
    assert verdict(synthetic(s2_s3=3.0, s1_s3=4.0), "dominant") == "holds"
    assert verdict(synthetic(), "dominant").startswith("differs (one dominant")


def test_roughness_tells_chaos_from_a_steep_slope():
    from experiments.clipping import jitter
    from interp.sweeps import jitter_pairs

    d = 576
    ks = sorted({0, d, *range(0, d + 1, 48), *(k for pair in jitter_pairs(d) for k in pair)})
    smooth = pd.DataFrame(
        {"k": ks, "logprob": [-500.0 * np.exp(-k / 40) for k in ks]}
    )  # steep, smooth
    rng = np.random.default_rng(0)
    noisy = smooth.assign(
        logprob=smooth.logprob + rng.normal(0, 20, len(ks)) * (smooth.k < 0.1 * d)
    )
    r_smooth, r_noisy = jitter(smooth, d), jitter(noisy, d)
    assert r_smooth["jitter_low"] > 5  # big steps at low k ...
    assert r_smooth["roughness_low"] < 3  # ... but a slope, not chaos
    assert r_noisy["roughness_low"] > 3


def test_bootstrap_interval_is_seeded_and_brackets_the_median():
    x = np.random.default_rng(1).normal(2.0, 1.0, 40)
    med, lo, hi = bootstrap_median_ci(x)
    assert med == pytest.approx(np.median(x)) and lo < med < hi
    assert bootstrap_median_ci(x) == (med, lo, hi)  # same seed, same interval
    assert hi - lo > bootstrap_median_ci(np.tile(x, 16))[2] - bootstrap_median_ci(np.tile(x, 16))[1]


def test_permutation_null_matches_theory():
    rng = np.random.default_rng(0)
    x = rng.normal(size=576)
    out = spearman_permutation_null(x, rng.normal(size=576), n=4000, seed=0)
    # under independence Spearman's sd is 1/sqrt(n - 1): the 97.5% point is near 1.96 of it
    assert out["null_q975"] == pytest.approx(1.96 / np.sqrt(575), rel=0.1)
    assert out["p_one_sided"] > 0.01
    strong = spearman_permutation_null(x, x + rng.normal(scale=0.5, size=576), n=2000, seed=0)
    assert strong["rho"] > 0.8 and strong["p_one_sided"] == pytest.approx(1 / 2001)


def test_text_metrics_joins_the_exact_stage(tmp_path):
    import json

    from experiments.base import prepare
    from experiments.exact_importance import run_exact_importance
    from experiments.prompts import get_continuation
    from interp.testing import tiny_model

    model = tiny_model()
    comp = get_continuation(model, "hello world this is", seed=0, max_new_tokens=6)
    text = prepare(model, comp)
    result = run_exact_importance(model, text, n_permutations=500)
    result.save(tmp_path / "t0" / "exact_importance")
    row = exact_metrics(tmp_path).iloc[0]
    s = json.loads((tmp_path / "t0" / "exact_importance" / "settings.json").read_text())["summary"]
    assert row.exact_spearman_sv_importance == pytest.approx(s["spearman_sv_importance"])
    # the exact scan is an every-k scan where it matters: never above the grid's first crossing
    assert row["exact_min_k_frac[singular_value]"] <= row["exact_grid_k_frac[singular_value]"]
    with pytest.raises(FileNotFoundError):  # an exact stage alone is not a finished text
        text_metrics(tmp_path)


@pytest.mark.parametrize(
    "cond,key", [("full", "study_procedure"), ("scaled", "study_procedure_scaled")]
)
@pytest.mark.parametrize(
    "values,expected",
    [
        (np.full(8, 1.0), "differs"),  # every text needs all of d
        (np.linspace(0.55, 0.75, 8), "holds"),  # well inside 46-81%
        (np.linspace(0.2, 0.35, 8), "differs"),  # below the range is also "differs"
        (
            np.r_[np.full(4, 0.6), np.full(4, 1.0)],
            "marginal",
        ),  # half in, half out: the interval straddles 0.81
    ],
)
def test_study_procedure_rows(cond, key, values, expected):
    other = "scaled" if cond == "full" else "full"
    m = synthetic(
        8,
        **{
            f"sp_bisection_bf16[{cond}]": values,
            f"sp_bisection_bf16[{other}]": np.full(8, 0.6),
            f"sp_bisection_f32[{cond}]": values,
            f"sp_exact[{cond}]": np.full(8, 0.99),
            f"sp_n_continuation_tokens[{cond}]": np.full(8, 9.0),
            f"sp_tokens_per_dim[{cond}]": np.full(8, 0.03),
        },
    )
    row = claims(m).set_index("key").loc[key]
    assert row.verdict == expected and row.n_texts == 8
    assert "bfloat16 bisection" in row.ours and "9 [9, 9] new tokens" in row.ours


def test_study_procedure_rows_read_the_bfloat16_bisection_not_the_exact_answer():
    # exact float32 inside the range, the bfloat16 bisection at d: the row follows the bisection
    m = synthetic(
        8,
        **{
            "sp_bisection_bf16[full]": np.full(8, 1.0),
            "sp_exact[full]": np.full(8, 0.6),
            "sp_bisection_f32[full]": np.full(8, 1.0),
            "sp_n_continuation_tokens[full]": np.full(8, 64.0),
            "sp_tokens_per_dim[full]": np.full(8, 0.13),
        },
    )
    assert verdict(m, "study_procedure") == "differs"
    # not run: can't tell, and the row says how to run it
    row = claims(synthetic(8)).set_index("key").loc["study_procedure_scaled"]
    assert (
        row.verdict == "can't tell"
        and row.n_texts == 0
        and "--exact-with study_procedure" in row.ours
    )


def test_text_metrics_joins_the_study_procedure(tmp_path):
    import json

    from experiments.prompts import get_continuation
    from experiments.study.replication import study_procedure_metrics
    from experiments.study_procedure import run_study_procedure
    from interp.testing import tiny_model

    model = tiny_model()
    comp = get_continuation(model, "hello world this is", seed=0, max_new_tokens=6)
    run_study_procedure(model, comp, scaled_tokens=3).save(tmp_path / "t0" / "study_procedure")
    row = study_procedure_metrics(tmp_path).iloc[0]
    s = json.loads((tmp_path / "t0" / "study_procedure" / "settings.json").read_text())["summary"]
    assert row["sp_bisection_bf16[scaled]"] == s["k_frac[scaled:study_bisection:bfloat16]"]
    assert row["sp_exact[full]"] == s["k_frac[full:exact_scan:float32]"]
    assert row["sp_n_continuation_tokens[scaled]"] == 3


def _cv(n=8, **cols):
    base = {
        f"cv_min_k_frac[{v}]": np.full(n, 1.0)
        for v in (
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
    }
    base.update({f"cv_within5[{v}]": np.full(n, 0.95) for v in ("zero", "mean_text", "keep_bos")})
    base.update(cols)
    return synthetic(n, **base)


@pytest.mark.parametrize(
    "key,col",
    [("mean_ablation", "cv_min_k_frac[mean_text]"), ("bos_unclipped", "cv_min_k_frac[keep_bos]")],
)
@pytest.mark.parametrize(
    "values,expected",
    [
        (np.full(8, 1.0), "differs"),  # no fewer directions than the zero clip
        (np.linspace(0.5, 0.7, 8), "holds"),  # 30-50% of d fewer
        (
            np.r_[np.full(4, 0.9), np.full(4, 1.0)],
            "marginal",
        ),  # half the texts 10% fewer: the interval straddles -0.05
    ],
)
def test_extension_fill_and_position_rows(key, col, values, expected):
    row = claims(_cv(**{col: values})).set_index("key").loc[key]
    assert row.verdict == expected and row.n_texts == 8 and "zero clip" in row.ours


def test_layers_row_and_missing_extensions():
    assert (
        verdict(_cv(**{"cv_min_k_frac[layers_late]": np.full(8, 0.95)}), "layers_needed") == "holds"
    )
    assert (
        verdict(_cv(**{"cv_min_k_frac[layers_middle]": np.full(8, 0.6)}), "layers_needed")
        == "differs"
    )
    assert (
        verdict(
            _cv(**{"cv_min_k_frac[layers_early]": np.r_[np.full(4, 0.85), np.full(4, 0.95)]}),
            "layers_needed",
        )
        == "marginal"
    )
    t = claims(synthetic(8)).set_index("key")  # no extension results: every row says how to run it
    for key, flag in (
        ("mean_ablation", "clip_variants"),
        ("bos_unclipped", "clip_variants"),
        ("layers_needed", "clip_variants"),
        ("hessian_order", "hessian_ranking"),
    ):
        assert t.loc[key, "verdict"] == "can't tell" and t.loc[key, "n_texts"] == 0
        assert f"--exact-with {flag}" in t.loc[key, "ours"]


@pytest.mark.parametrize("diff,expected", [(-0.05, "holds"), (0.02, "differs"), (0.0, "marginal")])
def test_hessian_order_row(diff, expected):
    hr = {
        "hr_k_frac[singular_value]": np.full(8, 0.95),
        "hr_k_frac[hessian]": np.full(8, 0.95 + diff),
        "hr_k_frac[exact_importance]": np.full(8, 0.96),
    }
    hr.update(
        {
            f"hr_spearman[{e}]": np.full(8, 0.8)
            for e in ("first_order", "fisher_second_order", "hessian_second_order")
        }
    )
    assert verdict(synthetic(8, **hr), "hessian_order") == expected


def test_hessian_order_row_compares_the_study_orders():
    """The row names the Hessian order's difference from each order the study tried, on the same
    texts."""
    hr = {
        "hr_k_frac[singular_value]": np.full(8, 0.95),
        "hr_k_frac[hessian]": np.full(8, 0.90),
        "hr_k_frac[exact_importance]": np.full(8, 0.96),
        "exact_min_k_frac[compromise]": np.full(8, 0.85),
    }
    hr.update(
        {
            f"hr_spearman[{e}]": np.full(8, 0.8)
            for e in ("first_order", "fisher_second_order", "hessian_second_order")
        }
    )
    ours = claims(synthetic(8, **hr)).set_index("key").loc["hessian_order", "ours"]
    assert "Hessian minus SVD -0.050" in ours
    assert "Hessian minus exact importance order -0.060" in ours
    assert "Hessian minus compromise order +0.050" in ours


def _tl(n=8, dev=0.0, **cols):
    """n texts with text_length's columns for each length: stable k/d = the span + ``dev``."""
    extra = {}
    for label, span in (("2", 0.95), ("8", 1.0), ("scaled", 1.0), ("32", 1.0), ("full", 1.0)):
        extra.update(
            {
                f"tl_span_frac[{label}]": np.full(n, span),
                f"tl_rank_frac[{label}]": np.full(n, span),
                f"tl_stable_k_frac[{label}]": np.full(n, span - 0.005) + dev,
                f"tl_first_k_frac[{label}]": np.full(n, 0.5),
                f"tl_converged_k_frac[{label}]": np.full(n, 0.9),
                f"tl_frac_fail_above_first[{label}]": np.full(n, 0.3),
                f"tl_writes_per_dim[{label}]": np.full(n, span if span < 1 else 2.0),
                f"tl_tokens_per_dim[{label}]": np.full(n, 0.05),
                f"tl_bisection_k_frac[{label}]": np.full(n, 0.9),
                f"tl_n_continuation_tokens[{label}]": np.full(n, 8.0),
                f"tl_noise_floor[{label}]": np.full(n, 0.0),
            }
        )
    extra.update(cols)
    return synthetic(n, **extra)


@pytest.mark.parametrize("dev, expected", [(0.0, "holds"), (-0.3, "differs"), (0.1, "differs")])
def test_span_of_writes_row(dev, expected):
    row = claims(_tl(dev=dev)).set_index("key").loc["span_of_writes"]
    assert row.verdict == expected and row.n_texts == 8
    assert "within 0.02 of d on" in row.ours and "40 (text, length) rows" in row.ours


def test_span_of_writes_row_is_marginal_between_half_and_nine_tenths():
    m = _tl(
        **{"tl_stable_k_frac[2]": np.full(8, 0.5), "tl_stable_k_frac[8]": np.full(8, 0.5)}
    )  # 24 of 40 rows
    assert verdict(m, "span_of_writes") == "marginal"


def test_span_of_writes_row_not_run():
    row = claims(synthetic(8)).set_index("key").loc["span_of_writes"]
    assert (
        row.verdict == "can't tell" and "--exact-with text_length" in row.ours and row.n_texts == 0
    )


def test_scaled_row_reads_the_stable_crossing_when_text_length_ran():
    from experiments.study.replication import text_length_rows

    m = _tl(**{"sp_bisection_bf16[scaled]": np.full(8, 0.95), "sp_exact[scaled]": np.full(8, 0.8)})
    assert (
        "stable crossing 0.995" in claims(m).set_index("key").loc["study_procedure_scaled", "ours"]
    )
    long = text_length_rows(m)
    assert len(long) == 40 and set(long.length) == {"2", "8", "scaled", "32", "full"}


# --- the claims as rule objects: words, null, rule and code side by side ----------------------


def test_every_claim_has_its_words_null_and_rule_and_the_rules_are_derived():
    import string

    from experiments.study.replication import CLAIMS, FACT_FIELDS

    keys = [c.key for c in CLAIMS]
    assert len(set(keys)) == len(keys) and list(RULES) == keys  # RULES is derived from the objects
    assert list(claims(synthetic(8)).key) == keys  # the table is a loop over them, in their order
    for c in CLAIMS:
        assert c.words and c.study and c.null and c.rule, c.key
        assert RULES[c.key] == c.rule and "{" not in c.rule, c.key
        fields = {
            f.split("[")[0].split(".")[0]
            for _, f, _, _ in string.Formatter().parse(c.template)
            if f
        }
        assert fields <= set(c.params) | set(FACT_FIELDS), (
            c.key
        )  # the rule quotes only numbers the code holds
        unquoted = set(c.params) - fields
        if (
            unquoted
        ):  # a rule that defers to another ("as 'dominant', ...") shares that claim's numbers
            other = c.template.split("'")[1]
            assert c.template.startswith(f"as '{other}'") and dict(c.params) == dict(
                next(o for o in CLAIMS if o.key == other).params
            ), c.key


def test_a_rules_numbers_are_the_ones_its_code_reads():
    """Changing a claim's number changes its rule text and, where the data sit between the old and
    the new number, its verdict: the words and the code read the same value."""
    from dataclasses import replace

    from experiments.study.replication import CLAIM, Tables

    def judged(claim, m):
        return claim.judge(claim, Tables.of(m)).verdict

    cases = [  # (claim, param, new value, table, verdict before, verdict after)
        ("converging", "frac", 0.99, synthetic(), "differs", "holds"),
        (
            "dominant",
            "ratio",
            1.1,
            synthetic(s2_s3=1.5),
            "differs (one dominant direction)",
            "holds",
        ),
        ("generation", "unusable", 0.05, synthetic(gen_k_frac=0.5), "holds", "differs"),
        ("generation", "nearly_all", 0.999, synthetic(), "can't tell (k is nearly d)", "holds"),
        (
            "layers_needed",
            "needed",
            0.99,
            synthetic(
                8,
                **{
                    f"cv_min_k_frac[{v}]": np.full(8, 0.95)
                    for v in (
                        "zero",
                        "layers_early",
                        "layers_middle",
                        "layers_late",
                        "attn_only",
                        "mlp_only",
                    )
                },
                **{f"cv_within5[{v}]": np.full(8, 0.9) for v in ("zero",)},
            ),
            "holds",
            "differs",
        ),
    ]
    for key, name, value, m, before, after in cases:
        claim = CLAIM[key]
        changed = replace(claim, params={**claim.params, name: value})
        assert changed.rule != claim.rule, (key, name)
        assert judged(claim, m) == before and judged(changed, m) == after, (key, name)


def test_the_study_numbers_come_from_the_facts_module():
    from experiments import facts

    assert facts.STUDY_BAND == (0.46, 0.81)  # 1886..3329 of 4096
    assert f"{facts.STUDY_WRITES_PER_DIM:.2f}" == "1.11" and facts.STUDY_WRITES == 4544
    assert facts.study_band_pct() == "46-81%" and facts.study_min_k_pcts() == "46%, 81%, 66%, 61%"
    assert "0.46-0.81" in RULES["minimal_k"] and "0.46-0.81" in RULES["study_procedure"]
    assert "(64 x d / 4096: 9 tokens on d = 576, 10 on d = 640)" in RULES["study_procedure_scaled"]


def test_minimal_k_long_form_round_trips_to_the_texts_columns(tmp_path):
    """minimal_k_rows: one value a row (ordering, draw, method, criterion, tolerance); the wide
    texts.csv columns are made from it, the random basis's null being the median over its draws."""
    import json

    from experiments.study.replication import minimal_k_columns, minimal_k_rows, minimal_k_table

    ms = tmp_path / "t~s0" / "minimal_subspace"
    ms.mkdir(parents=True)
    (ms / "settings.json").write_text(
        json.dumps({"experiment": "minimal_subspace", "settings": {}, "meta": {}})
    )
    pd.DataFrame(
        {
            "ordering": [
                "singular_value",
                "compromise_rank_product",
                "random_basis",
                "random_basis#1",
                "random_basis#2",
                "singular_value",
                "random_basis",
                "random_basis#1",
                "random_basis#2",
                "singular_value",
            ],
            "method": ["first_crossing"] * 5 + ["converged"] * 4 + ["stable"],
            "k": 0,
            "k_frac": [0.5, 0.6, 0.9, 0.7, 0.8, 0.4, 0.95, 0.85, 0.75, 0.55],
            "tolerance": [1e-3] * 5 + [1.0] * 4 + [1e-3],
            "evaluations": 1,
        }
    ).to_csv(ms / "minimal_k.csv", index=False)
    pd.DataFrame(
        {
            "ordering": ["singular_value", "singular_value", "random_basis"],
            "criterion": ["total", "per_token", "total"],
            "tolerance": [0.01, 0.001, 0.01],
            "tolerance_nats": 0.01,
            "k": 0,
            "k_frac": [0.45, 0.47, 0.88],
        }
    ).to_csv(ms / "sensitivity.csv", index=False)
    long = minimal_k_rows(pd.read_csv(ms / "minimal_k.csv"), pd.read_csv(ms / "sensitivity.csv"))
    assert list(long.columns) == ["ordering", "draw", "method", "criterion", "tolerance", "k_frac"]
    assert set(long.ordering) == {"singular_value", "compromise", "random_basis"}
    assert sorted(long[long.ordering == "random_basis"].draw.unique()) == [0, 1, 2]
    assert "stable" not in set(long.method)
    wide = minimal_k_columns(long)
    assert wide == {
        "min_k_frac[singular_value]": 0.5,
        "min_k_frac[compromise]": 0.6,
        "min_k_frac[random_basis]": 0.8,
        "min_k_frac[random_basis#1]": 0.7,
        "min_k_frac[random_basis#2]": 0.8,
        "k_converged_frac[singular_value]": 0.4,
        "k_converged_frac[random_basis]": 0.85,
        "k_converged_frac[random_basis#1]": 0.85,
        "k_converged_frac[random_basis#2]": 0.75,
        "random_draws": 3,
        "min_k_frac[singular_value]@0.01": 0.45,
        "min_k_frac[singular_value]@0.001/tok": 0.47,
        "min_k_frac[random_basis]@0.01": 0.88,
    }
    table = minimal_k_table(tmp_path)
    assert (
        list(table.columns[:2]) == ["text", "ordering"]
        and set(table.text) == {"t~s0"}
        and len(table) == 12
    )


def test_gather_keeps_a_tables_own_text_column(tmp_path):
    """Clipped generation's samples carry the sampled text in a ``text`` column: gathered across
    texts it is kept as ``samples_text`` beside the text id, not overwritten by it."""
    from experiments.study.replication import gather

    for tid, sample in (("a~s0", "the first sample"), ("b~s0", "")):
        (tmp_path / tid / "clipped_generation").mkdir(parents=True)
        pd.DataFrame({"model": ["clipped"], "text": [sample]}).to_csv(
            tmp_path / tid / "clipped_generation" / "samples.csv", index=False
        )
    got = gather(tmp_path, "clipped_generation/samples.csv", keep_default_na=False)
    assert got.text.tolist() == ["a~s0", "b~s0"]
    assert got.samples_text.tolist() == ["the first sample", ""]
