"""How new units are initialised.

- :mod:`~torchgrow.how.base`: the :class:`How` interface, layout helpers, ``Zero``, ``Random``;
- :mod:`~torchgrow.how.gradmax`: ``GradMax`` and its paper's baselines ``GradMaxOpt``, ``LossDescent``;
- :mod:`~torchgrow.how.nest`: NeST's ``NeSTNeuron`` (Policy 2) and ``NeSTFeatureMap`` (Policy 3);
- :mod:`~torchgrow.how.autogrow`: AutoGrow's new-block initialisers ``ZeroInit``, ``GauInit``,
  ``UniInit``, ``AdamInit``, ``DefaultInit``;
- :mod:`~torchgrow.how.compnet`: CompNet's exact new layers (identity, morphism equation) and
  its group-lasso proximal step.
"""

from .autogrow import AdamInit, BlockInit, DefaultInit, GauInit, UniInit, ZeroInit
from .base import (
    How,
    Init,
    Random,
    Zero,
    fan_in_vectors,
    fan_out_block,
    fan_out_vectors,
    fan_out_vectors_of_block,
    target_norm,
)
from .compnet import identity_layer, morphism_factors, prox_group_lasso, unit_group_norms
from .descent import GradMaxOpt, LossDescent
from .gradmax import (
    GradMax,
    GradMaxBatchNormWarning,
    GradMaxFallbackWarning,
    GradMaxRankWarning,
)
from .nest import NeSTFeatureMap, NeSTNeuron
from .pair_matrix import conv_pair_matrix, dense_pair_matrix, fix_signs

__all__ = [
    "Init",
    "How",
    "Zero",
    "Random",
    "fan_in_vectors",
    "fan_out_vectors",
    "fan_out_block",
    "fan_out_vectors_of_block",
    "target_norm",
    "GradMax",
    "GradMaxOpt",
    "LossDescent",
    "GradMaxBatchNormWarning",
    "GradMaxFallbackWarning",
    "GradMaxRankWarning",
    "dense_pair_matrix",
    "conv_pair_matrix",
    "fix_signs",
    "NeSTNeuron",
    "NeSTFeatureMap",
    "BlockInit",
    "DefaultInit",
    "ZeroInit",
    "GauInit",
    "UniInit",
    "AdamInit",
    "identity_layer",
    "morphism_factors",
    "unit_group_norms",
    "prox_group_lasso",
]
