"""The committed docs/results re-derive from its own per-text numbers, by the methods the rows name.

No model runs here: these read the committed CSVs. They fail if a claim, a verdict or a table cell
is edited by hand, if the table is computed from numbers that are not committed beside it, or if
a per-text Spearman is not the Spearman of the per-direction values exported with it.
"""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from experiments.measure import top_k_agreement
from experiments.study.export import model_sizes, retabulate, write_readme
from experiments.study.extend import DocText, TextMismatchError, verify_text
from experiments.study.replication import claims

DOCS = Path(__file__).resolve().parents[1] / "docs" / "results"
MODELS = sorted(p.name for p in DOCS.iterdir() if (p / "claims.csv").exists())


def test_docs_hold_both_models():
    assert MODELS == ["gemma-3-270m", "smollm2-135m"]


@pytest.mark.parametrize("model", MODELS)
def test_claims_rederive_from_texts_csv(model, tmp_path):
    """claims.csv is exactly claims(texts.csv, overlap_pairs.csv): every number, interval and
    verdict."""
    m = pd.read_csv(DOCS / model / "texts.csv")
    pairs = pd.read_csv(DOCS / model / "overlap_pairs.csv")
    claims(m, pairs).to_csv(tmp_path / "claims.csv", index=False)
    assert (tmp_path / "claims.csv").read_text() == (DOCS / model / "claims.csv").read_text()


def test_readme_table_rederives(tmp_path):
    """docs/results/README.md is what write_readme gives on the committed claims (not
    hand-edited)."""
    text = (DOCS / "README.md").read_text()
    command = text.split("Regenerate everything here with `")[1].split("`")[0]
    added = "\n\n".join(p for p in text.split("\n\n")[2:] if "were added to this folder by" in p)
    docs = tmp_path / "results"
    shutil.copytree(DOCS, docs)
    per_model = {m: pd.read_csv(docs / m / "claims.csv", keep_default_na=False) for m in MODELS}
    sizes = [
        model_sizes(m, pd.read_csv(docs / m / "texts.csv"))
        for m in ("smollm2-135m", "gemma-3-270m")
    ]
    write_readme(
        docs,
        {m: per_model[m] for m in ("smollm2-135m", "gemma-3-270m")},
        sizes,
        ["smollm2-135m", "gemma-3-270m"],
        command=command,
        added=added,
    )
    assert (docs / "README.md").read_text() == text


@pytest.mark.parametrize("model", MODELS)
def test_exact_spearman_is_the_spearman_of_the_exported_ablations(model):
    """exact_texts.csv's Spearman(s, importance) per text = Spearman over exact_importance.csv's
    every-direction ablations of that text (7 significant digits exported)."""
    per_text = pd.read_csv(DOCS / model / "exact_texts.csv").set_index("text")
    imp = pd.read_csv(DOCS / model / "exact_importance.csv")
    d = json.loads((DOCS / model / "environment.json").read_text())["model"]["d_model"]
    assert len(per_text) >= 8
    for text, t in imp.groupby("text"):
        assert len(t) == d  # every direction ablated, none estimated
        rho = stats.spearmanr(t.singular_value, t.importance).statistic
        assert rho == pytest.approx(per_text.loc[text, "exact_spearman_sv_importance"], abs=2e-3)


@pytest.mark.parametrize("model", MODELS)
def test_hessian_row_rederives_from_exported_directions(model):
    """Where the Hessian ranking ran, texts.csv's hr_spearman / hr_top10 are the Spearman and top-10
    recall of the exported per-direction estimates against the exported exact ablations, those
    exact values are the exact stage's (the plug-in reused them, not fresh estimates), and its
    minimal k for the SVD and importance orders is the exact stage's."""
    path = DOCS / model / "hessian_ranking_directions.csv"
    if not path.exists():
        pytest.skip(f"no Hessian ranking in docs/results/{model}")
    m = pd.read_csv(DOCS / model / "texts.csv").set_index("text")
    h = pd.read_csv(path)
    imp = pd.read_csv(DOCS / model / "exact_importance.csv")
    texts = sorted(h.text.unique())
    assert texts == sorted(m[m["hr_k_frac[hessian]"].notna()].index)
    exact_stage = pd.read_csv(DOCS / model / "exact_texts.csv").set_index("text")
    for text in texts:
        # two independent every-k scans of the same curves (the exact stage's, and the plug-in's own
        # in another session) must find the same minimal k for the SVD and exact-importance orders
        assert (
            m.loc[text, "hr_k_frac[singular_value]"]
            == exact_stage.loc[text, "exact_min_k_frac[singular_value]"]
        )
        assert (
            m.loc[text, "hr_k_frac[exact_importance]"]
            == exact_stage.loc[text, "exact_min_k_frac[importance]"]
        )
        t = h[h.text == text].sort_values("direction")
        e = imp[imp.text == text].sort_values("direction")
        np.testing.assert_allclose(
            t.exact.to_numpy(), e.importance.to_numpy(), rtol=1e-5, atol=1e-6
        )
        for est in ("first_order", "fisher_second_order", "hessian_second_order"):
            rho = stats.spearmanr(t[est], t.exact).statistic
            assert rho == pytest.approx(m.loc[text, f"hr_spearman[{est}]"], abs=2e-3)
            top = top_k_agreement(t[est].to_numpy(), t.exact.to_numpy(), 10)
            assert top == pytest.approx(m.loc[text, f"hr_top10[{est}]"], abs=0.1 + 1e-9)


