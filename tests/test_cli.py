"""The CLI end to end on a tiny model: tables and report exist, a rerun resumes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_argv import argv

from experiments.study.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def env_model(model_dirs, monkeypatch):
    monkeypatch.setenv("RESID_WRITES_MODEL", str(model_dirs["gpt2"]))
    return model_dirs["gpt2"]


def test_reproduce_end_to_end_and_resume(env_model, tmp_path, capsys):
    out = tmp_path / "res"
    args = argv(
        "reproduce",
        out=out,
        max_new_tokens=6,
        samples=1,
        draws=20,
        prompts=["meaning_of_life", "translate"],
    )
    main(args)
    for prompt in ("meaning_of_life", "translate"):
        for exp in (
            "spectrum",
            "clipping",
            "single_direction",
            "orderings",
            "minimal_subspace",
            "clipped_generation",
        ):
            d = out / prompt / exp
            assert (
                (d / "settings.json").exists()
                and list(d.glob("*.csv"))
                and list((d / "figures").glob("*.html"))
            )
    assert (out / "overlap" / "pairs.csv").exists()
    report = (out / "report.html").read_text()
    assert "Plotly.newPlot" in report and "translate" in report
    # one plotly.js for the whole folder (issue 29: one per figures folder before), found by all
    assert list(out.rglob("plotly.min.js")) == [out / "plotly.min.js"]
    import re

    for page in out.glob("*/*/figures/*.html"):
        (src,) = re.findall(r'<script[^>]*src="([^"]+)"', page.read_text())
        assert (page.parent / src).resolve() == (out / "plotly.min.js").resolve(), (page, src)
    stamp = (out / "translate" / "clipping" / "settings.json").stat().st_mtime_ns
    import pandas as pd

    computed = pd.read_csv(out / "timings.csv")
    assert {"clipping", "unit: one plain forward"} <= set(
        computed.phase
    ) and not computed.loaded.any()
    main(args)  # resume: nothing finished is recomputed, and the first run's timings are kept
    assert (out / "translate" / "clipping" / "settings.json").stat().st_mtime_ns == stamp
    after = pd.read_csv(out / "timings.csv")
    assert after.seconds.tolist()[: len(computed)] == computed.seconds.tolist()
    assert after[after.phase == "clipping"].loaded.tolist() == [False, False, True, True]
    meta = json.loads((out / "translate" / "clipping" / "settings.json").read_text())["meta"]
    assert meta["model"]["name"] == env_model.name and meta["continuation_tokens"]
    # a third prompt into the same folder: the two finished texts load, and the overlap, which
    # depends on every text of its seed, is recomputed over all three instead of loaded
    main(args + ["relativity"])
    overlap = json.loads((out / "overlap" / "settings.json").read_text())["meta"]["texts"]
    assert overlap == ["meaning_of_life", "translate", "relativity"]
    assert (out / "translate" / "clipping" / "settings.json").stat().st_mtime_ns == stamp


def test_run_one_experiment(env_model, tmp_path):
    main(argv("run", "minimal_subspace", prompt="relativity", out=tmp_path, max_new_tokens=5))
    assert (tmp_path / "minimal_subspace" / "minimal_k.csv").exists()


def test_study_procedure_is_the_studys_bisection_in_bfloat16(env_model, tmp_path, capsys):
    """``--study-procedure``: bfloat16 unless told otherwise, and a k whose clipped log-probability
    reaches the unclipped one with no tolerance while k - 1 does not (the bisection's own claim)."""
    import pandas as pd

    main(
        argv(
            "run",
            "minimal_subspace",
            study_procedure=True,
            prompt="relativity",
            out=tmp_path,
            max_new_tokens=5,
        )
    )
    folder = tmp_path / "minimal_subspace"
    saved = json.loads((folder / "settings.json").read_text())
    assert saved["meta"]["model"]["dtype"] == "bfloat16" and saved["settings"]["study_procedure"]
    t = pd.read_csv(folder / "minimal_k.csv")
    row = t[t.method == "study_bisection"].iloc[0]
    assert (
        row.ordering == "singular_value"
        and row.tolerance == 0.0
        and 1 <= row.k <= saved["meta"]["model"]["d_model"]
    )
    with pytest.raises(SystemExit) as err:
        main(
            [
                "run",
                "clipping",
                "--study-procedure",
                "--out",
                str(tmp_path / "x"),
                "--device",
                "cpu",
            ]
        )
    assert err.value.code == 2 and "option of minimal_subspace" in capsys.readouterr().err


def test_study_bisection_row_is_a_crossing(gpt2_tiny):
    import experiments as E

    comp = E.get_continuation(gpt2_tiny, "relativity", max_new_tokens=6, seed=0)
    text = E.prepare(gpt2_tiny, comp)
    r = E.run_minimal_subspace(gpt2_tiny, text, study_procedure=True, random_null=False)
    k = int(r.table.set_index("method").loc["study_bisection", "k"])
    ev = text.evaluator("singular_value")
    d = text.d_model
    assert k == d or ev([k])[0] >= text.baseline
    assert k == 1 or ev([k - 1])[0] < text.baseline  # searched over 1..d


def test_no_model_is_a_clear_error(tmp_path):
    env = {**os.environ, "RESID_WRITES_MODEL": str(tmp_path / "missing"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "experiments", "reproduce", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and "local HF-format directory" in proc.stderr


@pytest.mark.real_model
@pytest.mark.audit
def test_notebook_executes_on_the_real_default_model(smollm2, tmp_path, monkeypatch):
    """The committed notebook (outputs from a full run) re-executes on smollm2-135m, shorter."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "notebooks" / "reproduce_shortform.ipynb", as_version=4)
    committed = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert committed, "the notebook is committed with its outputs"
    monkeypatch.setenv("RESID_WRITES_NOTEBOOK_TOKENS", "12")
    monkeypatch.delenv("RESID_WRITES_MODEL", raising=False)
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs
    )
    assert "smollm2-135m" in text and "Spearman" in text and "clipped" in text


def test_timers_sharing_a_folder_keep_each_others_rows(tmp_path):
    """Two processes of one replicate (split by prompt) time into the same timings.csv: each row
    is appended, so neither overwrites the other's (the old rewrite-the-table Timer lost them)."""
    import pandas as pd

    from experiments.study.reproduce import Timer

    path = tmp_path / "timings.csv"
    a, b = Timer(path), Timer(path)
    a.add(text="x", phase="clipping", seconds=1.0, loaded=False, forward_rows=3, token_rows=30)
    b.add(text="y", phase="clipping", seconds=2.0, loaded=False, forward_rows=4, token_rows=40)
    a.add(text="x", phase="orderings", seconds=3.0, loaded=True)
    t = pd.read_csv(path)
    assert t.text.tolist() == ["x", "y", "x"] and t.seconds.tolist() == [1.0, 2.0, 3.0]
    assert Timer(path).table().text.tolist() == ["x", "y"]  # a resumed run keeps the computed rows
