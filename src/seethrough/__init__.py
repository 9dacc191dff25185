"""seethrough: inner interpretability of PyTorch networks, evaluated on planted ground truth.

The public entry points for reading and editing a model's insides are `Site`, `hooks`,
`capture` and `patch`; each taxonomy area (`weights`, `neurons`, `subnetworks`,
`representations`) builds on them.
"""

# The taxonomy areas are part of the public contract as attributes (seethrough.neurons.integrated_gradients,
# seethrough.representations.cka), so `import seethrough` makes them reachable.
from . import evidence, neurons, representations, subnetworks, weights
from .core import (
    ForwardError,
    HookNotFiredError,
    InputError,
    InputTypeError,
    LoadError,
    NotFittedError,
    SeethroughError,
    Site,
    SiteError,
    SiteNotFoundError,
    capture,
    hooks,
    patch,
    select_sites,
)

__version__ = "0.1.0"

__all__ = [
    "evidence", "neurons", "representations", "weights", "subnetworks",
    "Site", "select_sites", "hooks", "capture", "patch",
    "SeethroughError", "SiteNotFoundError", "SiteError", "HookNotFiredError", "InputError", "InputTypeError",
    "ForwardError", "LoadError", "NotFittedError",
]
