"""The shape every experiment returns: tidy tables + the settings and metadata that made them."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch

from interp import Basis, Completion, capture_writes, model_info, write_basis


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
        payload = {"experiment": self.name, "settings": self.settings, "meta": self.meta, "summary": self.summary()}
        (directory / "settings.json").write_text(json.dumps(payload, indent=2, default=_json_default))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "ExperimentResult":
        directory = Path(directory)
        payload = json.loads((directory / "settings.json").read_text())
        tables = {p.stem: pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in sorted(directory.glob("*.csv"))}
        return cls(tables=tables, settings=payload["settings"], meta=payload["meta"])

    def save_figures(self, directory: str | Path, *, png: bool = False) -> list[Path]:
        """Every figure as standalone HTML (and PNG when ``png`` and kaleido work)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for key, fig in self.figures().items():
            path = directory / f"{key}.html"
            fig.write_html(path, include_plotlyjs="cdn")
            paths.append(path)
            if png:
                try:
                    fig.write_image(directory / f"{key}.png")
                except Exception:  # kaleido missing or no browser: HTML is enough
                    png = False
        return paths


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
        **extra,
    }


def basis_for(
    model: Any, completion: Completion, *, kinds: tuple[str, ...] = ("attn", "mlp"), exclude_bos: bool = False
) -> Basis:
    """The study's basis: SVD of every write of prompt + continuation."""
    writes = capture_writes(model, completion.tokens, kinds=kinds)
    return write_basis(writes, exclude_positions=(0,) if exclude_bos else ())
