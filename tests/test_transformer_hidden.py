"""MSG's hidden-size growth (ops.grow_hidden): the residual stream widened through masked norms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchgrow import models
from torchgrow.errors import GrowthInputError
from torchgrow.ops import Ramp, check_consistent, find_layout, grow_hidden

VOCAB, T_LEN = 40, 12


def _gpt(**kw):
    return models.gpt(VOCAB, context=16, n_layer=2, d_model=16, n_head=2, **kw)


def _hf(kind: str) -> nn.Module:
    tr = pytest.importorskip("transformers")
    tr.logging.set_verbosity_error()
    if kind == "gpt2":
        cfg = tr.GPT2Config(
            vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=16,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        )  # fmt: skip
        return tr.GPT2LMHeadModel(cfg)
    cfg = tr.LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=24, max_position_embeddings=16, head_dim=4,
    )  # fmt: skip
    return tr.LlamaForCausalLM(cfg)


BUILDERS = {
    "gpt": _gpt,
    "gpt-swiglu-rms-gqa-tied": lambda: _gpt(mlp="swiglu", norm="rmsnorm", n_kv_head=1, tie=True),
    "hf-gpt2": lambda: _hf("gpt2"),
    "hf-llama": lambda: _hf("llama"),
}


def _logits(model, x):
    out = model(x)
    return getattr(out, "logits", out)


def _trained(name):
    torch.manual_seed(0)
    model = BUILDERS[name]()
    x = torch.randint(0, VOCAB, (3, T_LEN))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        _logits(model, x).logsumexp(-1).mean().backward()
        opt.step()
    return model.eval(), opt, x


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
