"""Build the API reference from the docstrings with pdoc: HTML, browsable offline.

    python docs/gen_api.py            # -> docs/api/index.html (not tracked; rebuild any time)
    python docs/gen_api.py OUT_DIR

Every public module of ``interp`` and ``experiments`` (and their submodules) is documented from
its ``__all__`` or public names. Any warning pdoc raises (a name it cannot import or resolve, a
malformed docstring) is an error: ``tests/test_docs.py`` builds it on every test run.
"""

import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("interp", "experiments")
SKIP = {"experiments.__main__"}
DEFAULT_OUT = ROOT / "docs" / "api"


class APIReferenceWarning(RuntimeError):
    """pdoc warned while building the reference."""


def modules() -> list[str]:
    """The packages and every submodule (a package's ``__all__`` would hide its submodules)."""
    import importlib
    import pkgutil

    names = []
    for package in MODULES:
        names.append(package)
        path = importlib.import_module(package).__path__
        names += [
            f"{package}.{m.name}"
            for m in pkgutil.iter_modules(path)
            if f"{package}.{m.name}" not in SKIP
        ]
    return names


def build(out: str | Path = DEFAULT_OUT) -> Path:
    """Write the HTML reference into ``out``; return the index page. Raises on any pdoc warning."""
    import pdoc
    import pdoc.render

    out = Path(out)
    pdoc.render.configure(
        docformat="google",
        show_source=False,
        search=True,
        math=False,
        mermaid=False,
        footer_text="resid-writes API reference (python docs/gen_api.py)",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*modules(), output_directory=out)
    ours = [w for w in caught if "pdoc" in w.filename or any(m in w.filename for m in MODULES)]
    if ours:
        lines = "\n".join(
            f"- {w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in ours
        )
        raise APIReferenceWarning(
            f"pdoc warned while building the API reference:\n{lines}\n"
            "Fix the docstring or name it points at."
        )
    return out / "index.html"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(build(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT))
