"""A run refuses to report from a broken environment, says what made it, and rejects bad input
before any model loads."""

import json

import pytest
import torch
from cli_argv import argv

import interp
import interp.compat
from experiments.base import prepare
from experiments.study.checks import SelfCheckError, check_text, nucleus_excess
from experiments.study.cli import main
from interp.tokens import Completion

ARGS = ["--out", "unused", "--no-progress"]


@pytest.fixture()
def no_model(monkeypatch):
    """Usage errors must be found before a model loads: loading one fails this test."""

    def load(*a, **k):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr("experiments.study.cli.load_model", load)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["reproduce", "--kinds", "foo"], "--kinds 'foo'"),
        (["reproduce", "--max-new-tokens", "0"], "--max-new-tokens 0"),
        (["reproduce", "--prompts", "nosuch"], "unknown prompt 'nosuch'"),
        (["reproduce", "--tolerance", "-1"], "--tolerance -1"),
        (["reproduce", "--device", "nosuchdevice"], "--device 'nosuchdevice'"),
        (["reproduce", "--chunk-size", "0"], "--chunk-size 0"),
        (["reproduce", "--seeds", "-1"], "seeds must be >= 0"),
        (["replicate", "--model-seeds", "foo"], "--model-seeds 'foo'"),
        (["run", "clipping", "--k", "-3"], "--k -3"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(argv, says, no_model, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv + ARGS)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith("error: ") and says in err and "\n" not in err
    assert "(" in err and ")" in err  # says how to fix it


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch has CUDA")
def test_cuda_on_a_cpu_only_torch_is_a_usage_error(no_model, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "--device", "cuda", *ARGS])
    assert exc.value.code == 2 and "no usable CUDA" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content", [b"", b"\n  \n", b"\xff\xfe\x00\x81 not utf-8\n", b'{"name": "a"}\n', b"{broken\n"]
)
def test_bad_prompts_files_are_usage_errors(content, tmp_path, no_model, capsys):
    path = tmp_path / "prompts.txt"
    path.write_bytes(content)
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "--prompts-file", str(path), *ARGS])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: --prompts-file") and err.count("\n") == 1


def test_nucleus_excess_tells_inside_from_outside():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    inside = nucleus_excess(
        logits.expand(3, -1), torch.tensor([0, 1, 2]), temperature=1.0, top_p=0.9
    )
    assert (inside <= 0).all()
    assert (
        nucleus_excess(logits, torch.tensor([3]), temperature=1.0, top_p=0.9) > 0
    )  # 0.95 before it
    assert (
        nucleus_excess(logits, torch.tensor([1]), temperature=0, top_p=0.9) > 0
    )  # greedy takes 0 only


def test_checks_pass_and_are_recorded_with_provenance(gpt2_tiny, tmp_path):
    out = tmp_path / "res"
    main(
        argv(
            "reproduce",
            model=gpt2_tiny._resid_writes_meta["path"],
            out=out,
            max_new_tokens=6,
            samples=1,
            draws=10,
            prompts=["meaning_of_life", "translate"],
        )
    )
    checks = json.loads((out / "translate" / "checks.json").read_text())
    assert {c["name"] for c in checks} == {
        "sampler",
        "nucleus",
        "scoring",
        "writes_sum",
        "full_clip",
    }
    assert all(c["passed"] for c in checks)
    env = json.loads((out / "environment.json").read_text())
    assert set(env["versions"]) == {
        "python",
        "torch",
        "transformers",
        "transformer-lens",
        "gguf",
        "numpy",
    }
    assert env["dtype"] == "float32" and env["device"] == "cpu" and env["run_key"]
    report = (out / "report.md").read_text()
    assert (
        f"transformers {env['versions']['transformers']}" in report
        and "self-checks (all passed on 2 texts" in report
    )
    # resuming the folder with settings that change the numbers is refused, not mixed
    with pytest.raises(SystemExit) as exc:
        main(
            argv(
                "reproduce",
                model=gpt2_tiny._resid_writes_meta["path"],
                out=out,
                max_new_tokens=6,
                prompts="translate",
                tolerance="0.5",
            )
        )
    assert exc.value.code == 2


