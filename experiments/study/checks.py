"""Self-checks that gate every run: nothing is written as a finding from a broken environment.

Run on each prepared text before any experiment (``check_text``), at a few forward passes plus the
text's noise floor (a batch of the sweeps' chunk size, reused by the searches; 22 s of a 356 s
default run on SmolLM2, 2026-12-02, phase ``self-checks`` in ``timings.csv``):

- **sampler**: the log-probability the sampler saw for each token it chose equals the
  log-probability a plain, uncached forward pass gives that token (catches cache, padding and
  position bugs in the decoding path: transformers 5.24 + transformer-lens 4.3.0 without
  ``interp.compat`` fails it by ~18 nats);
- **nucleus**: every sampled token lies in the top-p nucleus (or is the argmax, for greedy) of that
  plain forward pass at the sampling temperature;
- **scoring**: the package's scoring pass (blocks, then final norm and unembedding at the predicting
  positions) gives the text the same total log-probability as the plain forward pass;
- **writes_sum**: the embedding plus every captured write equals the residual stream after the last
  block (the writes are what the model adds to its residual stream);
- **full_clip**: clipping every write to all d_model directions reproduces the unclipped
  log-probability.

A failure raises ``SelfCheckError`` naming the check, the measured error, the tolerance and the
installed versions; ``python -m experiments`` prints it and exits with status 3.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from interp.provenance import versions_line
from interp.writes import KINDS, model_device, recording_writes

# Tolerances by the model's dtype: per token (nats) for log-probabilities, relative for the writes
# sum. float32 errors measured on both real models: sampler vs forward <= 2e-5 nats/token, writes
# sum 1.6e-7, full clip 1.6e-5 nats; the tolerances leave ~50x room and still catch any real bug
# (the transformers 5.24 cache defect moves tokens by 1-18 nats).
TOLERANCES = {
    "float64": {
        "per_token": 1e-6,
        "relative": 1e-6,
        "nucleus_slack": 1e-6,
    },  # writes are stored in float32
    "float32": {"per_token": 1e-3, "relative": 1e-4, "nucleus_slack": 1e-3},
    "float16": {"per_token": 0.25, "relative": 2e-2, "nucleus_slack": 0.05},
    "bfloat16": {"per_token": 0.25, "relative": 5e-2, "nucleus_slack": 0.05},
}


class SelfCheckError(RuntimeError):
    """A run's own invariant failed: its data must not be reported."""


@dataclass
class Check:
    name: str
    measured: float
    tolerance: float
    unit: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.measured <= self.tolerance)  # NaN fails

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def tolerances(model: Any) -> dict[str, float]:
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    return TOLERANCES.get(dtype, TOLERANCES["float32"])


def nucleus_excess(
    logits: torch.Tensor, tokens: torch.Tensor, *, temperature: float, top_p: float
) -> torch.Tensor:
    """For each row, how far the token lies outside what the sampler could pick: for top-p sampling,
    the probability mass of strictly more likely tokens minus ``top_p`` (<= 0 inside the nucleus);
    for greedy (``temperature == 0``), the gap in log-probability to the argmax (0 for the
    argmax)."""
    logits = logits.double()
    if temperature == 0:
        logp = torch.log_softmax(logits, -1)
        return logp.max(-1).values - logp.gather(-1, tokens[:, None])[:, 0]
    probs = torch.softmax(logits / temperature, -1)
    p_tok = probs.gather(-1, tokens[:, None])
    before = (probs * (probs > p_tok)).sum(-1)
    return before - top_p


