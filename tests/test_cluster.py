"""``replicate --cluster`` (experiments/study/cluster.py) on the tiny model: the same tables as a
serial run, a worker killed mid-text, a driver interrupted and resumed, a text failing its
self-check. One embedded Ray (2 CPUs, no dashboard) serves the module and is shut down after it.

Equality is exact: the serial reference runs with one torch thread, as each of two workers on two
CPUs does (with other thread counts the float sums round differently: last-digit differences).
"""

import json
import os
import signal
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch

if os.environ.get("RESID_WRITES_REQUIRE_RAY") == "1":  # CI (.ci/run) installs the extra: no skip
    import ray
else:
    ray = pytest.importorskip(
        "ray", reason="the Ray tests need the cluster extra: pip install -e '.[cluster]'"
    )

from cli_argv import argv, tiny_replicate

from experiments import registry  # noqa: E402
from experiments.study import cluster as C  # noqa: E402
from experiments.study.cli import main  # noqa: E402

PROMPTS = ["meaning_of_life", "translate"]


@pytest.fixture(scope="module")
def ray_session():
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100 * 2**20,
        logging_level="ERROR",
    )
    yield
    ray.shutdown()


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _args(model_dir: Path | str, out: Path, **flags: object) -> list[str]:
    """``replicate`` on PROMPTS at test size, the exact stage on the first text, no extensions;
    ``flags`` added or overriding."""
    return tiny_replicate(model_dir, out, prompts=PROMPTS, exact_with=[], **flags)


TWO_WORKERS = {"cluster": "local", "workers": 2}


@pytest.fixture(scope="module")
def serial(model_dirs, tmp_path_factory):
    """The serial run every cluster run is compared with (one torch thread)."""
    out = tmp_path_factory.mktemp("serial") / "rep"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main(_args(model_dirs["gpt2"], out))
    finally:
        torch.set_num_threads(before)
    return out / Path(model_dirs["gpt2"]).name


def _tables(folder: Path) -> dict[str, object]:
    """Every table and settings file of a run folder, by path (not timings or environment)."""
    out: dict[str, object] = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.suffix == ".csv" and p.name != "timings.csv":
            out[rel] = pd.read_csv(p)
        elif p.suffix == ".json" and p.name != "environment.json":
            out[rel] = json.loads(p.read_text())
    return out


def assert_same_tables(a: Path, b: Path) -> None:
    ta, tb = _tables(a), _tables(b)
    assert sorted(ta) == sorted(tb)
    for rel, x in ta.items():
        if isinstance(x, pd.DataFrame):
            pd.testing.assert_frame_equal(x, tb[rel], check_exact=True, obj=rel)
        else:
            assert x == tb[rel], rel


def _computed(out: Path, since: int = 0) -> pd.DataFrame:
    """timings.csv rows (from row ``since``) of experiments computed, not loaded."""
    t = pd.read_csv(out / "timings.csv").iloc[since:]
    experiments = {*registry.stage("default"), *registry.stage("exact")}
    return t[t.phase.isin(experiments) & ~t.loaded.astype(bool)]


def test_two_workers_give_the_serial_tables(ray_session, serial, model_dirs, tmp_path, one_thread):
    out = tmp_path / "rep"
    main(_args(model_dirs["gpt2"], out, **TWO_WORKERS))
    run = out / serial.name
    assert_same_tables(serial, run)
    t = pd.read_csv(run / "timings.csv")
    assert (
        t[t.text.isin(PROMPTS)].worker.str.match(r"w[01]@").all()
    )  # every text's rows name their worker
    assert set(t.worker.dropna().str.split("@").str[0]) == {"w0", "w1"}
    assert (run / "report.html").exists()
    env = json.loads((run / "environment.json").read_text())
    assert (
        env["cluster"]["workers"] == 2
        and env["run_key"] == json.loads((serial / "environment.json").read_text())["run_key"]
    )  # a serial run may resume this folder


