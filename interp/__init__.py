"""resid-writes: how a language model uses its residual stream.

tokens -> writes -> basis (SVD) -> projections/ablations -> scores. One module per stage:

- ``models``: ``load_model`` (TransformerLens 4.x bridge, raw writes by default), ``model_info``
- ``tokens``: exact prompt/continuation split (``encode_prompt``, ``Completion``)
- ``writes``: ``capture_writes`` -> ``Writes`` (matrix + tidy index)
- ``basis``: ``write_basis`` -> ``Basis`` (SVD in float64)
- ``projection``: pure tensor functions (``project``, ``ablate``, ``prefix_masks``)
- ``hooks``: ``project_writes`` / ``ablate_directions`` context managers (batched subspaces)
- ``scoring``: ``continuation_logprob``
- ``generation``: ``sample_continuation``
- ``testing`` / ``pytest_plugin``: tiny random models and pytest fixtures for your own tests
"""

from .basis import Basis, write_basis
from .generation import sample_continuation, sample_continuations
from .hooks import WriteNorms, ablate_directions, project_writes
from .models import ModelInfo, ModelNotFoundError, default_model, load_model, model_info
from .projection import ablate, check_orthonormal, order_directions, prefix_masks, project
from .scoring import LogProbs, continuation_logprob, final_residual
from .tokens import Completion, TokenizerMismatchError, encode_prompt, tokenizer_fingerprint
from .writes import (
    KINDS,
    Writes,
    capture_writes,
    model_device,
    normalize_kinds,
    write_hook_name,
    write_hook_names,
)

__all__ = [
    "KINDS",
    "Basis",
    "Completion",
    "LogProbs",
    "ModelInfo",
    "ModelNotFoundError",
    "TokenizerMismatchError",
    "WriteNorms",
    "Writes",
    "ablate",
    "ablate_directions",
    "capture_writes",
    "check_orthonormal",
    "continuation_logprob",
    "default_model",
    "encode_prompt",
    "final_residual",
    "load_model",
    "model_device",
    "model_info",
    "normalize_kinds",
    "order_directions",
    "prefix_masks",
    "project",
    "project_writes",
    "sample_continuation",
    "sample_continuations",
    "tokenizer_fingerprint",
    "write_basis",
    "write_hook_name",
    "write_hook_names",
]

from .folding import folded_projection  # noqa: E402

__all__ += ["folded_projection"]
