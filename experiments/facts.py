"""The study's published numbers (Llama-3-8B, shared/STUDY.md), written once.

A bottom module: it imports nothing from this package, so every experiment, the replication table
and the report can read the same numbers. Everything derived from them (the 46-81% band, the
writes per dimension of the one known text) is computed here, not written again elsewhere.
"""

from typing import Any

# The model, and the dtype the study ran it in.
STUDY_D_MODEL = 4096  # Llama-3-8B's residual width
STUDY_N_LAYERS = 32
STUDY_DTYPE = "bfloat16"

# Minimal k per text: the smallest k whose clipped model gives the continuation the unclipped
# model's log-probability (bisection, tolerance 0, bfloat16).
STUDY_MIN_K = {"meaning_of_life": 1886, "relativity": 3329, "launch": 2696, "translate": 2518}
# The band those four span, as a fraction of d_model (1886..3329 of 4096): (0.46, 0.81).
STUDY_BAND = (
    round(min(STUDY_MIN_K.values()) / STUDY_D_MODEL, 2),
    round(max(STUDY_MIN_K.values()) / STUDY_D_MODEL, 2),
)

# The clipping curve's description: chaotic below ~300 directions, within 1 nat of the unclipped
# log-probability from ~1500-2000 of 4096.
STUDY_CHAOTIC_K = 300
STUDY_CONVERGED_K = (1500, 2000)
STUDY_CHAOTIC = round(STUDY_CHAOTIC_K / STUDY_D_MODEL, 2)  # 0.07 of d
STUDY_CONVERGED = (
    round(STUDY_CONVERGED_K[0] / STUDY_D_MODEL, 2),
    round(STUDY_CONVERGED_K[1] / STUDY_D_MODEL, 2),
)  # 0.37-0.49

# The texts: sampled with at most 64 new tokens. Tokens (prompt + continuation, BOS included):
# only the first is known, its attention-only writes matrix had 2272 = 32 layers x 71 tokens rows.
STUDY_NEW_TOKENS = 64
STUDY_MAX_NEW_TOKENS = STUDY_NEW_TOKENS
STUDY_KNOWN_TOKENS = 71
STUDY_N_TOKENS: dict[str, int | None] = {
    "meaning_of_life": STUDY_KNOWN_TOKENS,
    "relativity": None,
    "launch": None,
    "translate": None,
}
# The one known text: 2 x 32 layers x 71 tokens = 4544 writes on 4096 dimensions (1.11
# per dimension).
STUDY_WRITES = 2 * STUDY_N_LAYERS * STUDY_KNOWN_TOKENS
STUDY_WRITES_PER_DIM = STUDY_WRITES / STUDY_D_MODEL

# Pairwise overlap of two texts' minimal subspaces: k_i k_j / d to about this relative error.
STUDY_OVERLAP_ERROR = 0.01


def pct(x: float) -> str:
    """``x`` as a whole percentage (0.46 -> ``46%``), as the study's numbers are quoted."""
    return f"{x:.0%}"


def study_band_text() -> str:
    """The band as a range of fractions: ``0.46-0.81``."""
    return f"{STUDY_BAND[0]:g}-{STUDY_BAND[1]:g}"


def pct_range(lo: float, hi: float) -> str:
    """Two fractions as a range of whole percentages: (0.46, 0.81) -> ``46-81%``."""
    return f"{pct(lo)[:-1]}-{pct(hi)}"


def study_band_pct() -> str:
    """The band as percentages: ``46-81%``."""
    return pct_range(*STUDY_BAND)


def add_study_band(fig: Any, **style: Any) -> Any:
    """Shade the band on a plotly figure's y axis (k / d_model): grey, 0.15 opaque, no edge;
    ``style``: ``add_hrect``'s keywords, added or overriding (annotation, row / col, opacity)."""
    shape = {"fillcolor": "grey", "opacity": 0.15, "line_width": 0, **style}
    return fig.add_hrect(y0=STUDY_BAND[0], y1=STUDY_BAND[1], **shape)


def study_min_k_pcts() -> str:
    """Every text's minimal k as a percentage of d, in the study's order: ``46%, 81%, 66%, 61%``."""
    return ", ".join(pct(k / STUDY_D_MODEL) for k in STUDY_MIN_K.values())
