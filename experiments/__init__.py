"""The study's experiments, one module each; every ``run_*`` returns a typed result with tidy
tables, settings and metadata, ``.save(dir)`` and ``.figures()``."""

from .base import ExperimentResult, basis_for
from .clipped_generation import ClippedGenerationResult, run_clipped_generation
from .clipping import ClippingResult, run_clipping
from .minimal_subspace import MinimalSubspaceResult, bisect_min_k, run_minimal_subspace, sweep_min_k
from .orderings import OrderingsResult, run_orderings
from .overlap import OverlapResult, Subspace, run_overlap
from .prompts import PROMPTS, get_continuation
from .single_direction import SingleDirectionResult, run_single_direction
from .spectrum import SpectrumResult, run_spectrum

__all__ = [
    "PROMPTS",
    "ClippedGenerationResult",
    "ClippingResult",
    "ExperimentResult",
    "MinimalSubspaceResult",
    "OrderingsResult",
    "OverlapResult",
    "SingleDirectionResult",
    "SpectrumResult",
    "Subspace",
    "basis_for",
    "bisect_min_k",
    "get_continuation",
    "run_clipped_generation",
    "run_clipping",
    "run_minimal_subspace",
    "run_orderings",
    "run_overlap",
    "run_single_direction",
    "run_spectrum",
    "sweep_min_k",
]
