"""What a user's tests get from the package: the shipped fixtures, quiet loading, tiny random
shapes."""

import torch

import interp
from interp.testing import SHAPES, tiny_model


def test_shipped_fixtures_are_the_documented_toys(gpt2_tiny, llama_tiny, completion, model_dirs):
    assert set(model_dirs) == {"gpt2", "llama", "neox"}
    for model in (gpt2_tiny, llama_tiny):
        assert (model.cfg.d_model, model.cfg.n_layers) == (64, 2)
    assert completion.continuation_tokens.numel() == 8
    writes = interp.capture_writes(gpt2_tiny, completion.tokens)
    assert writes.matrix.shape == (
        2 * 2 * completion.tokens.numel(),
        64,
    )  # layers x kinds x positions


def test_load_model_is_quiet_when_asked(model_dirs, capfd):
    interp.load_model(model_dirs["neox"], device="cpu", progress=False)
    interp.load_model("random:tiny-llama", device="cpu", progress=False)
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)
    interp.load_model(
        model_dirs["neox"], device="cpu", progress=True
    )  # the bar is still there when wanted
    assert "Loading weights" in capfd.readouterr().err


def test_tiny_random_shapes_and_tiny_model(tmp_path):
    small = [name for name in SHAPES if name.startswith("tiny-")]
    assert small == ["tiny-gpt2", "tiny-llama", "tiny-neox"]
    m = interp.load_model("random:tiny-neox", device="cpu", progress=False)
    assert m.cfg.d_model == 64 and m.cfg.n_layers == 2
    toy = tiny_model("llama", tmp_path / "toy")
    again = tiny_model("llama", tmp_path / "toy")  # the saved directory is reused: same weights
    tokens = torch.tensor([[0, 5, 9, 17]])
    with torch.inference_mode():
        assert torch.equal(toy(tokens), again(tokens))
