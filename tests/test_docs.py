"""Docs that are generated from code stay in step with it."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))


def python_blocks(page: Path) -> list[str]:
    import re

    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def test_extending_snippets_run_as_written(model_dirs, monkeypatch, tmp_path):
    """Every Python block of docs/extending.md, in order, in one namespace: complete (imports
    included) and current. Only the model differs: the tiny GPT-2 instead of SmolLM2."""
    from experiments import registry

    blocks = python_blocks(ROOT / "docs" / "extending.md")
    assert len(blocks) >= 6
    source = "\n".join(blocks)
    assert source.count('load_model("smollm2-135m"') == 1
    source = source.replace('load_model("smollm2-135m"', f"load_model({str(model_dirs['gpt2'])!r}")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_extending"}
    try:
        exec(compile(source, "docs/extending.md", "exec"), namespace)
    finally:
        registry.unregister("half_layers")
    assert namespace["again"].summary() == namespace["r"].summary()
    assert registry.BUILTIN and "half_layers" not in registry.plugin_names()


def test_readme_has_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert "python -m experiments reproduce" in text and "python -m pytest -q" in text
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text()


def test_docs_hold_no_placeholders_or_pending_results():
    """Every page says what the real models show; nothing is left 'pending' or unfilled."""
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        text = page.read_text()
        assert "pending a pretrained model" not in text.lower(), page
        assert not re.search(r"__[A-Z_]+__", text), page
        # an ALL_CAPS_NAME in prose (outside code) is an unfilled placeholder (TESTS_TIME was once
        # left in the README); quantization names (Q4_K_M) and math (W_O, H_33) have 1-letter parts
        prose = re.sub(r"`[^`]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))
        assert not re.findall(r"\b[A-Z]{2,}(?:_[A-Z]{2,})+\b", prose), (
            page,
            "unfilled placeholder",
        )


API_NAMES = {  # page -> anchors a user writing an experiment needs
    "interp.html": [
        "load_model",
        "model_device",
        "write_hook_name",
        "project",
        "prefix_masks",
        "continuation_logprob",
        "write_basis",
        "Basis.table",
        "Writes.select",
        "Writes.index",
    ],
    "experiments.html": [
        "prepare",
        "Text",
        "Text.meta",
        "ExperimentResult.save",
        "ExperimentResult.load",
        "ExperimentResult.save_figures",
        "ExperimentResult.summary",
        "run_meta",
        "register",
    ],
    "interp/pytest_plugin.html": ["gpt2_tiny", "completion"],
    "experiments/registry.html": ["register", "discover", "Plugin"],
    "experiments/study/reproduce.html": [
        "Settings",
        "reproduce",
    ],  # nested packages are documented too
    "experiments/study/replication.html": ["claims", "RULES", "text_metrics"],
}


def test_api_reference_builds_without_warnings_and_names_everything(tmp_path):
    import re

    from gen_api import build

    index = build(tmp_path / "api")
    assert index.exists()
    for page, names in API_NAMES.items():
        html = (tmp_path / "api" / page).read_text()
        missing = [n for n in names if f'id="{n}"' not in html]
        assert not missing, (page, missing)
        assert not re.search(r'<(script|link)[^>]+(src|href)="https?://', html), (
            page
        )  # browsable offline
    writes = (tmp_path / "api" / "interp.html").read_text()
    assert all(
        col in writes for col in ("token_id", "position", "layer")
    )  # Writes.index columns documented


def test_api_reference_warnings_are_errors(tmp_path, monkeypatch):
    import warnings

    import pdoc
    import pytest
    from gen_api import APIReferenceWarning, build

    def warn(*modules, output_directory):
        warnings.warn_explicit("Error parsing type annotation", UserWarning, pdoc.__file__, 1)

    monkeypatch.setattr(pdoc, "pdoc", warn)
    with pytest.raises(APIReferenceWarning, match="Error parsing type annotation"):
        build(tmp_path / "api")


def test_reproduce_md_option_tables_are_the_parsers():
    """docs/reproduce.md's option tables are generated from the argparse parsers (``python
    docs/gen_options.py``); an option added, renamed or re-documented without regenerating fails."""
    from gen_options import BLOCK, PAGE, render

    text = PAGE.read_text()
    assert {m.group(2) for m in BLOCK.finditer(text)} == {"reproduce", "replicate", "extend", "run"}
    assert render(text) == text, "docs/reproduce.md is out of date: run python docs/gen_options.py"
    for name in (
        "--with",
        "--max-new-tokens",
        "--out",
        "--png",
        "--no-progress",
        "--debug",
        "--docs",
    ):
        assert f"`{name}" in text, name
    assert "plugin_<name>.csv" in text


def test_every_helper_docs_extending_uses_has_a_docstring():
    """Each ``interp.X`` / ``experiments.X`` / ``E.X`` the page names, and each name it imports
    from them, resolves and has a docstring (the API reference shows it)."""
    import importlib
    import inspect
    import re

    page = (ROOT / "docs" / "extending.md").read_text()
    refs = {
        ({"E": "experiments"}.get(mod, mod), name)
        for mod, name in re.findall(r"\b(interp|experiments|E)\.([A-Za-z_][\w.]*\w)", page)
    }
    for m in re.finditer(r"from ((?:interp|experiments)[\w.]*) import ([^\n]+)", page):
        refs |= {(m.group(1), n.strip()) for n in m.group(2).split(",")}
    assert len(refs) >= 15
    undocumented = []
    for mod, name in sorted(refs):
        try:
            obj = importlib.import_module(f"{mod}.{name}")
        except ImportError:
            obj = importlib.import_module(mod)
            for part in name.split("."):
                obj = getattr(obj, part)
        if not inspect.getdoc(obj):
            undocumented.append(f"{mod}.{name}")
    assert not undocumented


def test_readme_plugin_snippet_registers_and_takes_its_option():
    """README's "Extend it" block is a working plug-in: it registers, declares ``ks`` as a typed
    option that ``--opt ks=0,8,16`` parses, and returns its result class."""
    from experiments import registry

    blocks = python_blocks(ROOT / "README.md")
    source = next(b for b in blocks if "@register(" in b)
    namespace: dict = {"__name__": "readme_plugin"}
    try:
        exec(compile(source, "README.md", "exec"), namespace)
        plugin = registry.get_plugin("my_experiment")
        assert plugin.result is namespace["MyResult"] and not plugin.builtin
        assert plugin.parse_options(["ks=0,8,16"]) == {"ks": (0, 8, 16)}
    finally:
        registry.unregister("my_experiment")
    assert "my_experiment" not in registry.plugin_names()