@torch.inference_mode()
def check_text(text: Any) -> list[Check]:
    """Every check on one prepared text (``experiments.base.Text``); returns them, raises on
    failure."""
    from interp.scoring import unembed

    model, comp = text.model, text.completion
    tol = tolerances(model)
    tokens = comp.tokens[None].to(model_device(model))
    n_prompt, n_cont = comp.n_prompt, comp.continuation_tokens.numel()
    last = f"blocks.{int(model.cfg.n_layers) - 1}.hook_resid_post"
    resid: dict[str, torch.Tensor] = {}

    def keeper(name: str) -> Any:  # one closure per name: a bridge's hook.name may be an alias
        def keep(x: torch.Tensor, *, hook: Any) -> None:
            resid[name] = x.detach()

        return keep

    first = "blocks.0.hook_resid_pre"
    with (
        recording_writes(model, kinds=KINDS) as build,
        model.hooks(fwd_hooks=[(first, keeper(first)), (last, keeper(last))]),
    ):
        logits = model(tokens)
    if not isinstance(logits, torch.Tensor):  # a model returning an output object
        logits = logits.logits
    if logits.shape[-1] != int(model.cfg.d_vocab):  # e.g. a model that returns the residual
        logits = unembed(model, resid[last])
    pred = logits[0, n_prompt - 1 : n_prompt - 1 + n_cont].float()
    cont = comp.continuation_tokens.to(pred.device)
    plain = torch.log_softmax(pred.double(), -1).gather(-1, cont[:, None])[:, 0].cpu()
    checks = []

    recorded = comp.meta.get("token_logprobs")
    if recorded is not None and len(recorded) == n_cont:
        err = (plain - torch.tensor(recorded, dtype=torch.float64)).abs()
        worst = int(err.argmax())
        checks.append(
            Check(
                "sampler",
                float(err.max()),
                tol["per_token"],
                "nats/token",
                f"sampler ({comp.meta.get('sampler', '?')}) vs plain forward; worst at "
                f"continuation token {worst}: sampler {recorded[worst]:.4f}, forward "
                f"{float(plain[worst]):.4f}",
            )
        )
    temperature, top_p = comp.meta.get("temperature"), comp.meta.get("top_p")
    if temperature is not None and top_p is not None:
        excess = nucleus_excess(
            pred, cont, temperature=float(temperature), top_p=float(top_p)
        ).cpu()
        worst = int(excess.argmax())
        checks.append(
            Check(
                "nucleus",
                max(float(excess.max()), 0.0),
                tol["nucleus_slack"],
                "probability" if temperature else "nats",
                f"tokens outside the top-p={top_p} nucleus at T={temperature}: "
                f"{int((excess > tol['nucleus_slack']).sum())} of {n_cont} (worst: token {worst})",
            )
        )
    checks.append(
        Check(
            "scoring",
            abs(float(plain.sum()) - text.baseline),
            tol["per_token"] * n_cont,
            "nats",
            f"scoring pass {text.baseline:.4f} vs plain forward {float(plain.sum()):.4f}",
        )
    )
    writes = build(comp.tokens)
    summed = resid[first][0].double() + writes.matrix.double().reshape(
        -1, comp.tokens.numel(), writes.d_model
    ).sum(0).to(resid[last].device)
    target = resid[last][0].double()
    rel = float((summed - target).norm() / target.norm())
    checks.append(
        Check(
            "writes_sum",
            rel,
            tol["relative"],
            "relative",
            "embedding + every attn/mlp write vs the last block's residual output",
        )
    )
    checks.append(
        Check(
            "full_clip",
            text.noise(),
            tol["per_token"] * n_cont,
            "nats",
            "every write projected onto all d_model directions vs unclipped",
        )
    )
    failed = [c for c in checks if not c.passed]
    if failed:
        raise SelfCheckError(failure_message(failed, text))
    return checks


def failure_message(failed: list[Check], text: Any) -> str:
    lines = [
        f"self-check failed on {text.completion.prompt[:40]!r} ({len(failed)} check(s)); "
        "no findings written:"
    ]
    for c in failed:
        lines.append(
            f"  {c.name}: measured {c.measured:.3g} {c.unit}, tolerance {c.tolerance:.3g} "
            f"({c.detail})"
        )
    lines.append(f"  installed: {versions_line()}")
    lines.append(
        "  fix: install the locked versions (pip install -r requirements.lock, see "
        "README), then delete the results folder's continuations/ (they were sampled in "
        "this environment) and rerun."
    )
    return "\n".join(lines)


def checked(text: Any, folder: Path) -> list[Check]:
    """``check_text``, then ``folder/checks.json``: nothing is written unless every check passed
    (a failure raises first), so a folder with checks.json holds a text that passed them."""
    checks = check_text(text)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "checks.json").write_text(json.dumps([c.to_dict() for c in checks], indent=2))
    return checks
