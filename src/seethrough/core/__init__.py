"""seethrough.core: sites, the one hooking door, inputs, batching, streaming statistics, safe I/O.

Imports only torch and numpy (plus safetensors for I/O and jaxtyping for shape annotations).
"""

from .batching import batches, sharded_pass, shards, stream
from .checks import check_float, check_int
from .errors import (
    ForwardError,
    HookNotFiredError,
    InputError,
    InputTypeError,
    LoadError,
    NotFittedError,
    SeethroughError,
    SiteError,
    SiteNotFoundError,
)
from .hooks import Callback, Hooks, capture, hooks, patch
from .inputs import call_model, validate_inputs
from .inspection import ModelSummary, ModuleRow, inspect_model
from .interventions import (
    ABLATIONS,
    Ablation,
    add_direction,
    along_units,
    check_ablation,
    check_position_mask,
    mean_ablation,
    patch_each,
    position_mask,
    project_out,
    replace_slice,
    resample_ablation,
    resample_draws,
    resample_indices,
    unit_means,
    unit_values,
    zero_ablation,
)
from .io import (
    ArrayData,
    atomic_write,
    cache_dir,
    load_data,
    load_factory,
    load_model,
    load_tensors,
    load_weights,
    save_tensors,
)
from .modes import eval_mode
from .quantiles import (
    Histogram,
    OrderStatistics,
    QuantileRanks,
    RunningRange,
    exact_quantiles,
    quantile_ranks,
)
from .results import Result, jsonable, new_figure
from .sites import Site, select_sites
from .stats import Mergeable, RunningBlockCovariance, RunningCovariance, RunningMean, TopK
from .types import Inputs

__all__ = [
    "eval_mode",
    "Site", "select_sites", "hooks", "Hooks", "Callback", "capture", "patch",
    "Inputs", "validate_inputs", "call_model", "batches", "stream",
    "Ablation", "ABLATIONS", "check_ablation", "along_units", "unit_means", "unit_values", "resample_indices",
    "zero_ablation", "mean_ablation", "resample_ablation", "replace_slice", "project_out", "add_direction",
    "patch_each", "position_mask", "check_position_mask", "resample_draws",
    "shards", "sharded_pass", "Mergeable", "RunningMean", "RunningCovariance", "RunningBlockCovariance", "TopK",
    "RunningRange", "Histogram", "OrderStatistics", "QuantileRanks", "quantile_ranks", "exact_quantiles",
    "ModelSummary", "ModuleRow", "inspect_model",
    "Result", "jsonable", "new_figure", "check_int", "check_float",
    "ArrayData", "atomic_write", "cache_dir", "load_factory", "load_model", "load_weights", "load_data", "save_tensors", "load_tensors",
    "SeethroughError", "SiteNotFoundError", "SiteError", "HookNotFiredError", "InputError", "InputTypeError",
    "ForwardError", "LoadError", "NotFittedError",
]
