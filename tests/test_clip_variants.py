"""Clip variants (issue 17): the fill/position math against a dense projector, the hook adapter,
the experiment's invariants, direction sources, and a toy with a planted constant direction."""

import numpy as np
import pandas as pd
import pytest
import torch

import experiments as E
from experiments.clip_variants import (
    VARIANTS,
    ClipVariant,
    ClipVariantsResult,
    direction_sources,
    mean_writes,
    resolve_variants,
    run_clip_variants,
    variant_evaluator,
)
from experiments.measure import curve_ks, lazy_scan_first_crossing
from interp import (
    Completion,
    capture_writes,
    continuation_logprob,
    encode_prompt,
    prefix_masks,
    project,
)
from interp.clip_variants import fill_clip, fill_clip_writes, removed_part
from interp.testing import tiny_model


def random_basis(d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64)).Q


def n_forward_hooks(model) -> int:
    return sum(len(hp._forward_hooks) for hp in model.hook_dict.values())


@pytest.fixture(scope="module")
def model3(tmp_path_factory):
    """A tiny GPT-2 with 3 layers, so that each third of the layers is one layer."""
    return tiny_model("gpt2", tmp_path_factory.mktemp("gpt2-3"), n_layers=3)


@pytest.fixture(scope="module")
def text3(model3):
    comp = E.get_continuation(model3, "meaning_of_life", max_new_tokens=10, seed=0)
    return E.prepare(model3, comp, chunk_size=8)


# ------------------------------------------------------------------------------------- math


@pytest.mark.parametrize("complement_heavy", [False, True])
def test_fill_clip_equals_dense_projector(complement_heavy):
    d, b, p = 12, 5, 7
    g = torch.Generator().manual_seed(1)
    v = random_basis(d)
    x = torch.randn(b, p, d, generator=g, dtype=torch.float64)
    fill = torch.randn(d, generator=g, dtype=torch.float64)
    ks = [0, 3, 11, 12, 7] if not complement_heavy else [10, 11, 12, 12, 9]
    masks = [prefix_masks(ks, d).double(), (torch.rand(b, d, generator=g) < 0.5).double()]
    positions = torch.tensor([True, False, True, True, False, False, True])
    for mask in masks:
        got = fill_clip(x, v, mask, fill=fill, positions=positions)
        for r in range(b):
            proj = v @ torch.diag(mask[r]) @ v.T
            want = x[r] @ proj + fill @ (torch.eye(d, dtype=torch.float64) - proj)
            want = torch.where(positions[:, None], want, x[r])
            torch.testing.assert_close(got[r], want, atol=1e-12, rtol=0)
        torch.testing.assert_close(
            removed_part(x, v, mask), x - project(x, v, mask), atol=1e-12, rtol=0
        )
        # zero fill at every position is the study's clip
        torch.testing.assert_close(fill_clip(x, v, mask), project(x, v, mask), atol=1e-12, rtol=0)


def test_fill_clip_keeps_everything_at_k_d_exactly():
    d = 9
    v = random_basis(d)
    x = torch.randn(3, 4, d, dtype=torch.float64)
    fill = torch.randn(d, dtype=torch.float64)
    assert torch.equal(fill_clip(x, v, prefix_masks([d, d, d], d).double(), fill=fill), x)
    assert torch.equal(fill_clip(x, v, None, fill=fill), x)
    # k = 0 with a fill replaces the write by the fill at the clipped positions
    out = fill_clip(
        x,
        v,
        prefix_masks([0], d).double(),
        fill=fill,
        positions=torch.tensor([True, False, True, False]),
    )
    torch.testing.assert_close(out[:, 0], fill.expand(3, d), atol=1e-12, rtol=0)
    assert torch.equal(out[:, 1], x[:, 1])


# ----------------------------------------------------------------------------- hook adapter


def test_hooks_removed_after_an_exception(model3, text3):
    comp, d = text3.completion, text3.d_model
    before = n_forward_hooks(model3)
    with pytest.raises(RuntimeError, match="inside"):
        with fill_clip_writes(model3, text3.basis.vectors, mask=prefix_masks([0], d)):
            assert n_forward_hooks(model3) > before
            raise RuntimeError("raised inside")
    assert n_forward_hooks(model3) == before
    with pytest.raises(ValueError, match="batch"):  # raised by a hook, mid-forward
        with (
            torch.inference_mode(),
            fill_clip_writes(model3, text3.basis.vectors, mask=prefix_masks([0, 1], d)),
        ):
            continuation_logprob(model3, comp.prompt_tokens, comp.continuation_tokens, batch_size=3)
    assert n_forward_hooks(model3) == before
    with torch.inference_mode():
        lp = continuation_logprob(model3, comp.prompt_tokens, comp.continuation_tokens).total.item()
    assert lp == pytest.approx(text3.baseline, abs=1e-5)


