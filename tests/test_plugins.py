"""Experiments from outside the package (experiments/registry.py): registered, found by the CLI,
run, saved, resumed and reported like the built-in ones. The example plug-in lives in
examples/layer_range/, a folder standing for a user's own project, with its own tests."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_argv import argv, tiny_replicate

import experiments as E
from experiments import registry
from experiments.study.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "layer_range"


@pytest.fixture()
def plugin_env(model_dirs, monkeypatch):
    monkeypatch.setenv("RESID_WRITES_MODEL", str(model_dirs["gpt2"]))
    monkeypatch.setenv(registry.ENV, str(EXAMPLE / "layer_range.py"))
    return registry.get_plugin("layer_range")


def test_the_example_project_passes_its_own_tests_with_the_shipped_fixtures():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q"], cwd=EXAMPLE, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout


def test_registry_finds_the_plugin_and_explains_what_it_cannot_find(plugin_env, monkeypatch):
    assert plugin_env.name == "layer_range" and plugin_env.result.__name__ == "LayerRangeResult"
    assert "layer_range" in registry.plugin_names()
    with pytest.raises(KeyError, match=r"no plug-in experiment 'nope'.*RESID_WRITES_PLUGINS"):
        registry.get_plugin("nope")
    with pytest.raises(ValueError, match="built-in"):
        registry.register("clipping", result=E.ClippingResult)
    monkeypatch.setenv(registry.ENV, str(EXAMPLE / "missing.py"))
    with pytest.raises(FileNotFoundError, match="missing.py does not exist"):
        registry.discover()


def test_a_plugin_must_return_its_result_class(gpt2_tiny, completion):
    @registry.register("returns_wrong", result=E.ClippingResult)
    def wrong(model, text):
        return E.ExperimentResult(tables={}, settings={})

    try:
        with pytest.raises(TypeError, match="not its registered result class ClippingResult"):
            registry.get_plugin("returns_wrong")(
                gpt2_tiny, completion, seed=3
            )  # unknown options are dropped
    finally:
        registry.unregister("returns_wrong")


def test_run_a_plugin_from_the_cli(plugin_env, tmp_path, capsys):
    main(argv("run", "layer_range", prompt="relativity", out=tmp_path, max_new_tokens=5))
    out = tmp_path / "layer_range"
    curve = pd.read_csv(out / "curve.csv")
    assert set(curve.basis) == {"local", "global"} and set(curve.layers) == {"early", "late", "all"}
    assert json.loads((out / "settings.json").read_text())["experiment"] == "layer_range"
    assert (out / "figures" / "layer_range.html").exists() and (
        out / "figures" / "plotly.min.js"
    ).exists()
    assert "layer_range: {'k_within_1_nats[all/global]'" in capsys.readouterr().out


def test_reproduce_with_a_plugin_saves_resumes_and_reports(plugin_env, tmp_path):
    out = tmp_path / "res"
    args = argv(
        "reproduce",
        out=out,
        max_new_tokens=5,
        samples=1,
        draws=5,
        prompts=["meaning_of_life", "translate"],
        with_="layer_range",
    )
    main(args)
    for text in ("meaning_of_life", "translate"):
        assert (out / text / "layer_range" / "settings.json").exists()
    table = pd.read_csv(out / "plugin_layer_range.csv")
    assert (
        table.text.tolist() == ["meaning_of_life", "translate"]
        and "k_within_1_nats[all/local]" in table
    )
    report = (out / "report.html").read_text()
    assert "Plug-in: layer_range" in report and "clipping a range of layers" in report
    assert "## Plug-in: layer_range" in (out / "report.md").read_text()
    stamp = (out / "translate" / "layer_range" / "settings.json").stat().st_mtime_ns
    main(args)  # resume: loaded, not recomputed
    assert (out / "translate" / "layer_range" / "settings.json").stat().st_mtime_ns == stamp
    timings = pd.read_csv(out / "timings.csv")
    assert timings[timings.phase == "layer_range"].loaded.tolist() == [False, False, True, True]


def test_an_unknown_plugin_fails_before_the_model_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESID_WRITES_MODEL", str(tmp_path / "no-model-here"))
    monkeypatch.delenv(registry.ENV, raising=False)
    with pytest.raises(SystemExit) as err:
        main(["reproduce", "--out", str(tmp_path), "--with", "layer_rnage"])
    assert err.value.code == 2 and "invalid choice: 'layer_rnage'" in capsys.readouterr().err


def test_replicate_runs_the_exact_extensions_on_the_exact_texts_only(model_dirs, tmp_path):
    """replicate's --exact-with plug-ins (default: study_procedure) run on the first --exact-texts
    texts and nowhere else, do not change the run key (a folder made without them resumes), and
    feed the table's study-procedure rows."""
    import experiments.study.reproduce as R

    gpt2 = str(model_dirs["gpt2"])
    out, docs = tmp_path / "rep", tmp_path / "docs"
    common = tiny_replicate(gpt2, out, docs=docs)
    main(
        [*common, "--exact-with"]
    )  # none: the folder a run from before the extensions would have made
    name = Path(gpt2).name
    key = json.loads((out / name / "environment.json").read_text())["run_key"]
    assert not list(out.glob("*/*/study_procedure"))
    main(common)  # the default extensions, resumed in the same folder
    assert json.loads((out / name / "environment.json").read_text())["run_key"] == key
    assert [p.parent.parent.name for p in out.glob("*/*/study_procedure/settings.json")] == [
        "meaning_of_life"
    ]
    claims = pd.read_csv(docs / name / "claims.csv").set_index("key")
    assert (
        claims.loc["study_procedure", "n_texts"] == 1
        and "bfloat16 bisection" in claims.loc["study_procedure", "ours"]
    )
    assert claims.loc["study_procedure_scaled", "n_texts"] == 1
    assert R._NEUTRAL.count("exact_plugins") == 1


