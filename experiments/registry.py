"""Plug-in experiments: an experiment defined outside this package, run by the CLI beside the
built-in ones (``python -m experiments run NAME``, ``reproduce --with NAME``) with the same
saving, resuming and a section in the report.

A plug-in is a function ``fn(model, text, **options) -> ExperimentResult`` registered under a
name together with its result class (which ``reproduce`` uses to load a finished result when it
resumes)::

    from experiments import ExperimentResult
    from experiments.registry import register

    @dataclass
    class MyResult(ExperimentResult):
        name = "my_experiment"

    @register("my_experiment", result=MyResult, help="what it measures")
    def run_my_experiment(model, text, *, seed=0):
        ...

``text`` is the prepared text (``experiments.Text``: completion, writes, basis, baseline). Of
the run's settings, the function receives those it names among ``OPTIONS``: ``seed``,
``exhaustive``, ``tolerance``, ``chunk_size``, ``progress``, ``prompt_name``, and ``results``
(the text's finished experiments by name, e.g. ``results["exact_importance"]``, to reuse; empty
when run alone).

How the CLI finds the module (it must be imported for ``register`` to run), either:

- ``$RESID_WRITES_PLUGINS``: module names or paths of ``.py`` files, separated by ``os.pathsep``
  (``:`` on Linux), e.g. ``RESID_WRITES_PLUGINS=my_project/layer_range.py``; or
- an entry point of an installed package, in the group ``resid_writes.experiments``
  (``[project.entry-points."resid_writes.experiments"] layer_range = "my_project.layer_range"``),
  pointing at the module (or at the registered function).
"""

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .base import ExperimentResult

ENV = "RESID_WRITES_PLUGINS"
ENTRY_POINT_GROUP = "resid_writes.experiments"
OPTIONS = ("seed", "exhaustive", "tolerance", "chunk_size", "progress", "prompt_name", "results")
BUILTIN = ("spectrum", "clipping", "single_direction", "orderings", "minimal_subspace", "clipped_generation")


@dataclass(frozen=True)
class Plugin:
    """A registered experiment: its name (the CLI's and the output folder's), the function that
    runs it, the result class that loads it back, and a one-line help."""

    name: str
    fn: Callable[..., ExperimentResult]
    result: type[ExperimentResult]
    help: str = ""

    def __call__(self, model: Any, text: Any, **options: Any) -> ExperimentResult:
        """Run on a prepared text, passing only the options ``fn`` accepts (unknown ones are
        dropped); the result must be an instance of ``result``."""
        params = inspect.signature(self.fn).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kwargs = {k: v for k, v in options.items() if takes_all or k in params}
        out = self.fn(model, text, **kwargs)
        if not isinstance(out, self.result):
            raise TypeError(f"plug-in {self.name!r} returned {type(out).__name__}, not its registered result class "
                            f"{self.result.__name__}: return a {self.result.__name__} (or register the class it returns)")
        return out


_REGISTRY: dict[str, Plugin] = {}


def register(name: str, *, result: type[ExperimentResult], help: str = "") -> Callable[[Callable], Callable]:
    """Decorator: register ``fn(model, text, **options)`` as the experiment ``name``."""
    if not name.isidentifier():
        raise ValueError(f"plug-in name {name!r} must be a Python identifier (it names the CLI choice and a folder)")
    if name in BUILTIN:
        raise ValueError(f"plug-in name {name!r} is a built-in experiment's: choose another name")
    if not (isinstance(result, type) and issubclass(result, ExperimentResult)):
        raise TypeError(f"result= must be an ExperimentResult subclass, got {result!r}")

    def decorator(fn: Callable) -> Callable:
        old = _REGISTRY.get(name)
        same = old is not None and (old.fn.__code__.co_filename, old.fn.__qualname__) == (fn.__code__.co_filename,
                                                                                          fn.__qualname__)
        if old is not None and not same:  # the same file imported twice (by path and by name) is no conflict
            raise ValueError(f"plug-in name {name!r} is already registered by {old.fn.__module__}.{old.fn.__qualname__}: "
                             "choose another name")
        _REGISTRY[name] = Plugin(name, fn, result, help or (inspect.getdoc(fn) or "").split("\n")[0])
        return fn

    return decorator


def unregister(name: str) -> None:
    """Forget a plug-in (tests)."""
    _REGISTRY.pop(name, None)


def load_module(spec: str) -> Any:
    """Import a plug-in module by name (``my_project.layer_range``) or by path (``dir/file.py``)."""
    if spec.endswith(".py") or os.sep in spec:
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"plug-in file {path} does not exist (set ${ENV} to existing .py files or module names)")
        name = f"resid_writes_plugin_{path.stem}"
        if name in sys.modules:
            return sys.modules[name]
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return module
    return importlib.import_module(spec)


def discover() -> dict[str, Plugin]:
    """Import the modules named by ``$RESID_WRITES_PLUGINS`` and the ``resid_writes.experiments``
    entry points (modules already imported are not imported again), and return every registered
    plug-in by name."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        obj = ep.load()
        if isinstance(obj, Plugin):
            _REGISTRY.setdefault(obj.name, obj)
    for spec in filter(None, (s.strip() for s in os.environ.get(ENV, "").split(os.pathsep))):
        load_module(spec)
    return dict(_REGISTRY)


def plugin_names() -> list[str]:
    """Names of every plug-in found (see ``discover``), sorted."""
    return sorted(discover())


def get_plugin(name: str) -> Plugin:
    """The plug-in ``name``, or an error listing the ones found and how to make one known."""
    found = discover()
    if name not in found:
        raise KeyError(f"no plug-in experiment {name!r} (found: {sorted(found) or 'none'}); register it with "
                       f"experiments.registry.register and point ${ENV} at its module or file, or install it with "
                       f"an entry point in the group {ENTRY_POINT_GROUP!r}")
    return found[name]
