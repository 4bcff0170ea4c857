"""``replicate`` and ``extend`` on Ray: one actor per device holding its loaded model, one unit
of work per (model, text), the driver the only writer of the run folder (docs/cluster.md).

A **worker** (``Worker``, a Ray actor) loads one model on its device (a GPU when the actor was
given one; the model is fetched and verified into the cache of the worker's own machine on first
use, as in a serial run) and then processes units. A **unit** is one text with everything it
needs: the same ``run_prompt`` a serial run calls (default stage, exact stage, plug-ins), run in
a scratch folder on the worker that holds only what the driver sent (the text's stored
continuation and its finished experiments). The worker sends back the files the unit made, its
timing rows, the text's basis and completion; it never writes into the run folder, so workers
need no shared filesystem. The **driver** (this process) owns the run folder: it claims it
(``environment.json``, refusing a folder of another run key, and refusing workers whose key
differs from each other's), samples the continuations (one batch per seed, as a serial run, each
batch on a worker), sends every text as a unit, writes each finished unit's files atomically (a
folder is renamed into place, ``settings.json`` inside it), appends its timing rows with the
worker's name to ``timings.csv``, and at the end computes the overlap and the report with the
serial run's own code (``reproduce.finish``).

Faults: a worker process that dies (killed, lost node) fails its unit with ``RayActorError``;
Ray restarts the actor (``max_restarts``; it reloads its model) and the driver sends the unit
again to the next free worker, at most ``retries`` times, then fails it naming the text. A
self-check failure (or any error raised by the text's own computation) is not retried: the text
is reported with its message and the other texts finish; the run then stops before the overlap
and report, as a serial run does. Ctrl-C kills the workers and shuts down a Ray this process
started; finished units are in the folder, and a rerun resumes from it.
"""

import hashlib
import os
import shutil
import socket
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

RAY_MISSING = (
    '--cluster needs Ray, an optional extra: pip install -c requirements.lock -e ".[cluster]" '
    "(or leave --cluster out to run in this process)"
)
# Files the driver writes from its own copy instead of receiving one per figure folder: plotly.js
# (4.8 MB, written by every figure folder's HTML) when the worker's bytes equal the driver's.
_SHARED = {"plotly.min.js"}
# Variables the workers need from the driver's environment (a cluster's nodes keep their own
# model cache: RESID_WRITES_CACHE is not sent).
ENV_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "RESID_WRITES_PLUGINS")


# The workers of the last model started in this Ray session: a later run of the same model with
# the same workers (replicate, then extend; a notebook; the tests) reuses them instead of loading
# the model again; a run of another model replaces them (one loaded model per device).
_POOL: dict[str, Any] = {"key": None, "handles": []}


class ClusterError(RuntimeError):
    """Units failed for a reason other than a self-check (an error in a text's computation, a
    worker lost more than ``retries`` times), or the cluster cannot run the workers."""


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class ModelSpec:
    """What a worker loads: ``load_model(name, device=..., dtype=..., processing=...)``; ``device``
    None or ``cuda``: the actor's GPU when it has one, else the CPU."""

    name: str
    device: str | None = None
    dtype: str | None = "float32"
    processing: bool = False


# --- files: what travels between the driver and a worker --------------------------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_files(root: Path, paths: Iterable[Path]) -> dict[str, bytes]:
    """``{path relative to root: bytes}`` of the given files (those that exist)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in paths if p.is_file()}


def finished_experiments(text_dir: Path) -> list[Path]:
    """The files a worker needs to load a text's finished experiments: each finished folder's
    tables and settings.json (not its figures)."""
    return (
        [
            f
            for d in sorted(text_dir.iterdir())
            if (d / "settings.json").is_file()
            for f in sorted(d.iterdir())
            if f.is_file()
        ]
        if text_dir.is_dir()
        else []
    )


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def apply_files(
    out: Path, files: dict[str, bytes], shared: dict[str, str], blobs: dict[str, bytes]
) -> None:
    """Write a unit's files into ``out``: single files (a continuation, checks.json) atomically,
    each experiment folder (``<text>/<name>/...``) whole, built beside and renamed into place
    (``settings.json`` inside: a folder is finished or absent, as in ``reproduce.cached``).
    ``shared``: files the worker left out because they equal the driver's ``blobs[name]``."""
    folders: dict[Path, dict[str, bytes]] = {}
    for rel in [*files, *shared]:
        data = files[rel] if rel in files else blobs[shared[rel]]
        if folder := _folder(rel):  # <text>/<experiment>/...
            folders.setdefault(Path(*folder), {})[str(Path(rel).relative_to(Path(*folder)))] = data
        else:
            _write_atomic(out / rel, data)
    for folder, content in folders.items():
        final = out / folder
        tmp = final.with_name(final.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        for rel, data in content.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)


