"""The whole study on one model: every experiment on the four prompts, then the cross-prompt
overlap and a report. Resumable: a finished experiment's folder holds ``settings.json`` (written
last, via an atomic rename), and a rerun with the same ``out`` loads it instead of recomputing.
"""

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from interp import Basis, Completion, model_info
from interp.provenance import environment, run_key
from interp.sweeps import COUNTERS
from interp.writes import model_device

from ..base import ExperimentResult, check_png_export, prepare, run_meta
from ..overlap import OverlapResult, Subspace, run_overlap
from ..prompts import PROMPTS, REPLICATION_PROMPTS, get_continuation, sample_missing
from ..registry import get_plugin, stage
from .checks import checked

PLOTLY_JS = "plotly.min.js"  # one copy per results folder; figure pages load it by a relative path


@dataclass
class Settings:
    prompts: Sequence[str] = tuple(PROMPTS)
    prompt_texts: dict[str, str] | None = (
        None  # name -> text for prompts not in REPLICATION_PROMPTS
    )
    seeds: Sequence[int] = (0,)
    kinds: tuple[str, ...] = ("attn", "mlp")
    max_new_tokens: int = 64
    exhaustive: bool = False  # every k of every curve, every direction's exact importance
    tolerance: float = 1e-4
    chunk_size: int | None = None
    n_exact: int | None = (
        None  # exact single-direction ablations of the screened default (~8% of d)
    )
    n_fisher: int = 8
    n_samples: int = 3
    generation_seeds: Sequence[int] | None = (
        None  # clipped generation only for these seeds (None: all)
    )
    overlap_draws: int = 50
    random_draws: int = (
        3  # independent Haar-random bases per text: the minimal-subspace null (replicate: 3)
    )
    png: bool = False
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    plugins: Sequence[
        str
    ] = ()  # plug-in experiments (experiments.registry) run on every text after the built-ins
    exact_texts: int = (
        0  # the audit's exact stage (experiments.exact_importance) on the first N texts
    )
    exact_plugins: Sequence[
        str
    ] = ()  # plug-in experiments run on the exact stage's texts only (after the built-ins)
    band: float = (
        5.0  # exact stage: every k scanned where the curve is within this many nats of the target
    )
    only: Sequence[str] | None = (
        None  # compute only these experiments (others load if finished); no overlap, no report
    )

    def plugins_for(self, exact: bool = True) -> list[str]:
        """The plug-ins a text runs (``plugins``, then ``exact_plugins`` on an exact-stage text),
        each once; with ``exact=True``, every plug-in the run may use."""
        return list(dict.fromkeys([*self.plugins, *(self.exact_plugins if exact else ())]))

    @property
    def exact_stage_only(self) -> bool:
        """Only the exact stage is asked for (``replicate --exact-only``)."""
        return self.only is not None and set(self.only) <= {"exact_importance"}

    def context(self, **extra: Any) -> dict[str, Any]:
        """The run's settings an experiment may name (``experiments.registry.CONTEXT``); each
        experiment receives those its function declares."""
        return {
            **dict(
                seed=0,
                exhaustive=self.exhaustive,
                tolerance=self.tolerance,
                band=self.band,
                chunk_size=self.chunk_size,
                progress=self.progress,
                n_exact=self.n_exact,
                n_fisher=self.n_fisher,
                n_samples=self.n_samples,
                random_draws=self.random_draws,
                generation_tokens=min(32, self.max_new_tokens),
            ),
            **extra,
        }

    def text_of(self, prompt: str) -> str:
        if self.prompt_texts and prompt in self.prompt_texts:
            return self.prompt_texts[prompt]
        if prompt not in REPLICATION_PROMPTS:
            raise ValueError(
                f"unknown prompt {prompt!r}; choose from {list(REPLICATION_PROMPTS)} or "
                "pass --prompts-file"
            )
        return REPLICATION_PROMPTS[prompt]

    def text_ids(self) -> list[tuple[str, str, int]]:
        """(text id, prompt name, seed) for every text: the prompt's name alone for seed 0 of a
        single-seed run, else ``name~s<seed>``."""
        single = list(self.seeds) == [0]
        return [
            (p if single else f"{p}~s{seed}", p, seed) for seed in self.seeds for p in self.prompts
        ]


UNIT_PHASE = "unit: one plain forward"


