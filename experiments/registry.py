"""Every experiment, built-in or plug-in, goes through this registry: the CLI runs it as
``python -m experiments run NAME`` (any experiment), ``reproduce`` and ``replicate`` run the
registered stages (``exact``, ``default``, then the ``extension`` experiments named by ``--with`` /
``--exact-with``) and ``extend`` adds an extension to published results, each with the same
saving, resuming and a section in the report.

An experiment is a function ``fn(model, text, *, option=default, ...) -> ExperimentResult``
registered under a name together with its result class (which ``reproduce`` uses to load a
finished result when it resumes)::

    from experiments import ExperimentResult
    from experiments.registry import register

    @dataclass
    class MyResult(ExperimentResult):
        name = "my_experiment"

    @register("my_experiment", result=MyResult, help="what it measures")
    def run_my_experiment(model, text, *, seed: int = 0, layers: tuple[int, ...] = (0, 1)):
        ...

``text`` is the prepared text (``experiments.Text``: completion, writes, basis, baseline).

Options: the function's keyword arguments with defaults are its declared options (no ``**kwargs``
needed or wanted). Of the run's settings (``CONTEXT``: ``seed``, ``exhaustive``, ``tolerance``,
``band``, ``chunk_size``, ``progress``, ``prompt_name``, ``n_exact``, ``n_fisher``, ``n_samples``,
``random_draws``, ``generation_tokens`` and ``results``, the text's finished experiments by name,
e.g. ``results["exact_importance"]``, to reuse; an empty mapping when run alone) the function
receives those it names. Any other declared option is set from the command line with
``run NAME --opt key=value`` (repeatable), parsed by its annotation (``int``, ``float``, ``bool``,
``str``, ``Optional``, ``Literal`` and tuples, lists or sequences of these, comma-separated) or,
when unannotated, by its default's type; an unknown key or a value of the wrong type is refused
(``OptionError``) before the model loads.

How the CLI finds a plug-in's module (it must be imported for ``register`` to run), either:

- ``$RESID_WRITES_PLUGINS``: module names or paths of ``.py`` files, separated by ``os.pathsep``
  (``:`` on Linux), e.g. ``RESID_WRITES_PLUGINS=my_project/layer_range.py``; or
- an entry point of an installed package, in the group ``resid_writes.experiments``
  (``[project.entry-points."resid_writes.experiments"] layer_range = "my_project.layer_range"``),
  pointing at the module (or at the registered function).

Plug-ins are imported when a name is first looked up (``--help`` imports none); one that fails to
import is skipped with a one-line warning, and the built-ins still work. A plug-in cannot take a
built-in's name (``BUILTIN``).
"""

import collections.abc
import importlib
import importlib.util
import inspect
import os
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .base import ExperimentResult

ENV = "RESID_WRITES_PLUGINS"
ENTRY_POINT_GROUP = "resid_writes.experiments"
# The run's settings a pipeline hands to every experiment that names them (not user options).
CONTEXT = (
    "seed",
    "exhaustive",
    "tolerance",
    "band",
    "chunk_size",
    "progress",
    "prompt_name",
    "n_exact",
    "n_fisher",
    "n_samples",
    "random_draws",
    "generation_tokens",
    "results",
)
OPTIONS = CONTEXT  # the name plug-ins knew it by
# Where an experiment runs: ``exact`` first on the exact stage's texts, ``default`` on every
# text (by ``order``), ``extension`` when named by --with / --exact-with / extend, ``alone``
# only by ``run``.
STAGES = ("exact", "default", "extension", "alone")
# The package's own experiments: a plug-in cannot take these names.
BUILTIN = (
    "spectrum",
    "clipping",
    "single_direction",
    "orderings",
    "minimal_subspace",
    "clipped_generation",
    "exact_importance",
    "method_sensitivity",
    "clip_variants",
    "hessian_ranking",
    "study_procedure",
    "text_length",
)


class OptionError(ValueError):
    """An option the experiment does not declare, or a value its declaration cannot take."""


_NONE = ("none", "null")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
_SEQUENCES = (
    tuple,
    list,
    collections.abc.Sequence,
    collections.abc.Iterable,
    collections.abc.Collection,
)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("collections.abc.", "")


