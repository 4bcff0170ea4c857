"""Issue 27, item 6: where the study's zero-tolerance bisection lands on a converged plateau.
Pure numpy: the study-shaped curve, the interpolated curve and the simulated bisection."""

import numpy as np
import pytest

from experiments.study_procedure import interpolated_curve, plateau_bisection, study_shaped_curve
from interp.search import study_bisection


@pytest.mark.parametrize("k_conv", [1500, 1750, 2000])
def test_study_shaped_curve_matches_the_description(k_conv):
    c = study_shaped_curve(4096, k_conv)
    assert c[-1] == 0.0 and np.all(np.diff(c) > 0)  # rises to the unclipped value, exact at d
    assert c[k_conv] >= -1.0 > c[k_conv - 2]  # within 1 nat from ~k_conv on
    assert (
        c[k_conv + 300] > -0.5 and c[300] < -100
    )  # "essentially exact" soon after; far below at small k


def test_without_noise_the_simulation_is_the_study_s_bisection():
    c = study_shaped_curve(512, 200)
    c[300] = 0.1  # a chance pass on the plateau
    t = plateau_bisection({"c": (c, 0.0)}, noise_sds=(0.0,), n_draws=10).iloc[0]
    want = study_bisection(lambda ks: c[list(ks)], 0.0, 512).k
    assert t.median_k_frac == t.q05_k_frac == t.q95_k_frac == want / 512


def test_noise_on_a_plateau_lands_between_convergence_and_d():
    """A curve below its target up to d returns d without noise; with noise of the plateau's
    depth the bisection lands anywhere on the plateau, mostly at or above where it converged."""
    c = study_shaped_curve(4096, 1750)
    t = plateau_bisection({"c": (c, 0.0)}, noise_sds=(0.0, 0.37), n_draws=2000, seed=1).set_index(
        "noise_sd"
    )
    assert t.loc[0.0, "median_k_frac"] == 1.0 and t.loc[0.0, "stable_k_frac"] == 1.0
    assert 0.4 < t.loc[0.37, "median_k_frac"] < 0.95
    assert t.loc[0.37, "share_at_or_above_converged"] > 0.8
    assert t.loc[0.37, "converged_k_frac"] == pytest.approx(1750 / 4096, abs=2 / 4096)
    again = plateau_bisection(
        {"c": (c, 0.0)}, noise_sds=(0.0, 0.37), n_draws=2000, seed=1
    ).set_index("noise_sd")
    assert again.equals(t)  # seeded


def test_interpolated_curve_is_exact_at_the_points():
    pts = {0: -100.0, 10: -5.0, 11: -4.0, 20: 0.0}
    c = interpolated_curve(pts, 20)
    assert len(c) == 21 and all(c[k] == v for k, v in pts.items()) and c[5] == pytest.approx(-52.5)
    with pytest.raises(ValueError, match="k = 0 and k = d"):
        interpolated_curve({5: 0.0, 20: 0.0}, 20)