@pytest.mark.real_model
@pytest.mark.drift
def test_real_model_checks_pass_and_catch_a_continuation_it_would_not_sample(smollm2):
    comp = interp.sample_continuation(
        smollm2, "I believe the meaning of life is", max_new_tokens=16, seed=0, use_cache=True
    )
    checks = check_text(prepare(smollm2, comp))
    assert all(c.passed for c in checks) and {c.name for c in checks} >= {
        "sampler",
        "nucleus",
        "writes_sum",
    }
    garbage = Completion(
        comp.prompt,
        comp.prompt_tokens,
        torch.tensor([12, 12, 30, 12, 30, 30, 12, 12]),
        meta={k: v for k, v in comp.meta.items() if k != "token_logprobs"},
    )
    with pytest.raises(SelfCheckError, match="nucleus"):
        check_text(prepare(smollm2, garbage))


@pytest.mark.real_model
def test_reproduce_stops_when_the_sampler_is_broken(smollm2, tmp_path, monkeypatch, capsys):
    """The 2026-11-25 defect, made on purpose on any version: attention that ignores the KV cache.
    ``reproduce`` must stop with the self-check's message and write no finding."""

    def broken(update):
        def ignore_cache(k, v, **kwargs):
            return k, v

        ignore_cache.__wrapped__ = update
        return ignore_cache

    monkeypatch.setattr(interp.compat, "_reads_cache_kwarg", broken)
    out = tmp_path / "res"
    with pytest.raises(SystemExit) as exc:
        main(
            argv(
                "reproduce",
                model="smollm2-135m",
                out=out,
                prompts="meaning_of_life",
                max_new_tokens=12,
            )
        )
    err = capsys.readouterr().err
    assert exc.value.code == 3
    assert "self-check failed" in err and "sampler: measured" in err and "transformers " in err
    assert (
        not (out / "report.html").exists() and not (out / "meaning_of_life" / "spectrum").exists()
    )


def test_run_refuses_a_folder_made_with_other_settings(gpt2_tiny, tmp_path, capsys):
    model = gpt2_tiny._resid_writes_meta["path"]
    args = argv("run", "spectrum", model=model, out=tmp_path, max_new_tokens=5)
    main(args)
    main(
        argv("run", "clipping", model=model, out=tmp_path, max_new_tokens=5)
    )  # same settings, another experiment: fine
    assert json.loads((tmp_path / "environment.json").read_text())["settings"]["seed"] == 0
    with pytest.raises(SystemExit) as exc:
        main(args + ["--seed", "1"])  # its stored continuation is seed 0's: refused, not reused
    assert exc.value.code == 2 and "holds results of another run" in capsys.readouterr().err


def test_a_setting_added_later_resumes_folders_made_before_it_only_at_the_old_value(
    gpt2_tiny, tmp_path
):
    """A folder made before ``random_draws`` existed (its settings lack the key) was made with 3
    draws: resuming it with 3 is the same run; with 1 it is another run and is refused."""
    from experiments.study.reproduce import (
        _NEUTRAL,
        ADDED_SETTINGS,
        ResultsMismatchError,
        Settings,
        claim_folder,
    )

    def settings(s: Settings) -> dict:
        return {k: v for k, v in vars(s).items() if k not in _NEUTRAL}

    claim_folder(tmp_path, gpt2_tiny, settings(Settings(random_draws=3)))
    path = tmp_path / "environment.json"
    env = json.loads(path.read_text())
    old = {
        k: v for k, v in env["settings"].items() if k != "random_draws"
    }  # as written before the setting existed
    from interp.provenance import run_key

    assert ADDED_SETTINGS["random_draws"] == 3
    path.write_text(
        json.dumps(
            {
                **env,
                "settings": old,
                "run_key": run_key(env, old),
                "commit": "abc",
                "earlier_commits": ["xyz"],
            }
        )
    )
    resumed = claim_folder(
        tmp_path, gpt2_tiny, settings(Settings(random_draws=3))
    )  # the same run: resumes
    assert resumed["earlier_commits"] == [c for c in ("xyz", "abc") if c != resumed.get("commit")]
    assert json.loads(path.read_text())["earlier_commits"] == resumed["earlier_commits"]  # recorded
    from interp.provenance import environment_lines

    assert any(
        "resumed; earlier runs in this folder: xyz" in line for line in environment_lines(resumed)
    )
    path.write_text(json.dumps({**env, "settings": old, "run_key": run_key(env, old)}))
    with pytest.raises(ResultsMismatchError, match="another run"):
        claim_folder(tmp_path, gpt2_tiny, settings(Settings(random_draws=1)))
    with pytest.raises(ResultsMismatchError):  # and a changed setting is never excused by the rule
        claim_folder(tmp_path, gpt2_tiny, settings(Settings(random_draws=3, tolerance=0.5)))
