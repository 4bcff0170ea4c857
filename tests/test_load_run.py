"""Reading a run back (experiments.load_run): every experiment folder of a run, built-in and
plug-in, as the result object that saved it; tables across texts in tidy form; a class that is not
the one a folder's settings.json names is refused."""

import json
from pathlib import Path

import pandas as pd
import pytest
from cli_argv import argv

import experiments as E
from experiments import registry
from experiments.study.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "layer_range"


@pytest.fixture(scope="module")
def run_dir(model_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("load_run") / "res"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESID_WRITES_MODEL", str(model_dirs["gpt2"]))
        mp.setenv(registry.ENV, str(EXAMPLE / "layer_range.py"))
        main(
            argv(
                "reproduce",
                out=out,
                max_new_tokens=5,
                samples=1,
                draws=5,
                prompts=["meaning_of_life", "translate"],
                with_=["layer_range", "clip_variants"],
            )
        )
    return out


@pytest.fixture()
def plugin_env(run_dir, monkeypatch):
    monkeypatch.setenv(registry.ENV, str(EXAMPLE / "layer_range.py"))
    return run_dir


def _saved(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def test_every_folder_loads_as_its_result_with_the_saved_tables(plugin_env):
    out = plugin_env
    run = E.load_run(out)
    assert run.texts == ["meaning_of_life", "translate"]
    for text in run.texts:
        folders = sorted(p.name for p in (out / text).iterdir() if (p / "settings.json").exists())
        results = run[text]
        assert (
            sorted(results) == folders and "layer_range" in folders and "clip_variants" in folders
        )
        for name, result in results.items():
            assert (
                result.name
                == json.loads((out / text / name / "settings.json").read_text())["experiment"]
            )
            csvs = sorted((out / text / name).glob("*.csv"))
            assert sorted(result.tables) == [p.stem for p in csvs]
            for path in csvs:
                pd.testing.assert_frame_equal(result.tables[path.stem], _saved(path))
    assert type(run["translate"]["layer_range"]).__name__ == "LayerRangeResult"
    assert isinstance(run["translate"]["clipping"], E.ClippingResult)
    assert isinstance(run["translate"]["clip_variants"], E.ClipVariantsResult)
    overlap = run.groups["overlap"]
    assert isinstance(overlap, E.OverlapResult)
    pd.testing.assert_frame_equal(overlap.pairs, _saved(out / "overlap" / "pairs.csv"))


def test_tables_across_texts_are_the_saved_tables_with_text_and_model(plugin_env):
    out = plugin_env
    run = E.load_run(out)
    for experiment in run.experiments:
        for key, table in run.tables(experiment).items():
            assert list(table.columns[:2]) == ["text", "model"]
            assert set(table.model) == {run["translate"]["spectrum"].meta["model"]["name"]}
            for text, rows in table.groupby("text", sort=False):
                saved = _saved(out / text / experiment / f"{key}.csv")
                got = rows.drop(columns=["text", "model"]).reset_index(drop=True)
                got.columns = [
                    c.removeprefix(f"{key}_") if c in (f"{key}_text", f"{key}_model") else c
                    for c in got.columns
                ]
                pd.testing.assert_frame_equal(got, saved, check_dtype=False)
    samples = run.table("clipped_generation", "samples")
    assert {"samples_text", "samples_model"} <= set(
        samples.columns
    )  # the samples' own columns are kept
    assert samples.text.unique().tolist() == run.texts
    sv = run.table("spectrum", "singular_values", texts=["translate"])
    assert set(sv.text) == {"translate"}
    assert (
        run.table("spectrum", "no_such_table").empty
        and run.table("no_such_experiment", "curve").empty
    )


def test_a_result_class_other_than_the_saved_one_is_refused(plugin_env):
    out = plugin_env
    with pytest.raises(
        ValueError,
        match=r"clipping: its settings.json says it holds a 'clipping' result "
        r"\(ClippingResult\), not SpectrumResult \('spectrum'\)",
    ) as err:
        E.load_run(out, classes={"clipping": E.SpectrumResult})
    assert str(out / "meaning_of_life" / "clipping") in str(err.value)
    plugin = registry.get_plugin("layer_range").result
    run = E.load_run(out, classes={"layer_range": plugin, "clipping": E.ClippingResult})
    assert isinstance(run.result("translate", "layer_range"), plugin)
    assert run.result("translate", "nothing") is None
    with pytest.raises(KeyError, match="no text 'nope'"):
        run["nope"]


def test_the_report_draws_from_the_loaded_results(plugin_env):
    """The report's figures from a folder and from its load_run are the same figures."""
    from experiments.study.replication import overlap_pairs, text_metrics
    from experiments.study.report import figures

    out = plugin_env
    m, pairs = text_metrics(out), overlap_pairs(out)
    by_path, by_run = figures(out, m, pairs), figures(E.load_run(out), m, pairs)
    assert (
        set(by_path)
        == set(by_run)
        >= {"spectrum_example", "clip_curves", "importance_scatter", "overlap", "clip_variants_gap"}
    )
    for key in by_path:
        assert by_path[key].to_json() == by_run[key].to_json()
