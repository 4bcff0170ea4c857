"""Invariants of the core on three tiny architectures (GPT-2, Llama, GPT-NeoX parallel)."""

import pytest
import torch
from einops import rearrange

import interp
from interp.writes import write_hook_names

PROMPT = "I believe the meaning of life is"


@pytest.fixture(scope="module")
def sample(tiny):
    return interp.sample_continuation(tiny, PROMPT, max_new_tokens=12, seed=1)


def residual_ends(model, tokens):
    """(embedding stream entering block 0, residual after the last block)."""
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    _, cache = model.run_with_cache(tokens[None], names_filter=["blocks.0.hook_resid_pre", last])
    return cache["blocks.0.hook_resid_pre"][0], cache[last][0]


def logprob(model, comp, **kw):
    with torch.inference_mode():
        return interp.continuation_logprob(
            model, comp.prompt_tokens, comp.continuation_tokens, **kw
        )


def test_writes_sum_to_residual_stream(tiny, sample):
    writes = interp.capture_writes(tiny, sample.tokens)
    n_pos, d = sample.tokens.numel(), tiny.cfg.d_model
    assert writes.matrix.shape == (2 * tiny.cfg.n_layers * n_pos, d)
    assert writes.matrix.dtype == torch.float32
    assert list(writes.index.columns) == ["row", "layer", "kind", "position", "token_id", "token"]
    assert list(writes.index.sort_values(["layer", "kind", "position"]).row) == list(
        range(len(writes.index))
    )
    embed, final = residual_ends(tiny, sample.tokens)
    total = embed + rearrange(writes.matrix, "(lk pos) d -> lk pos d", pos=n_pos).sum(0)
    err = (total - final).abs().max().item()
    print(f"[{tiny.cfg.architecture}] writes-sum reconstruction max err {err:.2e}")
    assert err < 1e-4 * max(1.0, final.abs().max().item())


def test_kinds_select_rows(tiny, sample):
    attn = interp.capture_writes(tiny, sample.tokens, kinds=("attn",))
    both = interp.capture_writes(tiny, sample.tokens)
    assert set(attn.index.kind) == {"attn"}
    assert torch.equal(
        attn.matrix, both.matrix[torch.as_tensor((both.index.kind == "attn").to_numpy().copy())]
    )


def test_full_projection_reproduces_logprob(tiny, sample):
    base = logprob(tiny, sample).total
    basis = interp.write_basis(interp.capture_writes(tiny, sample.tokens))
    assert basis.vectors.shape == (tiny.cfg.d_model, tiny.cfg.d_model)
    with interp.project_writes(tiny, basis.vectors.float()):
        clipped = logprob(tiny, sample).total
    err = (clipped - base).abs().item()
    print(f"[{tiny.cfg.architecture}] k=d_model |dlogp| = {err:.2e} nats")
    assert err < 1e-4


def test_empty_projection_removes_every_write(tiny, sample):
    empty = torch.zeros(tiny.cfg.d_model, 0)
    with interp.project_writes(tiny, empty) as norms:
        embed, final = residual_ends(tiny, sample.tokens)
    assert torch.allclose(final, embed, atol=1e-6)
    assert norms.kept_delta().abs().max() == 0
    assert norms.orig_delta().min() > 0
    # ablating every direction is the same intervention
    full = interp.write_basis(interp.capture_writes(tiny, sample.tokens)).vectors.float()
    with interp.ablate_directions(tiny, full):
        a = logprob(tiny, sample).total
    with interp.project_writes(tiny, empty):
        b = logprob(tiny, sample).total
    assert torch.allclose(a, b, atol=1e-4)


