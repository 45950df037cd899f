"""MobileNet-v1, as GradMax's ImageNet experiment builds it (``growneuron/imagenet/mb_v1.py``).

A strided 3x3 stem, then 13 depthwise-separable blocks: a 3x3 depthwise
convolution, the activation and (``norm="batchnorm"``) a BatchNorm, then a 1x1
pointwise convolution, the activation and a BatchNorm. The official code
strides the *pointwise* convolution that opens each group of blocks (better
for its decomposition), not the depthwise one. GradMax grows consecutive
pointwise convolutions; the depthwise convolution and the BatchNorms between
them get identity channels. The last pointwise convolution keeps its width
(1024) and is not grown.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from ._layers import _check_activation, activation_module, scale_width

#: Pointwise widths in units of the base width, group by group (the official ``blocklist``).
MOBILENET_V1_GROUPS: tuple[tuple[int, ...], ...] = ((1,), (2, 2), (4, 4), (8,) * 6, (16, 16))


class MobileNetV1(nn.Module):
    """MobileNet-v1 with readable names: ``stem``, ``blocks.<i>.{dw,pw}``, ``fc``.

    Attributes
    ----------
    growth_layers : list of str
        The stem and every pointwise convolution but the last: what GradMax grows
        by default, as the official code does.
    """

    def __init__(
        self,
        *,
        base_width: int = 64,
        width_mult: float = 1.0,
        in_channels: int = 3,
        num_classes: int = 1000,
        norm: str = "batchnorm",
        activation: str = "relu1",
    ) -> None:
        super().__init__()
        _check_activation(activation)
        if norm not in ("none", "batchnorm"):
            raise ValueError(f"norm must be 'none' or 'batchnorm', got {norm!r}")
        if not (isinstance(base_width, int) and base_width > 0):
            raise ValueError(f"base_width must be a positive int, got {base_width!r}")
        stem_width = scale_width(base_width // 2, width_mult)
        self.stem = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(in_channels, stem_width, 3, stride=2, padding=1, bias=False),
                bn=nn.BatchNorm2d(stem_width),
                act=activation_module(activation),
            )
        )
        blocks, channels = [], stem_width
        n_groups = len(MOBILENET_V1_GROUPS)
        for g, group in enumerate(MOBILENET_V1_GROUPS):
            for j, mult in enumerate(group):
                last = g == n_groups - 1 and j == len(group) - 1
                width = base_width * mult if last else scale_width(base_width * mult, width_mult)
                parts: OrderedDict[str, nn.Module] = OrderedDict()
                parts["dw"] = nn.Conv2d(
                    channels, channels, 3, padding=1, groups=channels, bias=False
                )
                parts["dw_act"] = activation_module(activation)
                if norm == "batchnorm":
                    parts["dw_bn"] = nn.BatchNorm2d(channels)
                stride = 2 if (g > 0 and j == 0) else 1
                parts["pw"] = nn.Conv2d(channels, width, 1, stride=stride, bias=False)
                parts["pw_act"] = activation_module(activation)
                parts["pw_bn"] = nn.BatchNorm2d(width)
                blocks.append(nn.Sequential(parts))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    @property
    def growth_layers(self) -> list[str]:
        """The stem convolution and every pointwise convolution but the last."""
        return ["stem.conv"] + [f"blocks.{i}.pw" for i in range(len(self.blocks) - 1)]

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_channels, H, W)`` -> logits ``(N, num_classes)``."""
        return self.fc(self.flatten(self.pool(self.blocks(self.stem(x)))))


def mobilenet_v1(
    *,
    base_width: int = 64,
    width_mult: float = 1.0,
    in_channels: int = 3,
    num_classes: int = 1000,
    norm: str = "batchnorm",
    activation: str = "relu1",
) -> MobileNetV1:
    """Build a :class:`MobileNetV1`.

    Parameters
    ----------
    base_width : int, default 64
        Width of the first pointwise convolution at ``width_mult=1`` (the stem has
        half); 64 in the paper, smaller for a CPU-sized net.
    width_mult : float, default 1.0
        Multiplier of every grown width (the paper grows from 0.25 to 1); the last
        pointwise convolution keeps ``16 x base_width``.
    in_channels, num_classes : int
        Input channels and classes (ImageNet: 3 and 1000).
    norm : {"none", "batchnorm"}
        Normalisation after each depthwise convolution (the pointwise ones always
        have a BatchNorm, as in the official code).
    activation : str, default "relu1"
        Activation after every convolution.

    Returns
    -------
    MobileNetV1
        The network.
    """
    return MobileNetV1(
        base_width=base_width,
        width_mult=width_mult,
        in_channels=in_channels,
        num_classes=num_classes,
        norm=norm,
        activation=activation,
    )
