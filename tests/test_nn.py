"""ReLU1: the rectifier whose derivative at 0 is 1 (METHODS.md section 1)."""

from __future__ import annotations

import torch

from torchgrow.nn import ReLU1, relu1


def test_derivative_at_zero_is_one_and_matches_relu_elsewhere():
    x = torch.tensor([-2.0, -1e-7, 0.0, 1e-7, 3.0], requires_grad=True)
    relu1(x).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    x2 = x.detach().clone().requires_grad_()
    torch.relu(x2).sum().backward()
    assert x2.grad[2] == 0.0  # torch.relu: the failure mode ReLU1 exists for


def test_forward_equals_relu_and_module_form():
    x = torch.randn(100)
    assert torch.equal(relu1(x), torch.relu(x))
    assert torch.equal(ReLU1()(x), torch.relu(x))


def test_zero_fan_in_unit_gets_gradient_only_with_relu1():
    torch.manual_seed(0)
    x = torch.randn(32, 4)
    w_in = torch.zeros(1, 4, requires_grad=True)  # a new unit with zero fan-in
    w_out = torch.ones(2, 1)
    for act, expect_moves in ((relu1, True), (torch.relu, False)):
        w_in.grad = None
        (act(x @ w_in.T) @ w_out.T - 1).pow(2).sum().backward()
        assert (w_in.grad.abs().sum() > 0) == expect_moves
