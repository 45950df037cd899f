"""Published growing methods, each a named composition of why/when/where/how with the paper's defaults.

Each method module holds a ``DESCRIPTION`` (why, when, where, how in words, for
reports) next to the function that builds its :class:`~torchgrow.Grower`, so
that the description cannot drift from the code.
"""

from .autogrow import DESCRIPTION as AUTOGROW_DESCRIPTION
from .autogrow import AutoGrow
from .compnet import DESCRIPTION as COMPNET_DESCRIPTION
from .compnet import CompNet
from .gradmax import DESCRIPTION as GRADMAX_DESCRIPTION
from .gradmax import GradMax
from .nest import DESCRIPTION as NEST_DESCRIPTION
from .nest import NeST

__all__ = [
    "GradMax",
    "GRADMAX_DESCRIPTION",
    "NeST",
    "NEST_DESCRIPTION",
    "AutoGrow",
    "AUTOGROW_DESCRIPTION",
    "CompNet",
    "COMPNET_DESCRIPTION",
]
