"""Followers: averaged copies, further optimizers and schedulers that every edit updates."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import torchgrow
from torchgrow import models
from torchgrow.errors import GrowthInputError
from torchgrow.how import GradMax
from torchgrow.nn import ReLU1
from torchgrow.ops import check_consistent, follow, followers, identity_linear, insert_after, widen
from torchgrow.size import Units
from torchgrow.when import Manual


def _data(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 20, generator=g), torch.randint(0, 3, (n,), generator=g)


def _trained(opt_cls=torch.optim.SGD, **kw):
    torch.manual_seed(0)
    model = models.mlp([20, 8, 6, 3], activation="relu1")
    opt = opt_cls(model.parameters(), lr=0.05, **kw)
    x, y = _data()
    avg = AveragedModel(model)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        avg.update_parameters(model)
    return model, opt, avg


def test_an_averaged_copy_follows_growth_keeping_its_averages():
    model, opt, avg = _trained(momentum=0.9)
    before = {n: p.detach().clone() for n, p in avg.module.named_parameters()}
    n_averaged = int(avg.n_averaged)
    grower = torchgrow.Grower(model, opt, when=Manual(), how=GradMax(), size=Units(3),
                              followers=[avg])  # fmt: skip
    grower.grow(_data())
    after = dict(avg.module.named_parameters())
    assert {n: p.shape for n, p in after.items()} == {
        n: p.shape for n, p in model.named_parameters()
    }
    # old rows/columns keep their averages; the new ones are the model's values
    assert torch.equal(after["fc1.weight"][:8], before["fc1.weight"])
    assert torch.equal(after["fc1.weight"][8:], model.fc1.weight[8:].detach())
    assert torch.equal(after["fc2.weight"][:6, :8], before["fc2.weight"])
    assert torch.equal(after["fc3.weight"][:, :6], before["fc3.weight"])
    assert torch.equal(after["fc3.weight"][:, 6:], model.fc3.weight[:, 6:].detach())
    assert int(avg.n_averaged) == n_averaged
    avg.update_parameters(model)  # the first update after growth works
    x, _ = _data()
    assert avg(x).shape == (32, 3)


def test_an_ema_with_buffers_follows_a_batchnorm_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 8), nn.BatchNorm1d(8), ReLU1(), nn.Linear(8, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    x, y = _data()
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        ema.update_parameters(model)
    old_weight = ema.module[0].weight.detach().clone()
    torchgrow.ops.follow(model, ema)
    widen(model, "0", 2, optimizer=opt)
    assert torch.equal(ema.module[0].weight[:8], old_weight)
    # a buffer that changed shape takes the model's values (an edit records no remap for it)
    assert torch.equal(ema.module[1].running_mean, model[1].running_mean)
    ema.update_parameters(model)
    check_consistent(model, opt)


def test_a_second_optimizer_is_carried_and_an_unregistered_one_warns():
    torch.manual_seed(0)
    model = models.mlp([20, 8, 6, 3], activation="relu1")
    body = torch.optim.Adam([*model.fc1.parameters(), *model.fc2.parameters()], lr=1e-2)
    head = torch.optim.Adam(model.fc3.parameters(), lr=1e-2)
    x, y = _data()
    nn.functional.cross_entropy(model(x), y).backward()
    body.step()
    head.step()
    moment = head.state[model.fc3.weight]["exp_avg"].clone()
    grower = torchgrow.Grower(model, body, when=Manual(), how=GradMax(), size=Units(2))
    grower.follow(head)
    grower.grow((x, y))
    state = head.state[model.fc3.weight]["exp_avg"]
    assert state.shape == (3, 8)
    assert torch.equal(state[:, :6], moment) and not state[:, 6:].any()
    assert head.param_groups[0]["params"][0] is model.fc3.weight
    held = {id(p) for o in (body, head) for g in o.param_groups for p in g["params"]}
    assert held == {id(p) for p in model.parameters()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # registered: no warning
        head.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        head.step()

    stale = torch.optim.SGD(model.fc3.parameters(), lr=0.1)  # not registered
    widen(model, "fc2", 1, optimizer=body)
    with pytest.warns(UserWarning, match=r"steps 1 parameter\(s\) that a torchgrow edit replaced"):
        stale.step()


def test_followers_follow_a_depth_edit_that_renames_parameters():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    avg = AveragedModel(model)
    x, y = _data()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    avg.update_parameters(model)
    last = avg.module[2].weight.detach().clone()
    follow(model, avg)
    insert_after(model, "1", identity_linear(8), optimizer=opt)
    assert [type(m).__name__ for m in avg.module] == ["Linear", "ReLU", "Linear", "Linear"]
    assert torch.equal(avg.module[3].weight, last)  # the old "2" is now "3"
    assert torch.equal(avg.module[2].weight, model[2].weight.detach())  # new: the model's value
    avg.update_parameters(model)


def test_a_refused_edit_leaves_the_followers_untouched_and_bad_followers_are_refused():
    model, opt, avg = _trained()
    follow(model, avg, torch.optim.lr_scheduler.StepLR(opt, 1))
    assert len(followers(model)) == 2
    before = {n: p.detach().clone() for n, p in avg.module.named_parameters()}
    with pytest.raises(GrowthInputError):
        widen(model, "fc1", 2, optimizer=opt, fan_in=torch.zeros(5, 5))  # wrong shape
    assert {n: p.shape for n, p in avg.module.named_parameters()} == {
        n: p.shape for n, p in before.items()
    }
    with pytest.raises(GrowthInputError, match="cannot follow a str"):
        follow(model, "ema")
    with pytest.raises(GrowthInputError, match="does not have the model's parameters"):
        follow(model, AveragedModel(models.mlp([20, 4, 3])))
    assert len(followers(model)) == 2
