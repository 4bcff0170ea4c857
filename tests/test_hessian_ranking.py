"""Second-order ranking (``interp.hessian``, ``experiments.hessian_ranking``) on the tiny random
models: derivatives against finite differences in float64, Lanczos against the full Hessian, the
hook adapter's identities and clean-up, the estimate on a synthetic quadratic. Random weights
reproduce no finding: these check invariants only."""

import numpy as np
import pandas as pd
import pytest
import torch

import interp
from experiments.exact_importance import run_exact_importance
from experiments.hessian_ranking import (
    FAILURE_CLASSES,
    HessianRankingResult,
    classify,
    run_hessian_ranking,
)
from experiments.single_direction import run_single_direction
from interp.hessian import (
    eigen_loading,
    hessian_diagonal,
    hessian_matrix,
    hutchinson_diagonal,
    lanczos,
    logprob_of_scales,
    quadratic_change,
    scale_curvature,
    scale_writes,
    scaling_directions,
    second_order_importance,
)
from interp.importance import taylor_importance


def orthonormal(d: int, r: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return q[:, :r].contiguous()


@pytest.fixture(scope="module")
def gpt2_f64(model_dirs):
    """The tiny GPT-2 in float64 (its LayerNorm and softmax stay in float64, unlike the tiny
    Llama's RMSNorm, which casts to float32: finite differences need the former)."""
    return interp.load_model(model_dirs["gpt2"], device="cpu", dtype=torch.float64, progress=False)


@pytest.fixture(scope="module")
def curvature(gpt2_f64, completion):
    v = orthonormal(64, 16, seed=1)
    return v, scale_curvature(gpt2_f64, completion, v)


def grad_at(model, completion, v, a):
    a = a.clone().requires_grad_(True)
    return torch.autograd.grad(logprob_of_scales(model, completion, v, a), a)[0]


def test_scale_writes_pure():
    w = torch.randn(2, 5, 8, dtype=torch.float64)
    v = orthonormal(8, 3, seed=0)
    a = torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64)
    coef = w @ v
    expected = w + torch.einsum("bpr,r,dr->bpd", coef, a - 1, v)
    assert torch.allclose(scale_writes(w, v, a), expected)
    # a_i = 0 removes exactly the component along v_i; a = 1 changes nothing, bit for bit
    removed = scale_writes(w, v, torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64))
    assert torch.allclose(removed @ v[:, 0], torch.zeros(2, 5, dtype=torch.float64), atol=1e-12)
    assert torch.equal(scale_writes(w, v, torch.ones(3, dtype=torch.float64)), w)
    # one scale vector per batch element
    per_row = scale_writes(w, v, torch.stack([a, torch.ones(3, dtype=torch.float64)]))
    assert torch.allclose(per_row[0], scale_writes(w[0], v, a)) and torch.equal(per_row[1], w[1])


