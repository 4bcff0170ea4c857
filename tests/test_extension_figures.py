"""The replication report's issue 16/17 figures (experiments.study.report.extension_figures), on a
synthetic run folder whose curves have known values."""

import numpy as np
import pandas as pd
import pytest

from experiments.study.report import SECTIONS, extension_figures

D = 10


def _write(run, text, logprob_sp, variants):
    sp = run / text / "study_procedure"
    sp.mkdir(parents=True)
    ks = np.arange(D + 1)
    pd.DataFrame(
        {
            "k": np.tile(ks, 2),
            "logprob": np.concatenate([logprob_sp, logprob_sp / 2]),
            "condition": ["full"] * (D + 1) + ["scaled"] * (D + 1),
        }
    ).to_csv(sp / "curve.csv", index=False)
    cv = run / text / "clip_variants"
    cv.mkdir(parents=True)
    pd.concat(
        [pd.DataFrame({"variant": v, "k": [0, 5, D], "logprob": lp}) for v, lp in variants.items()]
    ).to_csv(cv / "curve.csv", index=False)


@pytest.fixture
def run(tmp_path):
    # study_procedure: logp(k) = -100 + 10 k, so the gap open is 1 - k/10 (floored at the target k
    # = d)
    lp = -100.0 + 10.0 * np.arange(D + 1)
    _write(tmp_path, "a", lp, {"zero": [-50.0, -3.0, 0.0], "mean_text": [-5.0, -1.0, 0.0]})
    _write(tmp_path, "b", lp, {"zero": [-70.0, -7.0, 0.0], "mean_text": [-9.0, -2.0, 0.0]})
    _write(tmp_path, "c", lp, {"zero": [-90.0, -5.0, 0.0], "mean_text": [-7.0, -3.0, 0.0]})
    (tmp_path / "no_extensions").mkdir()  # a text the extensions did not run on is skipped
    m = pd.DataFrame({"text": ["a", "b", "c", "no_extensions"], "model": "toy", "d_model": D})
    return tmp_path, m


def test_gap_open_fraction_and_median_nats(run):
    figs = extension_figures(*run)
    assert set(figs) == {"study_procedure_gap", "clip_variants_gap"}
    traces = figs["study_procedure_gap"].data
    assert len(traces) == 6  # 3 texts x 2 conditions, one line each
    for tr in traces:
        x, y = np.asarray(tr.x), np.asarray(tr.y)
        expected = np.clip(1 - x, 1e-6, None)  # both conditions close the same fraction at each k
        np.testing.assert_allclose(y, expected, rtol=1e-12)
    by_name = {tr.name: tr for tr in figs["clip_variants_gap"].data}
    assert set(by_name) == {"zero", "mean_text"}
    x = np.asarray(by_name["zero"].x)
    zero, mean = np.asarray(by_name["zero"].y), np.asarray(by_name["mean_text"].y)
    assert zero[0] == pytest.approx(70.0) and mean[0] == pytest.approx(
        7.0
    )  # medians over the 3 texts at k = 0
    assert zero[np.isclose(x, 0.5)][0] == pytest.approx(5.0) and mean[np.isclose(x, 0.5)][
        0
    ] == pytest.approx(2.0)
    assert zero[-1] == pytest.approx(1e-4) and mean[-1] == pytest.approx(
        1e-4
    )  # at the target: the floor


def test_no_extension_runs_no_figures(run):
    run_dir, m = run
    assert extension_figures(run_dir, m[m.text == "no_extensions"]) == {}


def test_every_report_section_names_existing_claims_and_figures(run):
    from experiments.study.replication import RULES

    for keys, _title, _fig_keys, _caption in SECTIONS:
        assert set(keys) <= set(RULES)
    assert {"study_procedure_gap", "clip_variants_gap"} <= {k for _, _, f, _ in SECTIONS for k in f}


def test_hessian_orders_figure_draws_each_text_and_the_median():
    """hessian_orders: one line per text through every order's minimal k / d, and the median;
    texts without a Hessian ranking are left out, and no figure without any."""
    from experiments.study.report import HESSIAN_FIGURE_ORDERS, hessian_figures

    cols = [col for _, col in HESSIAN_FIGURE_ORDERS]
    m = pd.DataFrame(
        {
            "text": ["a", "b", "none"],
            "model": "toy",
            "d_model": D,
            **{c: [0.9 - 0.01 * i, 0.8 - 0.01 * i, np.nan] for i, c in enumerate(cols)},
        }
    )
    m.loc[2, "exact_min_k_frac[compromise]"] = 0.5  # the exact stage ran; the Hessian did not
    fig = hessian_figures(m)["hessian_orders"]
    assert [t.name for t in fig.data] == ["a", "b", "median"]
    np.testing.assert_allclose(fig.data[0].y, [0.9 - 0.01 * i for i in range(len(cols))])
    np.testing.assert_allclose(fig.data[2].y, [0.85 - 0.01 * i for i in range(len(cols))])
    assert list(fig.data[0].x) == [label for label, _ in HESSIAN_FIGURE_ORDERS]
    assert "2 texts" in fig.layout.title.text
    assert hessian_figures(m.drop(columns=["hr_k_frac[hessian]"])) == {}
