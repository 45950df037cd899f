"""Wide ResNets with pre-activation blocks, as GradMax's CIFAR experiments build them.

Zagoruyko and Komodakis' WRN-n-k, in the form of the official GradMax code
(``growneuron/cifar/wide_resnet.py``): a 3x3 stem of 16 channels, three stages
of ``(n - 4) / 6`` blocks of widths ``16k, 32k, 64k`` (strides 1, 2, 2), then
BatchNorm, ReLU, global average pooling and a linear classifier. A block is

``x + conv2(act2([norm](conv1(relu(bn1(x))))))``

with a 1x1 projection on the shortcut where the shape changes. ``conv1`` has
``block_width x`` the stage's width: that inner width is what GradMax grows
(``block_width=0.25`` is the paper's "WRN-28-0.25x" start), so the residual
streams keep their width.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._layers import _check_activation, activation_module, scale_width


class WideBasicBlock(nn.Module):
    """A pre-activation block of two 3x3 convolutions (no biases).

    Parameters
    ----------
    in_ch, out_ch : int
        Input and output channels (the residual stream's widths).
    inner : int
        Output channels of ``conv1``, the grown width.
    stride : int
        Stride of ``conv1`` and of the shortcut projection.
    norm : {"none", "batchnorm"}
        Normalisation between the two convolutions.
    activation : str
        The activation between the two convolutions (``relu1`` in the official code,
        so that new units with zero fan-in train).
    """

    def __init__(
        self, in_ch: int, out_ch: int, inner: int, stride: int, norm: str, activation: str
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.act1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_ch, inner, 3, stride=stride, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(inner) if norm == "batchnorm" else nn.Identity()
        self.act2 = activation_module(activation)
        self.conv2 = nn.Conv2d(inner, out_ch, 3, padding=1, bias=False)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and in_ch == out_ch
            else nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_ch, H, W)`` -> ``(N, out_ch, H / stride, W / stride)``."""
        y = self.conv1(self.act1(self.bn1(x)))
        y = self.conv2(self.act2(self.norm(y)))
        return self.shortcut(x) + y


class WideResNet(nn.Module):
    """WRN-``depth``-``k`` with pre-activation blocks (see the module docstring).

    Attributes
    ----------
    growth_layers : list of str
        The first convolution of every block: what GradMax grows by default
        (``methods.GradMax(layers=None)``), as in the paper's WRN setting.
    """

    stage_names = ("stage1", "stage2", "stage3")

    def __init__(
        self,
        depth: int = 28,
        k: int = 1,
        *,
        block_width: float = 1.0,
        in_channels: int = 3,
        num_classes: int = 10,
        norm: str = "none",
        activation: str = "relu1",
    ) -> None:
        super().__init__()
        _check_activation(activation)
        if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28...), got {depth!r}")
        if not (isinstance(k, int) and k >= 1):
            raise ValueError(f"k (the width multiplier) must be an int >= 1, got {k!r}")
        if norm not in ("none", "batchnorm"):
            raise ValueError(f"norm must be 'none' or 'batchnorm', got {norm!r}")
        n = (depth - 4) // 6
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        channels = 16
        for name, width, stride in zip(self.stage_names, (16, 32, 64), (1, 2, 2), strict=True):
            blocks = []
            for j in range(n):
                out = width * k
                inner = scale_width(out, block_width)
                blocks.append(
                    WideBasicBlock(channels, out, inner, stride if j == 0 else 1, norm, activation)
                )
                channels = out
            setattr(self, name, nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    @property
    def growth_layers(self) -> list[str]:
        """The first convolution of every block (the paper's grown layers)."""
        return [f"{s}.{i}.conv1" for s in self.stage_names for i in range(len(getattr(self, s)))]

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_channels, H, W)`` -> logits ``(N, num_classes)``."""
        x = self.stem(x)
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(self.flatten(self.pool(self.act(self.bn(x)))))


def wide_resnet(
    depth: int = 28,
    k: int = 1,
    *,
    block_width: float = 1.0,
    in_channels: int = 3,
    num_classes: int = 10,
    norm: str = "none",
    activation: str = "relu1",
) -> WideResNet:
    """Build a :class:`WideResNet`: WRN-``depth``-``k``, inner widths scaled by ``block_width``.

    Parameters
    ----------
    depth : int, default 28
        6n + 4 (the paper: 28; 10 or 16 are CPU-sized).
    k : int, default 1
        Width multiplier of the residual streams (the paper: 1).
    block_width : float, default 1.0
        Multiplier of each block's inner width (the paper grows from 0.25 to 1).
    in_channels, num_classes : int
        Input channels and classes.
    norm : {"none", "batchnorm"}
        Normalisation between a block's convolutions ("none" in the growth configs).
    activation : str, default "relu1"
        The activation between a block's convolutions.

    Returns
    -------
    WideResNet
        The network.
    """
    return WideResNet(
        depth,
        k,
        block_width=block_width,
        in_channels=in_channels,
        num_classes=num_classes,
        norm=norm,
        activation=activation,
    )
