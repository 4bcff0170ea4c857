"""Reading a run back: ``load_run(folder)`` gives every finished result of a run folder (what
``reproduce`` / ``replicate`` / ``run`` wrote: ``<folder>/<text>/<experiment>/``, and the
run-wide ``<folder>/overlap*/``) as the result objects that made them, built-in experiments and
plug-ins alike, and their tables across texts in tidy form::

    import experiments

    run = experiments.load_run("results/smollm2")
    run.texts                                    # ['meaning_of_life~s0', ...]
    run["translate~s0"]["clipping"].curve        # a ClippingResult, as saved
    run.table("spectrum", "singular_values")     # every text's table, with text and model columns
    run.results("clip_variants")                 # {text: ClipVariantsResult}
    run.groups["overlap"]                        # an OverlapResult

Each folder is loaded by the result class of the experiment its ``settings.json`` names (the
built-in ones and every plug-in ``experiments.registry`` finds; an experiment nobody registered
loads as a plain ``ExperimentResult``). ``classes`` asks for classes of your own, by experiment
name; one whose ``name`` is not the experiment a folder's ``settings.json`` names is refused.
Results are read when first asked for (``load_run`` itself reads only the ``settings.json``
files), then kept.
"""

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import pandas as pd

from .base import ExperimentResult, _read_table
from .overlap import OverlapResult

SETTINGS = "settings.json"
PARTIAL = ".partial"  # reproduce saves into <name>.partial, then moves it into place
RUN_COLUMNS = ("text", "model")  # what ``Run.table`` puts in front of every row


def result_classes() -> dict[str, type[ExperimentResult]]:
    """Every known experiment's result class by experiment name, from the registry (the built-in
    experiments and the plug-ins ``experiments.registry.discover`` finds; a broken plug-in is
    skipped with a warning), and the run-wide overlap's."""
    from .registry import discover

    classes: dict[str, type[ExperimentResult]] = {OverlapResult.name: OverlapResult}
    for name, plugin in discover(strict=False).items():
        classes.setdefault(name, plugin.result)
    return classes


def _experiment_of(directory: Path) -> str | None:
    """The experiment ``<directory>/settings.json`` names (None without one)."""
    path = directory / SETTINGS
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("experiment")


def _is_result_folder(directory: Path) -> bool:
    """A result's folder: tables or settings.json, not ``figures`` nor a save under way
    (``<name>.partial``, reproduce's)."""
    return (
        directory.is_dir()
        and directory.name != "figures"
        and not directory.name.endswith(PARTIAL)
        and ((directory / SETTINGS).is_file() or any(directory.glob("*.csv")))
    )