def test_adapter_validates_fills_and_layers(model3, text3):
    v, d = text3.basis.vectors, text3.d_model
    with pytest.raises(ValueError, match="fills has no vector"):
        with fill_clip_writes(
            model3, v, mask=prefix_masks([0], d), fills={(0, "attn"): torch.zeros(d)}
        ):
            pass
    with pytest.raises(ValueError, match="outside"):
        with fill_clip_writes(model3, v, mask=prefix_masks([0], d), layers=[7]):
            pass
    with pytest.raises(ValueError, match="complete basis"):
        with fill_clip_writes(model3, v[:, :5], mask=prefix_masks([0], 5)):
            pass


def test_untouched_layers_positions_and_kinds(model3, text3):
    """Writes outside the clipped layers, kinds and positions are the model's own; clipped ones
    (k = 0, zero fill) are zero."""
    comp, d = text3.completion, text3.d_model
    seen: dict[str, torch.Tensor] = {}

    def grab(name):
        def fn(x, *, hook):
            seen[name] = x.clone()

        return fn

    names = [
        "blocks.0.hook_attn_out",
        "blocks.0.hook_mlp_out",
        "blocks.1.hook_attn_out",
        "blocks.1.hook_mlp_out",
    ]
    with torch.inference_mode():
        with (
            fill_clip_writes(
                model3,
                text3.basis.vectors,
                mask=prefix_masks([0], d),
                layers=[1],
                kinds=("attn",),
                positions=[2, 3],
            ),
            model3.hooks(fwd_hooks=[(n, grab(n)) for n in names]),
        ):
            continuation_logprob(model3, comp.prompt_tokens, comp.continuation_tokens)
    ref = text3.writes

    def recorded(layer, kind):
        return ref.matrix[
            ref.index[(ref.index.layer == layer) & (ref.index.kind == kind)].row.to_numpy().copy()
        ]

    close = dict(atol=1e-5, rtol=1e-5)
    for layer, kind in ((0, "attn"), (0, "mlp")):  # before any clipping: the recorded writes
        torch.testing.assert_close(
            seen[f"blocks.{layer}.hook_{kind}_out"][0].float(), recorded(layer, kind), **close
        )
    attn1, mlp1 = (
        seen["blocks.1.hook_attn_out"][0].float(),
        seen["blocks.1.hook_mlp_out"][0].float(),
    )
    torch.testing.assert_close(
        attn1[:2], recorded(1, "attn")[:2], **close
    )  # positions 0, 1: untouched
    assert torch.equal(attn1[2:4], torch.zeros_like(attn1[2:4]))  # clipped to k = 0
    torch.testing.assert_close(
        mlp1[:2], recorded(1, "mlp")[:2], **close
    )  # the MLP write is not clipped,
    assert not torch.allclose(
        mlp1[2:], recorded(1, "mlp")[2:], atol=1e-4
    )  # but it reads the clipped stream


# ----------------------------------------------------------------------------- experiment


def test_zero_variant_equals_the_package_clip(model3, text3):
    r = run_clip_variants(model3, text3, variants=["zero"], chunk_size=8)
    curve = r.tables["curve"]
    ev = text3.evaluator("singular_value")
    np.testing.assert_allclose(curve.logprob.to_numpy(), ev(curve.k.tolist()), atol=2e-4, rtol=0)
    tol = r.tables["minimal"].tolerance.iloc[0]
    grid = curve_ks(text3.d_model, jitter=False)
    pkg = lazy_scan_first_crossing(ev, text3.baseline - tol, text3.d_model, grid, step=8)
    assert r.min_k("zero") == pkg.k
    assert r.tables["minimal"].logprob_at_0.iloc[0] == pytest.approx(float(ev([0])[0]), abs=2e-4)


def test_every_variant_gives_the_baseline_at_k_d(model3, text3):
    d = text3.d_model
    for spec in VARIANTS.values():
        ev = variant_evaluator(text3, spec, chunk_size=8)
        assert ev([d])[0] == pytest.approx(text3.baseline, abs=1e-5), spec.name
    r = run_clip_variants(model3, text3, chunk_size=8)
    last = r.tables["curve"].query("k == @d")
    assert set(last.variant) == set(VARIANTS)
    np.testing.assert_allclose(last.logprob, text3.baseline, atol=1e-4)
    assert (r.tables["minimal"].min_k <= d).all()
    # the layer thirds of 3 layers are single layers; the memo answered the second run
    mk = r.tables["minimal"].set_index("variant")
    assert mk.loc[
        ["layers_early", "layers_middle", "layers_late"], "n_clipped_layers"
    ].tolist() == [1, 1, 1]
    assert (
        set(r.tables["gap"].variant) == set(VARIANTS)
        and r.tables["gap"].groupby("variant").size().eq(6).all()
    )


