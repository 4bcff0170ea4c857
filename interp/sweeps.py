"""Batched sweeps: many clippings or ablations per forward pass, chunked to fit memory.

Two exact sweeps over one basis ``V`` (columns in the order to test):
- ``clip_sweep``: for each k, keep span(V[:, :k]) in every write (prefix masks, one batch row per
  k);
- ``ablation_sweep``: for each column i, remove v_i from every write (one direction per row);
and ``ClipEvaluator``, which memoizes a clip sweep by k for every consumer of one curve.
Estimates that avoid a pass per direction are in ``interp.importance``.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from .hooks import project_writes
from .projection import prefix_masks
from .scoring import continuation_logprob
from .tokens import Completion
from .writes import KINDS, model_device


def free_memory_bytes(device: torch.device) -> int:
    """Free memory on ``device``: CUDA's free bytes, or the OS's MemAvailable for the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30


def auto_chunk_size(
    model: Any, seq_len: int, n_cont: int, *, fraction: float = 0.3, max_chunk: int | None = None
) -> int:
    """Batch rows per forward pass that fit in ``fraction`` of free memory.

    Estimate per row (inference mode, float32 activations): the residual stream and a few
    d_model-wide temporaries, the MLP hidden layer, attention scores, the projection's
    coefficients and the continuation's logits.
    """
    cfg = model.cfg
    d, heads = int(cfg.d_model), int(getattr(cfg, "n_heads", 8))
    d_mlp = int(getattr(cfg, "d_mlp", None) or 4 * d)
    per_row = 4 * seq_len * (12 * d + 3 * d_mlp + 3 * heads * seq_len) + 8 * n_cont * int(
        cfg.d_vocab
    )
    device = model_device(model)
    chunk = int(fraction * free_memory_bytes(device)) // max(per_row, 1)
    if (
        max_chunk is None
    ):  # on a CPU a row costs the same in any batch from ~8 up: keep memory small
        max_chunk = 1024 if device.type == "cuda" else 16
    return max(1, min(chunk, max_chunk))


# Running totals of the batched sweeps in this process (read by benchmarks and phase timings).
COUNTERS = {"rows": 0, "passes": 0, "token_rows": 0}


def count_rows(rows: int, n_tokens: int) -> None:
    """Add one batched pass of ``rows`` rows over a text of ``n_tokens`` tokens to ``COUNTERS``
    (every clipped or ablated forward pass should, so that phase timings can say what they ran)."""
    COUNTERS["rows"] += rows
    COUNTERS["passes"] += 1
    COUNTERS["token_rows"] += rows * n_tokens


@dataclass
class SweepOutput:
    """One row per swept item (k or direction): log-probs (total, mean and per continuation
    token) and write norms."""

    logprob: Float[Tensor, " n"]
    logprob_mean: Float[Tensor, " n"]
    orig_delta: Float[Tensor, " n"]
    kept_delta: Float[Tensor, " n"]
    n_passes: int
    per_token: Float[Tensor, "n cont_pos"] | None = None


def _run_chunks(
    model: Any,
    completion: Completion,
    n_items: int,
    make: Any,
    *,
    kinds: Sequence[str],
    mode: str,
    chunk_size: int | None,
    progress: bool,
    desc: str,
) -> SweepOutput:
    chunk = chunk_size or auto_chunk_size(
        model, completion.tokens.numel(), completion.continuation_tokens.numel()
    )
    out: dict[str, list[Tensor]] = {"lp": [], "mean": [], "orig": [], "kept": [], "tok": []}
    starts = range(0, n_items, chunk)
    for start in tqdm(starts, desc=desc, disable=not progress, leave=False):
        stop = min(start + chunk, n_items)
        directions, mask = make(start, stop)
        with torch.inference_mode():
            with project_writes(
                model, directions, mask=mask, kinds=kinds, mode=mode, check=False
            ) as norms:
                lp = continuation_logprob(
                    model,
                    completion.prompt_tokens,
                    completion.continuation_tokens,
                    batch_size=stop - start,
                )
        count_rows(stop - start, completion.tokens.numel())
        out["lp"].append(lp.total.double().cpu())
        out["mean"].append(lp.mean.double().cpu())
        out["tok"].append(lp.per_token.double().cpu())
        out["orig"].append(norms.orig_delta()[0].double())
        out["kept"].append(norms.kept_delta()[0].double())
    cat = {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.float64) for k, v in out.items()}
    return SweepOutput(
        cat["lp"],
        cat["mean"],
        cat["orig"],
        cat["kept"],
        n_passes=len(starts),
        per_token=cat["tok"] if out["tok"] else None,
    )