def test_batched_subspaces_equal_separate_calls(tiny, sample):
    d = tiny.cfg.d_model
    basis = interp.write_basis(interp.capture_writes(tiny, sample.tokens)).vectors.float()
    ks = [0, 1, 3, d // 2, d]
    with interp.project_writes(tiny, basis, mask=interp.prefix_masks(ks, d)) as norms:
        batched = logprob(tiny, sample, batch_size=len(ks))
    assert norms.n_passes == 1
    for i, k in enumerate(ks):
        with interp.project_writes(tiny, basis[:, :k]) as one:
            single = logprob(tiny, sample)
        assert torch.allclose(batched.per_token[i], single.per_token[0], atol=1e-4)
        assert torch.allclose(norms.orig_delta()[0, i], one.orig_delta()[0, 0], rtol=1e-4)
        assert torch.allclose(
            norms.kept_delta()[0, i], one.kept_delta()[0, 0], rtol=1e-4, atol=1e-6
        )
    # one direction per batch element (single-direction ablations), batched
    per = rearrange(basis[:, :4], "d b -> b d 1")
    with interp.ablate_directions(tiny, per):
        abl = logprob(tiny, sample, batch_size=4).total
    for i in range(4):
        with interp.ablate_directions(tiny, basis[:, i : i + 1]):
            assert torch.allclose(abl[i], logprob(tiny, sample).total[0], atol=1e-4)


def test_each_write_hook_fires_once_per_pass(tiny, sample):
    basis = torch.eye(tiny.cfg.d_model)
    with interp.project_writes(tiny, basis) as norms:
        logprob(tiny, sample)
        logprob(tiny, sample)
    assert len(norms.calls) == 2 * 2 * tiny.cfg.n_layers
    assert norms.n_passes == 2
    assert len(norms.table()) == 2 * 2 * tiny.cfg.n_layers


def test_hooks_removed_after_exception(tiny, sample):
    names = [n for _, _, n in write_hook_names(tiny)]
    with pytest.raises(RuntimeError, match="boom"):
        with interp.project_writes(tiny, torch.zeros(tiny.cfg.d_model, 0)):
            raise RuntimeError("boom")
    assert all(len(tiny.hook_dict[n].fwd_hooks) == 0 for n in names)
    with pytest.raises(ValueError, match="batch of 1 but there are 3 subspaces"):
        with interp.project_writes(
            tiny, torch.eye(tiny.cfg.d_model), mask=interp.prefix_masks([0, 1, 2], tiny.cfg.d_model)
        ):
            logprob(tiny, sample)
    assert all(len(tiny.hook_dict[n].fwd_hooks) == 0 for n in names)


def test_gradients_flow_through_projection(gpt2_tiny, completion):
    v = torch.linalg.qr(torch.randn(gpt2_tiny.cfg.d_model, 5)).Q.requires_grad_(True)
    with interp.project_writes(gpt2_tiny, v, check=False):
        lp = interp.continuation_logprob(
            gpt2_tiny, completion.prompt_tokens, completion.continuation_tokens
        ).total
    lp.sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0


def test_sampling_is_seeded_and_greedy_is_argmax(gpt2_tiny):
    a = interp.sample_continuation(gpt2_tiny, PROMPT, max_new_tokens=6, seed=3)
    b = interp.sample_continuation(gpt2_tiny, PROMPT, max_new_tokens=6, seed=3)
    assert torch.equal(a.continuation_tokens, b.continuation_tokens)
    g = interp.sample_continuation(gpt2_tiny, PROMPT, max_new_tokens=1, temperature=0)
    with torch.inference_mode():
        logits = gpt2_tiny(g.prompt_tokens[None])[0, -1]
    assert g.continuation_tokens.tolist() == [int(logits.argmax())]
    empty = interp.sample_continuation(gpt2_tiny, "", max_new_tokens=3, seed=0)
    assert empty.prompt_tokens.tolist() == [gpt2_tiny.tokenizer.bos_token_id]


def test_completion_round_trip_checks_tokenizer(gpt2_tiny, completion):
    d = completion.to_dict()
    again = interp.Completion.from_dict(d, gpt2_tiny)
    assert torch.equal(again.tokens, completion.tokens)
    d["meta"]["tokenizer"] = "0000000000000000"
    with pytest.raises(interp.TokenizerMismatchError, match="regenerate the continuation"):
        interp.Completion.from_dict(d, gpt2_tiny)


def test_bad_inputs_give_clear_errors(gpt2_tiny, completion):
    m, d = gpt2_tiny, gpt2_tiny.cfg.d_model
    with pytest.raises(ValueError, match="Empty continuation"):
        interp.continuation_logprob(m, completion.prompt_tokens, torch.zeros(0, dtype=torch.long))
    too_long = torch.zeros(m.cfg.n_ctx + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="longer than the model's context"):
        interp.continuation_logprob(m, too_long[:-5], too_long[-5:])
    with pytest.raises(ValueError, match="longer than the model's context"):
        interp.sample_continuation(m, PROMPT, max_new_tokens=m.cfg.n_ctx)
    with pytest.raises(ValueError, match="d_model is"):
        with interp.project_writes(m, torch.eye(d + 1)):
            pass
    with pytest.raises(ValueError, match="not orthonormal"):
        with interp.project_writes(m, torch.randn(d, 3)):
            pass
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        interp.continuation_logprob(m, completion.prompt_tokens, torch.tensor([m.cfg.d_vocab + 5]))
    with pytest.raises(ValueError, match="kinds must be"):
        interp.capture_writes(m, completion.tokens, kinds=("resid",))
    with pytest.raises(ValueError, match="k must be in"):
        interp.write_basis(interp.capture_writes(m, completion.tokens)).top(d + 1)


def test_unknown_model_offline_fails_fast(monkeypatch, tmp_path):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(interp.ModelNotFoundError, match="local HF-format directory"):
        interp.load_model("no-such-org/no-such-model-xyz")
    assert time.perf_counter() - t0 < 5
    (tmp_path / "empty").mkdir()
    with pytest.raises(interp.ModelNotFoundError, match="no config.json"):
        interp.load_model(tmp_path / "empty")


def test_processing_changes_writes_only_when_asked(model_dirs):
    raw = interp.load_model(model_dirs["gpt2"], device="cpu")
    proc = interp.load_model(model_dirs["gpt2"], device="cpu", processing=True)
    toks = interp.encode_prompt(raw, PROMPT)
    w_raw = interp.capture_writes(raw, toks).matrix
    w_proc = interp.capture_writes(proc, toks).matrix
    # center_writing_weights makes every write mean-zero over d_model on a LayerNorm model
    assert w_proc.mean(1).abs().max() < 1e-5
    assert w_raw.mean(1).abs().max() > 1e-3
    assert interp.model_info(proc).processing and not interp.model_info(raw).processing


def test_core_runs_on_a_plain_hooked_root_module():
    from toy_hooked import ToyHooked

    torch.manual_seed(0)
    model = ToyHooked().eval()
    tokens = torch.randint(0, 50, (10,))
    writes = interp.capture_writes(model, tokens)
    assert "token" not in writes.index.columns
    basis = interp.write_basis(writes)
    with torch.inference_mode():
        base = interp.continuation_logprob(model, tokens[:4], tokens[4:]).total
        with interp.project_writes(
            model, basis.vectors.float(), mask=interp.prefix_masks([0, 16], 16)
        ):
            lp = interp.continuation_logprob(model, tokens[:4], tokens[4:], batch_size=2).total
    assert abs(lp[1] - base[0]) < 1e-4 and abs(lp[0] - base[0]) > 1e-3
