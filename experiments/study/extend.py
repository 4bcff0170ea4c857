"""Add a plug-in experiment to a finished replication's exact texts, from ``docs/results`` alone.

``replicate --exact-with NAME`` runs a plug-in on the exact stage's texts, but only over the
replication's run folder (8+ CPU-hours to rebuild). The exported docs folder already holds what a
text-level plug-in needs to reproduce those texts: each text's prompt and seed (``texts.csv``)
and its exact ablation of every direction (``exact_importance.csv``). ``extend_exact`` re-samples
each text (the same seeded sampler ``replicate`` uses), refuses to go on unless the text is the
one the docs describe (token count, unclipped log-probability, every singular value), runs the
plug-in with that exported exact table as ``results["exact_importance"]`` and saves it in the
layout ``replicate`` uses (``<out>/<text>/<plugin>/``, resumable). ``export.retabulate_docs`` then
merges those per-text results into ``texts.csv`` and recomputes every claim from the per-text
numbers (``claims(texts.csv, overlap_pairs.csv)``, the function ``replicate`` calls).
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..base import prepare
from ..prompts import REPLICATION_PROMPTS, get_continuation
from ..registry import get_plugin
from .checks import checked


class TextMismatchError(RuntimeError):
    """The re-sampled text is not the one the docs folder describes (different versions or
    settings)."""


@dataclass(frozen=True)
class DocText:
    text: str
    prompt: str
    seed: int
    n_tokens: int
    baseline_logprob: float
    singular_values: np.ndarray  # every direction, from exact_importance.csv
    importance: pd.DataFrame  # the exact stage's table for this text (every direction ablated)


def doc_texts(docs_model: str | Path) -> list[DocText]:
    """The exact stage's texts of one model's docs folder, in the order ``replicate`` ran them."""
    docs_model = Path(docs_model)
    texts = pd.read_csv(docs_model / "texts.csv").set_index("text")
    exact = pd.read_csv(docs_model / "exact_texts.csv")
    imp = pd.read_csv(docs_model / "exact_importance.csv")
    out = []
    for name in exact.text:
        row = texts.loc[name]
        t = imp[imp.text == name].sort_values("direction").reset_index(drop=True)
        out.append(
            DocText(
                text=name,
                prompt=str(row.prompt),
                seed=int(row.seed),
                n_tokens=int(row.n_tokens),
                baseline_logprob=float(row.baseline_logprob),
                singular_values=t.singular_value.to_numpy(dtype=np.float64),
                importance=t.drop(columns=["text"]),
            )
        )
    return out


def verify_text(
    prepared: Any, doc: DocText, *, rtol: float = 1e-4, atol_logprob: float = 1e-3
) -> dict[str, float]:
    """Raise ``TextMismatchError`` unless ``prepared`` is the text ``doc`` describes."""
    n = len(prepared.completion.prompt_tokens) + len(prepared.completion.continuation_tokens)
    s = prepared.basis.singular_values.double().cpu().numpy()[: len(doc.singular_values)]
    rel = float(np.max(np.abs(s - doc.singular_values) / doc.singular_values[0]))
    dlp = abs(float(prepared.baseline) - doc.baseline_logprob)
    if n != doc.n_tokens or len(s) != len(doc.singular_values) or rel > rtol or dlp > atol_logprob:
        raise TextMismatchError(
            f"{doc.text}: re-sampled text differs from the docs ({n} vs {doc.n_tokens} "
            f"tokens, singular values off by {rel:.2e} of s1, log-probability off by "
            f"{dlp:.2e}); run with the versions in the docs' environment.json (pip install "
            "-c requirements.lock) or regenerate everything with `python -m experiments "
            "replicate`"
        )
    return {"singular_value_max_rel_error": rel, "baseline_abs_error": dlp}


def run_settings(docs_model: str | Path) -> dict[str, Any]:
    """The settings the docs' run was made with (its environment.json): continuation length,
    kinds, tolerance (prompt texts are not recorded: only shipped prompts can be re-sampled)."""
    env = json.loads((Path(docs_model) / "environment.json").read_text())
    return env["settings"]


def extend_exact(
    model: Any,
    docs_model: str | Path,
    out: str | Path,
    plugin: str,
    *,
    texts: list[str] | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
    **options: Any,
) -> list[str]:
    """Run ``plugin`` on the docs folder's exact texts (all, or those named in ``texts``), with
    the settings of the run that made the docs (continuation length, kinds, tolerance)."""
    from .preflight import PROGRESS
    from .reproduce import PLOTLY_JS, cached

    out = Path(out)
    plug = get_plugin(plugin)
    settings = run_settings(docs_model)
    max_new_tokens, tolerance = int(settings["max_new_tokens"]), float(settings["tolerance"])
    kinds = tuple(settings["kinds"])
    done = []
    for doc in doc_texts(docs_model):
        if texts is not None and doc.text not in texts:
            continue
        if doc.prompt not in REPLICATION_PROMPTS:
            raise TextMismatchError(
                f"{doc.text}: prompt {doc.prompt!r} is not a shipped prompt and the docs do not "
                "record its text; regenerate with `python -m experiments replicate --prompts-file`"
            )
        target = out / doc.text / plugin
        if (target / "settings.json").exists():
            done.append(doc.text)
            PROGRESS.done += 1
            continue
        t0 = time.perf_counter()
        comp = get_continuation(
            model,
            REPLICATION_PROMPTS[doc.prompt],
            seed=doc.seed,
            store=out / "continuations" / f"{doc.text}.json",
            max_new_tokens=max_new_tokens,
        )
        text = prepare(model, comp, kinds=kinds, chunk_size=chunk_size, progress=progress)
        same = verify_text(text, doc)
        checked(text, out / doc.text)
        (out / doc.text / "same_text.json").write_text(json.dumps(same, indent=2))
        cached(
            target,
            plug.result,
            lambda: plug(
                model,
                text,  # noqa: B023 (called in this iteration)
                seed=doc.seed,  # noqa: B023 (called in this iteration)
                tolerance=tolerance,
                chunk_size=chunk_size,
                progress=progress,
                prompt_name=doc.prompt,  # noqa: B023 (called in this iteration)
                results={"exact_importance": doc.importance},  # noqa: B023 (called in this iteration)
                **options,
            ),
            False,
            plotly_js=out / PLOTLY_JS,
        )
        print(f"{doc.text}: {plugin} in {time.perf_counter() - t0:.0f} s", flush=True)
        done.append(doc.text)
        PROGRESS.done += 1
    return done
