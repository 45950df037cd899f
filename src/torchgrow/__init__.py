"""torchgrow: grow neural networks while they train.

The library is organised by the four questions of the growing-networks
literature: *why* grow (:mod:`torchgrow.why`), *when* (:mod:`torchgrow.when`),
*where* (:mod:`torchgrow.where`) and *how* (:mod:`torchgrow.how`). Surgery
lives in :mod:`torchgrow.ops`, the engine in :class:`torchgrow.Grower`.
"""

from . import data, graph, how, methods, models, ops, size, train, when, where, why
from .errors import (
    GraphError,
    GrowthInputError,
    OptimizerCarryError,
    TorchgrowError,
    UnsupportedLayerError,
)
from .grower import Grower, GrowthEvent
from .io import load, save

__version__ = "0.1.0"

__all__ = [
    "Grower",
    "GrowthEvent",
    "save",
    "load",
    "data",
    "graph",
    "how",
    "methods",
    "models",
    "ops",
    "size",
    "train",
    "when",
    "where",
    "why",
    "TorchgrowError",
    "GrowthInputError",
    "GraphError",
    "UnsupportedLayerError",
    "OptimizerCarryError",
    "__version__",
]
