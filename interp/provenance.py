"""What made a result: library versions, device, dtype, the model's own provenance, the commit.

Every results folder gets ``environment.json`` from ``environment(model)``; reports show
``environment_lines`` as a short block. A resumed run compares ``run_key`` with the one stored and
refuses to mix results made by another model, dtype, library set or settings.
"""

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("torch", "transformers", "transformer-lens", "gguf", "numpy")
_REPO_ROOT = Path(__file__).resolve().parents[1]


def versions() -> dict[str, str]:
    """Installed versions of python and the libraries whose numerics or internals results depend
    on."""
    out = {"python": platform.python_version()}
    for dist in PACKAGES:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def versions_line() -> str:
    return ", ".join(f"{k} {v}" for k, v in versions().items())


def git_commit(root: Path = _REPO_ROOT) -> str | None:
    """The checkout's commit (with ``+dirty`` when tracked files differ from it), or None outside
    git."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "") if sha else None


def model_provenance(model: Any) -> dict[str, Any] | None:
    """The cache's ``provenance.json`` of a named or GGUF model (packages, files, sha256), if
    any."""
    path = getattr(model, "_resid_writes_meta", {}).get("path")
    if not path:
        return None
    file = Path(path) / "provenance.json"
    return json.loads(file.read_text()) if file.is_file() else None


def environment(model: Any | None = None) -> dict[str, Any]:
    """Versions, platform, device and dtype, the model (name, path, provenance) and the git
    commit."""
    env: dict[str, Any] = {
        "versions": versions(),
        "platform": platform.platform(),
        "commit": git_commit(),
        "torch_threads": torch.get_num_threads(),
    }
    if model is not None:
        from .models import model_info

        info = model_info(model).to_dict()
        param = next(model.parameters())
        env["device"] = str(param.device)
        if param.device.type == "cuda":
            env["device_name"] = torch.cuda.get_device_name(param.device)
        env["dtype"] = info["dtype"]
        env["model"] = {
            **info,
            "path": getattr(model, "_resid_writes_meta", {}).get("path"),
            "provenance": model_provenance(model),
        }
    return env


def environment_lines(env: dict[str, Any]) -> list[str]:
    """A short human-readable block (for report.md / report.html)."""
    v = env.get("versions", {})
    lines = ["versions: " + ", ".join(f"{k} {val}" for k, val in v.items())]
    if "model" in env:
        m = env["model"]
        prov = m.get("provenance") or {}
        packages = ", ".join(f"{p['name']}=={p['version']}" for p in prov.get("packages", []))
        src = f"{prov.get('source', '')} {packages}".strip() or m.get("path")
        lines.append(
            f"model: {m['name']} ({m['architecture']}), {env.get('dtype')} on {env.get('device')}"
            + (f" ({env['device_name']})" if env.get("device_name") else "")
            + (f"; from {src}" if src else "")
        )
        gguf = prov.get("gguf", {})
        if gguf.get("sha256"):
            lines.append(
                f"weights: {gguf.get('file')} sha256 {gguf['sha256']}; "
                f"{prov.get('quantization', '')}".rstrip("; ")
            )
    earlier = env.get("earlier_commits") or []
    resumed = (
        f" (resumed; earlier runs in this folder: {', '.join(c[:8] for c in earlier)})"
        if earlier
        else ""
    )
    lines.append(
        f"commit: {env.get('commit') or 'not a git checkout'}{resumed}; platform "
        f"{env.get('platform')}"
    )
    return lines


def run_key(env: dict[str, Any], settings: dict[str, Any]) -> str:
    """A hash of everything that changes a run's numbers: model identity and weights, dtype,
    device type, library versions and the run's settings (not the commit: a docs edit must not
    invalidate results; not the thread count)."""
    m = env.get("model", {})
    prov = m.get("provenance") or {}
    key = {
        "model": [
            m.get("name"),
            m.get("architecture"),
            m.get("d_model"),
            m.get("processing"),
            prov.get("files") or m.get("path"),
        ],
        "dtype": env.get("dtype"),
        "device": str(env.get("device", "")).split(":")[0],
        "versions": env.get("versions"),
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
