"""Residual MLPs in stages (AutoGrow on vectors)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from ._layers import _check_activation, activation_module, scale_width


class ResidualLinearBlock(nn.Module):
    """A fully connected residual block, the MLP counterpart of :class:`BasicBlock`.

    ``act2(bn2(fc2(act1(bn1(fc1(x))))) + shortcut(x))``; the linear layers have
    no bias (a batch norm follows each).

    Parameters
    ----------
    in_features : int
        Input width.
    out_features : int
        Output width (also the inner width).
    activation : str, default "relu"
        Activation (see :func:`activation_module`).

    Attributes
    ----------
    shortcut : nn.Module
        :class:`torch.nn.Identity` when ``in_features == out_features``, else
        an :class:`torch.nn.Sequential` of ``fc`` (linear, no bias) and ``bn``.
    """

    residual = True
    """Ends in a residual addition: ``last_bn`` ends the residual branch."""

    def __init__(self, in_features: int, out_features: int, activation: str = "relu") -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.fc1 = nn.Linear(in_features, out_features, bias=False)
        self.bn1 = nn.BatchNorm1d(out_features)
        self.act1 = activation_module(activation)
        self.fc2 = nn.Linear(out_features, out_features, bias=False)
        self.bn2 = nn.BatchNorm1d(out_features)
        if in_features == out_features:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                OrderedDict(
                    [
                        ("fc", nn.Linear(in_features, out_features, bias=False)),
                        ("bn", nn.BatchNorm1d(out_features)),
                    ]
                )
            )
        self.act2 = activation_module(activation)

    @property
    def last_bn(self) -> nn.BatchNorm1d:
        """The batch norm that ends the residual branch."""
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Parameters
        ----------
        x : Tensor
            ``(N, in_features)``.

        Returns
        -------
        Tensor
            ``(N, out_features)``.
        """
        out = self.act1(self.bn1(self.fc1(x)))
        out = self.bn2(self.fc2(out))
        out = out + self.shortcut(x)
        return self.act2(out)


