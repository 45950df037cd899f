"""Property tests of the width and depth edits over random architectures.

Every model here is built by the test from a drawn specification (MLPs, CNNs
with a conv -> Flatten -> Linear hand-over, small ResNets with identity and
1x1-conv shortcuts, a depthwise conv between two pointwise convs), with
non-trivial BatchNorm statistics. The properties are the design contract of
``torchgrow.ops``: zero fan-in or zero fan-out preserves the function, shrink
undoes widen exactly, identity layers inserted after a ReLU preserve the
function, and the ``nn.Sequential`` fast path of the wiring analysis agrees
with the ``torch.fx`` path.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from torchgrow.graph import analyse, find_unit, growable_units
from torchgrow.nn import ReLU1
from torchgrow.ops import identity_conv, identity_linear, insert_after, shrink, widen
from torchgrow.ops.layers import expand_index

TOL = 1e-6
PROPS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "relu1": ReLU1}

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread is faster, and robust to a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- architectures
class Wrapper(nn.Module):
    """A thin module whose forward calls a Sequential: forces the torch.fx path."""

    def __init__(self, seq: nn.Module) -> None:
        super().__init__()
        self.seq = seq

    def forward(self, x: Tensor) -> Tensor:
        return self.seq(x)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with BN, identity or 1x1-conv shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        sc = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + sc)


class SmallResNet(nn.Module):
    def __init__(self, cin: int, stem: int, stages: list[list[tuple[int, int]]], out: int):
        super().__init__()
        self.stem = nn.Conv2d(cin, stem, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(stem)
        blocks: list[nn.Module] = []
        c = stem
        for stage in stages:
            layers = []
            for cout, stride in stage:
                layers.append(BasicBlock(c, cout, stride))
                c = cout
            blocks.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, out)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.stem(x)))
        x = self.stages(x)
        return self.fc(torch.flatten(self.pool(x), 1))


@dataclass(frozen=True)
class Spec:
    """A drawn architecture; ``build`` turns it into (model, input)."""

    family: str
    seed: int
    params: tuple
    wrap: bool = False


def randomise_bn(model: nn.Module) -> None:
    """Make every BatchNorm's statistics and affine parameters non-trivial."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.normal_(0.0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.3)


def build(spec: Spec) -> tuple[nn.Module, Tensor]:
    torch.manual_seed(spec.seed)
    batch = 4
    if spec.family == "mlp":
        n_in, widths, bn, act, n_out = spec.params
        layers: list[nn.Module] = []
        d = n_in
        for w in widths:
            layers.append(nn.Linear(d, w))
            if bn:
                layers.append(nn.BatchNorm1d(w))
            layers.append(ACTS[act]())
            d = w
        layers.append(nn.Linear(d, n_out))
        model: nn.Module = nn.Sequential(*layers)
        x = torch.randn(batch, n_in)
    elif spec.family == "cnn":
        cin, hw, convs, bn, act, pool, hidden, n_out = spec.params
        layers = []
        c = cin
        h, w = hw
        for i, (cout, ks) in enumerate(convs):
            layers.append(nn.Conv2d(c, cout, ks, padding=ks // 2))
            if bn:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(ACTS[act]())
            if pool and i == 0:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = cout
        layers.append(nn.Flatten())
        if hidden:
            layers += [nn.Linear(c * h * w, hidden), ACTS[act]()]
            layers.append(nn.Linear(hidden, n_out))
        else:
            layers.append(nn.Linear(c * h * w, n_out))
        model = nn.Sequential(*layers)
        x = torch.randn(batch, cin, *hw)
    elif spec.family == "resnet":
        cin, stem, stages, hw, n_out = spec.params
        model = SmallResNet(cin, stem, [list(s) for s in stages], n_out)
        x = torch.randn(batch, cin, hw, hw)
    elif spec.family == "depthwise":
        cin, c, c2, bn, act, hw, n_out = spec.params
        layers = [nn.Conv2d(cin, c, 1)]
        if bn:
            layers.append(nn.BatchNorm2d(c))
        layers += [ACTS[act](), nn.Conv2d(c, c, 3, padding=1, groups=c)]
        if bn:
            layers.append(nn.BatchNorm2d(c))
        layers += [ACTS[act](), nn.Conv2d(c, c2, 1), ACTS[act]()]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c2, n_out)]
        model = nn.Sequential(*layers)
        x = torch.randn(batch, cin, hw, hw)
    else:  # pragma: no cover
        raise AssertionError(spec.family)
    randomise_bn(model)
    if spec.wrap:
        model = Wrapper(model)
    return model.eval(), x