def test_extend_adds_a_plugin_from_the_docs_alone(model_dirs, tmp_path, capsys):
    """`extend` re-samples the docs' exact texts, checks them, runs the plug-in with the exported
    exact ablations and rewrites the table from texts.csv: the Hessian row gets its text, the other
    rows stay as replicate wrote them. A docs folder that does not match the re-sampled text is
    refused (exit 2, naming the mismatch)."""
    gpt2 = str(model_dirs["gpt2"])
    out, docs = tmp_path / "rep", tmp_path / "docs"
    main(tiny_replicate(gpt2, out, docs=docs, exact_with=True))
    name = Path(gpt2).name
    before = pd.read_csv(docs / name / "claims.csv").set_index("key")
    assert before.loc["hessian_order", "n_texts"] == 0
    shutil.rmtree(out)  # the run folder is gone: only docs remain
    main(argv("extend", models=gpt2, docs=docs, out=out, no_images=True))
    assert [p.parent.parent.name for p in out.glob("*/*/hessian_ranking/settings.json")] == [
        "meaning_of_life"
    ]
    after = pd.read_csv(docs / name / "claims.csv").set_index("key")
    assert (
        after.loc["hessian_order", "n_texts"] == 1
        and "Hessian minus SVD" in after.loc["hessian_order", "ours"]
    )
    others = [k for k in before.index if k != "hessian_order"]
    pd.testing.assert_frame_equal(after.loc[others], before.loc[others])
    readme = (docs / "README.md").read_text()
    assert "--exact-with study_procedure clip_variants text_length hessian_ranking" in readme
    assert (
        "were added to this folder by `python -m experiments extend --with hessian_ranking"
        in readme
    )
    h = pd.read_csv(docs / name / "hessian_ranking_directions.csv")
    imp = pd.read_csv(docs / name / "exact_importance.csv")
    np.testing.assert_allclose(h.exact.to_numpy(), imp.importance.to_numpy(), rtol=1e-5, atol=1e-6)

    # a docs folder describing another text: refused before anything is computed
    t = pd.read_csv(docs / name / "exact_importance.csv")
    t.loc[0, "singular_value"] *= 1.01
    t.to_csv(docs / name / "exact_importance.csv", index=False)
    shutil.rmtree(out)
    with pytest.raises(SystemExit) as err:
        main(argv("extend", models=gpt2, docs=docs, out=out, no_images=True))
    assert (
        err.value.code == 2 and "re-sampled text differs from the docs" in capsys.readouterr().err
    )
    assert not list(out.glob("*/*/hessian_ranking"))