class Run:
    """The results of one run folder (made by ``load_run``).

    ``texts``: the text folders, sorted; ``run[text]``: that text's results by experiment name;
    ``experiments``: the per-text experiments found; ``results(experiment)``: one experiment's
    result of every text that has it; ``table(experiment, table)``: those results' table, every
    text's rows together; ``groups``: the run-wide results (``overlap``, ``overlap~s<seed>``)."""

    def __init__(
        self, folder: str | Path, classes: Mapping[str, type[ExperimentResult]] | None = None
    ) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"{self.folder} is not a folder: give load_run the folder a run wrote "
                "(reproduce/replicate --out)"
            )
        known = result_classes()
        asked = dict(classes or {})
        self._folders: dict[str, dict[str, tuple[Path, type[ExperimentResult]]]] = {}
        self._group_folders: dict[str, tuple[Path, type[ExperimentResult]]] = {}
        self._loaded: dict[Path, ExperimentResult] = {}
        children = sorted(
            p for p in self.folder.iterdir() if p.is_dir() and not p.name.endswith(PARTIAL)
        )
        for child in children:
            if (child / SETTINGS).is_file():  # a run-wide result (overlap)
                self._group_folders[child.name] = (
                    child,
                    _class_for(child, child.name, known, asked),
                )
                continue
            found = {
                sub.name: (sub, _class_for(sub, sub.name, known, asked))
                for sub in sorted(child.iterdir())
                if _is_result_folder(sub)
            }
            if found:
                self._folders[child.name] = found

    def __repr__(self) -> str:
        return (
            f"Run({str(self.folder)!r}: {len(self.texts)} texts, experiments {self.experiments}, "
            f"groups {list(self._group_folders)})"
        )

    @property
    def texts(self) -> list[str]:
        return list(self._folders)

    @property
    def experiments(self) -> list[str]:
        """The per-text experiments of any text, in the order first met."""
        return list(dict.fromkeys(name for found in self._folders.values() for name in found))

    def __contains__(self, text: object) -> bool:
        return text in self._folders

    def __iter__(self) -> Iterator[str]:
        return iter(self._folders)

    def __len__(self) -> int:
        return len(self._folders)

    def __getitem__(self, text: str) -> dict[str, ExperimentResult]:
        """Every result of ``text``, by experiment name."""
        if text not in self._folders:
            raise KeyError(f"no text {text!r} in {self.folder} (texts: {self.texts})")
        return {name: self._load(path, cls) for name, (path, cls) in self._folders[text].items()}

    def result(self, text: str, experiment: str) -> ExperimentResult | None:
        """``text``'s result of ``experiment`` (None when that text has none)."""
        found = self._folders.get(text, {}).get(experiment)
        return None if found is None else self._load(*found)

    def results(
        self, experiment: str, texts: list[str] | None = None
    ) -> dict[str, ExperimentResult]:
        """{text: result} of every text (of ``texts``, in that order) that has ``experiment``."""
        order = self.texts if texts is None else [t for t in texts if t in self._folders]
        return {
            t: self._load(*self._folders[t][experiment])
            for t in order
            if experiment in self._folders[t]
        }

    @property
    def groups(self) -> dict[str, ExperimentResult]:
        """The run-wide results by folder name (``overlap``, or ``overlap~s<seed>`` per seed)."""
        return {name: self._load(path, cls) for name, (path, cls) in self._group_folders.items()}

    def table(self, experiment: str, table: str, texts: list[str] | None = None) -> pd.DataFrame:
        """Table ``table`` of ``experiment`` of every text that has it (of ``texts``, in that
        order), in one tidy frame: ``text`` (the text's folder) and ``model`` (the model's name)
        first, then the table's columns. A table's own ``text`` or ``model`` column is kept, renamed
        ``<table>_<column>`` (clipped_generation's samples: ``samples_text``, ``samples_model``).
        Empty (no columns) when no text has it."""
        frames = []
        for text, result in self.results(experiment, texts).items():
            if table not in result.tables:
                continue
            t = result.tables[table].rename(columns={c: f"{table}_{c}" for c in RUN_COLUMNS})
            model = (result.meta.get("model") or {}).get("name", "")
            t.insert(0, "model", model)
            t.insert(0, "text", text)
            frames.append(t)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def tables(self, experiment: str, texts: list[str] | None = None) -> dict[str, pd.DataFrame]:
        """Every table of ``experiment``, each as ``table`` gives it."""
        names = dict.fromkeys(k for r in self.results(experiment, texts).values() for k in r.tables)
        return {name: self.table(experiment, name, texts) for name in names}

    def _load(self, path: Path, cls: type[ExperimentResult]) -> ExperimentResult:
        if path not in self._loaded:
            if (path / SETTINGS).is_file():
                self._loaded[path] = cls.load(path)
            # tables alone (a folder written by hand, or a save cut short): no settings, no meta
            else:
                tables = {p.stem: _read_table(p) for p in sorted(path.glob("*.csv"))}
                self._loaded[path] = cls(tables=tables, settings={}, meta={})
        return self._loaded[path]


def _class_for(
    directory: Path,
    key: str,
    known: Mapping[str, type[ExperimentResult]],
    asked: Mapping[str, type[ExperimentResult]],
) -> type[ExperimentResult]:
    """The class that loads ``directory``: the one asked for under ``key`` (refused unless it is
    the experiment ``settings.json`` names), else the named experiment's, else the folder name's,
    else the plain ``ExperimentResult``."""
    made_by = _experiment_of(directory)
    cls = asked.get(key) or asked.get(made_by or "")
    if cls is not None:
        if not (isinstance(cls, type) and issubclass(cls, ExperimentResult)):
            raise TypeError(f"classes[{key!r}] must be an ExperimentResult subclass, got {cls!r}")
        if made_by is not None and cls is not ExperimentResult and cls.name != made_by:
            theirs = known.get(made_by)
            their_name = theirs.__name__ if theirs else "no registered class"
            raise ValueError(
                f"{directory}: its settings.json says it holds a {made_by!r} result "
                f"({their_name}), not {cls.__name__} ({cls.name!r}): load it with "
                f"{their_name if theirs else 'the class that made it'} or leave it out of "
                "classes"
            )
        return cls
    return known.get(made_by or key, ExperimentResult)


def load_run(
    folder: str | Path, *, classes: Mapping[str, type[ExperimentResult]] | None = None
) -> Run:
    """Every result of the run folder ``folder`` (see ``Run``), each loaded by its experiment's
    result class; ``classes`` ({experiment: class}) overrides it, and a class that is not the
    experiment a folder's ``settings.json`` names is refused (``ValueError`` naming the folder
    and both classes)."""
    return Run(folder, classes)