def _scan(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): _sha(p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _folder(rel: str) -> tuple[str, ...]:
    """The experiment folder (``<text>/<name>``) a file lies in, or () for a single file."""
    parts = Path(rel).parts
    return parts[:2] if len(parts) >= 3 and parts[0] != "continuations" else ()


def _made(
    root: Path, before: dict[str, str], shared: dict[str, str]
) -> tuple[dict[str, bytes], dict[str, str]]:
    """Files under ``root`` that are new or changed since ``before`` (every file of an experiment
    folder in which any changed: the driver replaces folders whole); files named in ``shared``
    whose bytes equal the driver's are listed instead of sent."""
    now = _scan(root)
    touched = {_folder(rel) for rel, sha in now.items() if before.get(rel) != sha} - {()}
    files, left_out = {}, {}
    for rel, sha in now.items():
        if before.get(rel) == sha and _folder(rel) not in touched:
            continue
        name = Path(rel).name
        if shared.get(name) == sha:
            left_out[rel] = name
        else:
            files[rel] = (root / rel).read_bytes()
    return files, left_out


# --- the worker --------------------------------------------------------------------------------


class Worker:
    """A Ray actor's class (``ray.remote(Worker)``): one loaded model, a stream of units."""

    def __init__(self, spec: ModelSpec, threads: int, index: int) -> None:
        import ray
        import torch

        from interp import load_model

        torch.set_num_threads(max(1, threads))
        device = spec.device
        if device is None or device == "cuda":
            device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.spec, self.index = spec, index
        self.name = f"w{index}@{socket.gethostname()}:{os.getpid()}"
        self.model = load_model(
            spec.name, device=device, dtype=spec.dtype, processing=spec.processing, progress=False
        )

    def describe(self, settings: dict[str, Any]) -> dict[str, Any]:
        """This worker's environment (versions, device, model provenance) and run key for
        ``settings``, its model's ``model_info`` and its process."""
        import ray

        from interp import model_info
        from interp.provenance import environment, run_key

        env = environment(self.model)
        env["settings"] = settings
        env["run_key"] = run_key(env, settings)
        return {
            "env": env,
            "info": model_info(self.model).to_dict(),
            "name": self.name,
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
        }

    def whoami(self) -> dict[str, Any]:
        return {"name": self.name, "pid": os.getpid()}

    def _in_scratch(
        self,
        files: dict[str, bytes],
        work: Callable[[Path], dict[str, Any]],
        shared: dict[str, str],
    ) -> dict[str, Any]:
        scratch = Path(tempfile.mkdtemp(prefix="resid-writes-unit-"))
        try:
            for rel, data in files.items():
                (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
                (scratch / rel).write_bytes(data)
            before = _scan(scratch)
            t0 = time.perf_counter()
            out = work(scratch)
            out["seconds"] = time.perf_counter() - t0
            out["files"], out["shared"] = _made(scratch, before, shared)
            return out
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def sample(
        self,
        items: list[tuple[str, int, str]],
        files: dict[str, bytes],
        max_new_tokens: int,
        shared: dict[str, str],
    ) -> dict[str, Any]:
        """``sample_missing`` over ``(prompt text, seed, continuation path)``: a batch per seed."""
        from ..prompts import sample_missing

        def work(root: Path) -> dict[str, Any]:
            sample_missing(
                self.model,
                [(t, seed, root / rel) for t, seed, rel in items],
                max_new_tokens=max_new_tokens,
            )
            return {"worker": self.name}

        return self._in_scratch(files, work, shared)

    def _failure(self, err: Exception, kind: str | None = None, **extra: Any) -> dict[str, Any]:
        """A text's own failure, returned (not raised: it is the text's outcome, not the worker's,
        and is not retried); an unexpected error keeps the end of its traceback."""
        import traceback

        message = (
            str(err) if kind else f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=-3)}"
        )
        return {
            "worker": self.name,
            "error": kind or type(err).__name__,
            "message": message,
            **extra,
        }

    def run_text(self, unit: dict[str, Any], shared: dict[str, str]) -> dict[str, Any]:
        """One text through ``run_prompt`` (``unit``: its id, prompt, seed, settings, files)."""
        from ..base import run_meta
        from .checks import SelfCheckError
        from .reproduce import Timer, run_prompt

        def work(root: Path) -> dict[str, Any]:
            timer = Timer()
            try:
                pr = run_prompt(
                    self.model,
                    unit["text"],
                    unit["prompt"],
                    unit["seed"],
                    root,
                    unit["settings"],
                    timer,
                    exact=unit["exact"],
                )
            except SelfCheckError as err:
                return self._failure(err, "self-check", timings=timer.rows)
            except Exception as err:  # noqa: BLE001
                return self._failure(err, timings=timer.rows)
            basis = replace(
                pr.basis,
                vectors=pr.basis.vectors.cpu(),
                singular_values=pr.basis.singular_values.cpu(),
            )
            return {
                "worker": self.name,
                "timings": timer.rows,
                "basis": basis,
                "completion": pr.completion.to_dict(),
                "results": list(pr.results),
                "meta": run_meta(self.model, pr.completion),
            }

        return self._in_scratch(unit["files"], work, shared)

    def extend_text(self, unit: dict[str, Any], shared: dict[str, str]) -> dict[str, Any]:
        """One docs text through ``extend_exact``: the docs folder's files travel with the unit
        (under ``docs/``), the run folder's under ``out/``."""
        from .extend import TextMismatchError, extend_exact

        def work(root: Path) -> dict[str, Any]:
            try:
                extend_exact(
                    self.model, root / "docs", root / "out", unit["plugin"], texts=[unit["text"]]
                )
            except TextMismatchError as err:
                return self._failure(err, "mismatch")
            except Exception as err:  # noqa: BLE001
                return self._failure(err)
            return {"worker": self.name}

        return self._in_scratch(unit["files"], work, shared)


