"""The package's tiny-model fixtures (gpt2_tiny, llama_tiny, tiny, completion, model_dirs)."""

pytest_plugins = ["interp.pytest_plugin"]
