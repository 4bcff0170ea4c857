"""Issue 28, one door and typed options: every experiment (built-in or plug-in) is registered in
experiments/registry.py and reached through it alone (`run NAME`, reproduce's stages, --with,
extend); each declares its options, and `run NAME --opt KEY=VALUE` reaches any of them, checked
against the declaration before the model loads and part of the run key."""

import inspect
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import experiments as E
from experiments import registry
from experiments.study import cli
from experiments.study.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--no-progress", "--device", "cpu"]
TINY = ["--model", "random:tiny-gpt2", "--max-new-tokens", "4", *QUIET]


@pytest.fixture()
def no_model(monkeypatch):
    def load(*a, **k):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr("experiments.study.cli.load_model", load)


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_every_builtin_is_registered_and_reachable_as_run_name():
    builtins = registry.builtins()
    assert set(builtins) == set(registry.BUILTIN) == set(cli.RUNNABLE)
    assert {"text_length", "method_sensitivity", "exact_importance"} <= set(cli.RUNNABLE)
    for name in cli.RUNNABLE:
        p = registry.get_plugin(name)
        assert p.builtin and p.name == name and p.result.name == name and p.stage in registry.STAGES
    # reproduce's stages come from the registry: the six of every text, in the study's order
    assert registry.stage("default") == [
        "spectrum",
        "clipping",
        "single_direction",
        "orderings",
        "minimal_subspace",
        "clipped_generation",
    ]
    assert registry.stage("exact") == ["exact_importance"]
    from experiments.study.reproduce import Settings, experiments_for

    s = Settings(plugins=("clip_variants",), exact_plugins=("text_length",))
    assert experiments_for(s, exact=True) == [
        "exact_importance",
        *registry.stage("default"),
        "clip_variants",
        "text_length",
    ]
    assert experiments_for(s) == [*registry.stage("default"), "clip_variants"]
    assert list(cli.EXTENDABLE) == [
        "hessian_ranking",
        "clip_variants",
        "study_procedure",
        "text_length",
    ]
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    assert all(name in " ".join(help_text.split()) for name in cli.RUNNABLE)


def test_no_experiment_swallows_options():
    """No registered experiment and no run_* function takes **kwargs: a misspelled option is an
    error."""
    fns = [p.fn for p in registry.builtins().values()]
    fns += [
        getattr(E, n) for n in dir(E) if n.startswith("run_") and n != "run_meta"
    ]  # run_meta: metadata
    for fn in fns:
        kinds = [p.kind for p in inspect.signature(fn).parameters.values()]
        assert inspect.Parameter.VAR_KEYWORD not in kinds, fn.__qualname__
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_sampels'"):
        E.run_clipped_generation(None, None, k=1, n_sampels=2)


def test_a_plugin_cannot_take_a_builtin_name():
    for name in ("text_length", "method_sensitivity", "spectrum", "exact_importance"):
        with pytest.raises(ValueError, match=f"plug-in name '{name}' is a built-in experiment's"):
            registry.register(name, result=E.ExperimentResult)(lambda model, text: None)
    registry.unregister("spectrum")  # a built-in stays
    assert registry.get_plugin("spectrum").builtin


