"""Depth edits in any container, on layers called with keyword arguments, verified."""

from __future__ import annotations

import graph_models as G
import pytest
import torch
from torch import nn

from torchgrow.errors import EditVerificationError, GrowthInputError
from torchgrow.graph import set_example
from torchgrow.ops import append_block, check_consistent, insert_after, insert_block


def _zero_block(d: int = 8, hidden: int = 12) -> G.Block:
    block = G.Block(d, hidden)
    with torch.no_grad():
        block.down.weight.zero_()
        block.down.bias.zero_()
    return block


def _stack():
    torch.manual_seed(0)
    model = G.KeywordStack().eval()
    x = torch.randn(2, 5, 4)
    scale = torch.tensor(0.5)
    set_example(model, x, scale=scale)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return model, x, scale, opt


def _logits(model, x, scale):
    with torch.no_grad():
        return model(x, scale=scale)["logits"]


def test_insert_block_in_a_module_list_renumbers_and_preserves_the_function():
    model, x, scale, opt = _stack()
    y0 = _logits(model, x, scale)
    old = list(model.layers)
    block = _zero_block()
    rec = insert_block(model, "layers", 1, block, optimizer=opt, preserve=True)
    assert list(model.layers) == [old[0], block, old[1], old[2]]
    assert [k for k in model.layers._modules] == ["0", "1", "2", "3"]
    assert rec.details["new"] == "layers.1"
    assert torch.allclose(_logits(model, x, scale), y0, atol=1e-6)
    check_consistent(model, opt)
    assert {id(p) for p in block.parameters()} <= {id(p) for p in opt.param_groups[0]["params"]}


def test_append_block_to_a_module_list_and_a_module_dict():
    model, x, scale, opt = _stack()
    append_block(model, "layers", _zero_block(), optimizer=opt, preserve=True)
    assert len(model.layers) == 4
    d = nn.Module()
    d.blocks = nn.ModuleDict({"a": nn.Linear(3, 3)})
    append_block(d, "blocks", nn.Linear(3, 3), key="b")
    assert list(d.blocks) == ["a", "b"]
    with pytest.raises(GrowthInputError, match="key="):
        insert_block(d, "blocks", 0, nn.Linear(3, 3))


def test_a_block_of_the_wrong_width_is_rolled_back():
    model, x, scale, opt = _stack()
    old = dict(model.layers._modules)
    with pytest.raises(EditVerificationError, match="rolled back"):
        insert_block(model, "layers", 2, G.Block(6, 12), optimizer=opt)
    assert dict(model.layers._modules) == old
    check_consistent(model, opt)


def test_a_block_that_changes_the_function_is_refused_when_preservation_was_promised():
    model, x, scale, opt = _stack()
    with pytest.raises(EditVerificationError, match="promised to preserve"):
        insert_block(model, "layers", 0, G.Block(8, 12), optimizer=opt, preserve=True)
    assert len(model.layers) == 3


def test_insert_after_a_layer_called_with_keywords():
    model, x, scale, opt = _stack()
    y0 = _logits(model, x, scale)
    insert_after(model, "layers.0", nn.Identity(), optimizer=opt, preserve=True)
    assert isinstance(model.layers[0].orig, G.Block)
    assert torch.allclose(_logits(model, x, scale), y0, atol=1e-6)
    with pytest.raises(EditVerificationError):
        insert_after(model, "layers.1", nn.Linear(3, 3), optimizer=opt)
    assert isinstance(model.layers[1], G.Block)
    check_consistent(model, opt)