def plain_forward_seconds(model: Any, comp: Completion, repeats: int = 2) -> float:
    """Seconds of one plain forward pass of the text (batch 1, no hooks; best of ``repeats``),
    measured inside the run so that phases can be expressed in forward-pass equivalents that
    move with the machine's speed (``benchmarks/bench_study.py``)."""
    net = getattr(model, "original_model", model)
    tokens = comp.tokens[None].to(model_device(model))
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            if tokens.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            net(tokens)
            if tokens.device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
    return best


class Timer:
    """Wall time of each computed (not loaded) result, for the benchmark and the report. With a
    ``path``, each row is appended to it as its phase ends: a killed run still says where it was,
    and processes that share a results folder (a replicate split by prompt) add their rows beside
    each other's instead of overwriting them. A resumed run's ``table()`` keeps what earlier runs
    computed. ``worker``: the Ray worker that computed the row (``replicate --cluster``), else
    empty."""

    COLUMNS = ["text", "phase", "seconds", "loaded", "forward_rows", "token_rows", "worker"]

    def __init__(self, path: Path | None = None) -> None:
        self.rows: list[dict[str, Any]] = []
        self.path = path
        if path is not None and path.exists() and path.stat().st_size:
            earlier = pd.read_csv(path)
            if list(earlier.columns) != self.COLUMNS:  # made before a column was added: add it
                tmp = path.with_name(path.name + ".partial")
                earlier.reindex(columns=self.COLUMNS).to_csv(tmp, index=False)
                os.replace(tmp, path)
            self.rows = earlier[~earlier.loaded.astype(bool)].to_dict(orient="records")

    def add(self, **row: Any) -> None:
        self.rows.append(row)
        if self.path is not None:
            header = not self.path.exists() or self.path.stat().st_size == 0
            line = pd.DataFrame([row], columns=self.COLUMNS).to_csv(index=False, header=header)
            with open(self.path, "a") as f:  # one short write in append mode: rows never interleave
                f.write(line)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=self.COLUMNS)


