"""Tests of torchgrow.models: the papers' model families."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.fx import symbolic_trace

from torchgrow import models as M
from torchgrow.nn import ReLU1


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_children()]


# --------------------------------------------------------------------------- activations, widths


@pytest.mark.parametrize(
    ("name", "cls"), [("relu", nn.ReLU), ("relu1", ReLU1), ("tanh", nn.Tanh), ("gelu", nn.GELU)]
)
def test_activation_module(name: str, cls: type) -> None:
    a, b = M.activation_module(name), M.activation_module(name)
    assert isinstance(a, cls) and a is not b


def test_activation_module_unknown_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        M.activation_module("swish")
    for name in ("relu", "relu1", "tanh", "gelu"):
        assert name in str(info.value)
    with pytest.raises(ValueError, match="relu1"):
        M.mlp([4, 3, 2], activation="sigmoid")


def test_scale_width_rounds_half_up_with_minimum_one() -> None:
    assert M.scale_width(300, 1.0) == 300
    assert M.scale_width(300, 0.5) == 150
    assert M.scale_width(5, 0.5) == 3  # 2.5 rounds up
    assert M.scale_width(20, 0.01) == 1
    with pytest.raises(ValueError):
        M.scale_width(10, 0.0)


# --------------------------------------------------------------------------- MLPs


def test_lenet_300_100_structure_and_count() -> None:
    model = M.lenet_300_100()
    assert _n_params(model) == 266_610
    assert _names(model) == ["flatten", "fc1", "act1", "fc2", "act2", "fc3"]
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert model(torch.randn(3, 784)).shape == (3, 10)


def test_mlp_width_mult_scales_hidden_widths_only() -> None:
    model = M.lenet_300_100(width_mult=0.5)
    assert (model.fc1.in_features, model.fc1.out_features) == (784, 150)
    assert (model.fc2.in_features, model.fc2.out_features) == (150, 50)
    assert (model.fc3.in_features, model.fc3.out_features) == (50, 10)
    tiny = M.mlp([6, 4, 4, 2], width_mult=0.01)
    assert [tiny.fc1.out_features, tiny.fc2.out_features, tiny.fc3.out_features] == [1, 1, 2]


def test_mlp_options() -> None:
    model = M.mlp([40, 16, 8, 10], batchnorm=True, bias=False, flatten=False, activation="tanh")
    assert _names(model) == ["fc1", "bn1", "act1", "fc2", "bn2", "act2", "fc3"]
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Linear))
    assert isinstance(model.act1, nn.Tanh) and isinstance(model.bn2, nn.BatchNorm1d)
    assert model(torch.randn(5, 40)).shape == (5, 10)
    ln = M.mlp([40, 16, 10], layernorm=True)
    assert _names(ln) == ["flatten", "fc1", "ln1", "act1", "fc2"]
    assert isinstance(ln.ln1, nn.LayerNorm) and ln.ln1.normalized_shape == (16,)
    assert _names(M.mlp([3, 2])) == ["flatten", "fc1"]
    with pytest.raises(ValueError, match="not both"):
        M.mlp([4, 3, 2], batchnorm=True, layernorm=True)
    with pytest.raises(ValueError):
        M.mlp([4])
    with pytest.raises(ValueError):
        M.mlp([4, 0, 2])


# --------------------------------------------------------------------------- conv nets


def test_lenet5_structure_and_count() -> None:
    model = M.lenet5()
    assert _n_params(model) == 431_080
    assert _names(model) == [
        "conv1",
        "act1",
        "pool1",
        "conv2",
        "act2",
        "pool2",
        "flatten",
        "fc1",
        "act3",
        "fc2",
    ]
    assert model.conv1.out_channels == 20 and model.conv1.kernel_size == (5, 5)
    assert model.conv1.padding == (0, 0)
    assert model.conv2.out_channels == 50
    assert (model.fc1.in_features, model.fc1.out_features) == (800, 500)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_lenet5_width_mult_and_input_size() -> None:
    model = M.lenet5(width_mult=2.0, in_channels=3, input_size=32, num_classes=7)
    assert model.conv1.out_channels == 40 and model.conv2.out_channels == 100
    assert (model.fc1.in_features, model.fc1.out_features) == (100 * 5 * 5, 1000)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(ValueError, match="input_size"):
        M.lenet5(input_size=12)


def test_vgg_small_structure() -> None:
    model = M.vgg_small()
    assert _names(model) == [
        "conv1",
        "bn1",
        "act1",
        "pool1",
        "conv2",
        "bn2",
        "act2",
        "pool2",
        "conv3",
        "bn3",
        "act3",
        "conv4",
        "bn4",
        "act4",
        "pool3",
        "flatten",
        "fc",
    ]
    assert model.conv1.padding == (1, 1) and model.conv1.bias is None
    assert model.fc.in_features == 128 * 3 * 3  # 28 -> 14 -> 7 -> 3
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_vgg_small_options() -> None:
    model = M.vgg_small((8, "M", 16), in_channels=3, input_size=32, batchnorm=False, width_mult=0.5)
    assert _names(model) == ["conv1", "act1", "pool1", "conv2", "act2", "flatten", "fc"]
    assert model.conv1.out_channels == 4 and model.conv2.out_channels == 8
    assert model.conv1.bias is not None
    assert model.fc.in_features == 8 * 16 * 16
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="'X'"):
        M.vgg_small((8, "X"))
    with pytest.raises(ValueError, match="too small"):
        M.vgg_small((8, "M", "M", "M"), input_size=4)


# --------------------------------------------------------------------------- ResNets


def test_cifar_resnet_basic_structure() -> None:
    model = M.cifar_resnet((2, 1, 3))
    assert isinstance(model, M.CifarResNet)
    assert _names(model) == ["stem", "stage1", "stage2", "stage3", "pool", "flatten", "fc"]
    assert _names(model.stem) == ["conv", "bn", "act"]
    assert model.stage_names == ["stage1", "stage2", "stage3"]
    assert model.arch == (2, 1, 3)
    assert model.block_kind == "basic" and model.activation == "relu"
    first = model.stage1[0]
    assert isinstance(first, M.BasicBlock)
    assert _names(first) == ["conv1", "bn1", "act1", "conv2", "bn2", "shortcut", "act2"]
    assert isinstance(first.shortcut, nn.Identity)
    down = model.stage2[0]
    assert down.conv1.stride == (2, 2) and down.conv1.bias is None
    assert isinstance(down.shortcut, nn.Sequential)
    assert down.shortcut.conv.kernel_size == (1, 1) and down.shortcut.conv.stride == (2, 2)
    assert isinstance(model.stage3[1].shortcut, nn.Identity)
    assert model.fc.in_features == 64
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    assert model.stage2(model.stage1(model.stem(x))).shape == (2, 32, 16, 16)


def test_cifar_resnet_bottleneck_structure() -> None:
    model = M.cifar_resnet((1, 2), (32, 64), block="bottleneck", in_channels=1, num_classes=5)
    block = model.stage1[0]
    assert isinstance(block, M.Bottleneck)
    assert [block.conv1.out_channels, block.conv2.out_channels, block.conv3.out_channels] == [
        8,
        8,
        32,
    ]
    assert block.conv1.kernel_size == (1, 1) and block.conv2.kernel_size == (3, 3)
    assert isinstance(block.shortcut, nn.Identity)
    assert model.stage2[0].conv2.stride == (2, 2)
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 5)
    assert M.Bottleneck(8, 2, 1).conv1.out_channels == 1  # inner width at least 1


def test_cifar_resnet_width_mult_and_errors() -> None:
    model = M.cifar_resnet(width_mult=0.5)
    assert model.stem.conv.out_channels == 8
    assert [model.stage_width(s) for s in model.stage_names] == [8, 16, 32]
    assert model.fc.in_features == 32 and model.fc.out_features == 10
    with pytest.raises(ValueError, match="same"):
        M.cifar_resnet((1, 1), (16, 32, 64))
    with pytest.raises(ValueError, match="at least one block"):
        M.cifar_resnet((1, 0, 1))
    with pytest.raises(ValueError, match="bottleneck"):
        M.cifar_resnet(block="wide")


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_new_block_preserves_stage_output_shape(block: str) -> None:
    model = M.cifar_resnet((1, 2, 1), block=block, activation="relu1")
    x = torch.randn(2, 3, 32, 32)
    feats = model.stage2(model.stage1(model.stem(x)))
    new = model.new_block("stage2")
    assert isinstance(new, M.BasicBlock if block == "basic" else M.Bottleneck)
    assert isinstance(new.shortcut, nn.Identity) and new.stride == 1
    assert isinstance(new.act1, ReLU1)
    assert new(feats).shape == feats.shape == (2, 32, 16, 16)
    model.stage2.append(new)
    assert model.arch == (1, 3, 1)
    assert model(x).shape == (2, 10)
    with pytest.raises(ValueError, match="stage1"):
        model.new_block("stage9")


def test_new_block_zero_init_preserves_function() -> None:
    torch.manual_seed(0)
    model = M.cifar_resnet((1, 1, 1)).eval()
    x = torch.randn(2, 3, 32, 32)
    before = model(x)
    model.stage3.append(model.new_block("stage3", zero_init=True).eval())
    assert torch.allclose(model(x), before, atol=1e-6)
    model_double = M.cifar_resnet().double()
    assert next(model_double.new_block("stage1").parameters()).dtype == torch.float64


# --------------------------------------------------------------------------- all models


CASES = [
    ("mlp", {"widths": [40, 32, 16, 10]}, (3, 40)),
    ("lenet_300_100", {}, (3, 1, 28, 28)),
    ("lenet5", {}, (3, 1, 28, 28)),
    ("vgg_small", {}, (3, 1, 28, 28)),
    ("cifar_resnet", {"blocks": (2, 1, 1)}, (3, 3, 32, 32)),
    ("cifar_resnet", {"blocks": (1, 2, 1), "block": "bottleneck"}, (3, 3, 32, 32)),
]


@pytest.mark.parametrize(("name", "kwargs", "shape"), CASES)
@pytest.mark.parametrize("activation", ["relu", "relu1", "tanh", "gelu"])
def test_symbolic_trace_matches_eager(name: str, kwargs: dict, shape: tuple, activation: str):
    torch.manual_seed(0)
    model = M.build(name, activation=activation, **kwargs).eval()
    traced = symbolic_trace(model)
    x = torch.randn(*shape)
    out = model(x)
    assert out.shape == (shape[0], 10)
    assert torch.allclose(traced(x), out, atol=1e-6)


@pytest.mark.parametrize(("name", "kwargs", "shape"), CASES)
def test_relu1_replaces_every_relu(name: str, kwargs: dict, shape: tuple) -> None:
    model = M.build(name, activation="relu1", **kwargs)
    acts = [m for m in model.modules() if isinstance(m, ReLU1)]
    assert acts
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert len({id(a) for a in acts}) == len(acts)  # one module per use
    relu_model = M.build(name, **kwargs)
    assert len(acts) == sum(isinstance(m, nn.ReLU) for m in relu_model.modules())


def test_build_registry_and_unknown_name() -> None:
    assert set(M.MODELS) == {
        "mlp",
        "lenet_300_100",
        "lenet5",
        "cifar_resnet",
        "vgg_small",
        "residual_mlp",
        "plain_convnet",
        "wide_resnet",
        "gpt",
        "vit",
        "vgg11",
        "mobilenet_v1",
    }
    assert M.count_parameters(M.build("lenet5")) == 431_080
    with pytest.raises(ValueError) as info:
        M.build("resnet50")
    for name in M.MODELS:
        assert name in str(info.value)