def _fake_hessian_run(run: Path, text: str, k_hessian: float, k_svd: float) -> None:
    folder = run / text / "hessian_ranking"
    folder.mkdir(parents=True)
    summary = {
        f"k_frac[{o}]": k_svd
        for o in (
            "singular_value",
            "exact_importance",
            "hessian_eigen_loading",
            "first_order",
            "fisher_second_order",
        )
    }
    summary["k_frac[hessian]"] = k_hessian
    for e in ("first_order", "fisher_second_order", "hessian_second_order"):
        summary[f"{e}_spearman"], summary[f"{e}_top10_recall"] = 0.5, 0.3
    (folder / "settings.json").write_text(json.dumps({"summary": summary}))


def test_retabulate_merges_only_the_run_texts(tmp_path):
    """A run holding one more text's Hessian result fills that text's hr_ columns only: the other
    texts keep their values, the Hessian row counts one text more, every other claim is
    unchanged."""
    docs = tmp_path / "smollm2-135m"
    shutil.copytree(DOCS / "smollm2-135m", docs)
    before = pd.read_csv(docs / "claims.csv").set_index("key")
    m0 = pd.read_csv(docs / "texts.csv").set_index("text")
    had = (
        m0["hr_k_frac[hessian]"].notna()
        if "hr_k_frac[hessian]" in m0
        else pd.Series(False, index=m0.index)
    )
    text = m0.index[~had][0]
    _fake_hessian_run(tmp_path / "run", text, 0.5, 0.9)
    after = retabulate(docs, tmp_path / "run", "hessian_ranking").set_index("key")
    m = pd.read_csv(docs / "texts.csv").set_index("text")
    assert (
        m["hr_k_frac[hessian]"].notna().sum() == had.sum() + 1
        and m.loc[text, "hr_k_frac[hessian]"] == 0.5
    )
    hr = [c for c in m0 if c.startswith("hr_")]
    pd.testing.assert_frame_equal(m.loc[m0.index != text, hr], m0.loc[m0.index != text, hr])
    assert int(after.loc["hessian_order", "n_texts"]) == had.sum() + 1
    others = [k for k in before.index if k != "hessian_order"]
    pd.testing.assert_frame_equal(after.loc[others], before.loc[others])


def test_verify_text_refuses_another_text():
    s = np.array([10.0, 5.0, 1.0])
    doc = DocText(
        text="t",
        prompt="p",
        seed=0,
        n_tokens=5,
        baseline_logprob=-3.0,
        singular_values=s,
        importance=pd.DataFrame(),
    )
    comp = SimpleNamespace(prompt_tokens=torch.zeros(2), continuation_tokens=torch.zeros(3))

    def prepared(values, baseline=-3.0, n=3):
        return SimpleNamespace(
            completion=SimpleNamespace(
                prompt_tokens=comp.prompt_tokens, continuation_tokens=torch.zeros(n)
            ),
            basis=SimpleNamespace(singular_values=torch.tensor(values)),
            baseline=baseline,
        )

    assert verify_text(prepared(s), doc)["singular_value_max_rel_error"] == 0.0
    with pytest.raises(TextMismatchError, match="singular values"):
        verify_text(prepared(s * [1, 1, 1.01]), doc)
    with pytest.raises(TextMismatchError, match="tokens"):
        verify_text(prepared(s, n=4), doc)
    with pytest.raises(TextMismatchError, match="log-probability"):
        verify_text(prepared(s, baseline=-3.1), doc)


def test_retabulate_with_an_empty_run_changes_nothing(tmp_path):
    """`extend --table-only` over a folder holding no finished texts leaves texts.csv and claims.csv
    as they were."""
    docs = tmp_path / "gemma-3-270m"
    shutil.copytree(DOCS / "gemma-3-270m", docs)
    (tmp_path / "run").mkdir()
    retabulate(docs, tmp_path / "run", "hessian_ranking", images=False)
    for name in ("texts.csv", "claims.csv"):
        assert (docs / name).read_text() == (DOCS / "gemma-3-270m" / name).read_text()
