"""Surgery: structural edits of ordinary ``nn.Module``s that carry the optimizer along.

Every edit validates all of its inputs first, then commits atomically: on any
error the model and the optimizer are exactly as they were. Each returns an
:class:`EditRecord`. Transformers have their own edits, which read the model's
layout (:func:`find_layout`): FFN width (:func:`grow_ffn`), attention heads
(:func:`add_heads`), every width at once by cloning (:func:`clone_width`; any widths by LEMON's average expansion, :func:`expand_width`), the residual stream
through masks (:func:`grow_hidden`) and depth (:func:`insert_identity_block`, :func:`stack_blocks`).
"""

from . import layers as _layers  # noqa: F401  (registers the built-in layer kinds)
from . import layers_more as _layers_more  # noqa: F401  (Embedding, RMSNorm, Conv1D...)
from .area import apply_input_mask, input_mask_of, masked_conv_macs, remove_input_mask
from .depth import Then, append_block, identity_conv, identity_linear, insert_after, insert_block
from .edit import Change, EditRecord
from .followers import follow, followers, unfollow
from .masks import (
    apply_mask,
    grow_connections,
    is_masked,
    mask_of,
    prune_connections,
    remove_mask,
    weight_parameter,
)
from .optim_policy import OptimizerPolicy
from .optim_state import SUPPORTED_OPTIMIZERS, check_consistent, flush_subnormal_state
from .ramp import Ramp
from .registry import LayerOps, Role, lookup, register, register_by_name, register_pass_through
from .tx_clone import clone_width
from .tx_depth import (
    g_stack_order,
    insert_identity_block,
    interleave_order,
    midas_order,
    stack_blocks,
)
from .tx_expand import expand_width
from .tx_heads import add_given_heads
from .tx_hidden import grow_hidden
from .tx_layout import TransformerParts, find_layout, register_layout
from .tx_width import add_heads, grow_ffn
from .units import DeadUnitWarning, FunctionChangeWarning, shrink, widen

__all__ = [
    "widen",
    "shrink",
    "insert_after",
    "append_block",
    "insert_block",
    "Then",
    "identity_linear",
    "identity_conv",
    "apply_mask",
    "apply_input_mask",
    "input_mask_of",
    "remove_input_mask",
    "masked_conv_macs",
    "grow_connections",
    "prune_connections",
    "remove_mask",
    "mask_of",
    "is_masked",
    "weight_parameter",
    "Change",
    "EditRecord",
    "LayerOps",
    "Role",
    "register",
    "register_by_name",
    "register_pass_through",
    "lookup",
    "SUPPORTED_OPTIMIZERS",
    "check_consistent",
    "flush_subnormal_state",
    "DeadUnitWarning",
    "FunctionChangeWarning",
    "grow_ffn",
    "add_heads",
    "clone_width",
    "expand_width",
    "Ramp",
    "OptimizerPolicy",
    "add_given_heads",
    "grow_hidden",
    "insert_identity_block",
    "stack_blocks",
    "g_stack_order",
    "midas_order",
    "interleave_order",
    "find_layout",
    "register_layout",
    "TransformerParts",
    "follow",
    "unfollow",
    "followers",
]
