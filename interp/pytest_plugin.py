"""Pytest fixtures for tests of code built on this package: the tiny random models the package's
own tests use. Turn them on in your ``conftest.py``::

    pytest_plugins = ["interp.pytest_plugin"]

Fixtures (session-scoped: built once, a few seconds in all; CPU, float32, no network):

- ``model_dirs``: ``{"gpt2": Path, "llama": Path, "neox": Path}``, HF-format directories of
  random-init models with the toy tokenizer (``interp.testing.make_model_dir``);
- ``tiny``: each of the three architectures in turn (a parametrized fixture);
- ``gpt2_tiny``, ``llama_tiny``: one architecture;
- ``completion``: an 8-token continuation sampled (seed 0) from ``gpt2_tiny`` after
  ``"I believe the meaning of life is"``.

Random weights reproduce no finding: check invariants (limits, equalities, shapes), not numbers.
"""

import pytest
import torch

from .generation import sample_continuation
from .models import load_model
from .testing import make_model_dir

ARCHS = ("gpt2", "llama", "neox")


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """HF-format directories of the three tiny random models, keyed by architecture."""
    root = tmp_path_factory.mktemp("models")
    return {arch: make_model_dir(root / arch, arch) for arch in ARCHS}


@pytest.fixture(scope="session", params=ARCHS)
def tiny(request: pytest.FixtureRequest, model_dirs: dict):
    """Each tiny architecture in turn: a test using it runs three times."""
    torch.manual_seed(0)
    return load_model(model_dirs[request.param], device="cpu", progress=False)


@pytest.fixture(scope="session")
def gpt2_tiny(model_dirs: dict):
    """The tiny GPT-2 (LayerNorm, biases, learned positions): d_model 64, 2 layers."""
    return load_model(model_dirs["gpt2"], device="cpu", progress=False)


@pytest.fixture(scope="session")
def llama_tiny(model_dirs: dict):
    """The tiny Llama (RMSNorm, rotary, grouped-query attention): d_model 64, 2 layers."""
    return load_model(model_dirs["llama"], device="cpu", progress=False)


@pytest.fixture(scope="session")
def completion(gpt2_tiny):
    """An 8-token continuation of the tiny GPT-2 (seed 0)."""
    return sample_continuation(
        gpt2_tiny, "I believe the meaning of life is", max_new_tokens=8, seed=0
    )