def test_variants_differ_where_they_should(model3, text3):
    """Clipping nothing is the baseline; a fill changes k = 0; keeping BOS changes nothing at
    k = 0 (every later write is zero whatever BOS holds) but does at k > 0 (later writes read
    it)."""
    h = text3.d_model // 2
    nothing = ClipVariant("nothing", layers=())
    assert variant_evaluator(text3, nothing)([0, h])[0] == pytest.approx(text3.baseline, abs=1e-5)
    zero = variant_evaluator(text3, VARIANTS["zero"])([0, h])
    mean = variant_evaluator(text3, VARIANTS["mean_text"])([0, h])
    keep = variant_evaluator(text3, VARIANTS["keep_bos"])([0, h])
    assert abs(zero[0] - mean[0]) > 1e-3
    assert keep[0] == pytest.approx(zero[0], abs=1e-5) and abs(keep[1] - zero[1]) > 1e-4


def test_variant_rows_are_counted_for_the_phase_timings(text3):
    """replicate's timings.csv reads forward and token rows from interp.sweeps.COUNTERS; a variant
    evaluator that ran rows without counting them made clip_variants report 0 rows."""
    from interp.sweeps import COUNTERS

    ev = variant_evaluator(text3, ClipVariant("counted", keep_first=2), chunk_size=2)
    rows0, tok0 = COUNTERS["rows"], COUNTERS["token_rows"]
    ev([0, 1, 2, 3, 4])
    ev([0, 4])  # memoized: no new rows
    assert COUNTERS["rows"] - rows0 == 5 == ev.n_rows
    assert COUNTERS["token_rows"] - tok0 == 5 * text3.completion.tokens.numel()


def test_result_saves_loads_and_draws(model3, text3, tmp_path):
    r = run_clip_variants(model3, text3, variants=["zero", "mean_text"], chunk_size=8)
    s = r.summary()
    for key in (
        "min_k_frac_zero",
        "min_k_frac_mean_text",
        "gap_50_zero",
        "gap_99_mean_text",
        "within_1_zero",
        "bos_share_direction_0",
    ):
        assert key in s
    again = ClipVariantsResult.load(r.save(tmp_path))
    assert again.summary() == pytest.approx(s)
    figs = again.figures()
    assert set(figs) == {"clip_variants_gap_closure", "clip_variants_min_k"}
    assert r.settings["mean_includes_bos"] is True and len(r.settings["variants"]) == 2


def test_resolve_variants_rejects_unknown_and_duplicates():
    with pytest.raises(ValueError, match="unknown clip variant"):
        resolve_variants(["nope"])
    with pytest.raises(ValueError, match="unique"):
        resolve_variants(["zero", ClipVariant("zero", fill="mean_text")])
    with pytest.raises(ValueError, match="fill"):
        ClipVariant("x", fill="median")
    assert ClipVariant("t", layers="late").clipped_layers(30) == list(range(20, 30))
    assert ClipVariant("t", keep_first=4).clipped_positions(6) == [4, 5]


# ------------------------------------------------------------------------ direction sources


def test_direction_sources_shares(text3):
    t = direction_sources(text3, n_directions=5)
    assert set(t.group_type) == {"position", "kind", "layer"} and t.direction.nunique() == 5
    sums = t.groupby(["direction", "group_type"]).share.sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-9)
    s2 = t.groupby(["direction", "group_type"]).sum_sq.sum().groupby("direction").first()
    np.testing.assert_allclose(
        s2.to_numpy(), text3.basis.singular_values[:5].double().numpy() ** 2, rtol=1e-5
    )
    rows = t[(t.direction == 0) & (t.group_type == "position")].set_index("group").row_share
    assert rows["bos"] == pytest.approx(1 / text3.completion.tokens.numel())


