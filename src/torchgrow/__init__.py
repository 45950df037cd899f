"""torchgrow: grow neural networks while they train.

The library is organised by the four questions of the growing-networks
literature: *why* grow (:mod:`torchgrow.why`), *when* (:mod:`torchgrow.when`),
*where* (:mod:`torchgrow.where`) and *how* (:mod:`torchgrow.how`). Surgery
lives in :mod:`torchgrow.ops`, the engine in :class:`torchgrow.Grower`.
"""

from . import graph, how, ops, size, when, where
from .errors import (
    GraphError,
    GrowthInputError,
    OptimizerCarryError,
    TorchgrowError,
    UnsupportedLayerError,
)
from .grower import Grower, GrowthEvent

__version__ = "0.1.0"

__all__ = [
    "Grower",
    "GrowthEvent",
    "graph",
    "how",
    "ops",
    "size",
    "when",
    "where",
    "TorchgrowError",
    "GrowthInputError",
    "GraphError",
    "UnsupportedLayerError",
    "OptimizerCarryError",
    "__version__",
]
