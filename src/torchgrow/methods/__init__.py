"""Published growing methods, each a named composition of why/when/where/how with the paper's defaults.

Each method module holds a ``DESCRIPTION`` (why, when, where, how in words, for
reports) next to the function that builds its :class:`~torchgrow.Grower`, so
that the description cannot drift from the code.
"""

from .autogrow import DESCRIPTION as AUTOGROW_DESCRIPTION
from .autogrow import AutoGrow
from .cloning import HYPERCLONING_DESCRIPTION, LEMON, LEMON_DESCRIPTION, HyperCloning
from .compnet import DESCRIPTION as COMPNET_DESCRIPTION
from .compnet import CompNet
from .gradmax import DESCRIPTION as GRADMAX_DESCRIPTION
from .gradmax import GradMax
from .gradmax_tx import gradmax_ffn, gradmax_heads
from .msg import DESCRIPTION as MSG_DESCRIPTION
from .msg import MSG
from .nest import DESCRIPTION as NEST_DESCRIPTION
from .nest import NeST
from .scheduled import ScheduledGrowth
from .stacking import DESCRIPTION as G_STACK_DESCRIPTION
from .stacking import MIDAS, MIDAS_DESCRIPTION, GStack

__all__ = [
    "GradMax",
    "GRADMAX_DESCRIPTION",
    "NeST",
    "NEST_DESCRIPTION",
    "AutoGrow",
    "AUTOGROW_DESCRIPTION",
    "CompNet",
    "COMPNET_DESCRIPTION",
    "ScheduledGrowth",
    "GStack",
    "G_STACK_DESCRIPTION",
    "MIDAS",
    "MIDAS_DESCRIPTION",
    "MSG",
    "MSG_DESCRIPTION",
    "HyperCloning",
    "HYPERCLONING_DESCRIPTION",
    "LEMON",
    "LEMON_DESCRIPTION",
    "gradmax_ffn",
    "gradmax_heads",
]