# --------------------------------------------------------- the planted constant direction


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A tiny GPT-2 whose layer-1 MLP write is constant (c) along a fixed unit u at every
    position: its component along u is replaced by c, all its variation lies elsewhere. The
    constant dominates the residual's norm, so the final LayerNorm's output (hence every
    prediction) depends on it; logits are sharpened 30x so that the model is confident, and the
    continuation is its own greedy one."""
    model = tiny_model("gpt2", tmp_path_factory.mktemp("planted"), n_layers=3, seed=3)
    d = model.cfg.d_model
    u = torch.randn(d, generator=torch.Generator().manual_seed(5))
    u = u / u.norm()
    prompt = E.PROMPTS["relativity"]
    prompt_tokens = encode_prompt(model, prompt)
    c = 20.0 * float(capture_writes(model, prompt_tokens).matrix.norm(dim=1).mean())

    def plant(x, hook):
        uu = u.to(x)
        return x - (x @ uu)[..., None] * uu + c * uu

    model.add_hook("blocks.1.hook_mlp_out", plant, is_permanent=True)
    model.add_hook("hook_unembed", lambda x, hook: 30.0 * x, is_permanent=True)
    tokens = prompt_tokens.clone()
    with torch.inference_mode():
        for _ in range(10):
            tokens = torch.cat([tokens, model(tokens[None])[0, -1].argmax()[None].cpu()])
    cont = tokens[prompt_tokens.numel() :]
    comp = Completion(prompt, prompt_tokens, cont, model.tokenizer.decode(cont.tolist()))
    text = E.prepare(model, comp, chunk_size=8)
    return model, text, u.double(), c


def test_planted_direction_is_the_top_direction(planted):
    model, text, u, c = planted
    assert abs(float(text.basis.vectors[:, 0].double() @ u)) > 0.99
    means = mean_writes(text.writes)
    assert float(means[(1, "mlp")] @ u) == pytest.approx(c, rel=1e-5)
    src = direction_sources(text, 1).query("group_type == 'layer'").set_index("group").share
    assert src["1"] > 0.9


def test_zero_ablation_destroys_a_constant_direction_mean_ablation_keeps(planted):
    """Removing u from the planted write: zero fill loses many nats; the mean fill (whose u
    component is exactly c, as is every write's) gives back the unclipped model."""
    model, text, u, c = planted
    d = text.d_model
    q = torch.linalg.qr(torch.cat([u[:, None], random_basis(d, 7)[:, : d - 1]], 1)).Q
    v = torch.cat(
        [q[:, 1:], q[:, :1]], 1
    ).float()  # u is the last column: k = d - 1 removes exactly u
    mask = prefix_masks([d - 1], d)
    fills = {(1, "mlp"): mean_writes(text.writes)[(1, "mlp")]}
    comp = text.completion

    def score(**kw):
        with (
            torch.inference_mode(),
            fill_clip_writes(model, v, mask=mask, layers=[1], kinds=("mlp",), **kw),
        ):
            return continuation_logprob(
                model, comp.prompt_tokens, comp.continuation_tokens
            ).total.item()

    zero, mean = score(), score(fills=fills)
    assert text.baseline - zero > 20.0
    assert mean == pytest.approx(text.baseline, abs=1e-4)


def test_mean_text_variant_keeps_the_planted_direction(planted):
    """Through the experiment: clipping only the planted layer's MLP write to k = 0 in the text's
    basis, the mean_text fill stays far closer to the unclipped model than the zero fill."""
    model, text, u, c = planted
    only = dict(layers=(1,), kinds=("mlp",))
    r = run_clip_variants(
        model,
        text,
        variants=[ClipVariant("zero_l1", **only), ClipVariant("mean_l1", fill="mean_text", **only)],
        chunk_size=8,
    )
    lp0 = r.tables["minimal"].set_index("variant").logprob_at_0
    base = text.baseline
    assert base - lp0["zero_l1"] > 5.0
    assert base - lp0["mean_l1"] < 0.2 * (base - lp0["zero_l1"])
    assert r.min_k("mean_l1") <= r.min_k("zero_l1")
    assert isinstance(r.tables["curve"], pd.DataFrame)


def test_registered_as_a_plugin():
    from experiments import registry

    plugin = registry.get_plugin("clip_variants")
    assert plugin.result is ClipVariantsResult and plugin.fn is run_clip_variants


def test_variants_that_clip_nothing_are_left_out(gpt2_tiny, completion):
    """On the 2-layer tiny model one third of the layers is empty: that variant is skipped (listed
    in the settings), never reported as k = 0."""
    from experiments.clip_variants import run_clip_variants

    r = run_clip_variants(
        gpt2_tiny, completion, variants=("zero", "layers_early", "layers_middle", "layers_late")
    )
    assert r.settings["skipped_variants"] == [
        "layers_late"
    ]  # np.array_split(range(2), 3) -> [0], [1], []
    assert r.tables["minimal"].variant.tolist() == ["zero", "layers_early", "layers_middle"]
