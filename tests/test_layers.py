"""The package's layers (tools/check_layers.py): no import cycle, no upward import, here; and the
checker reports both when they are there."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "check_layers.py"


def _tool():
    spec = importlib.util.spec_from_file_location("check_layers", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_package_has_no_cycle_and_no_upward_import():
    proc = subprocess.run([sys.executable, str(TOOL)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cycles: 0" in proc.stdout and "ok: 0 violation(s)" in proc.stdout


def test_cycles_and_upward_imports_are_reported():
    cl = _tool()
    graph = {
        "interp.a": {"interp.b"},
        "interp.b": {"interp.a"},  # a cycle
        "interp.c": {"experiments.base"},  # interp imports experiments
        "experiments.base": {"experiments.clipping"},  # the ground imports an experiment
        "experiments.clipping": {"experiments.study.cli", "experiments.orderings"},  # both upward
        "experiments.orderings": {"interp.a"},
        "experiments.study.cli": {"experiments.orderings", "experiments"},
        "experiments": {"experiments.orderings"},
    }
    bad = cl.violations(graph, allowed={})
    assert len(bad) == 5
    assert [line for line in bad if line.startswith("cycle")] == ["cycle: interp.a <-> interp.b"]
    upward = sorted(line.split(" (")[0] for line in bad if line.startswith("upward"))
    assert upward == [
        "upward import: experiments.base -> experiments.clipping",
        "upward import: experiments.clipping -> experiments.orderings",
        "upward import: experiments.clipping -> experiments.study.cli",
        "upward import: interp.c -> experiments.base",
    ]
    allowed = {("experiments.clipping", "experiments.orderings"): "a result feeding another"}
    kept = cl.violations(graph, allowed=allowed)
    assert len(kept) == 4 and not any("-> experiments.orderings" in line for line in kept)
    assert (
        cl.violations(
            {
                "interp.a": set(),
                "experiments.base": {"interp.a"},
                "experiments.study.cli": {"experiments.base"},
            }
        )
        == []
    )


def test_the_graph_counts_function_level_and_relative_imports(tmp_path, capsys):
    files = {
        "interp/__init__.py": "from .models import load\n",
        "interp/models.py": "def load():\n    from .testing import toy  # lazy: a dependency too\n",
        "interp/testing.py": "from interp.models import load\n",
        "experiments/__init__.py": "from .base import Result\n",
        "experiments/base.py": "import interp\n",
        "experiments/clipping.py": "from . import base\n\ndef run():\n    from .study import cli\n",
        "experiments/study/__init__.py": "",
        "experiments/study/cli.py": "from ..clipping import run\nimport experiments as E\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    cl = _tool()
    graph = cl.module_graph(tmp_path)
    assert graph["interp.models"] == {"interp.testing"}
    assert graph["interp.testing"] == {"interp.models"}
    assert graph["experiments.clipping"] == {"experiments.base", "experiments.study.cli"}
    assert graph["experiments.study.cli"] == {"experiments", "experiments.clipping"}
    assert cl.main(["--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "cycle: interp.models <-> interp.testing" in out
    assert "upward import: experiments.clipping -> experiments.study.cli" in out
    assert "cycle: experiments.clipping <-> experiments.study.cli" in out


def test_an_import_of_a_moved_module_is_reported(tmp_path):
    """A lazy import of a module that no longer exists (moved without updating its importer) is
    a violation, not silently read as an import of the package."""
    unresolved = _tool().unresolved

    (tmp_path / "experiments" / "study").mkdir(parents=True)
    (tmp_path / "interp").mkdir()
    for f in (
        "experiments/__init__.py",
        "experiments/study/__init__.py",
        "experiments/prompts.py",
        "interp/__init__.py",
    ):
        (tmp_path / f).write_text("")
    (tmp_path / "experiments" / "study" / "cluster.py").write_text(
        "def sample():\n    from .prompts import sample_missing\n    from ..prompts import "
        "PROMPTS\n"
    )
    assert unresolved(tmp_path) == [
        "unresolved import: experiments.study.cluster imports experiments.study.prompts, "
        "which is not a module of the package"
    ]