def test_a_broken_plugin_is_skipped_with_one_warning_and_the_rest_works(
    tmp_path, monkeypatch, capsys
):
    broken = tmp_path / "broken_plugin.py"
    broken.write_text("raise RuntimeError('broken on purpose\\nsecond line')\n")
    monkeypatch.setenv(registry.ENV, str(broken))
    monkeypatch.setattr(registry, "_SKIPPED", {})
    names = registry.plugin_names()
    assert {"clip_variants", "text_length"} <= set(names)
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and err.startswith("warning: plug-in ")
        and "broken_plugin.py skipped" in err
    )
    assert "RuntimeError: broken on purpose second line" in err and registry.ENV in err
    registry.plugin_names()
    assert capsys.readouterr().err == ""  # warned once
    with pytest.raises(RuntimeError, match="broken on purpose"):
        registry.discover()  # strict, as before
    env = {**os.environ, registry.ENV: str(broken), "HF_HUB_OFFLINE": "1"}
    for argv in (["--help"], ["run", "--help"], ["reproduce", "--help"]):
        proc = subprocess.run(
            [sys.executable, "-m", "experiments", *argv],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr
        assert "broken" not in proc.stderr  # --help imports no plug-in
    proc = subprocess.run(
        [sys.executable, "-m", "experiments", "run", "nosuch", *TINY, "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 2, proc.stderr
    assert lines[0].startswith("warning: plug-in") and "no plug-in experiment 'nosuch'" in lines[1]
    main(["run", "spectrum", *TINY, "--out", str(tmp_path / "spec")])  # the built-ins still run
    assert (tmp_path / "spec" / "spectrum" / "settings.json").exists()


def test_an_unknown_name_is_the_registrys_message_before_the_model_loads(
    tmp_path, no_model, capsys
):
    with pytest.raises(SystemExit) as exc:
        main(["run", "nosuch", *TINY, "--out", str(tmp_path / "o")])
    err = one_line(capsys)
    assert exc.value.code == 2 and "no plug-in experiment 'nosuch'" in err
    assert (
        "RESID_WRITES_PLUGINS" in err and "resid_writes.experiments" in err and "text_length" in err
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["clipped_generation", "--opt", "n_sampels=2"],
            "--opt n_sampels: clipped_generation has no option 'n_sampels'",
        ),
        (["clipped_generation", "--opt", "n_samples=two"], "--opt n_samples=two: not an int"),
        (["text_length", "--opt", "lengths=2,x"], "--opt lengths=2,x: not an int"),
        (["text_length", "--opt", "scaled=maybe"], "not true or false"),
        (["minimal_subspace", "--opt", "random_draws"], "is not KEY=VALUE"),
        (["minimal_subspace", "--opt", "seed=3"], "--opt seed: set it with --seed"),
        (["clipping", "--k", "3"], "--k is an option of clipped_generation, not clipping"),
        (["clipped_generation", "--k", "3", "--opt", "k=4"], "given twice"),
        (["hessian_ranking", "--opt", "exact=x"], "cannot be given on the command line"),
    ],
)
def test_bad_options_are_one_line_exit_2_before_the_model_loads(
    tmp_path, no_model, capsys, argv, says
):
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exc:
        main(["run", *argv, *TINY, "--out", str(out)])
    err = one_line(capsys)
    assert exc.value.code == 2 and says in err, err
    assert not out.exists()


def test_parse_values_by_the_declaration():
    from collections.abc import Sequence
    from typing import Literal

    p = registry.parse_value
    assert (
        p(int, "3") == 3
        and p(float, "1e-3") == 1e-3
        and p(bool, "False") is False
        and p(str, "x") == "x"
    )
    assert (
        p(int | None, "none") is None and p(int | None, "4") == 4 and p(str | None, "none") is None
    )
    assert (
        p(tuple[int, ...], "1, 2,3") == (1, 2, 3)
        and p(list[float], "0.5") == [0.5]
        and p(Sequence[int], "") == ()
    )
    assert p(tuple[float, float], "1,2") == (1.0, 2.0) and p(Literal["a", "b"], "b") == "b"
    for tp, raw in (
        (int, "1.5"),
        (bool, "2"),
        (tuple[float, float], "1"),
        (Literal["a"], "c"),
        (dict, "x"),
    ):
        with pytest.raises(ValueError):
            p(tp, raw)


@dataclass
class ProbeResult(E.ExperimentResult):
    name = "probe_options"


SEEN: list = []


def test_opt_reaches_a_plugin_results_is_empty_alone_and_opt_changes_the_run_key(tmp_path, capsys):
    import pandas as pd

    @registry.register("probe_options", result=ProbeResult, help="test plug-in")
    def probe(
        model, text, *, results=None, seed=0, factor: float = 1.0, tags: tuple[str, ...] = ()
    ):
        SEEN.append({"results": results, "seed": seed, "factor": factor, "tags": tags})
        return ProbeResult(
            tables={"t": pd.DataFrame({"factor": [factor]})},
            settings={"factor": factor, "tags": list(tags)},
            meta=text.meta(),
        )

    try:
        main(["run", "probe_options", *TINY, "--seed", "2", "--out", str(tmp_path / "a")])
        main(
            [
                "run",
                "probe_options",
                *TINY,
                "--seed",
                "2",
                "--opt",
                "factor=2.5",
                "--opt",
                "tags=x,y",
                "--out",
                str(tmp_path / "b"),
            ]
        )
        assert SEEN == [
            {"results": {}, "seed": 2, "factor": 1.0, "tags": ()},
            {"results": {}, "seed": 2, "factor": 2.5, "tags": ("x", "y")},
        ]
        keys = [json.loads((tmp_path / f / "environment.json").read_text()) for f in "ab"]
        assert keys[0]["run_key"] != keys[1]["run_key"]
        assert "opt" not in keys[0]["settings"] and keys[1]["settings"]["opt"] == {
            "factor": 2.5,
            "tags": ["x", "y"],
        }
        capsys.readouterr()
        with pytest.raises(
            SystemExit
        ) as exc:  # the folder made without --opt refuses other options
            main(
                [
                    "run",
                    "probe_options",
                    *TINY,
                    "--seed",
                    "2",
                    "--opt",
                    "factor=3",
                    "--out",
                    str(tmp_path / "a"),
                ]
            )
        assert exc.value.code == 2 and "holds results of another run" in one_line(capsys)
        main(
            [
                "run",
                "probe_options",
                *TINY,
                "--seed",
                "2",
                "--opt",
                "tags=x,y",
                "--opt",
                "factor=2.5",
                "--out",
                str(tmp_path / "b"),
            ]
        )  # the same options in another order: the same key, loaded
        assert len(SEEN) == 2 and "loaded from" in capsys.readouterr().out
    finally:
        registry.unregister("probe_options")
        SEEN.clear()


def test_opt_reaches_a_builtin_option(tmp_path):
    main(["run", "spectrum", *TINY, "--opt", "bos_variants=false", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "spectrum" / "settings.json").read_text())
    assert json.loads((tmp_path / "environment.json").read_text())["settings"]["opt"] == {
        "bos_variants": [False]
    }
    assert saved["settings"]["bos_variants"] == [False]
