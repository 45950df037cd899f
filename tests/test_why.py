"""Tests of torchgrow.why: the metrics every growing method is judged on."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchgrow.ops.masks import apply_mask, grow_connections, mask_of, prune_connections
from torchgrow.why import (
    METRICS,
    TrainingCompute,
    accuracy,
    count_parameters,
    evaluate,
    flops_breakdown,
    flops_per_example,
    gradient_norm,
    mean_loss,
    metric,
)


def lenet_300_100() -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 300),
        nn.ReLU(),
        nn.Linear(300, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )


def lenet5_caffe() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 20, 5),
        nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(800, 500),
        nn.ReLU(),
        nn.Linear(500, 10),
    )


MNIST_BATCH = torch.zeros(2, 1, 28, 28)


# ---------------------------------------------------------------------------
# NeST paper numbers
# ---------------------------------------------------------------------------


def test_lenet_300_100_matches_nest_table():
    model = lenet_300_100()
    assert count_parameters(model) == 266_610
    flops = flops_per_example(model, MNIST_BATCH)
    # 2 * (784*300 + 300*100 + 100*10) = 532,400: the paper's "532K".
    assert flops == 2 * (784 * 300 + 300 * 100 + 100 * 10) == 532_400
    assert round(flops / 1000) == 532


def test_lenet5_matches_nest_table():
    model = lenet5_caffe()
    assert count_parameters(model) == 431_080
    assert flops_per_example(model, MNIST_BATCH) == 4_586_000


def test_lenet5_breakdown_per_layer():
    breakdown = flops_breakdown(lenet5_caffe(), MNIST_BATCH)
    assert breakdown == {
        "0": 2 * 500 * 24 * 24,
        "2": 2 * 25_000 * 8 * 8,
        "5": 2 * 400_000,
        "7": 2 * 5_000,
    }
    assert sum(breakdown.values()) == 4_586_000


# ---------------------------------------------------------------------------
# FLOP counting details
# ---------------------------------------------------------------------------


def test_conv_with_stride_padding_dilation_and_groups():
    conv = nn.Conv2d(4, 8, 3, stride=2, padding=1)
    x = torch.randn(3, 4, 15, 15)
    # out: floor((15 + 2 - 3) / 2) + 1 = 8
    assert flops_per_example(conv, x) == 2 * (8 * 4 * 3 * 3) * 8 * 8

    grouped = nn.Conv2d(4, 8, 3, groups=2, dilation=2, bias=False)
    # out: 15 - 2*(3-1) = 11; weight holds 4/2 input channels
    assert flops_per_example(grouped, x) == 2 * (8 * 2 * 3 * 3) * 11 * 11

    conv1d = nn.Conv1d(3, 5, 4, stride=3)
    x1 = torch.randn(2, 3, 20)
    assert flops_per_example(conv1d, x1) == 2 * (5 * 3 * 4) * 6  # (20 - 4) // 3 + 1


def test_conv_transpose_counts_input_positions():
    deconv = nn.ConvTranspose2d(6, 4, 3, stride=2)
    x = torch.randn(2, 6, 5, 5)
    assert flops_per_example(deconv, x) == 2 * (6 * 4 * 3 * 3) * 5 * 5


def test_linear_on_sequences_counts_every_position():
    model = nn.Linear(6, 4)
    x = torch.randn(3, 7, 6)
    assert flops_per_example(model, x) == 2 * 24 * 7


def test_normalization_and_free_layers():
    model = nn.Sequential(
        nn.Conv2d(2, 3, 1, bias=False),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.LayerNorm(12),
        nn.Dropout(0.5),
        nn.Linear(12, 2),
    )
    x = torch.randn(4, 2, 4, 4)
    breakdown = flops_breakdown(model, x)
    assert breakdown == {
        "0": 2 * 6 * 16,
        "1": 2 * 3 * 16,
        "5": 5 * 12,
        "7": 2 * 24,
    }
    assert flops_per_example(model, x) == sum(breakdown.values())


def test_shared_module_is_charged_per_call():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(5, 5)

        def forward(self, x):
            return self.fc(self.fc(x))

    model = Twice()
    assert flops_per_example(model, torch.randn(2, 5)) == 2 * 2 * 25
    assert count_parameters(model) == 30


@settings(max_examples=10, deadline=None)
@given(batch=st.integers(min_value=1, max_value=9))
def test_flops_do_not_depend_on_batch_size(batch):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 6 * 6, 4),
    )
    reference = flops_per_example(model, torch.randn(1, 1, 6, 6))
    assert flops_per_example(model, torch.randn(batch, 1, 6, 6)) == reference


def test_flops_restore_each_module_mode_and_leave_no_hooks():
    model = lenet5_caffe()
    model.train()
    model[5].eval()
    flops_per_example(model, MNIST_BATCH)
    assert model.training and model[0].training and not model[5].training
    assert all(not m._forward_hooks for m in model.modules())


def test_modes_and_hooks_restored_when_forward_fails():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2))  # shapes do not chain
    model.train()
    with pytest.raises(RuntimeError):
        flops_per_example(model, torch.randn(2, 3))
    assert all(m.training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())


def test_flops_input_errors():
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="batch"):
        flops_per_example(model, torch.tensor(1.0))
    with pytest.raises(ValueError, match="empty batch"):
        flops_per_example(model, torch.zeros(0, 3))
    with pytest.raises(TypeError, match="Tensor"):
        flops_per_example(model, "not a tensor")  # type: ignore[arg-type]


def test_flops_accept_several_inputs():
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 2)
            self.b = nn.Linear(4, 2)

        def forward(self, x, z):
            return self.a(x) + self.b(z)

    assert flops_per_example(Pair(), (torch.randn(5, 3), torch.randn(5, 4))) == 2 * (6 + 8)


# ---------------------------------------------------------------------------
# masks: dormant connections are neither parameters nor FLOPs
# ---------------------------------------------------------------------------


def test_random_mask_drops_parameters_and_flops_by_the_masked_count():
    model = lenet_300_100()
    dense_params = count_parameters(model)
    dense_flops = flops_per_example(model, MNIST_BATCH)
    mask = apply_mask(model[1], density=0.1, generator=torch.Generator().manual_seed(0))
    active = int(mask.sum())
    assert active == round(0.1 * 784 * 300)
    dormant = 784 * 300 - active
    assert count_parameters(model) == dense_params - dormant
    assert count_parameters(model, active_only=False) == dense_params
    assert flops_per_example(model, MNIST_BATCH) == dense_flops - 2 * dormant


def test_hand_made_conv_mask():
    conv = nn.Conv2d(2, 3, 3, stride=1, padding=1)
    mask = torch.zeros_like(conv.weight)
    mask[0, 0] = 1  # 9 active
    mask[2, 1, 1, 1] = 1  # 10 active
    apply_mask(conv, mask)
    x = torch.randn(2, 2, 5, 5)
    assert flops_per_example(conv, x) == 2 * 10 * 25
    assert count_parameters(conv) == 10 + 3
    assert count_parameters(conv, active_only=False) == 54 + 3


def test_grow_and_prune_connections_change_the_counts_exactly():
    layer = nn.Linear(10, 10, bias=False)
    apply_mask(layer, torch.eye(10))
    assert count_parameters(layer) == 10
    where = torch.zeros(10, 10, dtype=torch.bool)
    where[0, 1:4] = True
    assert grow_connections(layer, where) == 3
    assert count_parameters(layer) == 13
    assert flops_per_example(layer, torch.randn(3, 10)) == 26
    prune_connections(layer, torch.eye(10, dtype=torch.bool))
    assert count_parameters(layer) == 3
    assert flops_per_example(layer, torch.randn(3, 10)) == 6


def test_masked_weight_is_counted_once():
    layer = nn.Linear(4, 3)
    apply_mask(layer, torch.ones(3, 4))
    names = [n for n, _ in layer.named_parameters()]
    assert names == ["weight", "bias"]  # the mask is a buffer, not a parameter
    assert count_parameters(layer) == 15
    assert count_parameters(layer, active_only=False) == 15
    assert mask_of(layer) is not None


def test_trainable_only_and_tied_weights():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight  # tied
    assert count_parameters(model) == 16 + 4 + 4
    for p in model[0].parameters():
        p.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 4


def test_lazy_parameters_raise_a_clear_error():
    model = nn.LazyLinear(3)
    with pytest.raises(ValueError, match="forward pass"):
        count_parameters(model)


# ---------------------------------------------------------------------------
# TrainingCompute
# ---------------------------------------------------------------------------


def test_training_compute_arithmetic_refresh_and_caching():
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    compute = TrainingCompute(model, torch.randn(16, 8))
    f0 = 2 * (32 + 8)
    assert compute.flops_per_example == f0
    assert len(calls) == 1

    assert compute.add_step(32) == 3 * f0 * 32
    compute.add_step(10)
    compute.add_forward(5)
    assert compute.total == 3 * f0 * 42 + f0 * 5
    assert (compute.steps, compute.examples_trained, compute.examples_forward) == (2, 42, 5)
    assert len(calls) == 1  # no recounting per step

    # grow: replace the hidden layers with wider ones; the cache stays until refresh()
    model[0] = nn.Linear(8, 10)
    model[2] = nn.Linear(10, 2)
    assert compute.flops_per_example == f0
    f1 = 2 * (80 + 20)
    assert compute.refresh() == f1
    before = compute.total
    compute.add_step(4)
    assert compute.total == before + 3 * f1 * 4
    assert isinstance(compute.total, int)


def test_training_compute_sees_masks_after_refresh():
    model = nn.Sequential(nn.Linear(20, 20, bias=False))
    compute = TrainingCompute(model, torch.randn(1, 20))
    assert compute.flops_per_example == 800
    apply_mask(model[0], torch.eye(20))
    assert compute.refresh() == 40


def test_training_compute_state_dict_round_trip_and_errors():
    model = nn.Linear(3, 3)
    compute = TrainingCompute(model, torch.randn(2, 3))
    compute.add_step(7)
    compute.add_forward(2)
    state = compute.state_dict()

    other = TrainingCompute(nn.Linear(3, 3), torch.randn(2, 3))
    other.load_state_dict(state)
    assert other.state_dict() == state
    assert other.total == 3 * 18 * 7 + 18 * 2

    with pytest.raises(ValueError, match="missing"):
        other.load_state_dict({"total": 1})
    with pytest.raises(ValueError, match="non-negative"):
        other.load_state_dict({**state, "total": -1})
    with pytest.raises(ValueError, match="batch_size"):
        other.add_step(-1)
    with pytest.raises(ValueError, match="batch_size"):
        other.add_forward(2.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# gradient norm
# ---------------------------------------------------------------------------


def test_gradient_norm_of_new_weights():
    a = torch.zeros(3, requires_grad=True)
    b = torch.zeros(2, 2, requires_grad=True)
    c = torch.zeros(4, requires_grad=True)  # never gets a gradient
    (a * torch.tensor([3.0, 0.0, 0.0])).sum().backward()
    (b * torch.tensor([[4.0, 0.0], [0.0, 12.0]])).sum().backward()
    assert gradient_norm([a, b, c]) == pytest.approx(13.0)
    assert gradient_norm(c) == 0.0
    assert gradient_norm(a) == pytest.approx(3.0)

    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.zero_()
    layer(torch.tensor([[3.0, 4.0]])).sum().backward()
    assert gradient_norm(layer) == pytest.approx(5.0)


def test_gradient_norm_rejects_non_tensors():
    with pytest.raises(TypeError, match="tensors"):
        gradient_norm([1.0])  # type: ignore[list-item]


# ---------------------------------------------------------------------------
# quality metrics
# ---------------------------------------------------------------------------


def argmax_model() -> nn.Linear:
    """Predicts the index of the largest input coordinate."""
    model = nn.Linear(3, 3)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
        model.bias.zero_()
    return model


X = torch.tensor(
    [
        [5.0, 0.0, 0.0],
        [0.0, 5.0, 0.0],
        [0.0, 0.0, 5.0],
        [1.0, 2.0, 0.0],
        [3.0, 2.0, 1.0],
    ]
)
Y = torch.tensor([0, 1, 2, 0, 1])  # last two are wrong: 3/5 correct


def test_accuracy_on_a_model_with_known_predictions():
    model = argmax_model()
    assert accuracy(model, (X, Y)) == pytest.approx(0.6)
    assert accuracy(model, (X, Y), batch_size=2) == pytest.approx(0.6)
    assert accuracy(model, DataLoader(TensorDataset(X, Y), batch_size=3)) == pytest.approx(0.6)
    assert accuracy(model, TensorDataset(X, Y), batch_size=4) == pytest.approx(0.6)
    assert accuracy(model, (X[:3], Y[:3]), device="cpu") == 1.0


def test_accuracy_binary_logit_and_dense_labels():
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.zero_()
    x = torch.tensor([[-2.0], [3.0], [1.0], [-1.0]])
    y = torch.tensor([0, 1, 0, 0])
    assert accuracy(model, (x, y)) == pytest.approx(0.75)

    seg = nn.Identity()
    logits = torch.zeros(2, 3, 2, 2)
    labels = torch.tensor([[[0, 1], [2, 0]], [[1, 1], [1, 1]]])
    for n in range(2):
        for i in range(2):
            for j in range(2):
                logits[n, labels[n, i, j], i, j] = 1.0
    labels[1, 0, 0] = 0  # one wrong pixel out of 8
    assert accuracy(seg, (logits, labels)) == pytest.approx(7 / 8)


def test_accuracy_restores_modes_and_uses_eval_mode():
    model = nn.Sequential(nn.Dropout(0.9), argmax_model())
    model.train()
    model[1].eval()
    # dropout would scramble predictions if it were left in training mode
    assert accuracy(model, (X, Y)) == pytest.approx(0.6)
    assert model.training and model[0].training and not model[1].training


def test_accuracy_errors():
    model = argmax_model()
    with pytest.raises(ValueError, match="not class labels"):
        accuracy(model, (X, torch.randn(5, 3)))
    with pytest.raises(ValueError, match="no examples"):
        accuracy(model, (X[:0], Y[:0]))
    with pytest.raises(ValueError, match="first"):
        accuracy(model, (X, Y[:3]))
    with pytest.raises(TypeError, match="DataLoader"):
        accuracy(model, 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="two tensors"):
        accuracy(model, [1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        accuracy(model, (X, Y), batch_size=0)


def test_evaluate_cross_entropy_over_uneven_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    x = torch.randn(23, 4)
    y = torch.randint(0, 3, (23,))
    with torch.no_grad():
        out = model(x)
    expected_loss = F.cross_entropy(out, y).item()
    expected_acc = (out.argmax(1) == y).float().mean().item()
    result = evaluate(model, (x, y), batch_size=5)
    assert result["n"] == 23
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert result["accuracy"] == pytest.approx(expected_acc)
    assert mean_loss(model, (x, y), batch_size=7) == pytest.approx(expected_loss, rel=1e-5)


def test_evaluate_mse_for_float_targets_and_custom_loss():
    torch.manual_seed(1)
    model = nn.Linear(3, 1)
    x = torch.randn(17, 3)
    y = torch.randn(17)  # (N,) against outputs (N, 1)
    with torch.no_grad():
        out = model(x).squeeze(1)
    result = evaluate(model, (x, y), batch_size=4)
    assert set(result) == {"loss", "n"}
    assert result["loss"] == pytest.approx(F.mse_loss(out, y).item(), rel=1e-5)

    l1 = evaluate(model, (x, y.unsqueeze(1)), loss_fn=nn.L1Loss(), batch_size=6)
    assert l1["loss"] == pytest.approx((out - y).abs().mean().item(), rel=1e-5)

    with pytest.raises(ValueError, match="same size"):
        evaluate(model, (x, torch.randn(17, 2)))


def test_evaluate_binary_labels_use_logistic_loss():
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.bias.fill_(-1.0)
    x = torch.tensor([[0.0], [1.0], [2.0]])
    y = torch.tensor([0, 1, 0])
    logits = torch.tensor([-1.0, 1.0, 3.0])
    result = evaluate(model, (x, y))
    expected = F.binary_cross_entropy_with_logits(logits, y.float()).item()
    assert result["loss"] == pytest.approx(expected, rel=1e-6)
    assert result["accuracy"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------


def test_metric_registry():
    assert set(METRICS) >= {"parameters", "flops_per_example", "accuracy", "loss"}
    assert metric("parameters") is count_parameters
    model = argmax_model()
    assert metric("parameters")(model) == 12
    assert metric("flops_per_example")(model, X) == 18
    assert metric("accuracy")(model, (X, Y)) == pytest.approx(0.6)
    assert math.isfinite(metric("loss")(model, (X, Y)))
    with pytest.raises(ValueError, match="accuracy, flops_per_example, loss, parameters"):
        metric("speed")