def test_a_worker_killed_mid_text_loses_nothing(
    ray_session, serial, model_dirs, tmp_path, one_thread, monkeypatch
):
    """SIGKILL to the worker process holding the exact-stage text (its pid from Ray): the unit is
    sent again, the run finishes, every text once, the serial tables."""
    events, killed = [], []
    original = C.Cluster._event

    def event(self, kind, text, worker):
        events.append((kind, text))
        if kind == "dispatch" and text == PROMPTS[0] and not killed:
            pid = worker.pid
            state = getattr(getattr(ray, "_private", None), "state", None)
            if state is not None and hasattr(state, "actors"):  # the GCS actor table agrees
                assert state.actors(worker.actor._actor_id.hex())["Pid"] == pid
            killed.append(pid)
            threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
        original(self, kind, text, worker)

    monkeypatch.setattr(C.Cluster, "_event", event)
    out = tmp_path / "rep"
    main(_args(model_dirs["gpt2"], out, **TWO_WORKERS))
    run = out / serial.name
    assert killed and ("retry", PROMPTS[0]) in events
    assert [e for e in events if e[0] == "done" and e[1] in PROMPTS].count(
        ("done", PROMPTS[0])
    ) == 1
    computed = _computed(run)
    assert not computed.duplicated(
        ["text", "phase"]
    ).any()  # the killed attempt's rows never arrived
    assert sorted(computed.text.unique()) == sorted(PROMPTS)
    assert_same_tables(serial, run)
    t = pd.read_csv(run / "timings.csv")
    assert (
        not t[t.text == PROMPTS[0]].worker.str.endswith(f":{killed[0]}").any()
    )  # its rows: the retry's


def test_an_interrupted_driver_resumes_without_recomputing(
    ray_session, serial, model_dirs, tmp_path, one_thread, monkeypatch
):
    done = []
    original = C.Cluster._event

    def event(self, kind, text, worker):
        original(self, kind, text, worker)
        if kind == "done" and text in PROMPTS:
            done.append(text)
            if len(done) == 1:
                raise KeyboardInterrupt  # Ctrl-C after the first text is written

    monkeypatch.setattr(C.Cluster, "_event", event)
    out = tmp_path / "rep"
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        main(_args(model_dirs["gpt2"], out, **TWO_WORKERS))
    run = out / serial.name
    finished = sorted(p.parent.parent.name for p in run.glob("*/minimal_subspace/settings.json"))
    assert finished == sorted(done) and not (run / "report.html").exists()
    monkeypatch.setattr(C.Cluster, "_event", original)
    rows = len(pd.read_csv(run / "timings.csv"))
    main(_args(model_dirs["gpt2"], out, **TWO_WORKERS))
    again = _computed(run, since=rows)
    assert set(again.text) == set(PROMPTS) - set(
        done
    )  # the finished texts were loaded, not recomputed
    assert_same_tables(serial, run)


def test_a_text_failing_its_self_check_is_named_and_the_others_finish(
    ray_session, serial, model_dirs, tmp_path, capsys
):
    out = tmp_path / "rep"
    run = out / serial.name
    (run / "continuations").mkdir(parents=True)
    for p in (serial / "continuations").glob("*.json"):
        stored = json.loads(p.read_text())
        if p.stem == "translate":  # the sampler's log-probabilities no longer match a forward pass
            stored["meta"]["token_logprobs"] = [x - 1.0 for x in stored["meta"]["token_logprobs"]]
        (run / "continuations" / p.name).write_text(json.dumps(stored))
    with pytest.raises(SystemExit) as err:
        main(_args(model_dirs["gpt2"], out, **TWO_WORKERS))
    message = capsys.readouterr().err
    assert err.value.code == 3
    assert "1 text(s) failed a self-check" in message and "translate: self-check failed" in message
    assert "sampler" in message
    assert sorted(
        p.parent.parent.name for p in run.glob("*/minimal_subspace/settings.json")
    ) == sorted(set(PROMPTS) - {"translate"})
    assert not (run / "translate" / "checks.json").exists() and not (run / "report.html").exists()


