"""CIFAR-style ResNets in stages (AutoGrow): basic and bottleneck blocks."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from ._layers import _check_activation, activation_module, scale_width


def _shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    """Identity when shapes match, else a strided 1x1 projection and batch norm (option B)."""
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(
        OrderedDict(
            [
                ("conv", nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)),
                ("bn", nn.BatchNorm2d(out_ch)),
            ]
        )
    )


class BasicBlock(nn.Module):
    """The two-convolution residual block of ResNet-18/34 and the CIFAR ResNets.

    ``act2(bn2(conv2(act1(bn1(conv1(x))))) + shortcut(x))``.

    Parameters
    ----------
    in_ch : int
        Input channels.
    out_ch : int
        Output channels (also the inner width).
    stride : int, default 1
        Stride of ``conv1`` and of the shortcut projection.
    activation : str, default "relu"
        Activation (see :func:`activation_module`).
    """

    residual = True
    """Ends in a residual addition: ``last_bn`` ends the residual branch."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, activation: str = "relu") -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_ch, out_ch, stride
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.act1 = activation_module(activation)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = _shortcut(in_ch, out_ch, stride)
        self.act2 = activation_module(activation)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The batch norm that ends the residual branch."""
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Parameters
        ----------
        x : Tensor
            ``(N, in_ch, H, W)``.

        Returns
        -------
        Tensor
            ``(N, out_ch, H / stride, W / stride)``.
        """
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return self.act2(out)