def cached(
    directory: Path,
    cls: type[ExperimentResult],
    compute: Callable[[], ExperimentResult],
    png: bool,
    timer: Timer | None = None,
    text: str = "",
    plotly_js: Path | None = None,
) -> Any:
    """Load a finished result from ``directory`` or compute, save atomically and draw it (its
    figures load plotly.js from ``plotly_js``, one copy for the whole results folder, when
    given)."""
    t0 = time.perf_counter()
    rows0, tokens0 = COUNTERS["rows"], COUNTERS["token_rows"]
    if (directory / "settings.json").exists():
        result = cls.load(directory)
        loaded = True
    else:
        result = compute()
        t1 = time.perf_counter()
        tmp = directory.with_name(directory.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        result.save_figures(tmp / "figures", png=png, plotly_js=plotly_js)
        result.save(tmp)  # settings.json last: its presence marks the result finished
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(tmp, directory)
        loaded = False
        if timer is not None:
            timer.add(
                text=text, phase="save + figures", seconds=time.perf_counter() - t1, loaded=False
            )
            t0 += time.perf_counter() - t1
    if timer is not None:
        timer.add(
            text=text,
            phase=cls.name,
            seconds=time.perf_counter() - t0,
            loaded=loaded,
            forward_rows=COUNTERS["rows"] - rows0,
            token_rows=COUNTERS["token_rows"] - tokens0,
        )
    return result


@dataclass
class PromptResults:
    completion: Completion
    basis: Basis
    results: dict[str, ExperimentResult]
    prompt: str = ""
    seed: int = 0


def experiments_for(s: Settings, exact: bool = False) -> list[str]:
    """The experiments a text runs, in order, all from the registry: on an exact-stage text the
    ``exact`` stage first (it needs nothing else, and feeds the importance claims); then, unless
    only the exact stage is asked for, the ``default`` stage by its order, and the extensions
    (``plugins``, and ``exact_plugins`` on an exact-stage text)."""
    names = stage("exact") if exact else []
    if not s.exact_stage_only:
        names += [*stage("default"), *s.plugins_for(exact)]
    return list(dict.fromkeys(names))


def run_prompt(
    model: Any,
    text_id: str,
    prompt: str,
    seed: int,
    out: Path,
    s: Settings,
    timer: Timer | None = None,
    exact: bool = False,
) -> PromptResults:
    t0 = time.perf_counter()
    comp = get_continuation(
        model,
        s.text_of(prompt),
        seed=seed,
        store=out / "continuations" / f"{text_id}.json",
        max_new_tokens=s.max_new_tokens,
    )
    text = prepare(model, comp, kinds=s.kinds, chunk_size=s.chunk_size, progress=s.progress)
    if timer is not None:
        timer.add(
            text=text_id, phase="writes + baseline", seconds=time.perf_counter() - t0, loaded=False
        )
    t0 = time.perf_counter()
    checked(text, out / text_id)  # raises SelfCheckError before anything about this text is written
    if timer is not None:
        timer.add(text=text_id, phase="self-checks", seconds=time.perf_counter() - t0, loaded=False)
        if not (out / text_id / "minimal_subspace" / "settings.json").exists():
            timer.add(
                text=text_id,
                phase=UNIT_PHASE,
                seconds=plain_forward_seconds(model, comp),
                loaded=False,
            )
    d = out / text_id
    r: dict[str, ExperimentResult] = {}

    def run(
        name: str, cls: type[ExperimentResult], compute: Callable[[], ExperimentResult]
    ) -> None:
        if s.only is not None and name not in s.only:
            if (d / name / "settings.json").exists():
                r[name] = cls.load(d / name)
            return
        r[name] = cached(d / name, cls, compute, s.png, timer, text_id, plotly_js=out / PLOTLY_JS)

    context = s.context(seed=seed, prompt_name=prompt)
    # every experiment through the registry (experiments/registry.py)
    for name in experiments_for(s, exact):
        experiment = get_plugin(name)
        if (
            experiment.generation
            and s.generation_seeds is not None
            and seed not in s.generation_seeds
        ):
            continue
        run(
            name,
            experiment.result,
            lambda experiment=experiment: experiment.run(
                model, text, {**context, "results": dict(r)}
            ),
        )
    return PromptResults(comp, text.basis, r, prompt=prompt, seed=seed)


def subspaces_from(per_prompt: dict[str, PromptResults]) -> list[Subspace]:
    """Each text's minimal subspace (first crossing) under every ordering of its basis."""
    subs = []
    for name, pr in per_prompt.items():
        orders = pr.results["orderings"].tables["orders"]
        ms = pr.results["minimal_subspace"]
        for ordering, g in orders.groupby("ordering"):
            k = ms.order(ordering)
            cols = g.sort_values("position").direction.to_numpy()[:k].copy()
            subs.append(
                Subspace(
                    name=name if ordering == "singular_value" else f"{name}/{ordering}",
                    basis=pr.basis.vectors[:, cols],
                    prompt=name,
                    source=ordering,
                    spectrum_vectors=pr.basis.vectors,
                    spectrum_values=pr.basis.singular_values,
                )
            )
    return subs


class ResultsMismatchError(ValueError):
    """A results folder holds results made by another model, dtype, library set or settings."""


# Settings that do not change any number (how to show progress, which figures to draw, which
# texts to run: every text has its own folder).
_NEUTRAL = (
    "progress",
    "png",
    "prompts",
    "prompt_texts",
    "seeds",
    "generation_seeds",
    "plugins",
    "exact_texts",
    "only",
    "exact_plugins",
)


# Settings added after results folders were made, with the value every earlier run used: a
# folder whose settings lack one was made with that value, so resuming it with the same value
# mixes nothing.
ADDED_SETTINGS: dict[str, Any] = {"random_draws": 3}


def _same_run(earlier: dict[str, Any], env: dict[str, Any], settings: dict[str, Any]) -> bool:
    """Whether ``earlier`` (an environment.json) was made under ``env``'s run key, counting a
    setting it lacks (``ADDED_SETTINGS``) as the value runs used before the setting existed."""
    if earlier.get("run_key") == env["run_key"]:
        return True
    old = earlier.get("settings")
    if not isinstance(old, dict):
        return False
    filled = {**{k: v for k, v in ADDED_SETTINGS.items() if k not in old}, **old}
    return filled != old and run_key({**earlier, "settings": filled}, filled) == env["run_key"]


def _mismatch(earlier: dict[str, Any], env: dict[str, Any]) -> list[str]:
    """Every key that differs between an earlier run's environment.json and this run's, with both
    values (a setting the earlier run lacks counts as its ``ADDED_SETTINGS`` value)."""
    from .preflight import differences

    def keyed(e: dict[str, Any]) -> dict[str, Any]:
        m = e.get("model") or {}
        prov = m.get("provenance") or {}
        weights = prov.get("files") or m.get("path")
        if isinstance(weights, dict):  # file -> size and sha256: the hashes, shortened
            weights = {f: str((v or {}).get("sha256", v))[:12] for f, v in weights.items()}
        return {
            "model": {k: m.get(k) for k in ("name", "architecture", "d_model", "processing")},
            "model weights": weights,
            "dtype": e.get("dtype"),
            "device type": str(e.get("device", "")).split(":")[0],
            "versions": e.get("versions"),
            "settings": e.get("settings"),
        }

    old = dict(earlier.get("settings") or {})
    filled = {**{k: v for k, v in ADDED_SETTINGS.items() if k not in old}, **old}
    return differences(keyed({**earlier, "settings": filled}), keyed(env))


def claim_folder(
    out: Path, model: Any, settings: dict[str, Any], env: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Record the run's environment in ``out/environment.json``; refuse a folder whose earlier
    results were made under another key (model and weights, dtype, device type, library
    versions, ``settings``: those that change numbers), since resuming would mix them. A resumed
    folder lists the commits of its earlier runs in ``earlier_commits`` (the key leaves the commit
    out, so one folder may hold results computed at several); the error names every differing key
    with both values. ``env``: the environment of the process that holds the model, when that is not
    this one (a Ray worker: ``cluster.py``)."""
    env = dict(env) if env is not None else environment(model)

    env["settings"] = settings
    env["run_key"] = run_key(env, settings)
    path = out / "environment.json"
    if path.exists():
        earlier = json.loads(path.read_text())
        if not _same_run(earlier, env, settings):
            diff = _mismatch(earlier, env) or ["the run key (model weights or settings)"]
            raise ResultsMismatchError(
                f"{out} holds results of another run (differs in {'; '.join(diff)}); resuming "
                "would mix them: use another --out, or delete the folder to recompute."
            )
        # a resumed folder holds results computed at every commit that ran in it: keep them all
        earlier_commits = [*earlier.get("earlier_commits", []), earlier.get("commit")]
        env["earlier_commits"] = [
            c for c in dict.fromkeys(earlier_commits) if c and c != env.get("commit")
        ]
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(env, indent=2, default=str))
    return env


def has_results(out: Path) -> bool:
    """Whether ``out`` holds a finished result (a ``settings.json`` one or two levels down)."""
    return any(out.glob("*/settings.json")) or any(out.glob("*/*/settings.json"))


@contextmanager
def claimed(out: Path, model: Any, settings: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """``claim_folder`` for the length of a run: when the run stops (an error, Ctrl-C) before any
    result is finished, what it wrote goes again, the ``environment.json`` lock included, so that a
    rerun with other settings is not refused by a folder that holds no result. The folder itself
    goes if this run made it; otherwise only the entries it added."""
    out = Path(out)
    existed = out.exists()
    before = {p.name for p in out.iterdir()} if out.is_dir() else set()
    claimed_before = (out / "environment.json").exists()
    env = claim_folder(out, model, settings)
    try:
        yield env
    except BaseException:
        if not claimed_before and not has_results(out):
            if not existed:
                shutil.rmtree(out, ignore_errors=True)
            else:
                for p in out.iterdir():
                    if p.name in before:
                        continue
                    if p.is_dir():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
        raise


def stale_overlap(folder: Path, texts: list[str]) -> bool:
    """Remove a finished overlap result made over another set of texts (an earlier run of the same
    folder with fewer prompts, or a replicate split across processes by prompt): the overlap
    depends on every text of its seed, so it is recomputed, never loaded. Returns whether it was."""
    settings = folder / "settings.json"
    if not settings.exists():
        return False
    made_over = json.loads(settings.read_text()).get("meta", {}).get("texts")
    if made_over == texts:
        return False
    shutil.rmtree(folder)
    return True


def reproduce(
    model: Any,
    out: str | Path,
    settings: Settings | None = None,
    *,
    command: str | None = None,
    published: Path | None = None,
) -> dict[str, Any]:
    """Run everything; returns {"prompts": {text id: PromptResults}, "overlap": {seed:
    OverlapResult}, "report": path, "timings": DataFrame}. ``command`` (the command line that ran
    it) and ``published`` (a folder of published results, e.g. docs/results) go to the report's list
    of rows not run (``report.write_report``). A run that stops before any result is finished leaves
    nothing behind (``claimed``)."""
    s = settings or Settings()
    out = Path(out)
    preflight(s)
    with claimed(out, model, keyed_settings(s)) as env:
        return _reproduce(model, out, s, env, command=command, published=published)


def preflight(s: Settings) -> None:
    """The checks that need no model, before any work."""
    for p in s.prompts:
        s.text_of(p)  # unknown names fail before any work
    for name in s.plugins_for():
        get_plugin(name)  # so do unknown plug-ins
    if s.png:
        check_png_export()  # so does --png without kaleido


def keyed_settings(s: Settings) -> dict[str, Any]:
    """The settings that change a run's numbers (its key): all but ``_NEUTRAL``."""
    return {k: v for k, v in vars(s).items() if k not in _NEUTRAL}


def _reproduce(
    model: Any,
    out: Path,
    s: Settings,
    env: dict[str, Any],
    *,
    command: str | None,
    published: Path | None,
) -> dict[str, Any]:
    from .preflight import PROGRESS

    timer = Timer(out / "timings.csv")
    t0 = time.perf_counter()
    per_text: dict[str, PromptResults] = {}
    ids = s.text_ids()
    t1 = time.perf_counter()
    sample_missing(
        model,
        [(s.text_of(p), seed, out / "continuations" / f"{tid}.json") for tid, p, seed in ids],
        max_new_tokens=s.max_new_tokens,
    )
    timer.add(
        text="all",
        phase="continuations (one batch per seed)",
        seconds=time.perf_counter() - t1,
        loaded=False,
    )
    for i, (text_id, prompt, seed) in enumerate(tqdm(ids, desc="texts", disable=not s.progress)):
        if s.exact_stage_only and i >= s.exact_texts:
            break
        per_text[text_id] = run_prompt(
            model, text_id, prompt, seed, out, s, timer, exact=i < s.exact_texts
        )
        PROGRESS.done += 1
    return finish(
        out,
        s,
        per_text,
        env,
        model_info(model).to_dict(),
        lambda text_id: run_meta(model, per_text[text_id].completion),
        timer,
        t0,
        command=command,
        published=published,
    )


def finish(
    out: Path,
    s: Settings,
    per_text: dict[str, PromptResults],
    env: dict[str, Any],
    info: dict[str, Any],
    meta_of: Callable[[str], dict[str, Any]],
    timer: Timer,
    t0: float,
    *,
    command: str | None = None,
    published: Path | None = None,
) -> dict[str, Any]:
    """After every text: the overlap per seed and the report (``reproduce``'s ending, shared with
    the cluster driver, which has the per-text results but no model: ``info`` is the model's
    ``model_info`` dict, ``meta_of(text id)`` the text's ``run_meta``)."""
    ids = s.text_ids()
    if s.only is not None:  # a partial pass (e.g. the exact stage alone): no overlap, no report
        return {"prompts": per_text, "overlap": {}, "report": None, "timings": timer.table()}
    overlaps: dict[int, OverlapResult] = {}
    for seed in s.seeds:
        group = {tid: per_text[tid] for tid, _, sd in ids if sd == seed}
        if len(group) < 2:
            continue
        first = next(iter(group))
        folder = out / ("overlap" if len(s.seeds) == 1 else f"overlap~s{seed}")
        stale_overlap(folder, list(group))
        overlaps[seed] = cached(
            folder,
            OverlapResult,
            lambda group=group, first=first, seed=seed: run_overlap(
                subspaces_from(group),
                draws=s.overlap_draws,
                seed=seed,
                meta={**meta_of(first), "texts": list(group), "seed": seed},
            ),
            s.png,
            timer,
            "all",
            plotly_js=out / PLOTLY_JS,
        )
    from .report import write_report

    t1 = time.perf_counter()
    report = write_report(
        out,
        per_text,
        overlaps,
        info,
        s,
        elapsed=time.perf_counter() - t0,
        environment=env,
        command=command,
        published=published,
    )
    timer.add(
        text="all", phase="report", seconds=time.perf_counter() - t1, loaded=False
    )  # writes timings.csv
    return {"prompts": per_text, "overlap": overlaps, "report": report, "timings": timer.table()}
