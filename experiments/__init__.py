"""The study's experiments, one module each; every ``run_*`` returns a typed result with tidy
tables, settings and metadata, ``.save(dir)`` and ``.figures()``. Experiments of your own plug in
through ``register`` (``experiments.registry``). ``load_run(folder)`` reads a run folder back
as those result objects (``experiments.runs``)."""

from .base import ExperimentResult, Text, as_text, basis_for, prepare, run_meta
from .clip_variants import ClipVariant, ClipVariantsResult, run_clip_variants
from .clipped_generation import ClippedGenerationResult, run_clipped_generation
from .clipping import ClippingResult, run_clipping
from .exact_importance import ExactImportanceResult, run_exact_importance
from .hessian_ranking import HessianRankingResult, run_hessian_ranking
from .method_sensitivity import MethodSensitivityResult, run_method_sensitivity
from .minimal_subspace import MinimalSubspaceResult, run_minimal_subspace
from .orderings import OrderingsResult, run_orderings
from .overlap import OverlapResult, Subspace, run_overlap
from .prompts import PROMPTS, REPLICATION_PROMPTS, get_continuation, load_prompts_file
from .registry import Plugin, register
from .runs import Run, load_run
from .single_direction import SingleDirectionResult, run_single_direction
from .spectrum import SpectrumResult, run_spectrum
from .study_procedure import StudyProcedureResult, run_study_procedure
from .text_length import TextLengthResult, run_text_length

__all__ = [
    "PROMPTS",
    "REPLICATION_PROMPTS",
    "ClipVariant",
    "ClipVariantsResult",
    "ClippedGenerationResult",
    "ClippingResult",
    "ExactImportanceResult",
    "ExperimentResult",
    "HessianRankingResult",
    "MethodSensitivityResult",
    "MinimalSubspaceResult",
    "OrderingsResult",
    "OverlapResult",
    "Plugin",
    "Run",
    "SingleDirectionResult",
    "SpectrumResult",
    "StudyProcedureResult",
    "Subspace",
    "Text",
    "TextLengthResult",
    "as_text",
    "basis_for",
    "get_continuation",
    "load_prompts_file",
    "load_run",
    "prepare",
    "register",
    "run_clip_variants",
    "run_clipped_generation",
    "run_clipping",
    "run_exact_importance",
    "run_hessian_ranking",
    "run_method_sensitivity",
    "run_minimal_subspace",
    "run_orderings",
    "run_meta",
    "run_overlap",
    "run_single_direction",
    "run_spectrum",
    "run_study_procedure",
    "run_text_length",
]
