"""MSG's hidden-size growth (ops.grow_hidden): the residual stream widened through masked norms."""

from __future__ import annotations

import pytest
import torch
from test_transformer_ops import BUILDERS, VOCAB, _logits, _trained  # the same tiny models

from torchgrow import models
from torchgrow.errors import GrowthInputError
from torchgrow.ops import Ramp, check_consistent, find_layout, grow_hidden


def _step(model, opt, x):
    opt.zero_grad()
    _logits(model, x).logsumexp(-1).mean().backward()
    opt.step()


@pytest.mark.parametrize("name", BUILDERS)
def test_masked_hidden_growth_preserves_then_ramps_in_and_unmasks(name):
    model, opt, x = _trained(name)
    before = _logits(model, x).detach()
    tied = find_layout(model).tied
    ramp = Ramp(4)
    gen = torch.Generator().manual_seed(0)
    record = grow_hidden(model, 8, ramp=ramp, std=0.5, generator=gen, optimizer=opt, example=x)
    assert record.details["preserving"] and record.details["max_abs_dout"] <= 1e-5
    assert (_logits(model, x) - before).abs().max() <= 1e-5  # whatever the new weights (std 0.5)
    parts = find_layout(model)
    assert parts.embeddings[0].weight.shape[1] == 24 and parts.tied == tied
    assert record.details["d_model_after"] == 24
    config = getattr(model, "config", None)
    if config is not None:
        assert getattr(config, "hidden_size", getattr(config, "n_embd", None)) == 24
    check_consistent(model, opt)
    _step(model, opt, x)
    ramp.step()
    assert 0 < ramp.value < 1 and ramp.active
    ramp.count = 0
    at_zero = _logits(model, x).detach()
    ramp.count = ramp.steps  # m = 1 with the masks still on
    at_one = _logits(model, x).detach()
    assert (at_one - at_zero).abs().max() > 1e-3  # the new coordinates do come in
    ramp.finish()  # m = 1: the masked norm is the plain norm; nothing to fold
    assert not ramp.active
    assert (_logits(model, x) - at_one).abs().max() <= 1e-5
    _step(model, opt, x)
    check_consistent(model, opt)


def test_unmasked_hidden_growth_records_the_change_and_bad_input_changes_nothing():
    model, opt, x = _trained("gpt")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(GrowthInputError, match="positive int"):
        grow_hidden(model, 0, ramp=Ramp(2), optimizer=opt, example=x)
    with pytest.raises(GrowthInputError, match="Ramp"):
        grow_hidden(model, 4, ramp=3, optimizer=opt, example=x)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    record = grow_hidden(model, 4, ramp=None, optimizer=opt, example=x)
    assert not record.details["preserving"] and record.details["max_abs_dout"] > 1e-4
    assert model.tok_emb.weight.shape == (VOCAB, 20)
    vit = models.vit(3, n_layer=1, d_model=16, n_head=2)
    with pytest.raises(GrowthInputError, match="not an nn.Embedding"):
        grow_hidden(vit, 4, ramp=Ramp(2))
    assert vit.blocks[0].norm1.normalized_shape == (16,)