# --- the driver --------------------------------------------------------------------------------


@dataclass
class WorkerHandle:
    """The driver's view of one actor: its handle, index and the process it last reported."""

    actor: Any
    index: int
    name: str = ""
    pid: int | None = None
    node: str = ""
    deaths: int = 0


@dataclass
class Unit:
    text: str
    method: str
    payload: dict[str, Any]
    attempts: int = 0
    started: float = 0.0


@dataclass
class Outcome:
    """What ``run_units`` gives back: each unit's result by text, failed texts with a message."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)  # text -> (kind, message)
    retried: int = 0


def default_workers(cpus: float, gpus: float, device: str | None) -> tuple[int, int]:
    """(workers, torch threads each): one per GPU, else one per two cores (each worker holds a
    model: memory, not only cores, bounds the count), threads splitting the cores."""
    if gpus >= 1 and device != "cpu":
        n = int(gpus)
    else:
        n = max(1, int(cpus) // 2)
    return n, max(1, int(cpus) // n)


class Cluster:
    """A Ray connection and the worker pools the runs use.

    ``address``: ``"local"`` starts Ray embedded in this process (``ray.init``; shut down by
    ``close``), anything else joins a running cluster (``"auto"``, ``"ray://host:10001"``). A Ray
    already initialised in this process is used as it is (and left running). ``workers``: actors
    per model (default: ``default_workers``); ``retries``: how often a unit whose worker died is
    sent again; ``on_event(kind, text, worker)``: called at ``dispatch``, ``done``, ``retry`` and
    ``failed`` (tests and progress displays)."""

    def __init__(
        self,
        address: str = "local",
        workers: int | None = None,
        *,
        num_cpus: int | None = None,
        object_store_memory: int | None = 1 << 30,
        retries: int = 3,
        progress: bool = True,
        on_event: Callable[[str, str, WorkerHandle], None] | None = None,
    ) -> None:
        if not ray_available():
            raise ClusterError(RAY_MISSING)
        import ray

        self.address, self.retries, self.progress, self.on_event = (
            address,
            retries,
            progress,
            on_event,
        )
        self.owns_ray = not ray.is_initialized()
        env_vars = {k: os.environ[k] for k in ENV_VARS if k in os.environ}
        if self.owns_ray:
            common = dict(
                runtime_env={"env_vars": env_vars} if env_vars else None,
                logging_level="WARNING",
            )
            if address == "local":  # always a new Ray, never one `ray start` left running here
                ray.init(
                    address="local",
                    include_dashboard=False,
                    num_cpus=num_cpus or os.cpu_count(),
                    object_store_memory=object_store_memory,
                    **common,
                )
            else:
                ray.init(address=address, **common)
        resources = ray.cluster_resources()
        self.cpus, self.gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
        self.workers = workers

    def close(self) -> None:
        """Shut Ray down if this object started it (which ends the workers). In a Ray session
        started by someone else the workers are kept for a later run of the same model (until
        another model's run or ``release``)."""
        import ray

        if self.owns_ray and ray.is_initialized():
            self.release()
            ray.shutdown()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- workers ---
    def start(
        self, spec: ModelSpec, settings: dict[str, Any]
    ) -> tuple[list[WorkerHandle], list[dict[str, Any]]]:
        """Start the workers of one model and wait until each has loaded it; returns the handles and
        each worker's ``describe(settings)``. Workers whose run keys differ are refused."""
        import ray

        n, threads = default_workers(self.cpus, self.gpus, spec.device)
        if self.workers:
            n, threads = self.workers, max(1, int(self.cpus) // self.workers)
        gpu = self.gpus >= 1 and spec.device != "cpu"
        if spec.device == "cuda" and not gpu:
            raise ClusterError(
                "--device cuda: the cluster has no GPU (leave --device out, or give --device cpu)"
            )
        if gpu and self.gpus < n:
            raise ClusterError(
                f"--workers {n} asks for {n} GPUs, the cluster has {self.gpus:g} (give --workers "
                f"{int(self.gpus)} or fewer, or --device cpu)"
            )
        options = dict(
            num_cpus=min(float(threads), self.cpus / n),
            num_gpus=1 if gpu else 0,
            max_restarts=self.retries,
            max_task_retries=0,
        )
        context = ray.get_runtime_context()
        key = (context.get_node_id(), context.get_job_id(), spec, n, threads, gpu, self.retries)
        reuse = _POOL["key"] == key
        if not reuse:
            self.stop(_POOL["handles"])
            actor = ray.remote(Worker)
            handles = [
                WorkerHandle(actor.options(**options).remote(spec, threads, i), i) for i in range(n)
            ]
            _POOL.update(key=key, handles=handles)
        handles = _POOL["handles"]
        refs = [h.actor.describe.remote(settings) for h in handles]
        waited = 0.0
        while True:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=60)
            if len(ready) == len(refs):
                break
            waited += 60
            print(
                f"cluster: {len(ready)} of {n} workers have loaded {spec.name} after "
                f"{waited:.0f} s (each "
                f"needs {options['num_cpus']:g} CPU{' and 1 GPU' if gpu else ''}; the cluster has "
                f"{self.cpus:g} CPUs, {self.gpus:g} GPUs)",
                flush=True,
            )
        try:
            described = ray.get(refs)
        except ray.exceptions.RayActorError:
            if not reuse:
                raise
            self.stop(handles)  # a kept worker is gone: start afresh
            return self.start(spec, settings)
        for h, d in zip(handles, described, strict=True):
            h.name, h.pid, h.node = d["name"], d["pid"], d["node"]
        keys = {d["env"]["run_key"] for d in described}
        if len(keys) > 1:
            self.stop(handles)
            lines = [
                f"  {d['name']}: {d['env']['versions']}, {d['env'].get('device')}"
                for d in described
            ]
            raise ClusterError(
                "the workers would make different numbers (their run keys differ: versions, "
                "device type or model files); install the same locked set everywhere:\n"
                + "\n".join(lines)
            )
        return handles, described

    def release(self) -> None:
        """Stop the kept workers (each holds a loaded model)."""
        self.stop(_POOL["handles"])

    def stop(self, handles: list[WorkerHandle]) -> None:
        """Kill these workers (and forget them if they are the kept ones)."""
        import ray

        for h in handles:
            try:
                ray.kill(h.actor, no_restart=True)
            except Exception:  # noqa: BLE001 (already gone, or Ray is shutting down)
                pass
        if handles is _POOL["handles"]:
            _POOL.update(key=None, handles=[])

    def _event(self, kind: str, text: str, worker: WorkerHandle) -> None:
        if self.on_event is not None:
            self.on_event(kind, text, worker)

    def run_units(
        self,
        handles: list[WorkerHandle],
        units: list[Unit],
        on_result: Callable[[Unit, dict], None],
        desc: str = "units",
    ) -> Outcome:
        """Send every unit to a free worker (one unit at a time each), hand each result to
        ``on_result`` as it arrives, and collect the units that failed. A unit whose worker died
        is sent again (at most ``retries`` times) to the next worker that answers; a dead worker
        is restarted by Ray (``max_restarts``, reloading its model) and used again once it answers
        a ping. Ctrl-C kills the workers."""
        import ray
        from ray.exceptions import ActorDiedError, RayActorError, RayTaskError
        from tqdm.auto import tqdm

        outcome = Outcome()
        pending, free = deque(units), deque(handles)
        inflight: dict[Any, tuple[Unit, WorkerHandle]] = {}
        pings: dict[
            Any, WorkerHandle
        ] = {}  # workers being restarted: back in ``free`` once they answer
        # pings to send again (a restart still under way)
        later: list[tuple[float, WorkerHandle]] = []
        bar = tqdm(total=len(units), desc=desc, unit="text", disable=not self.progress)
        shown: list[tuple[int, ...]] = [()]

        def show() -> None:  # done / running / retried / failed, redrawn when one changes
            now = (len(inflight), outcome.retried, len(outcome.failed))
            if now != shown[0]:
                shown[0] = now
                bar.set_postfix(running=now[0], retried=now[1], failed=now[2])

        def ping(worker: WorkerHandle) -> None:
            pings[worker.actor.whoami.remote()] = worker

        def lost(unit: Unit, worker: WorkerHandle, err: Exception) -> None:
            worker.deaths += 1
            worker.pid = None
            ping(worker)
            if unit.attempts <= self.retries:
                outcome.retried += 1
                pending.appendleft(unit)
                self._event("retry", unit.text, worker)
            else:
                outcome.failed[unit.text] = (
                    "lost",
                    f"its worker died {unit.attempts} times (last: "
                    f"{type(err).__name__}: {str(err)[:300]})",
                )
                self._event("failed", unit.text, worker)
                bar.update(1)

        try:
            while pending or inflight:
                for due, worker in [x for x in later if x[0] <= time.monotonic()]:
                    later.remove((due, worker))
                    ping(worker)
                while pending and free:
                    unit, worker = pending.popleft(), free.popleft()
                    unit.attempts += 1
                    unit.started = time.perf_counter()
                    ref = getattr(worker.actor, unit.method).remote(**unit.payload)
                    inflight[ref] = (unit, worker)
                    self._event("dispatch", unit.text, worker)
                show()
                if not inflight and not pings and not later:
                    break  # every worker is gone
                # one second at most: Ctrl-C is seen, delayed pings are sent
                done, _ = ray.wait([*inflight, *pings], num_returns=1, timeout=1.0)
                for ref in done:
                    if ref in pings:
                        worker = pings.pop(ref)
                        try:
                            me = ray.get(ref)
                        except ActorDiedError:  # out of restarts (or its node is gone for good)
                            continue
                        except RayActorError:  # still restarting
                            later.append((time.monotonic() + 1.0, worker))
                            continue
                        worker.name, worker.pid = me["name"], me["pid"]
                        free.append(worker)
                        continue
                    unit, worker = inflight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except RayActorError as err:  # the worker's process died while it held the unit
                        lost(unit, worker, err)
                        continue
                    except RayTaskError as err:  # raised outside the text's own computation
                        free.append(worker)
                        outcome.failed[unit.text] = ("error", str(err)[-2000:])
                        self._event("failed", unit.text, worker)
                        bar.update(1)
                        continue
                    free.append(worker)
                    result["elapsed"] = time.perf_counter() - unit.started
                    if "error" in result:
                        outcome.failed[unit.text] = (result["error"], result["message"])
                        self._event("failed", unit.text, worker)
                    else:
                        outcome.results[unit.text] = result
                    on_result(unit, result)
                    self._event("done", unit.text, worker)
                    bar.update(1)
            for unit in pending:
                outcome.failed[unit.text] = (
                    "lost",
                    f"no worker left (each died more than {self.retries} times)",
                )
        except BaseException as err:  # Ctrl-C (or a bug): no worker is left running
            self.stop(handles)
            if isinstance(err, KeyboardInterrupt):
                self.close()
            raise
        finally:
            show()
            bar.close()
        return outcome

    # --- replicate ---
    def reproduce(self, spec: ModelSpec, out: str | Path, settings: Any) -> dict[str, Any]:
        """``reproduce(model, out, settings)`` with the texts on the workers; the same folder,
        tables and report (``replicate --cluster``)."""
        from .reproduce import Timer, claim_folder, finish, keyed_settings, preflight

        s = settings
        out = Path(out)
        preflight(s)
        keyed = keyed_settings(s)
        blobs, shared = shared_blobs()
        handles, described = self.start(spec, keyed)
        try:
            import ray

            env = {
                **described[0]["env"],
                "cluster": {
                    "address": self.address,
                    "workers": len(handles),
                    "ray": ray.__version__,
                    "worker_names": [d["name"] for d in described],
                },
            }
            env = claim_folder(out, None, keyed, env=env)
            timer = Timer(out / "timings.csv")
            t0 = time.perf_counter()
            ids = s.text_ids()

            # 1. continuations: one batch per seed (as a serial run), each seed's batch on a worker
            def sampled(unit: Unit, result: dict[str, Any]) -> None:
                if "error" not in result:
                    apply_files(out, result["files"], result["shared"], blobs)
                timer.add(
                    text="all",
                    phase="continuations (one batch per seed)",
                    seconds=result["seconds"],
                    loaded=False,
                    worker=result["worker"],
                )

            samples = sample_units(s, ids, out, shared)
            got = self.run_units(handles, samples, sampled, desc=f"{spec.name}: continuations")
            if got.failed:
                raise ClusterError("; ".join(f"{t}: {m}" for t, (_, m) in got.failed.items()))

            # 2. each text a unit (its finished experiments travel with it: loaded, not recomputed)
            def write(unit: Unit, result: dict[str, Any]) -> None:
                if "error" not in result:
                    apply_files(out, result["files"], result["shared"], blobs)
                for row in result.get("timings", []):
                    timer.add(**{**row, "worker": result["worker"]})
                timer.add(
                    text=unit.text,
                    phase="cluster: transfer + scratch",
                    seconds=max(result["elapsed"] - result["seconds"], 0.0),
                    loaded=False,
                    worker=result["worker"],
                )

            units = text_units(s, ids, out, shared)
            got = self.run_units(handles, units, write, desc=f"{spec.name}: texts")
        except BaseException:
            self.stop(handles)
            raise
        raise_failed_texts(got, out)
        per_text = load_texts(out, ids, got)
        metas = {t: r["meta"] for t, r in got.results.items()}
        return finish(out, s, per_text, env, described[0]["info"], metas.__getitem__, timer, t0)

    # --- extend ---
    def extend(
        self,
        spec: ModelSpec,
        docs_model: str | Path,
        out: str | Path,
        plugin: str,
        texts: list[str] | None = None,
    ) -> list[str]:
        """``extend_exact`` with the texts on the workers (``extend --cluster``)."""
        from .extend import TextMismatchError, doc_texts

        docs_model, out = Path(docs_model), Path(out)
        blobs, shared = shared_blobs()
        docs_files = {
            f"docs/{rel}": data
            for rel, data in read_files(
                docs_model,
                [
                    docs_model / n
                    for n in (
                        "texts.csv",
                        "exact_texts.csv",
                        "exact_importance.csv",
                        "environment.json",
                    )
                ],
            ).items()
        }
        done, units = [], []
        for doc in doc_texts(docs_model):
            if texts is not None and doc.text not in texts:
                continue
            if (out / doc.text / plugin / "settings.json").exists():
                done.append(doc.text)
                continue
            stored = read_files(out, [out / "continuations" / f"{doc.text}.json"])
            files = {**docs_files, **{f"out/{rel}": data for rel, data in stored.items()}}
            units.append(
                Unit(
                    doc.text,
                    "extend_text",
                    {
                        "unit": {"text": doc.text, "plugin": plugin, "files": files},
                        "shared": shared,
                    },
                )
            )
        if not units:
            return done
        handles, _ = self.start(spec, {"extend": plugin})

        def write(unit: Unit, result: dict[str, Any]) -> None:
            if "error" in result:
                return
            files = {k[4:]: v for k, v in result["files"].items() if k.startswith("out/")}
            left = {k[4:]: v for k, v in result["shared"].items() if k.startswith("out/")}
            apply_files(out, files, left, blobs)
            print(
                f"{unit.text}: {plugin} in {result['seconds']:.0f} s on {result['worker']}",
                flush=True,
            )

        try:
            got = self.run_units(handles, units, write, desc=f"{spec.name}: {plugin}")
        except BaseException:
            self.stop(handles)
            raise
        if got.failed:
            lines = "\n".join(f"{text}: {message}" for text, (_, message) in got.failed.items())
            if all(kind == "mismatch" for kind, _ in got.failed.values()):
                raise TextMismatchError(lines)
            raise ClusterError(f"{len(got.failed)} text(s) failed:\n{lines}")
        return [*done, *got.results]


def shared_blobs() -> tuple[dict[str, bytes], dict[str, str]]:
    """The files every figure folder shares (plotly.min.js), by name, and their sha256: workers
    send back only the hash and the driver writes the bytes (``apply_files``)."""
    import plotly.offline

    blobs = {"plotly.min.js": plotly.offline.get_plotlyjs().encode()}
    return blobs, {name: _sha(data) for name, data in blobs.items()}


def sample_units(
    s: Any, ids: list[tuple[str, str, int]], out: Path, shared: dict[str, str]
) -> list[Unit]:
    """One ``sample`` unit per seed: that seed's texts (prompt, seed, where the continuation goes)
    with the continuations already stored in ``out`` (a worker samples only the missing ones, in
    one batch, as a serial run does)."""
    units = []
    for seed in sorted(set(s.seeds)):
        rels = [(s.text_of(p), sd, f"continuations/{tid}.json") for tid, p, sd in ids if sd == seed]
        files = read_files(out, [out / rel for _, _, rel in rels])
        units.append(
            Unit(
                f"continuations~s{seed}",
                "sample",
                {
                    "items": rels,
                    "files": files,
                    "max_new_tokens": s.max_new_tokens,
                    "shared": shared,
                },
            )
        )
    return units


def text_units(
    s: Any, ids: list[tuple[str, str, int]], out: Path, shared: dict[str, str]
) -> list[Unit]:
    """One ``run_text`` unit per text (the exact stage on the first ``s.exact_texts``; only those
    with ``s.exact_stage_only``), carrying its continuation and its finished experiments' files,
    which the worker loads instead of recomputing."""
    worker_settings = replace(s, progress=False)
    units = []
    for i, (text_id, prompt, seed) in enumerate(ids):
        if s.exact_stage_only and i >= s.exact_texts:
            break
        files = read_files(
            out, [out / "continuations" / f"{text_id}.json", *finished_experiments(out / text_id)]
        )
        unit = {
            "text": text_id,
            "prompt": prompt,
            "seed": seed,
            "exact": i < s.exact_texts,
            "settings": worker_settings,
            "files": files,
        }
        units.append(Unit(text_id, "run_text", {"unit": unit, "shared": shared}))
    return units


def raise_failed_texts(got: "Outcome", out: Path) -> None:
    """Nothing when every text finished; else one error naming each failed text and its message:
    ``SelfCheckError`` when all failed a self-check (exit status 3, as serially), else
    ``ClusterError``. The finished texts are saved either way."""
    from .checks import SelfCheckError

    if not got.failed:
        return
    lines = "\n".join(f"{text}: {message}" for text, (_, message) in got.failed.items())
    done = f"{len(got.results)} other text(s) finished and are saved in {out}; no report"
    if all(kind == "self-check" for kind, _ in got.failed.values()):
        raise SelfCheckError(f"{len(got.failed)} text(s) failed a self-check ({done}):\n{lines}")
    raise ClusterError(f"{len(got.failed)} text(s) failed ({done}):\n{lines}")


def load_texts(out: Path, ids: list[tuple[str, str, int]], got: "Outcome") -> dict[str, Any]:
    """Each finished text's ``PromptResults``, its results read back from what the driver wrote."""
    from interp import Completion

    from .reproduce import PromptResults

    per_text = {}
    for text_id, prompt, seed in ids:
        if text_id not in got.results:
            continue
        r = got.results[text_id]
        results = {name: result_class(name).load(out / text_id / name) for name in r["results"]}
        per_text[text_id] = PromptResults(
            Completion.from_dict(r["completion"]), r["basis"], results, prompt=prompt, seed=seed
        )
    return per_text


def result_class(name: str) -> Any:
    """The result class that loads experiment ``name``'s folder (built-in or plug-in: the
    registry's)."""
    from ..registry import get_plugin

    return get_plugin(name).result
