"""The GradMax paper's model families (WRN, VGG-11, MobileNet-v1): sizes, and growth on them."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from torchgrow import Grower, graph, methods, models
from torchgrow.how import GradMax
from torchgrow.ops import DeadUnitWarning
from torchgrow.size import Units
from torchgrow.when import Manual
from torchgrow.where import Layers


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_full_size_parameter_counts_match_the_published_architectures():
    assert count(models.wide_resnet(28, 10)) == 36_470_234  # WRN-28-10: 36.5M
    assert count(models.wide_resnet(28, 1)) == 368_602
    # 8 convs of 64..512 filters plus the 3x3 classifier conv, no biases, as the official code
    assert count(models.vgg11(in_channels=3)) == 9 * (
        3 * 64 + 64 * 128 + 128 * 256 + 256 * 256 + 256 * 512 + 3 * 512 * 512 + 512 * 10
    )
    assert count(models.mobilenet_v1()) == 4_231_976  # MobileNet-v1 1.0 on ImageNet: 4.2M


SMALL = [
    ("wide_resnet", dict(depth=10, block_width=0.25, in_channels=1)),
    ("wide_resnet", dict(depth=10, block_width=0.25, in_channels=1, norm="batchnorm")),
    ("vgg11", dict(base_width=16, width_mult=0.25)),
    ("mobilenet_v1", dict(base_width=16, width_mult=0.25, in_channels=1, num_classes=10)),
]


@pytest.mark.parametrize(("name", "kwargs"), SMALL)
def test_cpu_sized_variants_run_on_28x28_inputs(name, kwargs):
    torch.manual_seed(0)
    model = models.build(name, **kwargs)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(("name", "kwargs"), SMALL)
def test_gradmax_grows_the_papers_layers_and_preserves_the_function(name, kwargs):
    torch.manual_seed(0)
    model = models.build(name, **kwargs).eval()
    grower = methods.GradMax(model, None, loss_fn=F.cross_entropy)
    grown = sorted(grower.size.initial)
    expected = getattr(model, "growth_layers", None)
    if expected is None:  # VGG-11: every conv that feeds another conv
        expected = [u.name for u in graph.growable_units(model)]
        assert "classifier" not in expected
    assert grown == sorted(expected)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    before = model(x).detach()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # conv -> linear pairs fall back to random, as officially
        events = grower.grow((x, y))
    assert {e.unit for e in events} == set(expected)
    assert max(e.max_abs_delta for e in events) <= 1e-5
    assert (model(x) - before).abs().max() <= 1e-5


def test_wide_resnet_grows_block_widths_not_the_residual_streams():
    torch.manual_seed(0)
    model = models.wide_resnet(10, block_width=0.25, in_channels=1).eval()
    stream_before = model.stage2[0].conv2.out_channels
    grower = methods.GradMax(model, None, loss_fn=F.cross_entropy)
    grower.grow((torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))))
    assert model.stage2[0].conv1.out_channels == 8 + 2  # 0.25 x 32 = 8, grown by 25 %
    assert model.stage2[0].conv2.out_channels == stream_before
    with pytest.warns(DeadUnitWarning, match="stem"):  # a stream passes a plain ReLU (pre-act)
        everything = methods.GradMax(models.wide_resnet(10, in_channels=1), None, layers="all")
    assert "stem" in everything.size.initial  # the streams grow only when asked
    with pytest.raises(ValueError, match="'all'"):
        methods.GradMax(model, None, layers="everything")


def test_cifar_resnet_defaults_to_the_block_internal_convolutions():
    model = models.cifar_resnet((2, 1, 1), activation="relu1")
    assert sorted(methods.GradMax(model, None).size.initial) == [
        "stage1.0.conv1",
        "stage1.1.conv1",
        "stage2.0.conv1",
        "stage3.0.conv1",
    ]
    bottleneck = models.cifar_resnet((1, 1, 1), block="bottleneck", activation="relu1")
    assert "stage1.0.conv2" in methods.GradMax(bottleneck, None).size.initial


def test_mobilenet_depthwise_convs_get_identity_channels():
    torch.manual_seed(0)
    model = models.mobilenet_v1(base_width=16, width_mult=0.25, in_channels=1, num_classes=10)
    model.eval()
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    before = model(x).detach()
    g = Grower(model, None, when=Manual(), where=Layers(["blocks.2.pw"]), how=GradMax(),
               size=Units(3), loss_fn=F.cross_entropy)  # fmt: skip
    (event,) = g.grow((x, y))
    assert model.blocks[3].dw.groups == model.blocks[3].dw.in_channels == 8 + 3
    assert event.info["solver"] == "map"  # a depthwise conv between the pair (a small map)
    assert (model(x) - before).abs().max() <= 1e-5
