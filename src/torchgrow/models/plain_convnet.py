"""Plain conv nets in stages (AutoGrow's plain nets, with or without BatchNorm)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from ._layers import _check_activation, activation_module, scale_width


class PlainConvBlock(nn.Module):
    """A plain (non-residual) VGG-style block: ``act(bn(conv(x)))``.

    Parameters
    ----------
    in_ch : int
        Input channels.
    out_ch : int
        Output channels.
    stride : int, default 1
        Stride of the 3x3 convolution (padding 1).
    batch_norm : bool, default True
        Add a :class:`torch.nn.BatchNorm2d` ``bn`` after the convolution
        (which then has no bias).
    activation : str, default "relu"
        Activation (see :func:`activation_module`).
    """

    residual = False
    """No residual branch: zeroing ``last_bn`` would cut the signal."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        batch_norm: bool = True,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_ch, out_ch, stride
        self.batch_norm = batch_norm
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=not batch_norm)
        if batch_norm:
            self.bn = nn.BatchNorm2d(out_ch)
        self.act = activation_module(activation)

    @property
    def last_bn(self) -> nn.BatchNorm2d | None:
        """The block's batch norm, or None without batch norm."""
        return self.bn if self.batch_norm else None

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
        out = self.conv(x)
        if self.batch_norm:
            out = self.bn(out)
        return self.act(out)


class PlainConvNet(nn.Module):
    """A plain VGG-style conv net: a 3x3 stem, stages of :class:`PlainConvBlock`, pool, linear.

    Stage 1 keeps the stem's resolution; every later stage halves it in its
    first block (stride 2). AutoGrow grows depth by appending blocks to the
    end of a stage, see :meth:`new_block`.

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
    batch_norm : bool, default True
        Put a batch norm after every convolution (which then has no bias).
    width_mult : float, default 1.0
        Multiplier of every channel count.
    activation : str, default "relu"
        Activation (see :func:`activation_module`).

    Attributes
    ----------
    stem : nn.Sequential
        ``conv`` (3x3), [``bn``], ``act``.
    stage1, stage2, ... : nn.Sequential
        The stages; their names are in ``stage_names``.
    pool, flatten, fc : nn.Module
        Global average pool, flatten, classifier.
    batch_norm : bool
        Whether the convolutions are followed by batch norm.
    activation : str
        The activation's name.
    stage_names : list of str
        ``["stage1", "stage2", ...]``.

    Raises
    ------
    ValueError
        If ``blocks`` and ``channels`` differ in length or are empty, a stage
        has no block, or ``activation`` is unknown.
    """

    def __init__(
        self,
        blocks: Sequence[int] = (1, 1, 1),
        channels: Sequence[int] = (16, 32, 64),
        *,
        in_channels: int = 3,
        num_classes: int = 10,
        batch_norm: bool = True,
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
        _check_activation(activation)
        self.batch_norm = batch_norm
        self.activation = activation
        widths = [scale_width(c, width_mult) for c in channels]
        stem: OrderedDict[str, nn.Module] = OrderedDict()
        stem["conv"] = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=not batch_norm)
        if batch_norm:
            stem["bn"] = nn.BatchNorm2d(widths[0])
        stem["act"] = activation_module(activation)
        self.stem = nn.Sequential(stem)
        self.stage_names: list[str] = []
        prev = widths[0]
        for i, (n_blocks, width) in enumerate(zip(blocks, widths, strict=True), start=1):
            stride = 1 if i == 1 else 2
            stage = nn.Sequential(
                *[
                    PlainConvBlock(
                        prev if j == 0 else width,
                        width,
                        stride if j == 0 else 1,
                        batch_norm,
                        activation,
                    )
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

        Raises
        ------
        ValueError
            If ``stage_name`` is not a stage.
        """
        self._check_stage(stage_name)
        return int(getattr(self, stage_name)[-1].out_channels)

    def new_block(self, stage_name: str, *, zero_init: bool = False) -> PlainConvBlock:
        """A fresh block to append to the end of a stage.

        The block has stride 1, the stage's width in and out, the model's
        batch-norm setting and activation, and the device and dtype of the
        stage's parameters, with PyTorch's default initialisation (as AutoGrow
        uses for plain nets). It is not added to the model.

        Parameters
        ----------
        stage_name : str
            One of :attr:`stage_names`.
        zero_init : bool, default False
            Must be False: a plain block has no residual branch, so zeroing it
            would cut the signal rather than preserve the function.

        Returns
        -------
        PlainConvBlock
            The block.

        Raises
        ------
        ValueError
            If ``stage_name`` is not a stage, or ``zero_init`` is True.
        """
        width = self.stage_width(stage_name)
        if zero_init:
            raise ValueError(
                "zero_init=True is not supported for a plain block: it has no residual "
                "branch, so zero-initialising it would cut the signal; plain nets grow "
                "with the default initialisation"
            )
        block = PlainConvBlock(width, width, 1, self.batch_norm, self.activation)
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


def plain_convnet(
    blocks: Sequence[int] = (1, 1, 1),
    channels: Sequence[int] = (16, 32, 64),
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    batch_norm: bool = True,
    width_mult: float = 1.0,
    activation: str = "relu",
) -> PlainConvNet:
    """Build a :class:`PlainConvNet` (the plain counterpart of :func:`cifar_resnet`).

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
    batch_norm : bool, default True
        Put a batch norm after every convolution.
    width_mult : float, default 1.0
        Multiplier of every channel count.
    activation : str, default "relu"
        Activation (see :func:`activation_module`).

    Returns
    -------
    PlainConvNet
        The network.
    """
    return PlainConvNet(
        blocks,
        channels,
        in_channels=in_channels,
        num_classes=num_classes,
        batch_norm=batch_norm,
        width_mult=width_mult,
        activation=activation,
    )
