"""Saved figures draw offline: plotly.js once per folder, loaded by relative path, no CDN."""

import re
import sys

import pytest

import experiments as E


@pytest.fixture(scope="module")
def clip(gpt2_tiny, completion):
    return E.run_clipping(gpt2_tiny, completion, ks=[0, 8, 32, gpt2_tiny.cfg.d_model])


def test_html_figures_load_plotly_from_the_folder(clip, tmp_path):
    paths = clip.save_figures(tmp_path / "figures")
    assert len(paths) == len(clip.figures()) >= 2
    js = tmp_path / "figures" / "plotly.min.js"
    assert js.exists() and js.stat().st_size > 1_000_000  # the whole library, written once
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(
        [js.name, *(p.name for p in paths)]
    )
    for path in paths:
        page = path.read_text()
        sources = re.findall(r'<script[^>]*src="([^"]+)"', page)
        assert sources == ["plotly.min.js"], sources
        assert "cdn.plot.ly" not in page and "https://cdn" not in page


def test_png_without_kaleido_is_a_clear_error(clip, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kaleido", None)  # as if not installed
    with pytest.raises(RuntimeError, match=r"need kaleido: pip install \"resid-writes\[images\]\""):
        clip.save_figures(tmp_path / "png", png=True)
    assert not (tmp_path / "png").exists()  # raised before anything was written