def clip_sweep(
    model: Any,
    completion: Completion,
    directions: Float[Tensor, "d_model r"],
    ks: Sequence[int],
    *,
    kinds: Sequence[str] = KINDS,
    chunk_size: int | None = None,
    progress: bool = False,
    desc: str = "clipping",
) -> SweepOutput:
    """Clip every write to the first k columns of ``directions``, for every k in ``ks``."""
    device = model_device(model)
    v = directions.to(device=device, dtype=torch.float32)
    ks = [int(k) for k in ks]
    masks = prefix_masks(ks, v.shape[1], device=device)
    return _run_chunks(
        model,
        completion,
        len(ks),
        lambda a, b: (v, masks[a:b]),
        kinds=kinds,
        mode="project",
        chunk_size=chunk_size,
        progress=progress,
        desc=desc,
    )


def ablation_sweep(
    model: Any,
    completion: Completion,
    directions: Float[Tensor, "d_model r"],
    *,
    columns: Sequence[int] | None = None,
    kinds: Sequence[str] = KINDS,
    chunk_size: int | None = None,
    progress: bool = False,
) -> SweepOutput:
    """Remove one column of ``directions`` at a time from every write (each a batch row)."""
    device = model_device(model)
    v = directions.to(device=device, dtype=torch.float32)
    cols = torch.as_tensor(
        list(range(v.shape[1])) if columns is None else list(columns), device=device
    )
    per_row = rearrange(v[:, cols], "d n -> n d 1")
    return _run_chunks(
        model,
        completion,
        len(cols),
        lambda a, b: (per_row[a:b], None),
        kinds=kinds,
        mode="ablate",
        chunk_size=chunk_size,
        progress=progress,
        desc="ablations",
    )


def naive_ablation_loop(
    model: Any,
    completion: Completion,
    directions: Tensor,
    columns: Sequence[int],
    *,
    kinds: Sequence[str] = KINDS,
) -> Tensor:
    """The study's method, kept for benchmarks and tests: one forward pass per direction."""
    return ablation_sweep(
        model, completion, directions, columns=columns, kinds=kinds, chunk_size=1
    ).logprob


class ClipEvaluator:
    """Clip-sweep results for one ordering of a basis, memoized by k.

    Every consumer of a clipping curve (the curve itself, the minimal-k searches, the tolerance
    sensitivity) asks the same evaluator, which runs only the k it has not seen, batched.
    """

    def __init__(
        self,
        model: Any,
        completion: Completion,
        directions: Float[Tensor, "d_model r"],
        *,
        kinds: Sequence[str] = KINDS,
        chunk_size: int | None = None,
        progress: bool = False,
        desc: str = "clipping",
    ) -> None:
        self.model, self.completion, self.directions = model, completion, directions
        self.kinds, self.chunk_size, self.progress, self.desc = kinds, chunk_size, progress, desc
        self.d = int(directions.shape[1])
        self.points: dict[
            int, tuple[float, float, float, float]
        ] = {}  # k -> logprob, mean, orig, kept
        self.per_token: dict[
            int, np.ndarray
        ] = {}  # k -> log-probability of each continuation token
        self.n_passes = 0
        self.n_rows = 0

    def evaluate(self, ks: Sequence[int]) -> np.ndarray:
        """Total log-probabilities at ``ks`` (computing the new ones in one batched sweep)."""
        ks = [int(k) for k in ks]
        new = sorted(set(ks) - set(self.points))
        if new:
            out = clip_sweep(
                self.model,
                self.completion,
                self.directions,
                new,
                kinds=self.kinds,
                chunk_size=self.chunk_size,
                progress=self.progress,
                desc=self.desc,
            )
            for i, k in enumerate(new):
                self.points[k] = (
                    float(out.logprob[i]),
                    float(out.logprob_mean[i]),
                    float(out.orig_delta[i]),
                    float(out.kept_delta[i]),
                )
                if out.per_token is not None:
                    self.per_token[k] = out.per_token[i].numpy()
            self.n_passes += out.n_passes
            self.n_rows += len(new)
        return np.array([self.points[k][0] for k in ks])

    __call__ = evaluate

    def subset(self, positions: Sequence[int]) -> "SubsetEvaluator":
        """The same curve scored on some continuation tokens only (``positions``: indices into the
        continuation): every write still clipped, one memo shared with this evaluator."""
        return SubsetEvaluator(self, positions)

    def table(self) -> pd.DataFrame:
        """Every evaluated k, sorted: k, logprob, logprob_mean, orig_delta, kept_delta."""
        ks = sorted(self.points)
        rows = [self.points[k] for k in ks]
        return pd.DataFrame(
            rows, columns=["logprob", "logprob_mean", "orig_delta", "kept_delta"]
        ).assign(k=ks)[["k", "logprob", "logprob_mean", "orig_delta", "kept_delta"]]


