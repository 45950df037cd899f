"""Partial-area convolution (NeST Algorithm 2): input masks, their FLOPs, the step, the driver."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchgrow
from torchgrow import data, methods, models, ops, why
from torchgrow.errors import GrowthInputError
from torchgrow.ops import (
    DeadUnitWarning,
    apply_input_mask,
    check_consistent,
    input_mask_of,
    remove_input_mask,
)
from torchgrow.partial_area import input_importance, prune_input_area


def brute_force_macs(conv: nn.Conv2d, mask: torch.Tensor, weight_active: torch.Tensor) -> int:
    """Count, output position by output position, the MACs that read an in-area input."""
    c_in, h, w = mask.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
    )
    h_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    total = 0
    for o in range(conv.out_channels):
        for i in range(h_out):
            for j in range(w_out):
                for c in range(c_in):
                    for a in range(kh):
                        for b in range(kw):
                            if not weight_active[o, c, a, b]:
                                continue
                            r, q = i * sh - ph + a * dh, j * sw - pw + b * dw
                            inside = 0 <= r < h and 0 <= q < w
                            if not inside or mask[c, r, q]:  # padding counts as inside
                                total += 1
    return total


@pytest.mark.parametrize("stride,padding,dilation", [(1, 0, 1), (2, 1, 1), (1, 2, 2), (2, 0, 1)])
def test_flops_count_exactly_the_macs_that_read_the_area(stride, padding, dilation):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=stride, padding=padding, dilation=dilation)
    x = torch.randn(2, 3, 9, 8)
    dense = why.flops_per_example(conv, x)
    apply_input_mask(conv, torch.ones(3, 9, 8))
    assert why.flops_per_example(conv, x) == dense  # a full area costs the ordinary count
    mask = (torch.rand(3, 9, 8) > 0.4).float()
    ops.apply_mask(conv, (torch.rand_like(conv.weight) > 0.3).float())
    apply_input_mask(conv, mask)
    expected = 2 * brute_force_macs(conv, mask, ops.mask_of(conv) != 0)
    assert why.flops_per_example(conv, x) == expected < dense


def test_masked_positions_do_not_reach_the_output_and_others_do():
    torch.manual_seed(0)
    model = models.lenet5(width_mult=0.3)
    mask = torch.ones(1, 28, 28)
    mask[0, :5] = 0
    apply_input_mask(model.conv1, mask)
    x = torch.rand(4, 1, 28, 28)
    y = model(x)
    x_masked = x.clone()
    x_masked[:, :, :5] += torch.randn(4, 1, 5, 28)
    assert torch.equal(model(x_masked), y)
    x_open = x.clone()
    x_open[:, :, 10] += 1.0
    assert not torch.allclose(model(x_open), y)


def test_step_masks_the_weakest_active_positions_and_accumulates():
    torch.manual_seed(0)
    model = models.lenet5(width_mult=0.3)
    x = torch.rand(16, 1, 28, 28)
    score = input_importance(model, x)["conv2"]
    masked = prune_input_area(model, x, gamma=0.05)
    m2 = input_mask_of(model.conv2)
    n = score.numel()
    assert masked["conv2"] == math.ceil(0.05 * n) == int((m2 == 0).sum())
    # every masked position scores no higher than every kept one
    assert score[m2 == 0].max() <= score[m2 != 0].min()
    second = prune_input_area(model, x, gamma=0.05)
    active_before = n - masked["conv2"]
    assert second["conv2"] == math.ceil(0.05 * active_before)
    assert int((input_mask_of(model.conv2) == 0).sum()) == masked["conv2"] + second["conv2"]
    assert bool(((input_mask_of(model.conv2) == 0) | (m2 != 0)).all())  # old zeros stay zero


def test_bad_input_changes_nothing():
    model = models.lenet5(width_mult=0.3)
    x = torch.rand(4, 1, 28, 28)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(GrowthInputError, match="gamma"):
        prune_input_area(model, x, gamma=1.5)
    with pytest.raises(GrowthInputError, match="fc1"):
        prune_input_area(model, x, layers=["conv1", "fc1"])
    with pytest.raises(GrowthInputError, match="in_channels"):
        apply_input_mask(model.conv2, torch.ones(3, 12, 12))
    assert input_mask_of(model.conv1) is None and input_mask_of(model.conv2) is None
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_widen_and_shrink_edit_the_consumers_mask_and_preserve_the_function():
    torch.manual_seed(0)
    model = models.lenet5(width_mult=0.3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.rand(8, 1, 28, 28)
    prune_input_area(model, x, gamma=0.2)
    old = input_mask_of(model.conv2).clone()
    F.cross_entropy(model(x), torch.randint(0, 10, (8,))).backward()
    opt.step()
    y = model(x)
    with pytest.warns(DeadUnitWarning):  # zero fan-in behind ReLU: fine for this check
        ops.widen(model, "conv1", 3, optimizer=opt)
    new = input_mask_of(model.conv2)
    assert new.shape == (old.shape[0] + 3, *old.shape[1:])
    assert torch.equal(new[: old.shape[0]], old) and bool((new[old.shape[0] :] == 1).all())
    assert torch.allclose(model(x), y, atol=1e-6)
    keep = torch.tensor([0, 2, 3, 5])
    conv1_out = model.conv1.out_channels
    ops.shrink(model, "conv1", keep, optimizer=opt)
    assert torch.equal(input_mask_of(model.conv2), new[keep])
    assert model.conv1.out_channels == 4 < conv1_out
    check_consistent(model, opt)


def test_mask_survives_deepcopy_save_and_load_and_can_be_removed(tmp_path):
    torch.manual_seed(0)
    model = models.lenet5(width_mult=0.3)
    x = torch.rand(4, 1, 28, 28)
    prune_input_area(model, x, gamma=0.3)
    y, flops = model(x), why.flops_per_example(model, x)
    twin = copy.deepcopy(model)
    assert torch.equal(twin(x), y) and why.flops_per_example(twin, x) == flops
    torchgrow.save(tmp_path / "m.pt", model)
    loaded = torchgrow.load(tmp_path / "m.pt").model
    assert torch.equal(loaded(x), y) and why.flops_per_example(loaded, x) == flops
    remove_input_mask(model.conv1)
    remove_input_mask(model.conv2)
    assert input_mask_of(model.conv1) is None
    assert why.flops_per_example(model, x) == why.flops_per_example(
        models.lenet5(width_mult=0.3), x
    )
    with pytest.raises(GrowthInputError, match="no input mask"):
        remove_input_mask(model.conv1)


def test_nest_driver_runs_partial_area_steps_after_pruning():
    torch.manual_seed(0)
    digits = data.digits()
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 10),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    nest = methods.NeST(
        model,
        opt,
        digits,
        seed_connectivity=None,
        max_grow_rounds=0,
        grow_epochs=3,
        max_prune_rounds=0,
        area_rounds=3,
        area_gamma=0.1,
        tolerance=1.0,  # accept every step: the test is about the mechanics
    )
    rows = nest.run()
    area = [r for r in rows if r["phase"] == "area"]
    assert len(area) == 3 and all(r["accepted"] for r in area)
    flops = [rows[0]["flops_per_example"]] + [r["flops_per_example"] for r in area]
    assert all(b < a for a, b in zip(flops, flops[1:], strict=False)), flops
    assert input_mask_of(nest.model[2]) is not None
    check_consistent(nest.model, nest.optimizer)
