"""Issue 29, clean edges: every failure is one line (before the model loads where it can be),
nothing published is overwritten, an interrupted or failed run says how to go on, leaves no lock."""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

import experiments as E
from experiments.study import cli
from experiments.study.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--no-progress", "--device", "cpu"]
LONG = "word " * 400  # about 400 tokens: longer than the tiny models' context (256)


@pytest.fixture()
def no_model(monkeypatch):
    """These inputs must be refused before a model loads: loading one fails the test."""

    def load(*a, **k):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr("experiments.study.cli.load_model", load)


def snapshot(folder: Path) -> dict[str, int] | None:
    """Every file under ``folder`` with its modification time (None: no folder)."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def one_line_error(capsys, start: str = "error: ") -> str:
    err = capsys.readouterr().err
    assert err.startswith(start) and err.count("\n") == 1, err
    return err


def fake_published(docs: Path, folder: str, texts: list[str], **settings) -> Path:
    """A docs folder as replicate exports it, for one model folder: texts.csv, environment.json,
    exact_texts.csv (the first text)."""
    from experiments.study.reproduce import Settings, keyed_settings

    (docs / folder).mkdir(parents=True)
    table = pd.DataFrame({"text": texts, "prompt": texts, "seed": 0})
    table.to_csv(docs / folder / "texts.csv", index=False)
    pd.DataFrame({"text": texts[:1]}).to_csv(docs / folder / "exact_texts.csv", index=False)
    env = {"settings": json.loads(json.dumps(keyed_settings(Settings(**settings)), default=str))}
    (docs / folder / "environment.json").write_text(json.dumps(env))
    (docs / "README.md").write_text("published\n")
    return docs


def bad_inputs(tmp: Path, model_dirs: dict) -> list[tuple[list[str], str]]:
    g = str(model_dirs["gpt2"])
    (tmp / "a_file").write_text("")
    (tmp / "long.txt").write_text(f"short one\n\n{LONG}\nanother\n")
    docs = str(
        fake_published(
            tmp / "published",
            "gpt2",
            ["meaning_of_life", "translate"],
            random_draws=3,
            overlap_draws=100,
        )
    )
    two = ["--prompts", "meaning_of_life", "translate", "--seeds", "0"]
    return [
        (["run", "spectrum", "--model", "/nonexistent/model.gguf"], "no such file or directory"),
        (["run", "spectrum", "--model", "./no/such/dir"], "no such file or directory"),
        (["run", "spectrum", "--model", "nosuchmodel-xyz"], "Known names"),
        (["run", "spectrum", "--model", "random:tiny"], "--model random:tiny-gpt2"),
        (
            ["run", "spectrum", "--model", g, "--out", str(tmp / "a_file" / "sub")],
            "is a file, not a folder",
        ),
        (
            ["reproduce", "--model", g, "--prompts-file", str(tmp / "long.txt")],
            "long.txt line 3 (p02)",
        ),
        (["run", "spectrum", "--model", g, "--prompt", LONG], "exceeds the context"),
        (
            ["run", "spectrum", "--model", "random:tiny-gpt2", "--prompt", LONG],
            "random:tiny-gpt2 (256 tokens)",
        ),
        (
            ["reproduce", "--model", g, "--prompts", "relativity", "--max-new-tokens", "250"],
            "give --max-new-tokens",
        ),
        (
            ["run", "clipped_generation", "--model", g, "--k", "1000"],
            "--k 1000 is outside 0..d_model=64",
        ),
        (
            ["replicate", "--models", g, *two[:2], "--seeds", "0", "--docs", docs],
            "gpt2 texts: 2 published",
        ),
        (
            ["replicate", "--models", g, *two, "--tolerance", "0.5", "--docs", docs],
            "gpt2 settings.tolerance: 0.0001 -> 0.5",
        ),
        (
            ["replicate", "--models", g, str(model_dirs["llama"]), *two, "--docs", docs],
            "models: gpt2 published vs gpt2, llama here",
        ),
        (["extend", "--models", g, "--docs", docs, "--texts", "nosuch"], "--texts 'nosuch'"),
        (["extend", "--models", g, "--docs", str(tmp / "nothing")], "has no exact_texts.csv"),
    ]


def test_bad_inputs_are_one_line_before_the_model_loads_and_write_nothing(
    model_dirs, tmp_path, no_model, capsys
):
    """One table of bad inputs: each exits 2 with one line naming the problem and the fix, loads no
    model, and leaves its output folder (and the published folder it names) as it was."""
    for argv, says in bad_inputs(tmp_path, model_dirs):
        out = tmp_path / "out"
        argv = [*argv, *QUIET] + ([] if "--out" in argv else ["--out", str(out)])
        before, published = snapshot(out), snapshot(tmp_path / "published")
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = one_line_error(capsys)
        assert exc.value.code == 2 and says in err and "(" in err, (argv, err)
        assert snapshot(out) == before and snapshot(tmp_path / "published") == published, argv


def test_an_unwritable_out_is_refused_before_the_model_loads(
    model_dirs, tmp_path, no_model, capsys, monkeypatch
):
    """A read-only file system (as root, permissions alone never refuse a write)."""

    def read_only(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("experiments.study.preflight.tempfile.TemporaryFile", read_only)
    out = tmp_path / "x"
    with pytest.raises(SystemExit) as exc:
        main(["run", "spectrum", "--model", str(model_dirs["gpt2"]), "--out", str(out), *QUIET])
    err = one_line_error(capsys)
    assert exc.value.code == 2 and "cannot be written (Read-only file system" in err


def test_a_prompt_too_long_for_the_loaded_model_is_refused_before_any_text(
    model_dirs, tmp_path, monkeypatch, capsys
):
    """When the config cannot be read without the weights, the loaded model's own context decides,
    before anything is sampled or written."""
    monkeypatch.setattr(cli, "model_limits", lambda model: None)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "run",
                "spectrum",
                "--model",
                str(model_dirs["gpt2"]),
                "--prompt",
                LONG,
                "--out",
                str(out),
                *QUIET,
            ]
        )
    err = one_line_error(capsys)
    assert exc.value.code == 2 and "exceeds the context of gpt2 (256 tokens)" in err
    assert not out.exists()


def test_ctrl_c_is_one_line_exit_130_and_a_run_without_results_leaves_no_lock(
    model_dirs, tmp_path, monkeypatch, capsys
):
    import experiments.study.reproduce as R

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(R, "run_prompt", interrupt)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "reproduce",
                "--model",
                str(model_dirs["gpt2"]),
                "--prompts",
                "relativity",
                "translate",
                "--max-new-tokens",
                "4",
                "--out",
                str(out),
                *QUIET,
            ]
        )
    err = one_line_error(capsys, "interrupted")
    assert exc.value.code == 130
    assert "interrupted after 0 of 2 texts; rerun the same command to resume" in err
    assert not out.exists()  # nothing finished: no environment.json refuses the next run


def test_an_unexpected_error_is_one_line_and_a_log(model_dirs, tmp_path, monkeypatch, capsys):
    import experiments.study.reproduce as R

    def boom(*a, **k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(R, "sample_missing", boom)
    out = tmp_path / "out"
    (out / "mine").mkdir(parents=True)  # a folder the user made: kept, with what was in it
    argv = [
        "reproduce",
        "--model",
        str(model_dirs["gpt2"]),
        "--prompts",
        "relativity",
        "--out",
        str(out),
        *QUIET,
    ]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = one_line_error(capsys)
    assert exc.value.code == 1
    assert "error: unexpected RuntimeError: boom second line (full traceback in " in err
    log = Path(err.split("full traceback in ")[1].split(";")[0])
    assert "Traceback" in log.read_text() and "boom" in log.read_text() and "--debug" in err
    assert sorted(p.name for p in out.iterdir()) == ["mine"]  # no environment.json lock left
    with pytest.raises(RuntimeError, match="boom"):
        main([*argv, "--debug"])


def test_no_progress_silences_transformers_bar(model_dirs, capfd):
    args = argparse.Namespace(
        model=str(model_dirs["gpt2"]),
        device="cpu",
        dtype="float32",
        processing=False,
        no_progress=True,
    )
    cli._load(args)
    assert "Loading weights" not in capfd.readouterr().err
    cli._load(argparse.Namespace(**{**vars(args), "no_progress": False}))
    assert "Loading weights" in capfd.readouterr().err  # the bar that --no-progress removes


def test_run_resumes_random_models_keep_their_key_and_leave_no_temp_folder(tmp_path, capsys):
    temp = Path(tempfile.gettempdir())
    before = set(temp.glob("resid-writes-random-*"))
    argv = [
        "run",
        "spectrum",
        "--model",
        "random:tiny-gpt2",
        "--max-new-tokens",
        "4",
        "--out",
        str(tmp_path),
        *QUIET,
    ]
    main(argv)
    stamp = (tmp_path / "spectrum" / "settings.json").stat().st_mtime_ns
    main(argv)  # the same command: loaded, not recomputed (and the folder is not refused)
    assert "loaded from" in capsys.readouterr().out
    assert (tmp_path / "spectrum" / "settings.json").stat().st_mtime_ns == stamp
    assert set(temp.glob("resid-writes-random-*")) == before
    assert list(tmp_path.rglob("plotly.min.js")) == [tmp_path / "spectrum/figures/plotly.min.js"]


def test_a_resumed_run_refuses_other_experiment_options():
    from experiments.study.reproduce import ResultsMismatchError

    args = argparse.Namespace(
        experiment="clipped_generation", k=4, compromise="rank_product", out="o"
    )
    cli._check_resumed(args, SimpleNamespace(settings={"k": 4}))
    with pytest.raises(ResultsMismatchError, match="--k 3 -> 4"):
        cli._check_resumed(args, SimpleNamespace(settings={"k": 3}))


def test_refusal_names_every_differing_key_with_both_values(gpt2_tiny, tmp_path):
    import experiments.study.reproduce as R

    R.claim_folder(tmp_path, gpt2_tiny, R.keyed_settings(R.Settings()))
    R.claim_folder(tmp_path, gpt2_tiny, R.keyed_settings(R.Settings()))  # tuples vs saved lists
    with pytest.raises(R.ResultsMismatchError) as err:
        other = R.Settings(tolerance=0.5, max_new_tokens=8)
        R.claim_folder(tmp_path, gpt2_tiny, R.keyed_settings(other))
    msg = str(err.value)
    assert "settings.max_new_tokens: 64 -> 8" in msg and "settings.tolerance: 0.0001 -> 0.5" in msg
    assert "kinds" not in msg and "\n" not in msg


def test_model_errors_are_fast_and_name_the_models(monkeypatch):
    from interp import ModelNotFoundError, models

    for path in ("/nonexistent/model.gguf", "model.GGUF", "~/no/such", "a/b/c"):
        with pytest.raises(ModelNotFoundError, match="no such file or directory"):
            models.resolve_model(path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=1.5: False)  # as with no network
    t0 = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="cannot be reached.*smollm2-135m"):
        models.resolve_model("nosuchmodel-xyz")
    assert time.perf_counter() - t0 < 2
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    t0 = time.perf_counter()
    assert not models._hub_reachable(timeout=1.5) and time.perf_counter() - t0 < 2


def test_result_load_refuses_another_experiments_folder(gpt2_tiny, completion, tmp_path):
    E.run_spectrum(gpt2_tiny, completion).save(tmp_path / "spectrum")
    assert E.SpectrumResult.load(tmp_path / "spectrum").tables
    with pytest.raises(ValueError, match="holds a 'spectrum' result, not 'clipping'"):
        E.ClippingResult.load(tmp_path / "spectrum")


def _checkout_copy(dest: Path) -> Path:
    """The checkout's tracked files (as they are now) in a fresh git repository."""
    try:
        files = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "copy"]):
        subprocess.run([*git, *cmd], cwd=dest, check=True, capture_output=True)
    return dest