class SubsetEvaluator:
    """``k -> sum of log p(token)`` over some continuation positions of a ``ClipEvaluator``'s
    clipped passes: a target restricted to those tokens, with every write of the text clipped (the
    parent's memo: no extra forward pass for any number of subsets)."""

    def __init__(self, parent: ClipEvaluator, positions: Sequence[int]) -> None:
        n = int(parent.completion.continuation_tokens.numel())
        self.positions = np.asarray(sorted({int(p) for p in positions}), dtype=int)
        if not len(self.positions) or self.positions.min() < 0 or self.positions.max() >= n:
            raise ValueError(
                f"positions must be a non-empty subset of 0..{n - 1} (the continuation's tokens)"
            )
        self.parent = parent

    def evaluate(self, ks: Sequence[int]) -> np.ndarray:
        ks = [int(k) for k in ks]
        self.parent.evaluate(ks)
        return np.array([float(self.parent.per_token[k][self.positions].sum()) for k in ks])

    __call__ = evaluate

    @property
    def points(self) -> dict[int, float]:
        """Every k the parent evaluated: k -> this subset's log-probability."""
        return {k: float(v[self.positions].sum()) for k, v in self.parent.per_token.items()}


def coarse_k_grid(d: int, *, n_linear: int = 13, low: bool = True) -> list[int]:
    """The adaptive curves' starting grid: 0, d, powers of two from both ends, ``n_linear`` even
    steps.

    Dense where the study's curves change fastest (small k: the chaotic region; k near d: the
    convergence), even in between. 31 points for d = 576. ``low=False`` leaves out the powers of
    two from the low end (curves that only feed minimal-k searches: 19 points for d = 576 with
    n_linear=9).
    """
    powers = [2**j for j in range(int(np.log2(max(d, 1))) + 1) if 2**j < d]
    linear = np.linspace(0, d, n_linear).round().astype(int).tolist()
    return sorted({0, d, *(powers if low else []), *(d - p for p in powers), *linear})


def jitter_pairs(d: int, per_region: int = 8) -> list[tuple[int, int]]:
    """Adjacent (k, k + 1) pairs, ``per_region`` spread evenly inside each of the three regions of
    the study's curve (below 10% of d, 10-50%, above 50%): their |logp(k+1) - logp(k)| measures how
    rough the curve is there (``experiments.clipping.jitter``)."""
    ks: set[int] = set()
    for lo, hi in ((0.0, 0.1), (0.1, 0.5), (0.5, 1.0)):
        for f in np.linspace(lo, hi, per_region + 2)[1:-1]:
            ks.add(min(max(int(round(f * d)), 1), d - 1))
    return [(k, k + 1) for k in sorted(ks)]


def default_k_grid(
    d_model: int, *, dense_up_to: int = 1024, n_log: int = 160, n_lin: int = 257
) -> list[int]:
    """Every k for small d_model; a log-spaced plus linear grid (with 0 and d_model) otherwise."""
    if d_model <= dense_up_to:
        return list(range(d_model + 1))
    log = (
        torch.logspace(0, torch.log10(torch.tensor(float(d_model))), n_log).round().long().tolist()
    )
    lin = torch.linspace(0, d_model, n_lin).round().long().tolist()
    return sorted(set(log) | set(lin) | {0, d_model})