def test_hvp_equals_finite_difference_of_gradients(gpt2_f64, completion, curvature):
    v, curv = curvature
    u = torch.randn(16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    eps = 1e-4
    ones = torch.ones(16, dtype=torch.float64)
    fd = (
        grad_at(gpt2_f64, completion, v, ones + eps * u)
        - grad_at(gpt2_f64, completion, v, ones - eps * u)
    ) / (2 * eps)
    hv = curv.hvp(u)
    assert fd.abs().max() > 1e-3  # not trivially zero
    assert torch.allclose(hv, fd, rtol=1e-5, atol=1e-7), (hv - fd).abs().max()
    # the gradient itself against a central difference of the log-probability
    with torch.no_grad():
        f = lambda a: float(logprob_of_scales(gpt2_f64, completion, v, a))  # noqa: E731
        e3 = torch.eye(16, dtype=torch.float64)[3]
        assert (
            abs((f(ones + eps * e3) - f(ones - eps * e3)) / (2 * eps) - float(curv.grad[3])) < 1e-6
        )


def test_batched_hvp_equals_one_at_a_time(curvature):
    _, curv = curvature
    u = torch.randn(5, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    batched = curv.hvp(u)
    single = torch.stack([curv.hvp(row) for row in u])
    assert torch.allclose(batched, single, rtol=1e-10, atol=1e-12)


def test_hessian_diagonal_equals_second_difference(gpt2_f64, completion, curvature):
    v, curv = curvature
    diag = hessian_diagonal(curv.hvp, 16, chunk_size=5)
    eps = 1e-3
    ones = torch.ones(16, dtype=torch.float64)
    with torch.no_grad():
        for i in (0, 7, 15):
            e = torch.eye(16, dtype=torch.float64)[i]
            lp = [
                float(logprob_of_scales(gpt2_f64, completion, v, ones + t * eps * e))
                for t in (-1, 0, 1)
            ]
            fd = (lp[0] - 2 * lp[1] + lp[2]) / eps**2
            assert abs(fd - float(diag[i])) < 1e-5 + 1e-4 * abs(fd), (i, fd, float(diag[i]))
    h = hessian_matrix(curv.hvp, 16, chunk_size=16)
    assert torch.allclose(h, h.T) and torch.allclose(
        torch.diagonal(h), diag, rtol=1e-10, atol=1e-13
    )


def test_gradient_equals_first_order_taylor_term(gpt2_tiny, completion):
    v = orthonormal(64, 64, seed=2).float()
    curv = scale_curvature(gpt2_tiny, completion, v)
    first = taylor_importance(gpt2_tiny, completion, v, n_fisher=0).first_order
    assert np.allclose(curv.grad.numpy(), first, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_unit_scales_leave_the_model_unchanged(arch, model_dirs, completion):
    model = interp.load_model(model_dirs[arch], device="cpu", progress=False)
    v = orthonormal(64, 64, seed=5).float()
    with torch.no_grad():
        plain = interp.continuation_logprob(
            model, completion.prompt_tokens, completion.continuation_tokens
        ).total
        scaled = logprob_of_scales(model, completion, v, torch.ones(64))
        # exactly the unscaled model's: the hook adds zeros and the scoring is the same arithmetic
        assert float(scaled) == float(plain[0])
        # a_i = 0 is the ablation of v_i (interp.ablate_directions)
        with interp.ablate_directions(model, v[:, :1], record=False):
            ablated = interp.continuation_logprob(
                model, completion.prompt_tokens, completion.continuation_tokens
            ).total
        a = torch.ones(64)
        a[0] = 0.0
        assert abs(float(logprob_of_scales(model, completion, v, a)) - float(ablated[0])) < 1e-4
        assert (
            abs(float(ablated[0]) - float(plain[0])) > 1e-3
        )  # the ablation matters: the check can fail


def test_hooks_removed_after_exception(gpt2_tiny, completion):
    v = orthonormal(64, 64, seed=6).float()
    with torch.no_grad():
        before = interp.continuation_logprob(
            gpt2_tiny, completion.prompt_tokens, completion.continuation_tokens
        ).total
        with pytest.raises(RuntimeError, match="boom"):
            with scaling_directions(gpt2_tiny, v, torch.zeros(64)):
                inside = interp.continuation_logprob(
                    gpt2_tiny, completion.prompt_tokens, completion.continuation_tokens
                ).total
                assert abs(float(inside[0] - before[0])) > 1e-3  # the hooks were active
                raise RuntimeError("boom")
        after = interp.continuation_logprob(
            gpt2_tiny, completion.prompt_tokens, completion.continuation_tokens
        ).total
    assert torch.equal(before, after)


def test_lanczos_on_a_synthetic_matrix():
    gen = torch.Generator().manual_seed(0)
    q = orthonormal(200, 200, seed=7)
    vals = torch.cat(
        [
            torch.tensor([9.0, -7.0, 5.0, -4.0, 3.0], dtype=torch.float64),
            torch.rand(195, generator=gen, dtype=torch.float64) * 2 - 1,
        ]
    )
    h = q @ torch.diag(vals) @ q.T
    pairs = lanczos(lambda u: h @ u, 200, n_eig=5, n_iter=60, seed=1)
    assert torch.allclose(pairs.values, vals[:5], atol=1e-8)
    for k in range(5):
        u = pairs.vectors[:, k]
        assert torch.allclose(h @ u, pairs.values[k] * u, atol=1e-6)
        assert float(pairs.residuals[k]) < 1e-6
    assert torch.allclose(
        pairs.vectors.T @ pairs.vectors, torch.eye(5, dtype=torch.float64), atol=1e-10
    )
    # too few iterations: the estimate is not exact (the test above can fail)
    rough = lanczos(lambda u: h @ u, 200, n_eig=5, n_iter=6, seed=1)
    assert not torch.allclose(rough.values, vals[:5], atol=1e-8)


def test_lanczos_equals_full_hessian_eigenvalues(curvature):
    _, curv = curvature
    h = hessian_matrix(curv.hvp, 16)
    ev = torch.linalg.eigvalsh(h)
    ev = ev[torch.argsort(ev.abs(), descending=True)]
    pairs = lanczos(curv.hvp, 16, n_eig=4, n_iter=16, seed=0)
    assert torch.allclose(pairs.values, ev[:4], rtol=1e-8, atol=1e-10)
    for k in range(4):
        u = pairs.vectors[:, k]
        assert torch.allclose(curv.hvp(u), pairs.values[k] * u, atol=1e-7)
    load = eigen_loading(pairs)
    assert load.shape == (16,) and (load >= 0).all()


def test_second_order_estimate_is_exact_for_a_quadratic():
    rng = np.random.default_rng(0)
    r = 12
    g = rng.normal(size=r)
    b = rng.normal(size=(r, r))
    h = (b + b.T) / 2

    def f(a):
        x = a - 1
        return 3.0 + g @ x + 0.5 * x @ h @ x

    exact = np.array([f(np.ones(r)) - f(np.ones(r) - np.eye(r)[i]) for i in range(r)])
    assert np.allclose(second_order_importance(g, np.diag(h)), exact, atol=1e-12)
    assert not np.allclose(g, exact, atol=1e-3)  # the first-order term alone is not exact
    masks = rng.integers(0, 2, size=(5, r)).astype(float)
    assert np.allclose(
        quadratic_change(g, h, masks), [f(np.ones(r) - m) - f(np.ones(r)) for m in masks]
    )
    # the HVP machinery recovers H from products alone
    hvp = lambda u: u @ torch.as_tensor(h)  # noqa: E731 - rows (n, r) or a vector (r,)
    assert np.allclose(hessian_diagonal(hvp, r, chunk_size=5).numpy(), np.diag(h))
    diag_only = torch.diag(torch.as_tensor(np.diag(h).copy()))
    assert np.allclose(
        hutchinson_diagonal(lambda u: u @ diag_only, r, n_probes=3).numpy(), np.diag(h)
    )


def test_classify_failures():
    exact = np.array([1.0, 1.0, 0.05, 1.0, 1.0, 1.0])
    grad = np.array([0.5, 0.001, 0.05, 0.5, 0.5, 1.0])
    est = np.array([-0.5, 0.01, 1.0, 0.2, 1.5, 1.001])
    cls = classify(est, exact, grad, floor=0.01, ratio=3.0, cancel_frac=0.1)
    assert cls.tolist() == ["sign", "cancellation", "saturation", "underestimate", "magnitude", ""]
    assert set(cls) - {""} <= set(FAILURE_CLASSES)


def test_run_hessian_ranking_tiny(gpt2_tiny, completion, tmp_path):
    single = run_single_direction(gpt2_tiny, completion, exhaustive=True, n_fisher=2)
    r = run_hessian_ranking(gpt2_tiny, completion, exact=single, n_eig=4, n_fisher=2)
    d = gpt2_tiny.cfg.d_model
    t = r.directions
    assert len(t) == d and r.settings["exact_reused"]
    assert np.array_equal(
        t.exact.to_numpy(), single.importance.sort_values("direction").importance.to_numpy()
    )
    assert np.allclose(t.hessian_second_order, t.grad - t.hessian_diag / 2)
    assert r.meta["n_hvp"] == d + r.settings["n_iter"]
    assert r.meta["curvature_value_minus_baseline"] == 0.0
    assert r.meta["grad_minus_first_order_max_abs"] < 1e-4
    assert r.meta["lanczos_max_rel_error"] < 1e-5
    assert r.meta["path_a0_minus_exact_max_abs"] < 1e-4  # a_i = 0 on the path is the exact ablation
    assert set(r.tables["minimal_k"].ordering) == {
        "singular_value",
        "exact_importance",
        "hessian",
        "hessian_eigen_loading",
        "first_order",
        "fisher_second_order",
    }
    assert ((r.tables["minimal_k"].k >= 0) & (r.tables["minimal_k"].k <= d)).all()
    assert set(r.tables["failures"].failure) <= set(FAILURE_CLASSES)
    est = r.tables["estimators"].set_index("estimator")
    assert est.spearman_with_exact.between(-1, 1).all()
    again = HessianRankingResult.load(r.save(tmp_path / "r"))
    assert again.summary() == r.summary()
    assert {"estimate_vs_exact", "minimal_k"} <= set(r.figures())


def test_the_exact_stage_is_reused_and_a_screened_result_is_not(gpt2_tiny, completion):
    """``results["exact_importance"]`` (whose table has no ``exact`` column: every row is an
    ablation) and its table alone (as `extend` passes the docs' table) are reused as they are; a
    screened single-direction result is not (it is not exact for
    every direction), so the ranking runs its own exhaustive sweep and gets the same numbers."""
    single = run_single_direction(gpt2_tiny, completion, exhaustive=True, n_fisher=2)
    ex = run_exact_importance(gpt2_tiny, completion, single=single, n_fisher=2, n_permutations=10)
    reused = run_hessian_ranking(
        gpt2_tiny, completion, results={"exact_importance": ex}, n_eig=4, n_fisher=2
    )
    screened = run_single_direction(gpt2_tiny, completion, n_exact=4, n_fisher=2)
    assert not screened.importance.exact.all()
    fresh = run_hessian_ranking(gpt2_tiny, completion, exact=screened, n_eig=4, n_fisher=2)
    table = run_hessian_ranking(gpt2_tiny, completion, exact=ex.importance, n_eig=4, n_fisher=2)
    assert reused.settings["exact_reused"] and table.settings["exact_reused"]  # `extend`'s way
    assert not fresh.settings["exact_reused"]
    pd.testing.assert_frame_equal(reused.directions, table.directions)
    expected = ex.importance.sort_values("direction").importance.to_numpy()
    assert np.array_equal(reused.directions.exact.to_numpy(), expected)
    assert np.allclose(fresh.directions.exact.to_numpy(), expected, atol=1e-5)