seeds = st.integers(0, 2**16)
acts = st.sampled_from(sorted(ACTS))


@st.composite
def mlp_specs(draw, act=None, bn=None, wrap=None) -> Spec:
    widths = tuple(draw(st.lists(st.integers(1, 8), min_size=1, max_size=4)))
    params = (
        draw(st.integers(1, 5)),
        widths,
        draw(st.booleans()) if bn is None else bn,
        draw(acts) if act is None else act,
        draw(st.integers(1, 4)),
    )
    return Spec("mlp", draw(seeds), params, draw(st.booleans()) if wrap is None else wrap)


@st.composite
def cnn_specs(draw, act=None, wrap=None) -> Spec:
    convs = tuple(
        (draw(st.integers(1, 6)), draw(st.sampled_from([1, 3])))
        for _ in range(draw(st.integers(1, 3)))
    )
    params = (
        draw(st.integers(1, 3)),
        (draw(st.integers(4, 9)), draw(st.integers(4, 9))),
        convs,
        draw(st.booleans()),
        draw(acts) if act is None else act,
        draw(st.booleans()),
        draw(st.sampled_from([0, 0, 3, 5])),
        draw(st.integers(1, 4)),
    )
    return Spec("cnn", draw(seeds), params, draw(st.booleans()) if wrap is None else wrap)


@st.composite
def resnet_specs(draw) -> Spec:
    stem = draw(st.integers(1, 5))
    stages = []
    for s in range(draw(st.integers(1, 2))):
        blocks = []
        for b in range(draw(st.integers(1, 2))):
            if b == 0 and s > 0:
                # first block of a later stage: stride 2 and/or a channel change (1x1 shortcut)
                blocks.append((draw(st.integers(1, 6)), draw(st.sampled_from([1, 2]))))
            elif b == 0:
                # first stage: identity shortcut or a channel change at stride 1
                blocks.append((draw(st.sampled_from([stem, stem, stem + 1])), 1))
            else:
                blocks.append((blocks[-1][0], 1))
        stages.append(tuple(blocks))
    params = (draw(st.integers(1, 3)), stem, tuple(stages), draw(st.integers(4, 7)), 3)
    return Spec("resnet", draw(seeds), params)


@st.composite
def depthwise_specs(draw) -> Spec:
    params = (
        draw(st.integers(1, 3)),
        draw(st.integers(2, 5)),
        draw(st.integers(1, 5)),
        draw(st.booleans()),
        draw(acts),
        draw(st.integers(3, 6)),
        draw(st.integers(1, 3)),
    )
    return Spec("depthwise", draw(seeds), params, draw(st.booleans()))


any_specs = st.one_of(mlp_specs(), cnn_specs(), resnet_specs(), depthwise_specs())


# ---------------------------------------------------------------- helpers
def fan_in_shape(m: nn.Module, k: int) -> tuple[int, ...]:
    if isinstance(m, nn.Linear):
        return (k, m.in_features)
    assert isinstance(m, nn.Conv2d)
    return (k, m.in_channels, *m.kernel_size)


def fan_out_shape(m: nn.Module, k: int, factor: int) -> tuple[int, ...]:
    if isinstance(m, nn.Linear):
        return (m.out_features, k * factor)
    assert isinstance(m, nn.Conv2d)
    return (m.out_channels, k, *m.kernel_size)


def random_fan_in(model: nn.Module, unit, k: int) -> dict[str, Tensor]:
    mods = dict(model.named_modules())
    return {p: 0.5 * torch.randn(fan_in_shape(mods[p], k)) for p in unit.producers}


def random_fan_out(model: nn.Module, unit, k: int) -> dict[str, Tensor]:
    mods = dict(model.named_modules())
    return {
        c.name: 0.5 * torch.randn(fan_out_shape(mods[c.name], k, c.factor)) for c in unit.consumers
    }


