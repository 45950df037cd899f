"""Assembling growable units from the channel spaces an analysis found.

The second half of :mod:`torchgrow.graph.forward`: ties between layers that
share a parameter, the checks that make a space growable (nothing blocked or
fixed, someone reads it, widths agree), each consumer's layout relative to its
unit, and ``Wiring.after_widen``'s cheap update.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from ..ops.registry import lookup
from .layout import (
    Cat,
    Layout,
    Leaf,
    Prod,
    entries_per_channel,
    leaves,
    relative,
    self_count,
    simple_factor,
    size,
)
from .units import Consumer, GrowableUnit, Wiring, _Space

if TYPE_CHECKING:
    from .units import _Spaces

__all__: list[str] = []


class _Assembly:
    """Mixin of the analysis: what it needs is set by :class:`~torchgrow.graph.forward._Analysis`."""

    model: nn.Module
    modules: dict[str, nn.Module]
    sp: _Spaces
    widths: dict[int, int]
    order: list[str]
    out_space: dict[str, int]
    in_layout: dict[str, Layout | None]

    # ---- result
    def result(self) -> Wiring:
        units: list[GrowableUnit] = []
        blocked: dict[str, str] = {}
        seen: set[int] = set()
        self._tie(_shared_parameters(self.model))
        self.root_of: dict[str, int] = {}
        for prod in self.order:
            root = self.sp.find(self.out_space[prod])
            if root in seen:
                continue
            seen.add(root)
            s = self.sp.data[root]
            why = s.why_not()
            unit = None if why else self._unit(root, s, blocked)
            if why:
                for p in s.producers:
                    blocked[p] = why
            elif unit is not None:
                units.append(unit)
                self.root_of[unit.name] = root
        return Wiring(units, blocked, _regrow=self.regrow)

    def _tie(self, shared: dict[int, list[tuple[str, str]]]) -> None:
        """A parameter held by several layers ties what each of its dims means for each.

        ``fc3.weight = fc2.weight`` makes fc2's and fc3's outputs the same channels,
        and their inputs too; an embedding tied to an LM head makes the
        embedding's channels the head's inputs. Holders that cannot follow (a
        layer kind torchgrow does not know, an input laid out by a cat) block.
        """
        for holders in shared.values():
            per_dim: dict[int, list[Layout | None]] = {}
            problem = None
            for mname, attr in holders:
                m = self.modules[mname]
                ops = lookup(m)
                if ops is None or attr not in ("weight", "bias"):
                    problem = f"{mname}.{attr} is shared with a module torchgrow cannot edit"
                    continue
                out_s = self.out_space.get(mname)
                if out_s is not None:
                    per_dim.setdefault(0 if attr == "bias" else ops.out_dim, []).append(Leaf(out_s))
                if attr == "weight" and mname in self.in_layout:
                    per_dim.setdefault(ops.in_dim, []).append(self.in_layout[mname])
            layouts = [lay for lays in per_dim.values() for lay in lays if lay is not None]
            names = [f"{m}.{a}" for m, a in holders]
            if problem:
                self._block(layouts, f"tied weights {names}: {problem}")
                continue
            for lays in per_dim.values():
                known = [lay for lay in lays if lay is not None]
                if len(known) < len(lays):
                    self._fix_any(
                        known, f"tied weights {names}: one holder reads data of fixed width"
                    )
                elif any(not isinstance(lay, Leaf) for lay in known):
                    self._block(
                        known, f"tied weights {names}: a holder's input is laid out by a cat"
                    )
                else:
                    for lay in known[1:]:
                        if self.unify(known[0], lay) is None:
                            self._block(
                                known, f"tied weights {names} hold channels of different widths"
                            )

    def regrow(self, units: list[GrowableUnit], grown: GrowableUnit, k: int) -> list[GrowableUnit]:
        """The units after ``grown`` got ``k`` channels (see ``Wiring.after_widen``)."""
        root = self.root_of[grown.name]
        for i in self.widths:
            if self.sp.find(i) == root:
                self.widths[i] += k
        out = []
        for u in units:
            r = self.root_of[u.name]
            s = self.sp.data[r]
            touched = r == root or any(
                self.sp.find(leaf) == root
                for _, lay in s.consumers
                if not isinstance(lay, Leaf)
                for leaf in leaves(lay)
            )
            new = self._unit(r, s, {}) if touched else u
            if new is None:
                raise AssertionError(f"unit {u.name!r} no longer fits its wiring after the edit")
            out.append(new)
        return out

    def _unit(self, root: int, s: _Space, blocked: dict[str, str]) -> GrowableUnit | None:
        widths = {p: lookup(self.modules[p]).out_width(self.modules[p]) for p in s.producers}

        def fail(msg: str) -> None:
            for p in s.producers:
                blocked[p] = msg

        if len(set(widths.values())) != 1:
            fail(f"producers tied by an element-wise operation differ in width: {widths}")
            return None
        width = next(iter(widths.values()))
        own = {i: (w if self.sp.find(i) != root else width) for i, w in self.widths.items()}
        consumers: list[Consumer] = []
        for name, lay in s.consumers:
            m = self.modules[name]
            rel = relative(lay, lambda i: self.sp.find(i) == root, own)
            if _self_squared(rel):
                fail(f"consumer {name!r} reads a product of the unit's channels with themselves")
                return None
            n_in = lookup(m).in_width(m)
            if size(rel, width) != n_in:
                fail(f"consumer {name!r} has {n_in} inputs, its input carries {size(rel, width)}")
                return None
            f = simple_factor(rel)
            if f is not None:
                consumers.append(Consumer(name, f))
            else:
                consumers.append(Consumer(name, entries_per_channel(rel, width), layout=rel))
        rank = {name: i for i, name in enumerate(self.order)}
        tensors = tuple({t[0]: t for t in s.tensors}.values())
        return GrowableUnit(
            producers=tuple(sorted(dict.fromkeys(s.producers), key=rank.__getitem__)),
            per_channel=tuple(dict.fromkeys(s.per_channel)),
            consumers=tuple(dict.fromkeys(consumers)),
            width=width,
            between=tuple(s.between),
            tensors=tensors,
        )


def _self_squared(rel: Layout) -> bool:
    """A flatten of the unit's channels against themselves: no column order can grow it."""
    if isinstance(rel, Prod):
        both = self_count(rel.outer) > 0 and self_count(rel.inner) > 0
        return both or _self_squared(rel.outer) or _self_squared(rel.inner)
    if isinstance(rel, Cat):
        return any(_self_squared(p) for p in rel.parts)
    return False


def _shared_parameters(model: nn.Module) -> dict[int, list[tuple[str, str]]]:
    """Parameter id -> (module, attribute) holding it, for parameters held by several modules."""
    holders: dict[int, list[tuple[str, str]]] = {}
    seen: set[int] = set()
    for mname, m in model.named_modules(remove_duplicate=False):
        if id(m) in seen:
            continue
        seen.add(id(m))
        for attr, p in m._parameters.items():
            if p is not None:
                holders.setdefault(id(p), []).append((mname, attr))
    return {k: v for k, v in holders.items() if len(v) > 1}
