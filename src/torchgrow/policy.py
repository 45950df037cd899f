"""What every when/where/how/size policy has: a one-line description and checkpointable state."""

from __future__ import annotations

from typing import Any

__all__ = ["Policy"]


class Policy:
    """Base class of the growth policies (:mod:`~torchgrow.when`, :mod:`~torchgrow.where`,
    :mod:`~torchgrow.how`, :mod:`~torchgrow.size`).
    """

    def describe(self) -> str:
        """One line for reports."""
        return type(self).__name__

    def state_dict(self) -> dict[str, Any]:
        """Serializable state (for checkpoints); stateless policies return ``{}``."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
