"""Depth edits on real model families: insertion (also outside nn.Sequential) and appended blocks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchgrow import models
from torchgrow.errors import GrowthInputError
from torchgrow.ops import (
    append_block,
    check_consistent,
    identity_conv,
    identity_linear,
    insert_after,
)


def test_insert_identity_linear_in_lenet_preserves_function_and_trains():
    torch.manual_seed(0)
    model = models.lenet_300_100()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    F.cross_entropy(model(x), y).backward()
    opt.step()
    y0 = model(x).detach()
    rec = insert_after(model, "act1", identity_linear(300), optimizer=opt)
    assert rec.details["new"] == "act1_next" and len(rec.added) == 2
    insert_after(model, "act1_next", torch.nn.ReLU(), optimizer=opt)
    assert (model(x) - y0).abs().max() <= 1e-6
    check_consistent(model, opt)
    names = list(dict(model.named_children()))
    assert names.index("act1_next") == names.index("act1") + 1
    before = model.act1_next.weight.detach().clone()
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    assert not torch.equal(before, model.act1_next.weight)


def test_insert_outside_sequential_wraps_and_keeps_parameters():
    torch.manual_seed(0)
    model = models.cifar_resnet((1, 1, 1), (8, 16, 32), in_channels=1).eval()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(2, 1, 16, 16)
    y0 = model(x).detach()
    conv = model.stage1[0].conv1
    insert_after(model, "stage1.0.act1", identity_conv(8, batchnorm=True), optimizer=opt)
    assert model.stage1[0].act1.orig is not None  # wrapped: Sequential(orig, new)
    assert model.stage1[0].conv1 is conv  # untouched neighbours keep their identity
    assert (model(x) - y0).abs().max() <= 1e-6
    check_consistent(model, opt)


def test_append_zero_init_block_to_resnet_stage():
    torch.manual_seed(0)
    model = models.cifar_resnet((1, 1, 1), (8, 16, 32), in_channels=1).eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.rand(2, 1, 16, 16)
    y0 = model(x).detach()
    rec = append_block(model, "stage2", model.new_block("stage2", zero_init=True), optimizer=opt)
    assert model.arch == (1, 2, 1) and rec.details["new"] == "stage2.1"
    assert (model(x) - y0).abs().max() <= 1e-6
    check_consistent(model, opt)
    # new parameters joined the same group and start with empty state
    group = {id(p) for p in opt.param_groups[0]["params"]}
    assert all(id(p) in group for p in model.stage2[1].parameters())
    assert all(p not in opt.state for p in model.stage2[1].parameters())


def test_append_block_refuses_non_sequential_and_reused_modules():
    model = models.cifar_resnet((1, 1, 1), (8, 16, 32))
    with pytest.raises(GrowthInputError, match="not an nn.Sequential"):
        append_block(model, "fc", torch.nn.Identity())
    with pytest.raises(GrowthInputError, match="already in the model"):
        append_block(model, "stage1", model.stage1[0])
    with pytest.raises(GrowthInputError, match="no module named"):
        append_block(model, "stage9", torch.nn.Identity())


def test_layer_inserted_after_an_activation_joins_the_group_of_the_layer_before():
    torch.manual_seed(0)
    model = models.mlp([6, 5, 4, 3])  # fc1 act1 fc2 act2 fc3
    opt = torch.optim.SGD(
        [
            {"params": list(model.fc1.parameters()) + list(model.fc3.parameters()), "lr": 0.1},
            {"params": list(model.fc2.parameters()), "lr": 0.01},
        ]
    )
    rec = insert_after(model, "act2", identity_linear(4), optimizer=opt)
    second = {id(p) for p in opt.param_groups[1]["params"]}
    assert all(id(p) in second for p in rec.added)  # fc2's group (lr 0.01), not group 0
    assert opt.param_groups[1]["lr"] == 0.01
    check_consistent(model, opt)
