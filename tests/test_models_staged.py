"""Tests of the stage-structured model families of torchgrow.models: ResidualMLP, PlainConvNet."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.fx import symbolic_trace

from torchgrow import models as M
from torchgrow.graph import growable_units
from torchgrow.nn import ReLU1


def _names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_children()]


# --------------------------------------------------------------------------- ResidualMLP


def test_residual_mlp_structure_and_shapes() -> None:
    model = M.residual_mlp((2, 1, 1), (8, 16, 16), in_features=64, num_classes=5)
    assert isinstance(model, M.ResidualMLP)
    assert _names(model) == ["flatten", "stem", "stage1", "stage2", "stage3", "fc"]
    assert _names(model.stem) == ["fc", "bn", "act"]
    assert model.stem.fc.in_features == 64 and model.stem.fc.out_features == 8
    assert isinstance(model.stem.bn, nn.BatchNorm1d)
    assert model.stage_names == ["stage1", "stage2", "stage3"]
    first = model.stage1[0]
    assert isinstance(first, M.ResidualLinearBlock)
    assert _names(first) == ["fc1", "bn1", "act1", "fc2", "bn2", "shortcut", "act2"]
    assert first.fc1.bias is None and first.fc2.bias is None
    assert first.last_bn is first.bn2
    assert isinstance(first.shortcut, nn.Identity)
    proj = model.stage2[0]
    assert (proj.in_features, proj.out_features) == (8, 16)
    assert isinstance(proj.shortcut, nn.Sequential) and _names(proj.shortcut) == ["fc", "bn"]
    assert proj.shortcut.fc.bias is None and proj.shortcut.fc.out_features == 16
    assert isinstance(model.stage3[0].shortcut, nn.Identity)
    assert [model.stage_width(s) for s in model.stage_names] == [8, 16, 16]
    assert model.fc.in_features == 16 and model.fc.out_features == 5

    images = torch.randn(4, 1, 8, 8)
    out = model(images)
    assert out.shape == (4, 5)
    assert torch.equal(out, model(images.flatten(1)))  # flattening is the only reshaping

    flat = M.residual_mlp(in_features=40)
    assert flat(torch.randn(3, 40)).shape == (3, 10)
    assert [flat.stage_width(s) for s in flat.stage_names] == [64, 64, 64]


def test_residual_mlp_width_mult_and_activation() -> None:
    model = M.residual_mlp((1, 1), (10, 20), in_features=6, width_mult=0.5, activation="relu1")
    assert model.stem.fc.out_features == 5
    assert [model.stage_width(s) for s in model.stage_names] == [5, 10]
    assert model.activation == "relu1"
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert sum(isinstance(m, ReLU1) for m in model.modules()) == 1 + 2 * 2
    assert isinstance(model.new_block("stage2").act1, ReLU1)


def test_residual_mlp_arch_and_new_block() -> None:
    model = M.residual_mlp((1, 2, 1), (8, 12, 16), in_features=10)
    assert model.arch == (1, 2, 1)
    for stage, width in zip(model.stage_names, (8, 12, 16), strict=True):
        new = model.new_block(stage)
        assert isinstance(new, M.ResidualLinearBlock)
        assert (new.in_features, new.out_features) == (width, width)
        assert isinstance(new.shortcut, nn.Identity)
        getattr(model, stage).append(new)
    assert model.arch == (2, 3, 2)
    model.stage2.append(model.new_block("stage2"))
    assert model.arch == (2, 4, 2)
    assert model(torch.randn(3, 10)).shape == (3, 10)
    with pytest.raises(ValueError, match="stage1"):
        model.new_block("stage9")
    double = M.residual_mlp(in_features=10).double()
    assert all(p.dtype == torch.float64 for p in double.new_block("stage3").parameters())


@pytest.mark.parametrize("stage", ["stage1", "stage2", "stage3"])
@pytest.mark.parametrize("train", [False, True])
def test_residual_mlp_zero_init_block_preserves_function(stage: str, train: bool) -> None:
    torch.manual_seed(0)
    model = M.residual_mlp((1, 2, 1), (8, 12, 16), in_features=20)
    for m in model.modules():  # non-trivial batch norms, so the check is not vacuous
        if isinstance(m, nn.BatchNorm1d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    model.train(train)
    x = torch.randn(6, 20)
    with torch.no_grad():
        before = model(x)
        new = model.new_block(stage, zero_init=True)
        assert not new.last_bn.weight.any() and not new.last_bn.bias.any()
        getattr(model, stage).append(new.train(train))
        after = model(x)
    assert model.arch[model.stage_names.index(stage)] in (2, 3)
    assert torch.equal(after, before)  # the zero branch adds exactly 0, relu(x) == x


def test_residual_mlp_zero_init_zeroes_the_shift_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # PyTorch initialises the shift to 0 anyway; make it non-zero to see that
    # zero_init sets it, not the default initialisation.
    def reset(self: nn.BatchNorm1d) -> None:
        self.reset_running_stats()
        nn.init.constant_(self.weight, 0.5)
        nn.init.constant_(self.bias, 0.25)

    monkeypatch.setattr(nn.BatchNorm1d, "reset_parameters", reset)
    model = M.residual_mlp(in_features=4)
    plain = model.new_block("stage1")
    assert torch.equal(plain.last_bn.bias, torch.full((64,), 0.25))
    zeroed = model.new_block("stage1", zero_init=True)
    assert torch.equal(zeroed.last_bn.weight, torch.zeros(64))
    assert torch.equal(zeroed.last_bn.bias, torch.zeros(64))
    assert torch.equal(zeroed.bn1.bias, torch.full((64,), 0.25))  # only the last batch norm


@pytest.mark.parametrize("train", [False, True])
def test_residual_mlp_default_new_block_changes_function(train: bool) -> None:
    torch.manual_seed(0)
    model = M.residual_mlp((1, 1), (8, 8), in_features=12).train(train)
    x = torch.randn(6, 12)
    with torch.no_grad():
        before = model(x)
        model.stage2.append(model.new_block("stage2").train(train))
        after = model(x)
    assert (after - before).abs().max() > 1e-3


# --------------------------------------------------------------------------- PlainConvNet


def test_plain_convnet_structure_and_shapes() -> None:
    model = M.plain_convnet((2, 1, 1), (4, 8, 16), in_channels=1, num_classes=7)
    assert isinstance(model, M.PlainConvNet)
    assert _names(model) == ["stem", "stage1", "stage2", "stage3", "pool", "flatten", "fc"]
    assert _names(model.stem) == ["conv", "bn", "act"]
    assert model.stem.conv.bias is None and model.stem.conv.kernel_size == (3, 3)
    assert model.stage_names == ["stage1", "stage2", "stage3"]
    first = model.stage1[0]
    assert isinstance(first, M.PlainConvBlock)
    assert _names(first) == ["conv", "bn", "act"]
    assert first.last_bn is first.bn and first.conv.bias is None
    assert first.conv.padding == (1, 1) and first.conv.stride == (1, 1)
    assert [model.stage1[1].stride, model.stage2[0].stride, model.stage3[0].stride] == [1, 2, 2]
    assert model.stage2[0].conv.stride == (2, 2)
    assert (model.stage2[0].in_channels, model.stage2[0].out_channels) == (4, 8)
    assert [model.stage_width(s) for s in model.stage_names] == [4, 8, 16]
    assert model.fc.in_features == 16 and model.fc.out_features == 7
    x = torch.randn(2, 1, 16, 16)
    assert model(x).shape == (2, 7)
    feats = model.stage2(model.stage1(model.stem(x)))
    assert feats.shape == (2, 8, 8, 8)
    assert model.stage3(feats).shape == (2, 16, 4, 4)


def test_plain_convnet_without_batch_norm() -> None:
    model = M.plain_convnet((1, 2), (4, 8), batch_norm=False, width_mult=2.0)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 and all(c.bias is not None for c in convs)
    assert _names(model.stem) == ["conv", "act"]
    assert model.stage1[0].last_bn is None
    assert [model.stage_width(s) for s in model.stage_names] == [8, 16]
    new = model.new_block("stage2")
    assert new.last_bn is None and new.conv.bias is not None
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_plain_convnet_arch_and_new_block() -> None:
    model = M.plain_convnet((1, 1, 2), (4, 8, 8), activation="tanh")
    assert model.arch == (1, 1, 2)
    x = torch.randn(2, 3, 16, 16)
    feats = model.stage2(model.stage1(model.stem(x)))
    new = model.new_block("stage2")
    assert isinstance(new, M.PlainConvBlock) and isinstance(new.act, nn.Tanh)
    assert (new.in_channels, new.out_channels, new.stride) == (8, 8, 1)
    assert isinstance(new.last_bn, nn.BatchNorm2d)
    assert new(feats).shape == feats.shape
    model.stage2.append(new)
    model.stage1.append(model.new_block("stage1"))
    assert model.arch == (2, 2, 2)
    assert model(x).shape == (2, 10)
    with pytest.raises(ValueError, match="stage3"):
        model.new_block("stage0")
    double = M.plain_convnet().double()
    assert all(p.dtype == torch.float64 for p in double.new_block("stage1").parameters())


def test_plain_convnet_zero_init_is_refused() -> None:
    model = M.plain_convnet()
    with pytest.raises(ValueError, match="residual") as info:
        model.new_block("stage1", zero_init=True)
    assert "plain block" in str(info.value)
    assert model.arch == (1, 1, 1)


# --------------------------------------------------------------------------- both


@pytest.mark.parametrize(
    ("builder", "kwargs", "match"),
    [
        (M.residual_mlp, {"blocks": (1, 1), "widths": (8, 8, 8)}, "same"),
        (M.residual_mlp, {"blocks": (), "widths": ()}, "non-zero length"),
        (M.residual_mlp, {"blocks": (1, 0, 1)}, "at least one block"),
        (M.residual_mlp, {"activation": "swish"}, "unknown activation 'swish'"),
        (M.residual_mlp, {"width_mult": 0.0}, "width_mult"),
        (M.plain_convnet, {"blocks": (1, 1), "channels": (8,)}, "same"),
        (M.plain_convnet, {"blocks": (), "channels": ()}, "non-zero length"),
        (M.plain_convnet, {"blocks": (0, 1, 1)}, "at least one block"),
        (M.plain_convnet, {"activation": "swish"}, "unknown activation 'swish'"),
        (M.plain_convnet, {"width_mult": -1.0}, "width_mult"),
    ],
)
def test_bad_arguments_raise(builder, kwargs: dict, match: str) -> None:
    if builder is M.residual_mlp:
        kwargs = {"in_features": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        builder(**kwargs)


def test_build_by_name() -> None:
    model = M.build("residual_mlp", in_features=40)
    assert isinstance(model, M.ResidualMLP) and model.arch == (1, 1, 1)
    assert model(torch.randn(2, 40)).shape == (2, 10)
    plain = M.build("plain_convnet", blocks=(1, 2), channels=(4, 8), batch_norm=False)
    assert isinstance(plain, M.PlainConvNet) and plain.arch == (1, 2)
    assert "residual_mlp" in M.__all__ and "PlainConvNet" in M.__all__
    with pytest.raises(ValueError) as info:
        M.build("resnet50")
    assert "residual_mlp" in str(info.value) and "plain_convnet" in str(info.value)


CASES = [
    (M.residual_mlp, {"blocks": (1, 2), "widths": (8, 12), "in_features": 16}, (4, 1, 4, 4)),
    (M.plain_convnet, {"blocks": (2, 1), "channels": (4, 8)}, (2, 3, 8, 8)),
    (M.plain_convnet, {"blocks": (1, 1), "channels": (4, 8), "batch_norm": False}, (2, 3, 8, 8)),
]


@pytest.mark.parametrize(("builder", "kwargs", "shape"), CASES)
def test_symbolic_trace_and_growable_units(builder, kwargs: dict, shape: tuple) -> None:
    torch.manual_seed(0)
    model = builder(**kwargs).eval()
    x = torch.randn(*shape)
    assert torch.allclose(symbolic_trace(model)(x), model(x), atol=1e-6)
    units = growable_units(model, x)
    producers = {p for u in units for p in u.producers}
    first = "stem.fc" if isinstance(model, M.ResidualMLP) else "stem.conv"
    assert first in producers
    assert "fc" not in producers  # the classifier's width is fixed by the classes
    model.stage1.append(model.new_block("stage1"))
    assert growable_units(model.eval(), x)  # still analysable after growing
