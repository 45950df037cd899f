"""AutoGrow: block initialisers, the stopping policy, stage selection and the driver."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchgrow import data, methods, models
from torchgrow.errors import GrowthInputError
from torchgrow.how.autogrow import AdamInit, DefaultInit, GauInit, UniInit, ZeroInit
from torchgrow.ops import append_block, check_consistent
from torchgrow.when import Stagnation
from torchgrow.where import AllStages, StageRoundRobin


@pytest.fixture(scope="module")
def digits():
    return data.digits()


def tiny_resnet(seed: int = 0) -> models.CifarResNet:
    torch.manual_seed(seed)
    return models.cifar_resnet((1, 1, 1), (4, 6, 8), in_channels=1)


def sgd(model: nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)


def run(digits, **kwargs):
    model = tiny_resnet()
    opt = sgd(model)
    settings = dict(interval=1, window=100, max_blocks=3, max_growth_epochs=3, tail_epochs=0)
    settings.update(kwargs)
    ag = methods.AutoGrow(model, opt, digits, **settings)
    return ag, ag.run()


# ---------------------------------------------------------------- initialisers
def test_zero_init_preserves_the_function_exactly_and_gau_init_does_not(digits):
    ag, out = run(digits, init=ZeroInit())
    grown = [e for e in ag.events if "stage" in e]
    assert len(grown) == 3 and out["arch"] == [2, 2, 2]
    assert all(e["max_abs_delta"] == 0.0 for e in grown)
    ag, _ = run(digits, init=GauInit(seed=1))
    deltas = [e["max_abs_delta"] for e in ag.events if "stage" in e]
    assert len(deltas) == 3 and all(d > 1e-3 for d in deltas)


def test_random_inits_draw_the_last_bn_from_their_distributions():
    model = tiny_resnet()
    block = model.new_block("stage3")
    UniInit(meta=0.5, seed=0).init(block)
    g, b = block.last_bn.weight, block.last_bn.bias
    assert bool(((g >= 0) & (g < 0.5)).all()) and bool(((b >= 0) & (b < 0.5)).all())
    assert len(set(g.tolist())) == g.numel()  # drawn, not constant
    block = model.new_block("stage3")
    GauInit(meta=2.0, seed=0).init(block)
    assert bool((block.last_bn.weight < 0).any())  # symmetric, unlike UniInit
    # other parameters keep the default init
    assert torch.equal(block.bn1.weight, torch.ones_like(block.bn1.weight))


def test_adam_init_trains_only_the_new_last_bn(digits):
    model = tiny_resnet()
    opt = sgd(model)
    block = model.new_block("stage2")
    init = AdamInit(max_epochs=2, recover_within=0.0)
    init.init(block)
    append_block(model, "stage2", block, optimizer=opt)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(digits.x_train, digits.y_train), batch_size=64
    )
    # accuracy cannot exceed 1.0: never "recovered", so it uses its whole budget
    info = init.adapt(model, block, loader, F.cross_entropy, old_train_accuracy=1.0)
    assert info["epochs"] == 2 and not info["recovered"]
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"stage2.1.bn2.weight", "stage2.1.bn2.bias"}
    assert all(p.requires_grad for p in model.parameters())


def test_zero_init_needs_a_residual_block():
    plain = nn.Sequential(nn.Conv2d(2, 2, 3), nn.ReLU())
    with pytest.raises(GrowthInputError, match="last BatchNorm"):
        ZeroInit().init(plain)


# ---------------------------------------------------------------- stopping policy
def test_stagnation_uses_the_running_max_over_the_window():
    s = Stagnation(tau=0.05, window=2)
    for acc in (0.50, 0.60):
        s.push(acc)
        assert not s.stalled()  # fewer than J + 1 values
    s.push(0.55)  # running max stays 60: gained 10 points over 2 epochs
    assert s.values == [50.0, 60.0, 60.0] and not s.stalled()
    s.push(0.6004)  # 60.04 - 60.0 = 0.04 points < tau over the last 2 epochs
    assert s.stalled()
    s.push(0.70)
    assert not s.stalled()
    ema = Stagnation(metric="ema", decay=0.5, window=1)
    ema.push(0.4)
    ema.push(0.8)
    # the official ExponentialMovingAverage starts from 0: 0.5*0 + 0.5*40, then 0.5*20 + 0.5*80
    assert ema.values == pytest.approx([20.0, 50.0])
    with pytest.raises(GrowthInputError, match="fraction"):
        ema.push(80.0)


def test_the_stop_rule_freezes_the_last_grown_stage_only_and_growth_ends(digits):
    # tau so large that every check stalls: each interval freezes the stage grown just before
    ag, out = run(digits, window=1, tau=1e9, max_blocks=5, max_growth_epochs=20)
    kinds = [("freeze", e["frozen"]) if "frozen" in e else ("grow", e["stage"]) for e in ag.events]
    assert kinds == [
        ("grow", "stage1"),
        ("freeze", ["stage1"]),
        ("grow", "stage2"),
        ("freeze", ["stage2"]),
        ("grow", "stage3"),
        ("freeze", ["stage3"]),
    ]
    assert out["arch"] == [2, 2, 2] and out["frozen"] == ["stage1", "stage2", "stage3"]
    assert out["growth_epochs"] == 4  # growth ended when all stages were frozen


def test_full_stages_are_skipped_and_growth_ends_when_all_are_full(digits):
    # tau 0 never stalls (the running max cannot decrease); only stage2 has room
    ag, out = run(digits, tau=0.0, max_blocks=(1, 3, 1), max_growth_epochs=10)
    assert [e["stage"] for e in ag.events] == ["stage2", "stage2"]
    assert out["arch"] == [1, 3, 1] and out["growth_epochs"] == 3


def test_stage_selectors():
    stages = ["s1", "s2", "s3"]
    rr = StageRoundRobin()
    assert rr.select(stages, stages, []) == ["s1"]
    assert rr.select(stages, stages, ["s1"]) == ["s2"]
    assert rr.select(stages, ["s1", "s3"], ["s1"]) == ["s3"]  # s2 frozen or full: skipped
    assert rr.select(stages, ["s1"], ["s3"]) == ["s1"]  # cyclic
    assert rr.select(stages, [], ["s1"]) == []
    assert AllStages().select(stages, ["s1", "s3"], ["s2"]) == ["s1", "s3"]


def test_all_stages_mode_grows_every_open_stage_at_once(digits):
    ag, out = run(digits, where=AllStages(), init=ZeroInit(), max_growth_epochs=2)
    assert out["arch"] == [3, 3, 3]
    assert all(e["max_abs_delta"] == 0.0 for e in ag.events if "stage" in e)


# ---------------------------------------------------------------- optimizer and schedules
class SnapshotBeforeGrowth(StageRoundRobin):
    """Round robin that records the optimizer state just before each growth step."""

    def __init__(self, optimizer):
        self.optimizer, self.snapshots = optimizer, []

    def select(self, stages, open_stages, last):
        state = {id(p): copy.deepcopy(s) for p, s in self.optimizer.state.items()}
        self.snapshots.append(state)
        return super().select(stages, open_stages, last)


def test_old_momentum_survives_growth_and_new_parameters_start_empty(digits):
    model = tiny_resnet()
    opt = sgd(model)
    old = list(model.parameters())
    where = SnapshotBeforeGrowth(opt)
    ag = methods.AutoGrow(
        model, opt, digits, interval=1, max_growth_epochs=1, tail_epochs=0, where=where
    )
    ag.run()  # one epoch, then one growth step, then the growth budget ends
    (snap,) = where.snapshots
    for p in old:
        assert torch.equal(opt.state[p]["momentum_buffer"], snap[id(p)]["momentum_buffer"])
    new = [p for p in model.stage1[1].parameters()]
    assert new and all(any(q is p for q in opt.param_groups[0]["params"]) for p in new)
    assert all(not opt.state.get(p) for p in new)
    check_consistent(model, opt)


def test_convergent_staircase_and_tail_schedule(digits):
    model = tiny_resnet()
    opt = sgd(model)
    ag = methods.AutoGrow(
        model,
        opt,
        digits,
        interval=4,
        convergent=True,
        max_growth_epochs=8,
        tail_epochs=4,
        init=ZeroInit(),
    )
    ag.run()
    lrs = [r["lr"] / 0.05 for r in ag.rows]
    assert lrs == pytest.approx([1, 1, 0.1, 0.01, 1, 1, 0.1, 0.01, 1, 1, 0.1, 0.01])
    assert [r["phase"] for r in ag.rows] == ["growth"] * 8 + ["tail"] * 4
    assert [r["epoch"] for r in ag.rows] == list(range(1, 13))
    assert ag.summary()["training_flops"] > 0


def test_bad_arguments_change_nothing(digits):
    mlp = models.mlp([64, 8, 10])
    with pytest.raises(GrowthInputError, match="stage-structured"):
        methods.AutoGrow(mlp, sgd(mlp), digits)
    model = tiny_resnet()
    arch = model.arch
    with pytest.raises(GrowthInputError, match="max_blocks"):
        methods.AutoGrow(model, sgd(model), digits, max_blocks=(1, 0, 1))
    with pytest.raises(GrowthInputError, match="interval"):
        methods.AutoGrow(model, sgd(model), digits, interval=0)
    assert model.arch == arch


def test_residual_mlp_and_plain_nets_grow(digits):
    torch.manual_seed(0)
    mlp = models.residual_mlp((1, 1), (16, 16), in_features=64)
    ag = methods.AutoGrow(
        mlp, sgd(mlp), digits, interval=1, max_growth_epochs=2, tail_epochs=0, init=ZeroInit()
    )
    out = ag.run()
    assert out["arch"] == [2, 2]
    assert all(e["max_abs_delta"] == 0.0 for e in ag.events if "stage" in e)
    plain = models.plain_convnet((1, 1), (4, 8), in_channels=1, batch_norm=False)
    ag = methods.AutoGrow(plain, sgd(plain), digits, interval=1, max_growth_epochs=1, tail_epochs=0)
    assert isinstance(ag.init, DefaultInit)  # plain blocks: the framework default
    assert ag.run()["arch"] == [2, 1]
    with pytest.raises(GrowthInputError, match="last BatchNorm"):
        methods.AutoGrow(plain, sgd(plain), digits, init=ZeroInit())


def test_plain_blocks_with_batch_norm_get_the_default_init(digits):
    plain = models.plain_convnet((1, 1), (4, 8), in_channels=1, batch_norm=True)
    ag = methods.AutoGrow(plain, sgd(plain), digits, max_growth_epochs=0, tail_epochs=0)
    assert isinstance(ag.init, DefaultInit)  # its BN does not end a residual branch
    for init in (ZeroInit(), GauInit()):
        with pytest.raises(GrowthInputError, match="residual"):
            init.init(plain.new_block("stage1"))


def test_bottleneck_resnet_grows_function_preserving_with_zero_init(digits):
    torch.manual_seed(0)
    model = models.cifar_resnet((1, 1, 1), (8, 8, 8), in_channels=1, block="bottleneck")
    ag = methods.AutoGrow(
        model, sgd(model), digits, interval=1, max_growth_epochs=2, tail_epochs=0, init=ZeroInit()
    )
    out = ag.run()
    assert out["arch"] == [2, 2, 1]
    assert all(e["max_abs_delta"] == 0.0 for e in ag.events if "stage" in e)


def test_adam_init_in_the_driver_is_charged_and_recorded(digits):
    ag, out = run(digits, init=AdamInit(max_epochs=1), max_growth_epochs=1)
    (event,) = [e for e in ag.events if "stage" in e]
    assert event["adam_epochs"] == 1 and "adam_recovered" in event
    assert event["max_abs_delta"] > 0.0  # not function-preserving: the change is recorded
    plain, _ = run(digits, init=ZeroInit(), max_growth_epochs=1)
    assert out["training_flops"] > plain.summary()["training_flops"]  # the Adam epoch costs


def test_after_a_freeze_round_robin_goes_on_with_the_next_stage(digits):
    # the official code grows the stage after the frozen one (next_group), not stage 1 again
    model = tiny_resnet()
    ag = methods.AutoGrow(
        model, sgd(model), digits, interval=1, max_blocks=5, max_growth_epochs=3, tail_epochs=0
    )
    answers = iter([False, True])  # asked after the 2nd and 3rd epochs: stall at the 3rd
    ag.stagnation.stalled = lambda: next(answers)
    ag.run()
    kinds = [("freeze", e["frozen"]) if "frozen" in e else ("grow", e["stage"]) for e in ag.events]
    assert kinds == [
        ("grow", "stage1"),
        ("grow", "stage2"),
        ("freeze", ["stage2"]),
        ("grow", "stage3"),
    ]


def test_convergent_staircase_uses_the_codes_integer_thresholds(digits):
    # K = 6: lr until K // 2 = 3, lr/10 until K * 3 // 4 = 4, then lr/100 (K/2, 3K/4 differ here)
    model = tiny_resnet()
    ag = methods.AutoGrow(
        model, sgd(model), digits, interval=6, convergent=True, max_growth_epochs=6,
        tail_epochs=0, init=ZeroInit(),
    )  # fmt: skip
    ag.run()
    assert [r["lr"] / 0.05 for r in ag.rows] == pytest.approx([1, 1, 1, 0.1, 0.01, 0.01])


def test_adam_init_starts_from_the_default_last_bn_like_the_official_code(digits):
    block = tiny_resnet().new_block("stage2")
    with torch.no_grad():
        block.last_bn.weight.fill_(0.3)
        block.last_bn.bias.fill_(0.7)
    AdamInit().init(block)
    assert torch.equal(block.last_bn.weight, torch.ones_like(block.last_bn.weight))
    assert torch.equal(block.last_bn.bias, torch.zeros_like(block.last_bn.bias))
    assert not AdamInit.function_preserving
    ag, _ = run(digits, init=AdamInit(max_epochs=0), max_growth_epochs=1)
    (event,) = [e for e in ag.events if "stage" in e]
    assert event["max_abs_delta"] > 1e-3  # gamma 1 adds the new residual branch: recorded
