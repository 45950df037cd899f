"""The model families the growth papers use, with readable layer names.

Every builder returns an ordinary :class:`torch.nn.Module` whose layers are
named submodules (``fc1``, ``act1``, ``stage2.0.conv1``...) and whose
activations are modules, not functional calls, so that growth operations can
find and edit every layer by name and :func:`torch.fx.symbolic_trace` sees the
whole wiring. Each builder accepts ``width_mult`` (hidden widths are scaled by
it, rounded half up, at least 1; input and output widths are not) and
``activation`` (see :func:`activation_module`).

==================  ====================================================
name                model
==================  ====================================================
``mlp``             fully connected net of any depth (GradMax, NeST)
``lenet_300_100``   LeNet-300-100 (266,610 parameters)
``lenet5``          Caffe LeNet-5, as NeST uses it (431,080 parameters)
``cifar_resnet``    CIFAR-style ResNet (AutoGrow), basic or bottleneck
``vgg_small``       small VGG-style conv net
``residual_mlp``    residual MLP in stages (AutoGrow)
``plain_convnet``   plain VGG-style conv net in stages (AutoGrow)
==================  ====================================================
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from torchgrow.nn import ReLU1

__all__ = [
    "ACTIVATIONS",
    "MODELS",
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "PlainConvBlock",
    "PlainConvNet",
    "ResidualLinearBlock",
    "ResidualMLP",
    "activation_module",
    "build",
    "count_parameters",
    "cifar_resnet",
    "lenet5",
    "lenet_300_100",
    "mlp",
    "plain_convnet",
    "residual_mlp",
    "scale_width",
    "vgg_small",
]

#: Activation names accepted by every builder, and the module class each builds.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "relu1": ReLU1,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


def activation_module(name: str) -> nn.Module:
    """Build a fresh activation module by name.

    Parameters
    ----------
    name : str
        ``"relu"`` (:class:`torch.nn.ReLU`), ``"relu1"``
        (:class:`torchgrow.nn.ReLU1`, derivative 1 at 0), ``"tanh"`` or
        ``"gelu"``.

    Returns
    -------
    nn.Module
        A new instance (never shared between layers).

    Raises
    ------
    ValueError
        If ``name`` is unknown; the message lists the valid names.
    """
    try:
        factory = ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {name!r}; valid names: {', '.join(ACTIVATIONS)}"
        ) from None
    return factory()


def scale_width(width: int, width_mult: float) -> int:
    """Scale a hidden width: ``max(1, round_half_up(width * width_mult))``.

    Parameters
    ----------
    width : int
        The width at ``width_mult == 1``.
    width_mult : float
        The multiplier; must be positive.

    Returns
    -------
    int
        The scaled width, at least 1.

    Raises
    ------
    ValueError
        If ``width_mult`` is not positive.
    """
    if not width_mult > 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")
    return max(1, math.floor(width * width_mult + 0.5))


def _check_activation(name: str) -> None:
    activation_module(name)  # raises ValueError on an unknown name


# --------------------------------------------------------------------------- MLPs


def mlp(
    widths: Sequence[int],
    *,
    activation: str = "relu",
    bias: bool = True,
    width_mult: float = 1.0,
    batchnorm: bool = False,
    layernorm: bool = False,
    flatten: bool = True,
) -> nn.Sequential:
    """A fully connected network.

    Parameters
    ----------
    widths : sequence of int
        ``[in, h1, ..., out]``: input width, hidden widths, output width (at
        least two entries).
    activation : str, default "relu"
        Activation after every hidden layer (see :func:`activation_module`).
    bias : bool, default True
        Give the linear layers biases.
    width_mult : float, default 1.0
        Multiplier of the hidden widths (not of ``in`` or ``out``).
    batchnorm : bool, default False
        Put a :class:`torch.nn.BatchNorm1d` (``bn{i}``) between each hidden
        linear layer and its activation.
    layernorm : bool, default False
        Put a :class:`torch.nn.LayerNorm` (``ln{i}``) there instead.
    flatten : bool, default True
        Start with an :class:`torch.nn.Flatten` named ``flatten``.

    Returns
    -------
    nn.Sequential
        Layers ``flatten``, ``fc1``, [``bn1`` | ``ln1``], ``act1``, ``fc2``,
        ..., ``fc{n}`` (no activation after the last).

    Raises
    ------
    ValueError
        If fewer than two widths are given, a width is not positive, both
        norms are asked for, or the activation is unknown.
    """
    widths = [int(w) for w in widths]
    if len(widths) < 2:
        raise ValueError(f"widths needs at least [in, out], got {widths}")
    if any(w < 1 for w in widths):
        raise ValueError(f"widths must be positive, got {widths}")
    if batchnorm and layernorm:
        raise ValueError("choose batchnorm or layernorm, not both")
    _check_activation(activation)
    sizes = [widths[0]] + [scale_width(w, width_mult) for w in widths[1:-1]] + [widths[-1]]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if flatten:
        layers["flatten"] = nn.Flatten()
    n = len(sizes) - 1
    for i in range(1, n + 1):
        layers[f"fc{i}"] = nn.Linear(sizes[i - 1], sizes[i], bias=bias)
        if i < n:
            if batchnorm:
                layers[f"bn{i}"] = nn.BatchNorm1d(sizes[i])
            if layernorm:
                layers[f"ln{i}"] = nn.LayerNorm(sizes[i])
            layers[f"act{i}"] = activation_module(activation)
    return nn.Sequential(layers)


def lenet_300_100(
    *,
    in_features: int = 784,
    num_classes: int = 10,
    width_mult: float = 1.0,
    activation: str = "relu",
) -> nn.Sequential:
    """LeNet-300-100: ``in -> 300 -> 100 -> classes`` (266,610 parameters on MNIST).

    Parameters
    ----------
    in_features : int, default 784
        Input width (inputs are flattened first).
    num_classes : int, default 10
        Output width.
    width_mult : float, default 1.0
        Multiplier of the two hidden widths.
    activation : str, default "relu"
        Hidden activation (see :func:`activation_module`).

    Returns
    -------
    nn.Sequential
        Layers ``flatten``, ``fc1``, ``act1``, ``fc2``, ``act2``, ``fc3``.
    """
    return mlp([in_features, 300, 100, num_classes], activation=activation, width_mult=width_mult)


# --------------------------------------------------------------------------- conv nets


def lenet5(
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    width_mult: float = 1.0,
    activation: str = "relu",
    input_size: int = 28,
) -> nn.Sequential:
    """Caffe's LeNet-5, as NeST grows it (431,080 parameters on MNIST).

    ``conv 5x5 (20) -> act -> maxpool 2 -> conv 5x5 (50) -> act -> maxpool 2
    -> fc 800->500 -> act -> fc 500->classes``, no padding.

    Parameters
    ----------
    in_channels : int, default 1
        Input channels.
    num_classes : int, default 10
        Output width.
    width_mult : float, default 1.0
        Multiplier of the hidden widths (20, 50 and 500).
    activation : str, default "relu"
        Activation (see :func:`activation_module`).
    input_size : int, default 28
        Height and width of the (square) input images; fixes ``fc1``'s input
        width (``50 * 4 * 4 == 800`` at 28).

    Returns
    -------
    nn.Sequential
        Layers ``conv1``, ``act1``, ``pool1``, ``conv2``, ``act2``, ``pool2``,
        ``flatten``, ``fc1``, ``act3``, ``fc2``.

    Raises
    ------
    ValueError
        If ``input_size`` is too small for the two conv/pool stages.
    """
    _check_activation(activation)
    c1, c2, h = (scale_width(w, width_mult) for w in (20, 50, 500))
    side = ((input_size - 4) // 2 - 4) // 2
    if side < 1:
        raise ValueError(f"input_size={input_size} is too small for LeNet-5 (needs >= 16)")
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(in_channels, c1, kernel_size=5)),
                ("act1", activation_module(activation)),
                ("pool1", nn.MaxPool2d(2)),
                ("conv2", nn.Conv2d(c1, c2, kernel_size=5)),
                ("act2", activation_module(activation)),
                ("pool2", nn.MaxPool2d(2)),
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(c2 * side * side, h)),
                ("act3", activation_module(activation)),
                ("fc2", nn.Linear(h, num_classes)),
            ]
        )
    )


def vgg_small(
    cfg: Sequence[int | str] = (32, "M", 64, "M", 128, 128, "M"),
    *,
    in_channels: int = 1,
    input_size: int = 28,
    num_classes: int = 10,
    batchnorm: bool = True,
    width_mult: float = 1.0,
    activation: str = "relu",
) -> nn.Sequential:
    """A small VGG-style network: 3x3 convolutions and 2x2 max pools, then one linear layer.

    Parameters
    ----------
    cfg : sequence of int or "M"
        An int adds a 3x3 convolution (padding 1) with that many output
        channels (scaled by ``width_mult``), followed by batch norm (if
        ``batchnorm``) and the activation; ``"M"`` adds a 2x2 max pool.
    in_channels : int, default 1
        Input channels.
    input_size : int, default 28
        Height and width of the (square) inputs; fixes ``fc``'s input width.
    num_classes : int, default 10
        Output width.
    batchnorm : bool, default True
        Add :class:`torch.nn.BatchNorm2d` after each convolution (which then
        has no bias).
    width_mult : float, default 1.0
        Multiplier of the convolution widths.
    activation : str, default "relu"
        Activation (see :func:`activation_module`).

    Returns
    -------
    nn.Sequential
        Layers ``conv1``, ``bn1``, ``act1``, ``pool1``, ``conv2``, ...,
        ``flatten``, ``fc``.

    Raises
    ------
    ValueError
        If ``cfg`` has no convolution or an unknown entry, or the pools shrink
        the input to nothing.
    """
    _check_activation(activation)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels, side, n_conv, n_pool = in_channels, int(input_size), 0, 0
    for entry in cfg:
        if entry == "M":
            n_pool += 1
            layers[f"pool{n_pool}"] = nn.MaxPool2d(2)
            side //= 2
        elif isinstance(entry, int) and not isinstance(entry, bool) and entry > 0:
            n_conv += 1
            width = scale_width(entry, width_mult)
            layers[f"conv{n_conv}"] = nn.Conv2d(
                channels, width, kernel_size=3, padding=1, bias=not batchnorm
            )
            if batchnorm:
                layers[f"bn{n_conv}"] = nn.BatchNorm2d(width)
            layers[f"act{n_conv}"] = activation_module(activation)
            channels = width
        else:
            raise ValueError(f"cfg entries must be positive ints or 'M', got {entry!r}")
    if n_conv == 0:
        raise ValueError("cfg needs at least one convolution")
    if side < 1:
        raise ValueError(f"input_size={input_size} is too small for {n_pool} pools")
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(channels * side * side, num_classes)
    return nn.Sequential(layers)


# --------------------------------------------------------------------------- ResNets


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


# --------------------------------------------------------------------------- residual MLPs


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


# --------------------------------------------------------------------------- plain conv nets


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


#: Builders by name, for :func:`build`.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "lenet_300_100": lenet_300_100,
    "lenet5": lenet5,
    "cifar_resnet": cifar_resnet,
    "vgg_small": vgg_small,
    "residual_mlp": residual_mlp,
    "plain_convnet": plain_convnet,
}


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build a model by name.

    Parameters
    ----------
    name : str
        One of the keys of :data:`MODELS`: ``"mlp"``, ``"lenet_300_100"``,
        ``"lenet5"``, ``"cifar_resnet"``, ``"vgg_small"``, ``"residual_mlp"``
        or ``"plain_convnet"``.
    **kwargs
        Passed to the builder (``mlp`` needs ``widths=``, ``residual_mlp``
        needs ``in_features=``).

    Returns
    -------
    nn.Module
        The model.

    Raises
    ------
    ValueError
        If ``name`` is unknown; the message lists the valid names.
    """
    try:
        builder = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}") from None
    return builder(**kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of a model.

    Parameters
    ----------
    model : nn.Module
        Any module.

    Returns
    -------
    int
        ``sum(p.numel() for p in model.parameters())``.
    """
    return sum(p.numel() for p in model.parameters())