class Bottleneck(nn.Module):
    """The 1x1-3x3-1x1 residual block of ResNet-50 and the deep CIFAR ResNets.

    ``act3(bn3(conv3(act2(bn2(conv2(act1(bn1(conv1(x)))))))) + shortcut(x))``
    with inner width ``max(1, out_ch // 4)``.

    Parameters
    ----------
    in_ch : int
        Input channels.
    out_ch : int
        Output channels.
    stride : int, default 1
        Stride of the 3x3 convolution and of the shortcut projection.
    activation : str, default "relu"
        Activation (see :func:`activation_module`).
    """

    residual = True
    """Ends in a residual addition: ``last_bn`` ends the residual branch."""

    expansion = 4

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, activation: str = "relu") -> None:
        super().__init__()
        inner = max(1, out_ch // self.expansion)
        self.in_channels, self.out_channels, self.stride = in_ch, out_ch, stride
        self.conv1 = nn.Conv2d(in_ch, inner, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.act1 = activation_module(activation)
        self.conv2 = nn.Conv2d(inner, inner, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.act2 = activation_module(activation)
        self.conv3 = nn.Conv2d(inner, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.shortcut = _shortcut(in_ch, out_ch, stride)
        self.act3 = activation_module(activation)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The batch norm that ends the residual branch."""
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Parameters
        ----------
        x : Tensor
            ``(N, in_ch, H, W)``.

        Returns
        -------
        Tensor
            ``(N, out_ch, H / stride, W / stride)``.
        """
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + self.shortcut(x)
        return self.act3(out)


_BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}


class CifarResNet(nn.Module):
    """A CIFAR-style ResNet: a 3x3 stem, stages of residual blocks, pooling, one linear layer.

    Stage 1 keeps the stem's resolution; every later stage halves it in its
    first block (stride 2, with a projection shortcut). AutoGrow grows depth
    by appending blocks to the end of a stage, see :meth:`new_block`.

    Parameters
    ----------
    blocks : sequence of int, default (1, 1, 1)
        Blocks per stage (each at least 1).
    channels : sequence of int, default (16, 32, 64)
        Output channels per stage (before ``width_mult``); the stem has the
        first stage's width.
    in_channels : int, default 3
        Input channels.
    num_classes : int, default 10
        Output width.
    block : str, default "basic"
        ``"basic"`` (:class:`BasicBlock`) or ``"bottleneck"``
        (:class:`Bottleneck`).
    width_mult : float, default 1.0
        Multiplier of every channel count.
    activation : str, default "relu"
        Activation (see :func:`activation_module`).

    Attributes
    ----------
    stem : nn.Sequential
        ``conv`` (3x3), ``bn``, ``act``.
    stage1, stage2, ... : nn.Sequential
        The stages; their names are in ``stage_names``.
    pool, flatten, fc : nn.Module
        Global average pool, flatten, classifier.
    block_kind : str
        ``"basic"`` or ``"bottleneck"``.
    activation : str
        The activation's name.
    stage_names : list of str
        ``["stage1", "stage2", ...]``.
    growth_layers : list of str
        The convolutions inside every block (``conv1``; ``conv1`` and
        ``conv2`` of a bottleneck), whose widths do not touch the residual
        streams: what :func:`torchgrow.methods.GradMax` grows by default, as
        the paper's WRN setting grows the first convolution of each block.

    Raises
    ------
    ValueError
        If ``blocks`` and ``channels`` differ in length or are empty, a stage
        has no block, or ``block`` or ``activation`` is unknown.
    """

    def __init__(
        self,
        blocks: Sequence[int] = (1, 1, 1),
        channels: Sequence[int] = (16, 32, 64),
        *,
        in_channels: int = 3,
        num_classes: int = 10,
        block: str = "basic",
        width_mult: float = 1.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        blocks, channels = [int(b) for b in blocks], [int(c) for c in channels]
        if not blocks or len(blocks) != len(channels):
            raise ValueError(
                f"blocks and channels need the same, non-zero length; got {blocks}, {channels}"
            )
        if any(b < 1 for b in blocks):
            raise ValueError(f"every stage needs at least one block, got {blocks}")
        if block not in _BLOCKS:
            raise ValueError(f"unknown block {block!r}; valid names: {', '.join(_BLOCKS)}")
        _check_activation(activation)
        self.block_kind = block
        self.activation = activation
        widths = [scale_width(c, width_mult) for c in channels]
        self.stem = nn.Sequential(
            OrderedDict(
                [
                    ("conv", nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)),
                    ("bn", nn.BatchNorm2d(widths[0])),
                    ("act", activation_module(activation)),
                ]
            )
        )
        self.stage_names: list[str] = []
        block_cls = _BLOCKS[block]
        prev = widths[0]
        for i, (n_blocks, width) in enumerate(zip(blocks, widths, strict=True), start=1):
            stride = 1 if i == 1 else 2
            stage = nn.Sequential(
                *[
                    block_cls(prev if j == 0 else width, width, stride if j == 0 else 1, activation)
                    for j in range(n_blocks)
                ]
            )
            name = f"stage{i}"
            self.add_module(name, stage)
            self.stage_names.append(name)
            prev = width
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(prev, num_classes)

    @property
    def growth_layers(self) -> list[str]:
        """The block-internal convolutions, read from the stages as they are now."""
        inner = ("conv1",) if self.block_kind == "basic" else ("conv1", "conv2")
        return [
            f"{name}.{i}.{conv}"
            for name in self.stage_names
            for i in range(len(getattr(self, name)))
            for conv in inner
        ]

    @property
    def arch(self) -> tuple[int, ...]:
        """Blocks per stage, read from the stages as they are now."""
        return tuple(len(getattr(self, name)) for name in self.stage_names)

    def stage_width(self, stage_name: str) -> int:
        """Output channels of a stage.

        Parameters
        ----------
        stage_name : str
            One of :attr:`stage_names`.

        Returns
        -------
        int
            The output channels of the stage's last block.
        """
        self._check_stage(stage_name)
        return int(getattr(self, stage_name)[-1].out_channels)

    def new_block(self, stage_name: str, *, zero_init: bool = False) -> nn.Module:
        """A fresh block to append to the end of a stage.

        The block has stride 1 and the stage's width in and out (so an
        identity shortcut), the model's block kind and activation, and the
        device and dtype of the stage's parameters. It is not added to the
        model.

        Parameters
        ----------
        stage_name : str
            One of :attr:`stage_names`.
        zero_init : bool, default False
            Zero the scale of the block's last batch norm, so its residual
            branch outputs 0 and the block computes ``act(x)``; with ``"relu"``
            or ``"relu1"`` that is ``x`` on the stage's (non-negative) output,
            so appending it leaves the network's function unchanged.

        Returns
        -------
        nn.Module
            A :class:`BasicBlock` or :class:`Bottleneck`.

        Raises
        ------
        ValueError
            If ``stage_name`` is not a stage.
        """
        width = self.stage_width(stage_name)
        block = _BLOCKS[self.block_kind](width, width, 1, self.activation)
        if zero_init:
            nn.init.zeros_(block.last_bn.weight)
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
            ``(N, in_channels, H, W)``.

        Returns
        -------
        Tensor
            Logits, ``(N, num_classes)``.
        """
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(self.flatten(self.pool(x)))


def cifar_resnet(
    blocks: Sequence[int] = (1, 1, 1),
    channels: Sequence[int] = (16, 32, 64),
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    block: str = "basic",
    width_mult: float = 1.0,
    activation: str = "relu",
) -> CifarResNet:
    """Build a :class:`CifarResNet` (``blocks=(n, n, n)`` gives ResNet-(6n+2) with basic blocks).

    Parameters
    ----------
    blocks : sequence of int, default (1, 1, 1)
        Blocks per stage.
    channels : sequence of int, default (16, 32, 64)
        Output channels per stage.
    in_channels : int, default 3
        Input channels.
    num_classes : int, default 10
        Output width.
    block : str, default "basic"
        ``"basic"`` or ``"bottleneck"``.
    width_mult : float, default 1.0
        Multiplier of every channel count.
    activation : str, default "relu"
        Activation (see :func:`activation_module`).

    Returns
    -------
    CifarResNet
        The network.
    """
    return CifarResNet(
        blocks,
        channels,
        in_channels=in_channels,
        num_classes=num_classes,
        block=block,
        width_mult=width_mult,
        activation=activation,
    )