class ResidualMLP(nn.Module):
    """A residual MLP: a linear stem, stages of :class:`ResidualLinearBlock`, one linear layer.

    Inputs of any shape ``(N, ...)`` are flattened first. The first block of
    each stage maps the previous width to the stage's width (with a projection
    shortcut where they differ); the others keep it. AutoGrow grows depth by
    appending blocks to the end of a stage, see :meth:`new_block`.

    Parameters
    ----------
    blocks : sequence of int, default (1, 1, 1)
        Blocks per stage (each at least 1).
    widths : sequence of int, default (64, 64, 64)
        Width per stage (before ``width_mult``); the stem has the first
        stage's width.
    in_features : int
        Input width (after flattening).
    num_classes : int, default 10
        Output width.
    width_mult : float, default 1.0
        Multiplier of every hidden width.
    activation : str, default "relu"
        Activation (see :func:`activation_module`).

    Attributes
    ----------
    flatten : nn.Flatten
        Flattens the input from dimension 1.
    stem : nn.Sequential
        ``fc`` (linear, no bias), ``bn``, ``act``.
    stage1, stage2, ... : nn.Sequential
        The stages; their names are in ``stage_names``.
    fc : nn.Linear
        The classifier.
    activation : str
        The activation's name.
    stage_names : list of str
        ``["stage1", "stage2", ...]``.

    Raises
    ------
    ValueError
        If ``blocks`` and ``widths`` differ in length or are empty, a stage
        has no block, or ``activation`` is unknown.
    """

    def __init__(
        self,
        blocks: Sequence[int] = (1, 1, 1),
        widths: Sequence[int] = (64, 64, 64),
        *,
        in_features: int,
        num_classes: int = 10,
        width_mult: float = 1.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        blocks, widths = [int(b) for b in blocks], [int(w) for w in widths]
        if not blocks or len(blocks) != len(widths):
            raise ValueError(
                f"blocks and widths need the same, non-zero length; got {blocks}, {widths}"
            )
        if any(b < 1 for b in blocks):
            raise ValueError(f"every stage needs at least one block, got {blocks}")
        _check_activation(activation)
        self.activation = activation
        sizes = [scale_width(w, width_mult) for w in widths]
        self.flatten = nn.Flatten()
        self.stem = nn.Sequential(
            OrderedDict(
                [
                    ("fc", nn.Linear(in_features, sizes[0], bias=False)),
                    ("bn", nn.BatchNorm1d(sizes[0])),
                    ("act", activation_module(activation)),
                ]
            )
        )
        self.stage_names: list[str] = []
        prev = sizes[0]
        for i, (n_blocks, width) in enumerate(zip(blocks, sizes, strict=True), start=1):
            stage = nn.Sequential(
                *[
                    ResidualLinearBlock(prev if j == 0 else width, width, activation)
                    for j in range(n_blocks)
                ]
            )
            name = f"stage{i}"
            self.add_module(name, stage)
            self.stage_names.append(name)
            prev = width
        self.fc = nn.Linear(prev, num_classes)

    @property
    def arch(self) -> tuple[int, ...]:
        """Blocks per stage, read from the stages as they are now."""
        return tuple(len(getattr(self, name)) for name in self.stage_names)

    def stage_width(self, stage_name: str) -> int:
        """Output width of a stage.

        Parameters
        ----------
        stage_name : str
            One of :attr:`stage_names`.

        Returns
        -------
        int
            The ``out_features`` of the stage's last block.

        Raises
        ------
        ValueError
            If ``stage_name`` is not a stage.
        """
        self._check_stage(stage_name)
        return int(getattr(self, stage_name)[-1].out_features)

    def new_block(self, stage_name: str, *, zero_init: bool = False) -> ResidualLinearBlock:
        """A fresh block to append to the end of a stage.

        The block has the stage's width in and out (so an identity shortcut),
        the model's activation, and the device and dtype of the stage's
        parameters. It is not added to the model.

        Parameters
        ----------
        stage_name : str
            One of :attr:`stage_names`.
        zero_init : bool, default False
            Zero the scale *and* the shift of the block's last batch norm, so
            its residual branch outputs exactly 0 (in training mode too, where
            batch statistics are used) and the block computes ``act(x)``; with
            ``"relu"`` or ``"relu1"`` that is ``x`` on the stage's
            (non-negative) output, so appending it leaves the network's
            function unchanged.

        Returns
        -------
        ResidualLinearBlock
            The block.

        Raises
        ------
        ValueError
            If ``stage_name`` is not a stage.
        """
        width = self.stage_width(stage_name)
        block = ResidualLinearBlock(width, width, self.activation)
        if zero_init:
            nn.init.zeros_(block.last_bn.weight)
            nn.init.zeros_(block.last_bn.bias)
        ref = next(getattr(self, stage_name).parameters())
        return block.to(device=ref.device, dtype=ref.dtype)

    def _check_stage(self, stage_name: str) -> None:
        if stage_name not in self.stage_names:
            raise ValueError(
                f"unknown stage {stage_name!r}; valid names: {', '.join(self.stage_names)}"
            )

    def forward(self, x: Tensor) -> Tensor:
        """Classify a batch.

        Parameters
        ----------
        x : Tensor
            ``(N, ...)`` with ``in_features`` elements per sample.

        Returns
        -------
        Tensor
            Logits, ``(N, num_classes)``.
        """
        x = self.stem(self.flatten(x))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(x)


def residual_mlp(
    blocks: Sequence[int] = (1, 1, 1),
    widths: Sequence[int] = (64, 64, 64),
    *,
    in_features: int,
    num_classes: int = 10,
    width_mult: float = 1.0,
    activation: str = "relu",
) -> ResidualMLP:
    """Build a :class:`ResidualMLP`.

    Parameters
    ----------
    blocks : sequence of int, default (1, 1, 1)
        Blocks per stage.
    widths : sequence of int, default (64, 64, 64)
        Width per stage.
    in_features : int
        Input width (after flattening).
    num_classes : int, default 10
        Output width.
    width_mult : float, default 1.0
        Multiplier of every hidden width.
    activation : str, default "relu"
        Activation (see :func:`activation_module`).

    Returns
    -------
    ResidualMLP
        The network.
    """
    return ResidualMLP(
        blocks,
        widths,
        in_features=in_features,
        num_classes=num_classes,
        width_mult=width_mult,
        activation=activation,
    )