def test_replicate_in_a_checkout_writes_only_into_its_out(model_dirs, tmp_path, monkeypatch):
    """The first thing a new user may try: replicate with their own prompts inside the checkout.
    Without --docs nothing tracked changes (docs/results stays as published); the table goes to
    <out>/docs."""
    copy = _checkout_copy(tmp_path / "checkout")
    (tmp_path / "mine.txt").write_text("The weather today is\n")
    monkeypatch.chdir(copy)
    published = snapshot(ROOT / "docs" / "results")
    main(
        [
            "replicate",
            "--prompts-file",
            str(tmp_path / "mine.txt"),
            "--out",
            "myrun",
            "--models",
            str(model_dirs["gpt2"]),
            "--seeds",
            "0",
            "--max-new-tokens",
            "4",
            "--samples",
            "1",
            "--draws",
            "5",
            "--random-draws",
            "1",
            "--exact-texts",
            "0",
            "--exact-with",
            "--no-images",
            *QUIET,
        ]
    )
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=copy, capture_output=True, text=True
    ).stdout
    assert status.splitlines() == ["?? myrun/"], status
    docs = copy / "myrun" / "docs"
    assert (docs / "README.md").exists() and (docs / "gpt2" / "texts.csv").exists()
    assert snapshot(ROOT / "docs" / "results") == published
    readme = (docs / "README.md").read_text()
    assert "--out myrun" in readme and "--docs" not in readme  # the command that remakes it


