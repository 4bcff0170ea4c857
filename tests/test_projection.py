"""The pure tensor functions, without a model, in float64."""

import pytest
import torch

from interp.projection import ablate, check_orthonormal, order_directions, prefix_masks, project


def rand_basis(d, r, seed=0, batch=None):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, d, d) if batch else (d, d)
    q = torch.linalg.qr(torch.randn(*shape, generator=g, dtype=torch.float64)).Q
    return q[..., :r]


def test_projector_is_idempotent_and_complementary():
    x = torch.randn(3, 5, 12, dtype=torch.float64)
    v = rand_basis(12, 4)
    p = project(x, v)
    assert torch.allclose(project(p, v), p, atol=1e-12)
    assert torch.allclose(p + ablate(x, v), x, atol=1e-12)
    assert torch.allclose(project(ablate(x, v), v), torch.zeros_like(x), atol=1e-12)
    assert torch.allclose(project(x, rand_basis(12, 12)), x, atol=1e-12)


def test_prefix_masks_equal_truncated_bases():
    x = torch.randn(4, 3, 10, dtype=torch.float64)
    v = rand_basis(10, 10)
    ks = [0, 2, 7, 10]
    batched = project(x, v, prefix_masks(ks, 10).double())
    for i, k in enumerate(ks):
        assert torch.allclose(batched[i], project(x[i : i + 1], v[:, :k])[0], atol=1e-12)


@pytest.mark.parametrize("kind", ["prefix", "random"])
def test_compact_masks_give_the_same_projection(kind):
    from interp.projection import compact

    d = 16
    x = torch.randn(5, 3, d, dtype=torch.float64)
    v = rand_basis(d, d)
    if kind == "prefix":
        masks = [prefix_masks([1, 2, 3, 4, 5], d), prefix_masks([12, 13, 14, 15, 16], d)]
    else:
        g = torch.Generator().manual_seed(1)
        masks = [(torch.rand(5, d, generator=g) < p).float() for p in (0.2, 0.8)]
    used = []
    for mask in masks:
        mask = mask.double()
        full = project(x, v, mask)
        vc, mc, complement = compact(v, mask, complete=True)
        fast = x - project(x, vc, mc) if complement else project(x, vc, mc)
        assert torch.allclose(fast, full, atol=1e-12) and vc.shape[1] < d
        used.append(complement)
        vp, mp, flag = compact(v, mask, complete=False)  # never the complement for a partial basis
        assert not flag and torch.allclose(project(x, vp, mp), full, atol=1e-12)
    assert used == [False, True]  # few kept columns: direct; many: complement


def test_per_batch_directions():
    x = torch.randn(3, 4, 8, dtype=torch.float64)
    v = rand_basis(8, 2, batch=3)
    out = ablate(x, v)
    for b in range(3):
        assert torch.allclose(out[b], ablate(x[b : b + 1], v[b])[0], atol=1e-12)


def test_prefix_masks_rejects_k_out_of_range():
    with pytest.raises(ValueError, match="k must be in 0..8"):
        prefix_masks([0, 9], 8)


def test_check_orthonormal_errors():
    with pytest.raises(ValueError, match="d_model is 16"):
        check_orthonormal(rand_basis(8, 3), d_model=16)
    with pytest.raises(ValueError, match="not orthonormal"):
        check_orthonormal(torch.randn(8, 3))
    with pytest.raises(ValueError, match="cannot be orthonormal"):
        check_orthonormal(torch.randn(4, 5))
    check_orthonormal(rand_basis(8, 3), d_model=8)


def test_order_directions_permutes_columns():
    v = rand_basis(6, 6)
    assert torch.equal(order_directions(v, [5, 4, 3, 2, 1, 0])[:, 0], v[:, 5])
    with pytest.raises(ValueError, match="permutation"):
        order_directions(v, [0, 0, 1, 2, 3, 4])