def out_width(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def in_width(m: nn.Module) -> int:
    return m.in_features if isinstance(m, nn.Linear) else m.in_channels


def per_channel_width(m: nn.Module) -> int:
    if isinstance(m, _BatchNorm):
        assert m.weight.shape == m.bias.shape == m.running_mean.shape == m.running_var.shape
        return m.num_features
    assert isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels
    assert m.weight.shape[:2] == (m.out_channels, 1)
    return m.out_channels


def check_unit_widths(model: nn.Module, unit, width: int) -> None:
    """Every module of ``unit`` (names of the unit before the edit) agrees on ``width``."""
    mods = dict(model.named_modules())
    for p in unit.producers:
        m = mods[p]
        assert out_width(m) == width
        assert m.weight.shape[0] == width
        if m.bias is not None:
            assert m.bias.shape == (width,)
    for pc in unit.per_channel:
        assert per_channel_width(mods[pc]) == width
    for c in unit.consumers:
        m = mods[c.name]
        assert in_width(m) == width * c.factor
        assert m.weight.shape[1] == width * c.factor


def check_identity_entries(model: nn.Module, unit, old: int) -> None:
    """New per-channel entries are the identity: BN (1, 0, mean 0, var 1), depthwise centre tap."""
    mods = dict(model.named_modules())
    for pc in unit.per_channel:
        m = mods[pc]
        if isinstance(m, _BatchNorm):
            assert torch.all(m.weight.detach()[old:] == 1)
            assert torch.all(m.bias.detach()[old:] == 0)
            assert torch.all(m.running_mean[old:] == 0)
            assert torch.all(m.running_var[old:] == 1)
        else:
            taps = m.weight.detach()[old:, 0]
            expected = torch.zeros_like(taps)
            expected[:, taps.shape[1] // 2, taps.shape[2] // 2] = 1
            assert torch.equal(taps, expected)
            if m.bias is not None:
                assert torch.all(m.bias.detach()[old:] == 0)
    for p in unit.producers:
        if mods[p].bias is not None:
            assert torch.all(mods[p].bias.detach()[old:] == 0)


def pick_unit(model: nn.Module, data):
    units = growable_units(model)
    assert units, "every drawn architecture has at least one growable unit"
    unit = units[data.draw(st.integers(0, len(units) - 1), label="unit")]
    name = data.draw(st.sampled_from(unit.producers), label="producer")
    return unit, name


@torch.no_grad()
def run(model: nn.Module, x: Tensor) -> Tensor:
    return model(x)


def max_diff(a: Tensor, b: Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- (a) zero fan-in
@PROPS
@given(spec=any_specs, data=st.data())
def test_widen_zero_fan_in_random_fan_out_preserves_function(spec, data):
    model, x = build(spec)
    y0 = run(model, x)
    unit, name = pick_unit(model, data)
    k = data.draw(st.integers(1, 3), label="k")
    fan_out = random_fan_out(model, unit, k)
    record = widen(model, name, k, fan_out=fan_out)
    assert record.units_added == k
    check_unit_widths(model, unit, unit.width + k)
    check_identity_entries(model, unit, unit.width)
    assert max_diff(run(model, x), y0) <= TOL
    # the requested fan-out really is in the consumers, the new fan-in really is zero
    mods = dict(model.named_modules())
    for c in unit.consumers:
        w = mods[c.name].weight.detach()
        new = w[:, unit.width * c.factor :]
        assert torch.equal(new, fan_out[c.name])
    for p in unit.producers:
        assert not mods[p].weight.detach()[unit.width :].any()


# ---------------------------------------------------------------- (b) zero fan-out
@PROPS
@given(spec=any_specs, data=st.data())
def test_widen_random_fan_in_zero_fan_out_preserves_function(spec, data):
    model, x = build(spec)
    y0 = run(model, x)
    unit, name = pick_unit(model, data)
    k = data.draw(st.integers(1, 3), label="k")
    fan_in = random_fan_in(model, unit, k)
    widen(model, name, k, fan_in=fan_in)
    check_unit_widths(model, unit, unit.width + k)
    check_identity_entries(model, unit, unit.width)
    assert max_diff(run(model, x), y0) <= TOL
    mods = dict(model.named_modules())
    for p in unit.producers:
        assert torch.equal(mods[p].weight.detach()[unit.width :], fan_in[p])
    for c in unit.consumers:
        assert not mods[c.name].weight.detach()[:, unit.width * c.factor :].any()


# ---------------------------------------------------------------- (c) both random
@PROPS
@given(spec=mlp_specs(act="tanh", bn=False), data=st.data())
def test_widen_random_fan_in_and_fan_out_changes_the_function(spec, data):
    model, x = build(spec)
    y0 = run(model, x)
    unit, name = pick_unit(model, data)
    k = data.draw(st.integers(1, 3), label="k")
    fan_in = {p: t + 0.5 * t.sign() for p, t in random_fan_in(model, unit, k).items()}
    fan_out = {c: t + 0.5 * t.sign() for c, t in random_fan_out(model, unit, k).items()}
    widen(model, name, k, fan_in=fan_in, fan_out=fan_out)
    assert max_diff(run(model, x), y0) > 1e-4


def test_widen_random_fan_in_and_fan_out_changes_a_cnn():
    spec = Spec("cnn", 3, (2, (6, 6), ((4, 3), (3, 3)), False, "tanh", False, 0, 2))
    model, x = build(spec)
    y0 = run(model, x)
    unit = find_unit(model, "0")
    torch.manual_seed(0)
    widen(
        model, "0", 2, fan_in=random_fan_in(model, unit, 2), fan_out=random_fan_out(model, unit, 2)
    )
    assert max_diff(run(model, x), y0) > 1e-4


# ---------------------------------------------------------------- (d) shrink undoes widen
@PROPS
@given(spec=any_specs, data=st.data())
def test_shrink_back_restores_the_exact_function(spec, data):
    model, x = build(spec)
    before = snapshot(model)
    shapes = {n: p.shape for n, p in model.named_parameters()}
    y0 = run(model, x)
    unit, name = pick_unit(model, data)
    k = data.draw(st.integers(1, 3), label="k")
    widen(
        model,
        name,
        k,
        fan_in=random_fan_in(model, unit, k),
        fan_out=random_fan_out(model, unit, k),
    )
    other = data.draw(st.sampled_from(unit.producers), label="shrink via")
    record = shrink(model, other, keep=list(range(unit.width)))
    assert record.units_removed == k
    assert {n: p.shape for n, p in model.named_parameters()} == shapes
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert torch.equal(run(model, x), y0)
    check_unit_widths(model, unit, unit.width)


# ---------------------------------------------------------------- (e) shrink arbitrary units
@PROPS
@given(spec=any_specs, data=st.data())
def test_shrink_arbitrary_units_equals_dropping_their_fan_out(spec, data):
    model, x = build(spec)
    unit, name = pick_unit(model, data)
    keep = data.draw(
        st.lists(st.integers(0, unit.width - 1), min_size=1, max_size=unit.width, unique=True),
        label="keep",
    )
    kept = torch.tensor(sorted(keep))
    removed = torch.tensor([i for i in range(unit.width) if i not in keep], dtype=torch.long)
    # reference: the original model with the removed channels' fan-out zeroed
    reference = copy.deepcopy(model)
    ref_mods = dict(reference.named_modules())
    with torch.no_grad():
        for c in unit.consumers:
            ref_mods[c.name].weight[:, expand_index(removed, c.factor)] = 0
    old = {n: p.detach().clone() for n, p in model.named_parameters()}

    shrink(model, name, keep=keep)

    check_unit_widths(model, unit, len(keep))
    mods = dict(model.named_modules())
    for p in unit.producers:
        assert torch.equal(mods[p].weight.detach(), old[f"{p}.weight"][kept])
    for c in unit.consumers:
        cols = expand_index(kept, c.factor)
        assert torch.equal(mods[c.name].weight.detach(), old[f"{c.name}.weight"][:, cols])
    for pc in unit.per_channel:
        assert torch.equal(mods[pc].weight.detach(), old[f"{pc}.weight"][kept])
    assert max_diff(run(model, x), run(reference, x)) <= 1e-5


# ---------------------------------------------------------------- (f) identity insertions
@PROPS
@given(spec=mlp_specs(act="relu"), data=st.data())
def test_insert_identity_linear_after_relu_preserves_function(spec, data):
    model, x = build(spec)
    y0 = run(model, x)
    relus = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    where = data.draw(st.sampled_from(relus), label="after")
    # the ReLU's width: the out_features of the last Linear before it
    width = None
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            width = m.out_features
        if n == where:
            break
    n_params = len(list(model.parameters()))
    record = insert_after(model, where, identity_linear(width))
    assert len(record.added) == 2
    assert len(list(model.parameters())) == n_params + 2
    new = dict(model.named_modules())[record.details["new"]]
    assert isinstance(new, nn.Linear) and new.in_features == new.out_features == width
    assert max_diff(run(model, x), y0) <= TOL
    # the inserted layer is an ordinary producer now: widen it, still the same function
    unit = find_unit(model, record.details["new"])
    widen(model, record.details["new"], 2, fan_out=random_fan_out(model, unit, 2))
    assert max_diff(run(model, x), y0) <= TOL


@PROPS
@given(spec=cnn_specs(act="relu"), data=st.data(), ks=st.sampled_from([1, 3]))
def test_insert_identity_conv_with_bn_after_relu_preserves_function(spec, data, ks):
    model, x = build(spec)
    y0 = run(model, x)
    convs = {}
    relu_width = {}
    current = None
    for n, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            current = m.out_channels
            convs[n] = m
        elif isinstance(m, nn.Linear):
            current = None
        elif isinstance(m, nn.ReLU) and current is not None:
            relu_width[n] = current
    where = data.draw(st.sampled_from(sorted(relu_width)), label="after")
    block = identity_conv(relu_width[where], ks, batchnorm=True).eval()
    record = insert_after(model, where, block)
    assert len(record.added) == 3  # conv weight, bn weight, bn bias
    assert max_diff(run(model, x), y0) <= TOL


@PROPS
@given(spec=resnet_specs(), data=st.data())
def test_insert_identity_conv_inside_a_residual_block_preserves_function(spec, data):
    model, x = build(spec)
    y0 = run(model, x)
    bns = [n for n, m in model.named_modules() if n.endswith(".bn1")]
    where = data.draw(st.sampled_from(bns), label="after")
    channels = dict(model.named_modules())[where].num_features
    record = insert_after(model, where, identity_conv(channels, batchnorm=True).eval())
    assert record.details["new"] == f"{where}.{where.rsplit('.', 1)[1]}_next"
    # not in a Sequential: the original BN was wrapped, same object
    assert max_diff(run(model, x), y0) <= TOL
    # and the model is still analysable and growable around the new layer
    conv1 = where[: -len("bn1")] + "conv1"
    unit = find_unit(model, conv1)
    assert f"{record.details['new']}.conv" in {c.name for c in unit.consumers}
    widen(model, conv1, 2, fan_out=random_fan_out(model, unit, 2))
    assert max_diff(run(model, x), y0) <= TOL


# ---------------------------------------------------------------- (g) repeated widening
@PROPS
@given(spec=any_specs, data=st.data())
def test_repeated_widening_of_the_same_unit(spec, data):
    model, x = build(spec)
    y0 = run(model, x)
    unit, name = pick_unit(model, data)
    width = unit.width
    for i in range(3):
        k = data.draw(st.integers(1, 3), label=f"k{i}")
        current = find_unit(model, name)
        assert current.width == width
        assert current.producers == unit.producers
        if i % 2 == 0:
            widen(model, name, k, fan_out=random_fan_out(model, current, k))
        else:
            widen(model, name, k, fan_in=random_fan_in(model, current, k))
        width += k
        check_unit_widths(model, unit, width)
        assert max_diff(run(model, x), y0) <= TOL
    # and back to the original width in one shrink
    shrink(model, name, keep=range(unit.width))
    check_unit_widths(model, unit, unit.width)
    assert max_diff(run(model, x), y0) <= TOL


# ---------------------------------------------------------------- (h) Sequential fast path == fx
def _strip(unit, prefix: str):
    def s(n: str) -> str:
        assert n.startswith(prefix), (n, prefix)
        return n[len(prefix) :]

    return (
        tuple(s(p) for p in unit.producers),
        tuple(s(p) for p in unit.per_channel),
        tuple((s(c.name), c.factor) for c in unit.consumers),
        unit.width,
        unit.between,
    )


def _plain(unit):
    return (
        unit.producers,
        unit.per_channel,
        tuple((c.name, c.factor) for c in unit.consumers),
        unit.width,
        unit.between,
    )


@PROPS
@given(
    spec=st.one_of(mlp_specs(wrap=False), cnn_specs(wrap=False), depthwise_specs()),
)
def test_sequential_fast_path_matches_fx_path(spec):
    seq, x = build(Spec(spec.family, spec.seed, spec.params, wrap=False))
    assert isinstance(seq, nn.Sequential)
    fast = growable_units(seq, example_input=x)
    traced = growable_units(Wrapper(seq), example_input=x)
    assert [_plain(u) for u in fast] == [_strip(u, "seq.") for u in traced]
    # every producer is either growable or blocked, the same ones on both paths
    fast_blocked = set(analyse(seq).blocked)
    fx_blocked = {n[len("seq.") :] for n in analyse(Wrapper(seq)).blocked}
    assert fast_blocked == fx_blocked
    producers = {n for n, m in seq.named_children() if isinstance(m, (nn.Linear, nn.Conv2d))}
    producers -= {n for n, m in seq.named_children() if isinstance(m, nn.Conv2d) and m.groups > 1}
    grown = {p for u in fast for p in u.producers}
    assert grown | fast_blocked == producers
    assert not grown & fast_blocked
    # the last Linear feeds the output and can never grow
    last = [n for n, m in seq.named_children() if isinstance(m, nn.Linear)][-1]
    assert last in fast_blocked


# ---------------------------------------------------------------- deterministic anchors
def test_resnet_units_tie_residual_producers():
    """Identity shortcuts tie the stem and every conv2 of a stage into one unit."""
    spec = Spec("resnet", 0, (3, 4, (((4, 1), (4, 1)), ((6, 2), (6, 1))), 6, 3))
    model, x = build(spec)
    units = {u.name: u for u in growable_units(model, example_input=x)}
    stem = units["stem"]
    assert stem.producers == ("stem", "stages.0.0.conv2", "stages.0.1.conv2")
    assert set(stem.per_channel) == {"bn", "stages.0.0.bn2", "stages.0.1.bn2"}
    assert {c.name for c in stem.consumers} == {
        "stages.0.0.conv1",
        "stages.0.1.conv1",
        "stages.1.0.conv1",
        "stages.1.0.shortcut.0",
    }
    second = units["stages.1.0.conv2"]
    assert second.producers == ("stages.1.0.conv2", "stages.1.0.shortcut.0", "stages.1.1.conv2")
    assert {c.name for c in second.consumers} == {"stages.1.1.conv1", "fc"}
    y0 = run(model, x)
    widen(model, "stages.0.1.conv2", 3, fan_out=random_fan_out(model, stem, 3))
    assert model.stem.out_channels == model.bn.num_features == 7
    assert max_diff(run(model, x), y0) <= TOL


def test_widen_through_flatten_adds_hw_inputs_per_channel():
    spec = Spec("cnn", 1, (2, (8, 6), ((3, 3),), True, "relu1", True, 0, 2))
    model, x = build(spec)
    unit = find_unit(model, "0")
    assert unit.consumers[0].factor == 4 * 3
    y0 = run(model, x)
    widen(model, "0", 2, fan_out=random_fan_out(model, unit, 2))
    assert model[-1].in_features == 5 * 12
    assert max_diff(run(model, x), y0) <= TOL


def test_depthwise_conv_grows_identity_taps():
    spec = Spec("depthwise", 2, (2, 3, 4, True, "tanh", 5, 2))
    model, x = build(spec)
    y0 = run(model, x)
    unit = find_unit(model, "0")
    dw = model[3]
    assert unit.per_channel == ("1", "3", "4")
    widen(model, "0", 2, fan_in=random_fan_in(model, unit, 2))
    assert dw.groups == dw.in_channels == dw.out_channels == 5
    new_taps = dw.weight.detach()[3:, 0]
    expected = torch.zeros(2, 3, 3)
    expected[:, 1, 1] = 1
    assert torch.equal(new_taps, expected)
    assert max_diff(run(model, x), y0) <= TOL


def test_widen_warns_for_dead_units_behind_relu_only():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.warns(UserWarning, match="never train"):
        widen(model, "0", 1)
    model = nn.Sequential(nn.Linear(3, 4), ReLU1(), nn.Linear(4, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        widen(model, "0", 1)
    assert model[0].out_features == 5
