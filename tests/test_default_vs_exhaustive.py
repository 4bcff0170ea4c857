"""The fast default and the exhaustive run agree on the numbers the replication table uses, on the
real default model (a short text, so that the exhaustive run fits in CI).

Exact where the default is exact by construction: everything in SVD order (the curve's points
are the same computations; its searches refine to single k) and the random-basis null. Within
stated tolerances where the default estimates: orderings built from screened importances
(minimal k within 5% of d), the top-10 important directions (at least 8 in common) and
Spearman(singular value, importance) (within 0.15).
"""

import numpy as np
import pytest

import experiments as E
import interp

pytestmark = pytest.mark.real_model


def run(model, comp, exhaustive):
    text = E.prepare(model, comp)
    clip = E.run_clipping(model, text, exhaustive=exhaustive)
    single = E.run_single_direction(model, text, exhaustive=exhaustive)
    orders = E.run_orderings(model, text, single=single, exhaustive=exhaustive)
    ms = E.run_minimal_subspace(model, text, orderings=orders, exhaustive=exhaustive)
    rows = sum(ev.n_rows for ev in text.evaluators.values()) + single.meta["forward_rows"]
    return clip, single, ms, rows


def test_default_equals_exhaustive_on_the_replication_numbers(smollm2, capsys):
    comp = interp.sample_continuation(smollm2, "The capital of France is", temperature=0, max_new_tokens=10)
    (clip_d, single_d, ms_d, rows_d), (clip_x, single_x, ms_x, rows_x) = (
        run(smollm2, comp, False), run(smollm2, comp, True))
    t_d, t_x = ms_d.table.set_index(["ordering", "method"]).k, ms_x.table.set_index(["ordering", "method"]).k
    for ordering in ("singular_value", "random_basis"):
        for method in ("first_crossing", "stable", "converged"):
            assert t_d[ordering, method] == t_x[ordering, method], (ordering, method)
    sens_d, sens_x = ms_d.tables["sensitivity"], ms_x.tables["sensitivity"]
    assert sens_d.k.tolist() == sens_x.k.tolist()
    for key in ("k_converged", "jitter_low", "jitter_mid", "jitter_high", "max_orig_delta_over_unclipped"):
        assert clip_d.summary()[key] == pytest.approx(clip_x.summary()[key], rel=1e-6), key
    d = smollm2.cfg.d_model
    for ordering in ("importance", "compromise_rank_product"):
        assert abs(t_d[ordering, "first_crossing"] - t_x[ordering, "first_crossing"]) <= 0.05 * d, ordering
    s_d, s_x = single_d.summary(), single_x.summary()
    assert len(set(s_d["top10_directions"]) & set(s_x["top10_directions"])) >= 8
    assert abs(s_d["spearman_sv_importance"] - s_x["spearman_sv_importance"]) <= 0.15
    exact = single_x.importance.importance.to_numpy()
    assert np.allclose(single_d.importance.importance[single_d.importance.exact], exact[single_d.importance.exact],
                       atol=2e-3)
    with capsys.disabled():
        print(f"\n[smollm2-135m, {comp.tokens.numel()} tokens] forward rows: default {rows_d}, exhaustive {rows_x} "
              f"({rows_x / rows_d:.1f}x); minimal k SVD {t_d['singular_value', 'first_crossing']}, importance "
              f"{t_d['importance', 'first_crossing']} vs {t_x['importance', 'first_crossing']}; screened "
              f"Spearman vs exact {s_x['screened_spearman']:.3f}, top-10 recall {s_x['screened_top10_recall']:.1f}")
