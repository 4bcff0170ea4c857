"""The shape every experiment returns: tidy tables + the settings and metadata that made them."""

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp import (
    KINDS,
    Basis,
    Completion,
    Writes,
    capture_writes,
    model_info,
    normalize_kinds,
    project_writes,
    write_basis,
)
from interp.scoring import continuation_logprob
from interp.sweeps import ClipEvaluator, auto_chunk_size
from interp.tokens import check_sequence
from interp.writes import recording_writes


@dataclass
class ExperimentResult:
    """Tidy (long-format) tables, settings and metadata; ``save``/``load`` and ``figures``.

    Subclasses name their tables and draw their figures; the math lives elsewhere.
    """

    name: ClassVar[str] = "experiment"
    tables: dict[str, pd.DataFrame]
    settings: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        return {}

    def summary(self) -> dict[str, Any]:
        """Key numbers for the report (JSON-serializable)."""
        return {}

    def save(self, directory: str | Path) -> Path:
        """Write ``<table>.csv`` for every table and ``settings.json`` (settings, meta, summary)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for key, table in self.tables.items():
            table.to_csv(directory / f"{key}.csv", index=False)
        payload = {
            "experiment": self.name,
            "settings": self.settings,
            "meta": self.meta,
            "summary": self.summary(),
        }
        (directory / "settings.json").write_text(
            json.dumps(payload, indent=2, default=_json_default)
        )
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "ExperimentResult":
        """Read back what ``save`` wrote (every ``<table>.csv``, ``settings.json``'s settings and
        meta) as an instance of ``cls``: call it on the result class, ``ClippingResult.load(d)``."""
        directory = Path(directory)
        payload = json.loads((directory / "settings.json").read_text())
        made_by = payload.get("experiment")
        if cls.name != ExperimentResult.name and made_by is not None and made_by != cls.name:
            raise ValueError(
                f"{directory} holds a {made_by!r} result, not {cls.name!r}: load it "
                f"with that experiment's result class, or give {cls.__name__}.load a "
                f"{cls.name} folder"
            )
        tables = {p.stem: _read_table(p) for p in sorted(directory.glob("*.csv"))}
        return cls(tables=tables, settings=payload["settings"], meta=payload["meta"])

    def save_figures(
        self, directory: str | Path, *, png: bool = False, plotly_js: str | Path | None = None
    ) -> list[Path]:
        """Every figure as ``<key>.html`` in ``directory``, drawing offline: plotly.js is written
        once per folder (``plotly.min.js``, from the installed ``plotly`` package) and each page
        loads it by relative path, never from a CDN. With ``plotly_js`` (a file path, e.g. the
        results folder's ``plotly.min.js``), that one file is shared instead: written there if it
        is missing, and loaded by each page by its path relative to ``directory`` (keep the two
        together when moving them). With ``png``, also ``<key>.png`` through
        kaleido (``pip install "resid-writes[images]"``): a missing kaleido is an error, raised
        before anything is written; a PNG that fails to render is a warning (the HTML is kept).
        Returns the HTML paths."""
        if png:
            check_png_export()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        include: str = "directory"
        if plotly_js is not None:
            include = os.path.relpath(write_plotly_js(plotly_js), directory).replace(os.sep, "/")
        paths = []
        for key, fig in self.figures().items():
            path = directory / f"{key}.html"
            fig.write_html(path, include_plotlyjs=include)
            paths.append(path)
            if png:
                try:
                    fig.write_image(directory / f"{key}.png")
                except (
                    Exception
                ) as err:  # kaleido present but cannot render (e.g. no browser for kaleido >= 1)
                    warnings.warn(
                        f"PNG export of {key!r} failed ({type(err).__name__}: {err}); the "
                        "HTML figures are written, no more PNGs are tried. kaleido >= 1 "
                        "needs Chrome/Chromium (kaleido.get_chrome_sync() installs one).",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    png = False
        return paths


def write_plotly_js(path: str | Path) -> Path:
    """The installed plotly.js at ``path`` (written once, atomically, if missing); returns
    ``path``."""
    path = Path(path)
    if not path.exists():
        import plotly.offline

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(plotly.offline.get_plotlyjs(), encoding="utf-8")
        os.replace(tmp, path)
    return path


def check_png_export() -> None:
    """Raise a clear error when PNG export cannot work (kaleido is not installed)."""
    try:
        import kaleido  # noqa: F401
    except ImportError as err:
        raise RuntimeError(
            'PNG figures need kaleido: pip install "resid-writes[images]" (or pip install '
            "kaleido), "
            "or leave png off (the HTML figures need nothing)"
        ) from err


def _read_table(path: Path) -> pd.DataFrame:
    """A saved table; an empty table (saved with no columns) reads back empty."""
    try:
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, tuple | set):
        return list(obj)
    return str(obj)


def run_meta(model: Any, completion: Completion, **extra: Any) -> dict[str, Any]:
    """What made a result: model, dtype, prompt, continuation tokens and text."""
    return {
        "model": model_info(model).to_dict(),
        "prompt": completion.prompt,
        "prompt_tokens": completion.prompt_tokens.tolist(),
        "continuation_tokens": completion.continuation_tokens.tolist(),
        "continuation_text": completion.continuation_text,
        "sampling": {k: v for k, v in completion.meta.items() if k != "tokenizer"},
        **extra,
    }


@dataclass
class Text:
    """One text, analysed once: its writes (captured during the baseline pass), the basis of the
    chosen kinds, the unclipped log-probability, and one memoized clipping evaluator per ordering
    shared by every experiment (curves, minimal-k searches, tolerance sensitivity).

    Made by ``prepare``. Attributes: ``model`` and ``completion``; ``kinds`` (of the basis);
    ``writes`` (every write of every kind, a ``interp.Writes``); ``basis`` (``interp.Basis`` of
    the writes of ``kinds``); ``baseline`` and ``baseline_mean`` (the unclipped log-probability of
    the continuation, total and per token); ``evaluators`` (the memoized clipping evaluators,
    keyed by ordering name, directions digest and kinds); ``dtype`` (the model's when prepared).
    """

    model: Any
    completion: Completion
    kinds: tuple[str, ...]
    writes: Writes  # every kind, every position (the spectrum's variants select from it)
    basis: Basis
    baseline: float
    baseline_mean: float
    chunk_size: int | None = None
    progress: bool = False
    evaluators: dict[tuple[str, str, tuple[str, ...]], ClipEvaluator] = field(default_factory=dict)
    dtype: str = ""  # the model's parameter dtype when the text was prepared ("" = not recorded)

    @property
    def d_model(self) -> int:
        return self.basis.d_model

    def check_model(self, model: Any) -> None:
        """Refuse a model other than the one this text was prepared with, or the same model whose
        dtype changed since (every memoized number would belong to the old one)."""
        if model is not self.model:
            raise ValueError(
                "this prepared text belongs to another model object: prepare it again with "
                "this model (experiments.prepare(model, completion)) or pass the "
                "completion instead"
            )
        now = param_dtype(model)
        if self.dtype and now != self.dtype:
            raise ValueError(
                f"the model's dtype changed since the text was prepared ({self.dtype} -> "
                f"{now}): its baseline and memoized evaluations are stale; prepare the "
                "text again"
            )

    def evaluator(
        self, ordering: str, order: np.ndarray | None = None, *, directions: Tensor | None = None
    ) -> ClipEvaluator:
        """The memoized evaluator of a clipping order: the basis columns in ``order`` (default: as
        they are, the singular-value order), or explicit ``directions`` (columns, in order of
        inclusion). Memos are keyed by ``(ordering, digest of the directions, kinds)``: the same
        name with other directions (a random basis of another seed, another importance order)
        gets a fresh evaluator, never the old one's numbers."""
        self.check_model(self.model)
        if directions is None:
            directions = (
                self.basis.vectors
                if order is None
                else self.basis.vectors[:, np.asarray(order).copy()]
            )
        key = (ordering, directions_digest(directions), self.kinds)
        if key not in self.evaluators:
            self.evaluators[key] = ClipEvaluator(
                self.model,
                self.completion,
                directions,
                kinds=self.kinds,
                chunk_size=self.chunk_size,
                progress=self.progress,
                desc=ordering,
            )
        return self.evaluators[key]

    def noise(self) -> float:
        """The float error of the sweeps' own path on this text: the largest |logp - logp
        unclipped| when every write is projected onto all d_model directions (V V^T w computed as
        such, not skipped) in a batch of the sweeps' chunk size, and in a batch of 1. The
        evaluators' k = d is exact by construction (``interp.projection.compact``), so this is the
        error a clip or ablation row carries from its batch and its arithmetic: the noise floor of
        minimal-k targets and of exact importances. Memoized."""
        return max(self.noise_by_batch().values())

    def noise_by_batch(self) -> dict[int, float]:
        """``noise()`` per batch size measured (1 and the sweeps' chunk size): {batch: nats}."""
        self.check_model(self.model)
        if "_noise_by_batch" not in self.__dict__:
            c = self.completion
            chunk = self.chunk_size or auto_chunk_size(
                self.model, c.tokens.numel(), c.continuation_tokens.numel()
            )
            out = {}
            for batch in sorted({1, int(chunk)}):
                with (
                    torch.inference_mode(),
                    project_writes(
                        self.model, self.basis.vectors, kinds=self.kinds, record=False, check=False
                    ),
                ):
                    lp = continuation_logprob(
                        self.model, c.prompt_tokens, c.continuation_tokens, batch_size=batch
                    )
                out[batch] = float((lp.total.double() - self.baseline).abs().max())
            self.__dict__["_noise_by_batch"] = out
        return self.__dict__["_noise_by_batch"]

    def meta(self, **extra: Any) -> dict[str, Any]:
        """A result's ``meta``: ``run_meta`` of this text (model, dtype, prompt, continuation
        tokens and text, sampling) plus its baseline log-probability (total and per token), its
        kinds and ``extra``."""
        return run_meta(
            self.model,
            self.completion,
            baseline_logprob=self.baseline,
            baseline_logprob_mean=self.baseline_mean,
            kinds=list(self.kinds),
            **extra,
        )


def prepare(
    model: Any,
    completion: Completion,
    *,
    kinds: Sequence[str] = KINDS,
    chunk_size: int | None = None,
    progress: bool = False,
) -> Text:
    """Score the continuation once, recording every write on the way: basis and baseline
    together."""
    kinds = normalize_kinds(kinds)
    check_sequence(model, completion.tokens, what="prompt + continuation")
    with torch.inference_mode(), recording_writes(model, kinds=KINDS) as build:
        lp = continuation_logprob(model, completion.prompt_tokens, completion.continuation_tokens)
    writes = build(completion.tokens)
    basis = write_basis(
        writes.select(writes.index.kind.isin(kinds)) if kinds != KINDS else writes,
        device=_linalg_device(model),
    )
    return Text(
        model,
        completion,
        kinds,
        writes,
        basis,
        float(lp.total[0]),
        float(lp.mean[0]),
        chunk_size=chunk_size,
        progress=progress,
        dtype=param_dtype(model),
    )


def param_dtype(model: Any) -> str:
    """The model's parameter dtype, e.g. ``"float32"``."""
    return str(next(model.parameters()).dtype).replace("torch.", "")


def directions_digest(directions: Tensor) -> str:
    """A short fingerprint of a directions matrix (shape and float32 values): the memo key of a
    clipping order."""
    v = directions.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha1(str(tuple(v.shape)).encode())
    h.update(v.numpy().tobytes())
    return h.hexdigest()[:16]


def _linalg_device(model: Any) -> torch.device:
    """Decompositions run on the model's GPU when it has one (float64 there is fast), else the
    CPU."""
    device = next(model.parameters()).device
    return device if device.type == "cuda" else torch.device("cpu")


def as_text(
    model: Any,
    completion: "Completion | Text",
    *,
    kinds: Sequence[str] | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
) -> Text:
    """A prepared text as is, or a completion prepared now (``kinds`` default: attention + MLP).

    A prepared text fixes the kinds of its basis and its model: ``kinds`` other than the text's,
    or another model (or a changed dtype), is an error rather than a silent use of the text's.
    """
    if isinstance(completion, Text):
        completion.check_model(model)
        if kinds is not None and normalize_kinds(kinds) != completion.kinds:
            wanted = normalize_kinds(kinds)
            raise ValueError(
                f"kinds={wanted} differs from the prepared text's kinds "
                f"{completion.kinds}: leave kinds out to use the text's, or prepare a text "
                f"of these kinds (experiments.prepare(model, completion, kinds={wanted}))"
            )
        return completion
    return prepare(
        model,
        completion,
        kinds=KINDS if kinds is None else kinds,
        chunk_size=chunk_size,
        progress=progress,
    )


def basis_for(
    model: Any,
    completion: Completion,
    *,
    kinds: tuple[str, ...] = ("attn", "mlp"),
    exclude_bos: bool = False,
) -> Basis:
    """The study's basis: SVD of every write of prompt + continuation."""
    writes = capture_writes(model, completion.tokens, kinds=kinds)
    return write_basis(writes, exclude_positions=(0,) if exclude_bos else ())
