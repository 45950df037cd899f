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
``wide_resnet``     pre-activation WRN-n-k, inner widths scaled (GradMax, CIFAR)
``vgg11``           VGG-11 with strided convolutions, no FC (GradMax, CIFAR)
``mobilenet_v1``    MobileNet-v1, depthwise separable (GradMax, ImageNet)
``gpt``             decoder-only transformer, pre-LN (G_stack, MSG, LEMON)
``vit``             vision transformer in 7x7 patches (Fashion-MNIST)
==================  ====================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ._layers import ACTIVATIONS, activation_module, scale_width
from .gpt import GPT, CausalSelfAttention, FeedForward, GPTBlock, gpt
from .lenet import lenet5
from .mlp import lenet_300_100, mlp
from .mobilenet import MobileNetV1, mobilenet_v1
from .plain_convnet import PlainConvBlock, PlainConvNet, plain_convnet
from .residual_mlp import ResidualLinearBlock, ResidualMLP, residual_mlp
from .resnet import BasicBlock, Bottleneck, CifarResNet, cifar_resnet
from .vgg import vgg11, vgg_small
from .vit import PatchEmbedding, SelfAttention, ViT, ViTBlock, vit
from .wide_resnet import WideBasicBlock, WideResNet, wide_resnet

__all__ = [
    "ACTIVATIONS",
    "MODELS",
    "BasicBlock",
    "CausalSelfAttention",
    "FeedForward",
    "GPT",
    "GPTBlock",
    "Bottleneck",
    "CifarResNet",
    "MobileNetV1",
    "PlainConvBlock",
    "PlainConvNet",
    "ResidualLinearBlock",
    "ResidualMLP",
    "WideBasicBlock",
    "WideResNet",
    "activation_module",
    "build",
    "count_parameters",
    "cifar_resnet",
    "gpt",
    "lenet5",
    "lenet_300_100",
    "mlp",
    "mobilenet_v1",
    "plain_convnet",
    "residual_mlp",
    "scale_width",
    "vgg11",
    "vgg_small",
    "wide_resnet",
    "PatchEmbedding",
    "SelfAttention",
    "ViT",
    "ViTBlock",
    "vit",
]

#: Builders by name, for :func:`build`.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "lenet_300_100": lenet_300_100,
    "lenet5": lenet5,
    "cifar_resnet": cifar_resnet,
    "vgg_small": vgg_small,
    "residual_mlp": residual_mlp,
    "plain_convnet": plain_convnet,
    "wide_resnet": wide_resnet,
    "vgg11": vgg11,
    "mobilenet_v1": mobilenet_v1,
    "gpt": gpt,
    "vit": vit,
}


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build a model by name.

    Parameters
    ----------
    name : str
        One of the keys of :data:`MODELS` (the table in this module's docstring).
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