def test_the_report_lists_rows_not_run_with_the_command_and_published_values(tmp_path):
    from experiments.study.report import not_run_lines

    published = ROOT / "docs" / "results"
    table = pd.read_csv(published / "smollm2-135m" / "claims.csv", keep_default_na=False)
    table.loc[table.key.isin(["study_procedure", "hessian_order", "importance"]), "n_texts"] = 0
    table.loc[table.key == "importance", "ours"] = "ESTIMATE only: 0.5"
    lines = not_run_lines(
        table,
        4,
        "python -m experiments reproduce --out r --with layer_range",
        published,
        "smollm2-135m",
    )
    by_claim = {claim: (estimate, how, values) for claim, estimate, how, values in lines}
    assert len(lines) == 3
    estimate, how, values = next(v for c, v in by_claim.items() if c.startswith("Single-direction"))
    assert estimate == "ESTIMATE only: 0.5" and how.endswith("--exact-texts 4")
    assert values[0].startswith("published (docs/results, SmolLM2-135M, n = 8): ")
    hows = {how for _, how, _ in by_claim.values()}
    assert "python -m experiments reproduce --out r --with study_procedure layer_range" in hows
    rep = not_run_lines(
        table,
        4,
        "python -m experiments replicate --out r",
        None,
        "x",
        exact_with=("study_procedure", "clip_variants"),
    )
    wanted = "--exact-with study_procedure clip_variants hessian_ranking"
    assert any(how.endswith(wanted) for _, _, how, _ in rep)
    assert os.path.isdir(published)
