"""A grown model's structure without its weights, restored into a freshly built model before
its state_dict loads (torchgrow.io.architecture_record / restore_architecture)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchgrow import ops
from torchgrow.errors import CheckpointError
from torchgrow.io import architecture_record, restore_architecture
from torchgrow.nn import ReLU1
from torchgrow.ops.masks import mask_of


class Holder(nn.Module):
    """Like a LightningModule: the grown part is a child, plus a parameter of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 5), ReLU1(), nn.Linear(5, 2))
        self.temperature = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.net(x) / self.temperature


class Custom(nn.Module):
    def forward(self, x):
        return x


def _grown() -> Holder:
    torch.manual_seed(0)
    model = Holder()
    ops.widen(model.net, "0", 3)
    ops.insert_after(model.net, "1", ops.identity_linear(8))
    ops.apply_mask(model.net[2], density=0.5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.temperature.data = torch.full((1,), 2.0)
    return model


def test_width_depth_and_masks_come_back_and_the_state_dict_loads():
    model = _grown()
    record = architecture_record(model, ["net"])
    assert len(record) < 20_000  # structure only: no weights
    fresh = Holder()
    assert restore_architecture(fresh, record) == ["net"]
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(7, 6)
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
    assert torch.equal(mask_of(fresh.net[2]), mask_of(model.net[2]))
    fresh(x).sum().backward()  # the restored mask still masks the gradient
    assert (fresh.net[2].weight.grad[mask_of(fresh.net[2]) == 0] == 0).all()


def test_the_default_records_every_child_and_own_parameter_shapes():
    model = _grown()
    model.temperature = nn.Parameter(torch.ones(3))
    fresh = Holder()
    assert sorted(restore_architecture(fresh, architecture_record(model))) == ["net", "temperature"]
    fresh.load_state_dict(model.state_dict())
    assert fresh.temperature.shape == (3,)


def test_a_class_not_allowed_is_refused_and_nothing_changes():
    model = _grown()
    model.net.append(Custom())
    record = architecture_record(model, ["net"])
    fresh = Holder()
    before = fresh.net
    with pytest.raises(CheckpointError, match="Custom"):
        restore_architecture(fresh, record)
    assert fresh.net is before
    restore_architecture(fresh, record, allow=[Custom])
    assert isinstance(fresh.net[-1], Custom)


def test_bad_records_and_paths_are_refused():
    model = _grown()
    with pytest.raises(CheckpointError, match="no attribute"):
        architecture_record(model, ["nope"])
    fresh = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match="'net' is not in this model"):
        restore_architecture(fresh, architecture_record(model, ["net"]))
    with pytest.raises(CheckpointError):
        restore_architecture(fresh, b"not an archive")


class Tied(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, width)
        self.head = nn.Linear(width, 10, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(self.emb(ids))


def test_weights_tied_across_recorded_submodules_stay_tied():
    model = Tied(width=6)
    fresh = Tied()
    restore_architecture(fresh, architecture_record(model))  # torch layers only
    assert fresh.head.weight is fresh.emb.weight and fresh.emb.weight.shape == (10, 6)
    fresh.load_state_dict(model.state_dict())
    ids = torch.arange(10)
    torch.testing.assert_close(fresh(ids), model(ids), rtol=0, atol=0)
