"""How the channels of units are laid out along one dimension of a tensor.

A dimension that carries channels has a *layout*: one unit's channels
(:class:`Leaf`), entries of fixed meaning (:class:`Fixed`: the model's input,
a constant), several laid side by side (:class:`Cat`, from ``torch.cat``), or
a flattened product (:class:`Prod`: ``flatten`` of ``C x H x W`` is
``Prod(Leaf(C), Fixed(H*W))``, of ``T x F`` it is ``Prod(Fixed(T), Leaf(F))``).
A consumer's layout, relative to one unit (:class:`Self` for that unit's
channels), says where the unit's columns are in the consumer's input and where
new ones go when it grows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Leaf", "Fixed", "Cat", "Prod", "Self", "Layout", "size", "leaves", "relative"]


@dataclass(frozen=True)
class Leaf:
    """The channels of one channel space (analysis-internal id)."""

    space: int


@dataclass(frozen=True)
class Self:
    """The channels of the unit a consumer's layout is relative to."""


@dataclass(frozen=True)
class Fixed:
    """``n`` entries whose number cannot change."""

    n: int


@dataclass(frozen=True)
class Cat:
    """Layouts side by side."""

    parts: tuple[Layout, ...]


@dataclass(frozen=True)
class Prod:
    """Flattened product: index ``i * size(inner) + j``."""

    outer: Layout
    inner: Layout


Layout = Leaf | Self | Fixed | Cat | Prod


def size(layout: Layout, width: dict[int, int] | int) -> int:
    """Number of entries; ``width`` is a unit's width (for Self) or space -> width (for Leaf)."""
    if isinstance(layout, Fixed):
        return layout.n
    if isinstance(layout, Self):
        return int(width)  # type: ignore[arg-type]
    if isinstance(layout, Leaf):
        return width[layout.space]  # type: ignore[index]
    if isinstance(layout, Cat):
        return sum(size(p, width) for p in layout.parts)
    return size(layout.outer, width) * size(layout.inner, width)


def leaves(layout: Layout) -> list[int]:
    """The spaces a layout holds, in order (with repeats)."""
    if isinstance(layout, Leaf):
        return [layout.space]
    if isinstance(layout, Cat):
        return [s for p in layout.parts for s in leaves(p)]
    if isinstance(layout, Prod):
        return leaves(layout.outer) + leaves(layout.inner)
    return []


def relative(layout: Layout, is_self: Callable[[int], bool], width: dict[int, int]) -> Layout:
    """``layout`` seen from one unit: leaves with ``is_self(space)`` become :class:`Self`,
    the others :class:`Fixed` of their width."""
    if isinstance(layout, Leaf):
        return Self() if is_self(layout.space) else Fixed(width[layout.space])
    if isinstance(layout, Cat):
        return Cat(tuple(relative(p, is_self, width) for p in layout.parts))
    if isinstance(layout, Prod):
        return Prod(relative(layout.outer, is_self, width), relative(layout.inner, is_self, width))
    return layout


def simple_factor(layout: Layout) -> int | None:
    """``f`` when a relative layout is the unit's channels, each repeated ``f`` times in a row.

    ``Self`` is factor 1; ``Prod(Self, Fixed(f))`` (conv -> flatten) is ``f``;
    anything else (a cat, a flatten with the channels inside) is ``None``.
    """
    if isinstance(layout, Self):
        return 1
    if isinstance(layout, Prod) and isinstance(layout.outer, Self):
        if isinstance(layout.inner, Fixed):
            return layout.inner.n
    return None


def keys(layout: Layout, width: int) -> list[tuple]:
    """One key per entry, equal for the same entry before and after the unit grows."""
    if isinstance(layout, Self):
        return [("u", c) for c in range(width)]
    if isinstance(layout, Fixed):
        return [("f", i) for i in range(layout.n)]
    if isinstance(layout, Cat):
        return [(i, k) for i, p in enumerate(layout.parts) for k in keys(p, width)]
    if isinstance(layout, Prod):
        inner = keys(layout.inner, width)
        return [(a, b) for a in keys(layout.outer, width) for b in inner]
    raise TypeError(f"not a relative layout: {layout!r}")


def channel_of(key: tuple) -> int | None:
    """The unit channel an entry belongs to (``None``: not the unit's)."""
    if len(key) == 2 and key[0] == "u":
        return key[1]
    if len(key) == 2 and key[0] == "f":
        return None
    for part in key:
        if isinstance(part, tuple):
            c = channel_of(part)
            if c is not None:
                return c
    return None


def self_count(layout: Layout) -> int:
    """How many times the unit's channels occur in a relative layout."""
    if isinstance(layout, Self):
        return 1
    if isinstance(layout, Cat):
        return sum(self_count(p) for p in layout.parts)
    if isinstance(layout, Prod):
        return self_count(layout.outer) + self_count(layout.inner)
    return 0


def entries_per_channel(layout: Layout, width: int) -> int:
    """Entries each unit channel has in the layout (the flatten factor)."""
    n = sum(1 for k in keys(layout, width) if channel_of(k) == 0)
    return n