def test_cluster_options_are_checked_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["replicate", "--out", str(tmp_path), "--workers", "2"])
    assert err.value.code == 2 and "--workers needs --cluster" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        main(["replicate", "--out", str(tmp_path), "--cluster", "local", "--workers", "0"])
    assert err.value.code == 2 and "--workers 0 is below 1" in capsys.readouterr().err


def test_default_workers_one_per_gpu_else_one_per_two_cores():
    assert C.default_workers(16, 8, None) == (8, 2)
    assert C.default_workers(16, 8, "cpu") == (8, 2)
    assert C.default_workers(2, 0, None) == (1, 2)
    assert C.default_workers(3, 0, None) == (1, 3)


def test_apply_files_writes_folders_whole_and_shared_files_from_the_driver(tmp_path):
    blobs = {"plotly.min.js": b"js"}
    files = {
        "t/clipping/settings.json": b"{}",
        "t/clipping/curve.csv": b"k\n1\n",
        "t/checks.json": b"[]",
        "continuations/t.json": b"{}",
    }
    (tmp_path / "t" / "clipping").mkdir(parents=True)
    (tmp_path / "t" / "clipping" / "stale.csv").write_text("old")
    C.apply_files(tmp_path, files, {"t/clipping/figures/plotly.min.js": "plotly.min.js"}, blobs)
    assert sorted(
        str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()
    ) == sorted([*files, "t/clipping/figures/plotly.min.js"])
    assert (tmp_path / "t" / "clipping" / "figures" / "plotly.min.js").read_bytes() == b"js"


def test_extend_on_workers_gives_the_serial_results(
    ray_session, serial, model_dirs, tmp_path, one_thread
):
    """`extend --cluster`: the plug-in's per-text results and the rewritten docs tables equal a
    serial extend's from the same docs folder."""
    import shutil

    runs = {}
    for mode, extra in (("serial", {}), ("cluster", TWO_WORKERS)):
        docs, out = tmp_path / mode / "docs", tmp_path / mode / "rep"
        shutil.copytree(Path(str(serial.parent) + "_docs"), docs)
        main(argv("extend", models=model_dirs["gpt2"], docs=docs, out=out, no_images=True, **extra))
        runs[mode] = (docs, out / serial.name)
    (docs_a, out_a), (docs_b, out_b) = runs["serial"], runs["cluster"]
    assert [p.parent.parent.name for p in out_b.glob("*/hessian_ranking/settings.json")] == [
        PROMPTS[0]
    ]
    assert_same_tables(docs_a, docs_b)
    assert_same_tables(out_a, out_b)


@pytest.mark.real_model
@pytest.mark.audit  # slow: .ci/run's audit stage
def test_two_workers_give_the_serial_tables_on_smollm2(ray_session, tmp_path, one_thread, capsys):
    """The same comparison on the real default model: two of the study's prompts, 12 new
    tokens, the default stage on both and the exact stage (every direction ablated) on the first,
    serial with one torch thread vs two single-threaded workers: every table equal, exactly."""
    runs = {}
    for mode, extra in (("serial", {}), ("cluster", TWO_WORKERS)):
        out = tmp_path / mode
        main(_args("smollm2-135m", out, max_new_tokens=12, **extra))
        (folder,) = [p.parent for p in out.glob("*/environment.json")]
        runs[mode] = folder
    assert_same_tables(runs["serial"], runs["cluster"])
    tables = _tables(runs["serial"])
    exact = [rel for rel in tables if rel.startswith(f"{PROMPTS[0]}/exact_importance/")]
    assert exact and f"{PROMPTS[1]}/minimal_subspace/settings.json" in tables  # both stages ran
    t = pd.read_csv(runs["cluster"] / "timings.csv")
    assert set(t.worker.dropna().str.split("@").str[0]) == {"w0", "w1"}
    with capsys.disabled():
        print(f"\n[smollm2-135m] serial == 2 Ray workers: {len(tables)} tables and settings equal")
