"""The audit's independent reference (tools/audit_reference.py: plain PyTorch hooks on the Hugging
Face model, no TransformerLens, no code from ``interp``) agrees with the package's exact stage:
the same importance for every direction, so the same Spearman(s, importance), and the same
minimal k by an every-k scan. On the real models the same comparison is run on replicate's
texts (docs/results/FINDINGS.md, "Audit")."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]


def load_tool():
    spec = importlib.util.spec_from_file_location(
        "audit_reference", ROOT / "tools" / "audit_reference.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_reference_matches_the_package_exact_stage(model_dirs, llama_tiny):
    from transformers import AutoModelForCausalLM

    import interp
    from experiments.exact_importance import run_exact_importance

    tool = load_tool()
    comp = interp.sample_continuation(
        llama_tiny, "I believe the meaning of life is", max_new_tokens=8, seed=0
    )
    ours = run_exact_importance(llama_tiny, comp, chunk_size=16)
    hf = AutoModelForCausalLM.from_pretrained(model_dirs["llama"], dtype=torch.float32).eval()
    assert len(tool.write_modules(hf)) == 2 * hf.config.num_hidden_layers
    tokens = torch.cat([comp.prompt_tokens, comp.continuation_tokens])
    n_prompt = int(comp.prompt_tokens.numel())
    s, imp, base, v = tool.reference(hf, tokens, n_prompt)

    table = ours.importance.sort_values("sv_rank")
    np.testing.assert_allclose(table.singular_value.to_numpy(), s, rtol=1e-4)
    assert base == pytest.approx(float(comp_logprob(llama_tiny, comp)), abs=1e-4)
    np.testing.assert_allclose(table.importance.to_numpy(), imp, atol=1e-4)
    assert (
        np.abs(imp).max() > 100 * 1e-4
    )  # effects far above the tolerance: agreement is not two zeros
    print(
        f"max |importance| {np.abs(imp).max():.3g} nats, Spearman "
        f"{stats.spearmanr(s, imp).statistic:.3f}"
    )
    assert float(stats.spearmanr(s, imp).statistic) == pytest.approx(
        ours.summary()["spearman_sv_importance"], abs=0.05
    )

    mk = ours.tables["minimal_k"]
    row = mk[(mk.ordering == "singular_value") & (mk.method == "exact_scan")].iloc[0]
    lp = tool.every_k_scan(hf, tokens, n_prompt, v)
    d = len(lp) - 1
    assert d == llama_tiny.cfg.d_model and abs(lp[d] - base) < 1e-4  # the full basis clips nothing
    target = base - float(row.tolerance)
    k_ref = tool.scan_min_k(lp, target)
    # the same k, unless a k between them sits within float error of the target
    between = lp[min(k_ref, int(row.k)) : max(k_ref, int(row.k)) + 1]
    assert k_ref == int(row.k) or np.abs(between - target).min() < 1e-4, (k_ref, int(row.k))
    assert 0 < k_ref  # the random model needs some directions: the comparison is not of two zeros
    print(f"minimal k: reference {k_ref}, package {int(row.k)} of {d}")


def comp_logprob(model, comp) -> float:
    from interp.scoring import continuation_logprob

    with torch.inference_mode():
        return float(
            continuation_logprob(model, comp.prompt_tokens, comp.continuation_tokens).total[0]
        )
