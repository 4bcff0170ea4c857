"""Random-subspace overlap: the analytic null against Monte Carlo, and edge cases."""

import numpy as np
import pytest
import torch

from experiments.overlap import (
    Subspace,
    expected_random_overlap,
    monte_carlo_overlap,
    overlap,
    principal_cosines,
    random_basis,
    run_overlap,
)


@pytest.mark.parametrize("ki,kj,d", [(3, 5, 16), (10, 10, 32), (40, 25, 64), (1, 60, 64)])
def test_analytic_expectation_matches_monte_carlo(ki, kj, d):
    gen = torch.Generator().manual_seed(ki * 1000 + kj)
    mc = monte_carlo_overlap((ki, kj), d, draws=400, generator=gen)
    se = mc.std(ddof=1) / np.sqrt(len(mc))
    assert abs(mc.mean() - expected_random_overlap(ki, kj, d)) < 4 * se


def test_self_and_orthogonal_overlap():
    gen = torch.Generator().manual_seed(0)
    q = random_basis(20, 7, gen)
    assert overlap(q, q) == pytest.approx(7)
    assert torch.allclose(principal_cosines(q, q), torch.ones(7, dtype=torch.float64))
    eye = torch.eye(20, dtype=torch.float64)
    assert overlap(eye[:, :5], eye[:, 5:12]) == 0


def test_run_overlap_tables():
    gen = torch.Generator().manual_seed(1)
    d = 32
    v, s = random_basis(d, d, gen), torch.linspace(5, 0.1, d, dtype=torch.float64)
    subs = [
        Subspace(
            f"p{i}", random_basis(d, k, gen), prompt=f"p{i}", spectrum_vectors=v, spectrum_values=s
        )
        for i, k in enumerate([8, 12, 20])
    ]
    subs.append(Subspace("p0/importance", subs[0].basis[:, :4], prompt="p0"))
    r = run_overlap(subs, draws=50)
    p = r.pairs
    assert len(p) == 6 and p.same_prompt.sum() == 1
    assert np.isclose(p[p.pair == "p0 | p0/importance"].observed.iloc[0], 4)
    assert {"null_analytic", "null_monte_carlo", "rel_err_analytic"} <= set(p.columns)
    assert p.null_spectral.notna().sum() == 3  # only pairs with spectra
    assert len(r.tables["angles"]) == sum(min(a, b) for a, b in zip(p.k_a, p.k_b, strict=False))
    assert set(r.figures()) == {"stacked_spectrum", "pairwise_overlap"}
    with pytest.raises(ValueError, match="at least two"):
        run_overlap(subs[:1])


@pytest.mark.parametrize("ki,kj,d", [(5, 8, 20), (25, 28, 30), (3, 3, 12)])
def test_analytic_sd_matches_monte_carlo(ki, kj, d):
    from experiments.overlap import haar_pair_overlaps, random_overlap_sd

    mc = haar_pair_overlaps(d, [(ki, kj), (kj, ki)], 3000, torch.Generator().manual_seed(d))
    for col in range(2):  # the law is symmetric in the two sizes
        assert mc[:, col].std(ddof=1) == pytest.approx(random_overlap_sd(ki, kj, d), rel=0.08)
        se = mc[:, col].std(ddof=1) / np.sqrt(len(mc))
        assert abs(mc[:, col].mean() - expected_random_overlap(ki, kj, d)) < 4 * se