def parse_value(tp: Any, raw: str) -> Any:
    """``raw`` (a command-line string) as a value of the annotation ``tp``; ValueError when it is
    not one."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is inspect.Parameter.empty:
        raise ValueError(
            "an undeclared type (Any) cannot be given on the command line: pass it from Python"
        )
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and raw.strip().lower() in _NONE:
            return None
        members = sorted(
            (a for a in args if a is not type(None)), key=lambda a: a is str
        )  # str last
        for member in members:
            try:
                return parse_value(member, raw)
            except ValueError:
                continue
        raise ValueError(f"not {_type_name(tp)}")
    if origin is typing.Literal:
        for a in args:
            if str(a) == raw:
                return a
        raise ValueError(f"not one of {', '.join(map(str, args))}")
    if tp is type(None):
        if raw.strip().lower() in _NONE:
            return None
        raise ValueError("not None")
    if tp is bool:
        if raw.strip().lower() in _TRUE:
            return True
        if raw.strip().lower() in _FALSE:
            return False
        raise ValueError("not true or false")
    if tp in (int, float, str):
        try:
            return tp(raw)
        except ValueError:
            raise ValueError(f"not {'an' if tp is int else 'a'} {tp.__name__}") from None
    if tp in _SEQUENCES or origin in _SEQUENCES:
        parts = [p.strip() for p in raw.split(",")] if raw.strip() else []
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(parts) != len(args):
                raise ValueError(f"not {len(args)} comma-separated values")
            return tuple(parse_value(a, p) for a, p in zip(args, parts, strict=True))
        elem = args[0] if args else str
        values = [parse_value(elem, p) for p in parts]
        return values if origin is list or tp is list else tuple(values)
    raise ValueError(f"{_type_name(tp)} cannot be given on the command line")


@dataclass(frozen=True)
class Option:
    """One declared option: its name, annotation (resolved where it can be) and default."""

    name: str
    type: Any
    default: Any

    def parse(self, raw: str) -> Any:
        return parse_value(self.type, raw)

    @property
    def type_name(self) -> str:
        return _type_name(self.type)


def _annotations(fn: Callable) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001  (a forward reference to a name imported only for type checking)
        out = {}
        for name, ann in getattr(fn, "__annotations__", {}).items():
            if isinstance(ann, str):
                try:
                    ann = eval(ann, getattr(fn, "__globals__", {}))  # noqa: S307  (the module's own annotation)
                except Exception:  # noqa: BLE001
                    ann = Any
            out[name] = ann
        return out


def declared_options(fn: Callable) -> dict[str, Option]:
    """``fn``'s options: its keyword arguments with defaults (after model and text), by name,
    with the type its annotation (else its default) gives."""
    hints = _annotations(fn)
    out = {}
    params = list(inspect.signature(fn).parameters.values())
    for i, p in enumerate(params):
        positional = p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and i >= 2
        if p.default is inspect.Parameter.empty or not (
            p.kind is inspect.Parameter.KEYWORD_ONLY or positional
        ):
            continue
        tp = hints.get(p.name, inspect.Parameter.empty)
        if tp is inspect.Parameter.empty and p.default is not None:
            tp = type(p.default)
        elif tp is inspect.Parameter.empty:
            tp = str | None
        out[p.name] = Option(p.name, tp, p.default)
    return out


def jsonable(value: Any) -> Any:
    """An option's value as JSON keeps it (tuples as lists): the run key's form."""
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class Plugin:
    """A registered experiment: its name (the CLI's and the output folder's), the function that
    runs it, the result class that loads it back, a one-line help, and where the pipeline runs it
    (``stage``, ``order`` within the stage; ``builtin``: one of the package's own; ``generation``:
    samples text, so ``reproduce`` runs it only for ``Settings.generation_seeds``)."""

    name: str
    fn: Callable[..., ExperimentResult]
    result: type[ExperimentResult]
    help: str = ""
    builtin: bool = False
    stage: str = "extension"
    order: int = 0
    generation: bool = False

    @property
    def options(self) -> dict[str, Option]:
        """The declared options (``declared_options``), ``results`` aside (the pipeline's)."""
        return {k: v for k, v in declared_options(self.fn).items() if k != "results"}

    def parse_options(self, pairs: list[str] | None) -> dict[str, Any]:
        """``["key=value", ...]`` (``--opt``) as declared options with typed values, or
        ``OptionError`` naming the key, the value and what the declaration wants."""
        declared = self.options
        out: dict[str, Any] = {}
        for pair in pairs or []:
            key, sep, raw = pair.partition("=")
            key = key.strip()
            if not sep or not key:
                raise OptionError(
                    f"--opt {pair!r} is not KEY=VALUE (e.g. --opt "
                    f"{next(iter(declared), 'key')}=...)"
                )
            if key not in declared:
                raise OptionError(
                    f"--opt {key}: {self.name} has no option {key!r} (its options: "
                    f"{', '.join(declared) or 'none'})"
                )
            try:
                out[key] = declared[key].parse(raw)
            except ValueError as err:
                raise OptionError(
                    f"--opt {key}={raw}: {err} ({self.name}'s {key} is "
                    f"{declared[key].type_name}, default {declared[key].default!r})"
                ) from None
        return out

    def check_options(self, options: Mapping[str, Any]) -> None:
        unknown = [k for k in options if k not in self.options]
        if unknown:
            raise OptionError(
                f"{self.name} has no option {unknown[0]!r} (its options: "
                f"{', '.join(self.options) or 'none'})"
            )

    def run(
        self,
        model: Any,
        text: Any,
        context: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> ExperimentResult:
        """Run on a prepared text: of ``context`` (the run's settings, ``CONTEXT``) the entries
        ``fn`` names, then ``options`` (checked against the declaration: an undeclared one is an
        ``OptionError``); the result must be an instance of ``result``."""
        params = inspect.signature(self.fn).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kwargs = {k: v for k, v in (context or {}).items() if takes_all or k in params}
        if options:
            self.check_options(options)
            kwargs.update(options)
        out = self.fn(model, text, **kwargs)
        if not isinstance(out, self.result):
            raise TypeError(
                f"plug-in {self.name!r} returned {type(out).__name__}, not its registered "
                f"result class {self.result.__name__}: return a {self.result.__name__} (or "
                "register the class it returns)"
            )
        return out

    def __call__(self, model: Any, text: Any, **context: Any) -> ExperimentResult:
        """``run`` with the run's settings as keywords (those ``fn`` does not name are dropped)."""
        return self.run(model, text, context)


_REGISTRY: dict[str, Plugin] = {}
_SKIPPED: dict[str, str] = {}  # plug-in module -> why it was skipped (warned once)


def register(
    name: str,
    *,
    result: type[ExperimentResult],
    help: str = "",
    builtin: bool = False,
    stage: str = "extension",
    order: int = 0,
    generation: bool = False,
) -> Callable[[Callable], Callable]:
    """Decorator: register ``fn(model, text, *, options...)`` as the experiment ``name``
    (``builtin``, ``stage``, ``order``, ``generation``: the package's own experiments; see
    ``Plugin``)."""
    if not name.isidentifier():
        raise ValueError(
            f"plug-in name {name!r} must be a Python identifier (it names the CLI choice "
            "and a folder)"
        )
    if not builtin and (name in BUILTIN or getattr(_REGISTRY.get(name), "builtin", False)):
        raise ValueError(f"plug-in name {name!r} is a built-in experiment's: choose another name")
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if not (isinstance(result, type) and issubclass(result, ExperimentResult)):
        raise TypeError(f"result= must be an ExperimentResult subclass, got {result!r}")

    def decorator(fn: Callable) -> Callable:
        if (
            any(
                p.kind is inspect.Parameter.VAR_KEYWORD
                for p in inspect.signature(fn).parameters.values()
            )
            and builtin
        ):
            raise TypeError(
                f"built-in experiment {name!r} must declare its options, not take **kwargs"
            )
        old = _REGISTRY.get(name)
        same = old is not None and (old.fn.__code__.co_filename, old.fn.__qualname__) == (
            fn.__code__.co_filename,
            fn.__qualname__,
        )
        if (
            old is not None and not same
        ):  # the same file imported twice (by path and by name) is no conflict
            raise ValueError(
                f"plug-in name {name!r} is already registered by "
                f"{old.fn.__module__}.{old.fn.__qualname__}: choose another name"
            )
        _REGISTRY[name] = Plugin(
            name,
            fn,
            result,
            help or (inspect.getdoc(fn) or "").split("\n")[0],
            builtin=builtin,
            stage=stage,
            order=order,
            generation=generation,
        )
        return fn

    return decorator


def unregister(name: str) -> None:
    """Forget a plug-in (tests); a built-in stays."""
    if not getattr(_REGISTRY.get(name), "builtin", False):
        _REGISTRY.pop(name, None)


def load_module(spec: str) -> Any:
    """Import a plug-in module by name (``my_project.layer_range``) or by path (``dir/file.py``)."""
    if spec.endswith(".py") or os.sep in spec:
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(
                f"plug-in file {path} does not exist (set ${ENV} to existing .py files or "
                "module names)"
            )
        name = f"resid_writes_plugin_{path.stem}"
        if name in sys.modules:
            return sys.modules[name]
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)  # a broken file is not half-imported for the next look-up
            raise
        return module
    return importlib.import_module(spec)


def _skip(source: str, err: BaseException) -> None:
    """Warn once, on one line, that a plug-in was skipped."""
    if source in _SKIPPED:
        return
    why = " ".join(f"{type(err).__name__}: {err}".split())[:200]
    _SKIPPED[source] = why
    print(
        f"warning: plug-in {source} skipped ({why}); fix it, or take it out of ${ENV} or uninstall "
        "its package",
        file=sys.stderr,
    )


def discover(strict: bool = True) -> dict[str, Plugin]:
    """Import the modules named by ``$RESID_WRITES_PLUGINS`` and the ``resid_writes.experiments``
    entry points (modules already imported are not imported again), and return every registered
    experiment by name, built-ins included. ``strict=False`` (the CLI's): a plug-in that fails to
    import, or takes a built-in's name, is skipped with a one-line warning instead of raising."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if isinstance(obj, Plugin):
                if obj.name in BUILTIN and _REGISTRY.get(obj.name) is not obj:
                    raise ValueError(
                        f"plug-in name {obj.name!r} is a built-in experiment's: choose another name"
                    )
                _REGISTRY.setdefault(obj.name, obj)
        except Exception as err:  # noqa: BLE001
            if strict:
                raise
            _skip(f"entry point {ep.name}", err)
    for spec in filter(None, (s.strip() for s in os.environ.get(ENV, "").split(os.pathsep))):
        try:
            load_module(spec)
        except Exception as err:  # noqa: BLE001
            if strict:
                raise
            _skip(spec, err)
    return dict(_REGISTRY)


def builtins() -> dict[str, Plugin]:
    """The package's own experiments (no plug-in is imported)."""
    return {n: p for n, p in _REGISTRY.items() if p.builtin}


def stage(name: str) -> list[str]:
    """The built-in experiments of a pipeline stage, in the order they run."""
    found = sorted(
        (p for p in builtins().values() if p.stage == name), key=lambda p: (p.order, p.name)
    )
    return [p.name for p in found]


def experiment_names() -> list[str]:
    """Every experiment ``run NAME`` takes: the built-ins (by stage and order), then the plug-ins
    found."""
    found = discover(strict=False)
    own = sorted(
        (p for p in found.values() if p.builtin),
        key=lambda p: (STAGES.index(p.stage), p.order, p.name),
    )
    return [p.name for p in own] + sorted(n for n, p in found.items() if not p.builtin)


def plugin_names() -> list[str]:
    """The extensions (``--with``, ``--exact-with``: the package's and the plug-ins found),
    sorted."""
    return sorted(n for n, p in discover(strict=False).items() if p.stage == "extension")


class LazyNames(collections.abc.Sequence):
    """``plugin_names()`` looked up when first needed (an argparse ``choices``: ``--help`` imports
    no plug-in)."""

    def __init__(self, names: Callable[[], list[str]] = plugin_names) -> None:
        self._names = names

    def __getitem__(self, i: Any) -> Any:
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


def get_plugin(name: str) -> Plugin:
    """The experiment ``name`` (built-in or plug-in), or an error listing those found and how to
    make a plug-in known."""
    found = _REGISTRY if name in BUILTIN else discover(strict=False)
    if name not in found:
        plugins = sorted(n for n, p in found.items() if not p.builtin)
        raise KeyError(
            f"no plug-in experiment {name!r} (built-in: {', '.join(sorted(builtins()))}; "
            f"plug-ins found: {', '.join(plugins) or 'none'}); register it with "
            f"experiments.registry.register and point ${ENV} at its module or file, or "
            f"install it with an entry point in the group {ENTRY_POINT_GROUP!r}"
        )
    return found[name]
