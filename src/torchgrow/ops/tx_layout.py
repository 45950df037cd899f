"""Where a transformer keeps its parts: blocks, attention projections, FFN, and the attributes
that must follow an edit.

The transformer edits (:mod:`torchgrow.ops.tx_width`, :mod:`torchgrow.ops.tx_depth`)
work on a :class:`TransformerParts`, which a *layout finder* reads off a model.
Finders are registered by the model's class (or its qualified name, for
libraries torchgrow does not import): built in are torchgrow's own
:class:`~torchgrow.models.GPT` and Hugging Face's GPT-2 and Llama (``...Model``
and ``...ForCausalLM``). :func:`register_layout` adds one for another family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import GrowthInputError

__all__ = [
    "AttentionParts",
    "BlockParts",
    "FFNParts",
    "TransformerParts",
    "find_layout",
    "register_layout",
]


Steps = list[tuple[Callable[[], None], Callable[[], None]]]


@dataclass
class AttentionParts:
    """The projections of one attention layer.

    Attributes
    ----------
    name : str
        Qualified name of the attention module.
    module : nn.Module
        The attention module.
    q, k, v : nn.Module or None
        Separate projections (``None`` when fused into ``qkv``).
    qkv : nn.Module or None
        A fused projection whose outputs are ``[q; k; v]`` (GPT-2's ``c_attn``).
    o : nn.Module
        The output projection.
    head_dim : int
        Width of one head.
    n_head, n_kv_head : int
        Query and key-value heads now.
    set_heads : callable
        ``set_heads(n_head, n_kv_head)`` returns ``(do, undo)`` pairs that update
        the attributes the module keeps about its head count.
    """

    name: str
    module: nn.Module
    q: nn.Module | None
    k: nn.Module | None
    v: nn.Module | None
    qkv: nn.Module | None
    o: nn.Module
    head_dim: int
    n_head: int
    n_kv_head: int
    set_heads: Callable[[int, int], Steps]


@dataclass
class FFNParts:
    """The projections of one FFN: ``down(act(up(x)))`` or ``down(act(gate(x)) * up(x))``."""

    name: str
    up: nn.Module
    gate: nn.Module | None
    down: nn.Module


@dataclass
class BlockParts:
    """One transformer block."""

    name: str
    module: nn.Module
    attn: AttentionParts
    ffn: FFNParts
    norms: list[nn.Module] = field(default_factory=list)


@dataclass
class TransformerParts:
    """The blocks of a transformer and how to keep its bookkeeping right after a depth edit.

    Attributes
    ----------
    container : str
        Qualified name of the ``nn.ModuleList`` holding the blocks.
    blocks : list of BlockParts
        In order.
    pre_ln : bool
        Whether blocks are pre-LN (a block with zero output projections is the identity).
    set_depth : callable
        ``set_depth(new_blocks)`` returns ``(do, undo)`` pairs that update what the
        model keeps about its depth (Hugging Face: ``config.num_hidden_layers``, each
        attention's ``layer_idx``).
    embeddings : list of nn.Module
        The modules that write the input into the stream (token, learned position).
    final_norm : nn.Module or None
        The norm before the head.
    head : nn.Module or None
        The LM head (``None`` for a base model without one).
    tied : bool
        Whether the head shares the token embedding's weight.
    set_width : callable
        ``set_width(d_model, n_head, n_kv_head, d_ff)`` returns ``(do, undo)`` pairs
        that update what the model keeps about its widths (Hugging Face's config).
    """

    container: str
    blocks: list[BlockParts]
    pre_ln: bool = True
    set_depth: Callable[[list[nn.Module]], Steps] = field(default=lambda blocks: [])
    embeddings: list[nn.Module] = field(default_factory=list)
    final_norm: nn.Module | None = None
    head: nn.Module | None = None
    tied: bool = False
    set_width: Callable[[int, int, int, int], Steps] = field(default=lambda d, h, kv, f: [])


Finder = Callable[[nn.Module], TransformerParts]

#: Layout finders by qualified class name; :func:`register_layout` adds to it.
LAYOUTS: dict[str, Finder] = {}


def register_layout(kind: type | str, finder: Finder) -> None:
    """Teach the transformer edits a model family.

    Parameters
    ----------
    kind : type or str
        The model's class, or its qualified name (``"package.module.Class"``) for
        a library torchgrow does not import; subclasses match too.
    finder : callable
        ``finder(model) -> TransformerParts``.
    """
    name = kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__qualname__}"
    LAYOUTS[name] = finder


def _builtin() -> dict[str, Finder]:
    from . import tx_families

    return tx_families.FINDERS


def find_layout(model: nn.Module) -> TransformerParts:
    """The parts of a transformer, read by the finder registered for its class.

    Raises
    ------
    GrowthInputError
        If no finder knows the model's class (the message names the known ones).
    """
    finders = {**_builtin(), **LAYOUTS}
    for cls in type(model).__mro__:
        finder = finders.get(f"{cls.__module__}.{cls.__qualname__}")
        if finder is not None:
            return finder(model)
    raise GrowthInputError(
        f"no transformer layout for {type(model).__qualname__}; known: "
        f"{', '.join(sorted(n.rsplit('.', 1)[-1] for n in finders))}. "
        "Register one with torchgrow.ops.register_layout(cls, finder)."
    )


def set_attr(owner: Any, name: str, value: Any) -> tuple[Callable[[], None], Callable[[], None]]:
    """A ``(do, undo)`` pair that sets a plain attribute (of a module or a config)."""
    had = hasattr(owner, name)
    old = getattr(owner, name, None)

    def do() -> None:
        setattr(owner, name, value)

    def undo() -> None:
        if had:
            setattr(owner, name, old)
        else:
            delattr(owner, name)

    return do, undo
