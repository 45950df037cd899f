"""The transformer edits on Hugging Face BERT (post-LN) built from a config: FFN, heads, depth."""

from __future__ import annotations

import pytest
import torch

from torchgrow import ops
from torchgrow.errors import EditVerificationError, GrowthInputError
from torchgrow.ops.optim_state import check_consistent

transformers = pytest.importorskip("transformers")


def _bert():
    cfg = transformers.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=16, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    x = torch.randint(0, 50, (3, 10), generator=torch.Generator().manual_seed(1))
    return model, x


def _out(model, x):
    return model(x).last_hidden_state.detach()


def _trained_adam(model, x):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(x).last_hidden_state.pow(2).mean().backward()
    opt.step()
    return opt


@pytest.mark.parametrize("edit", ["ffn", "heads", "ramped_stack"])
def test_bert_grows_preserving_its_function_with_adam_carried(edit):
    model, x = _bert()
    opt = _trained_adam(model, x)
    before = _out(model, x)
    kw = {"optimizer": opt, "example": x}
    if edit == "ffn":
        r = ops.grow_ffn(model, 8, **kw)
        assert model.encoder.layer[1].intermediate.dense.out_features == 72
    elif edit == "heads":
        r = ops.add_heads(model, 2, **kw)
        a = model.encoder.layer[0].attention.self
        assert a.num_attention_heads == 4 and a.all_head_size == 64
    else:
        r = ops.stack_blocks(model, [0, 1, 0, 1], ramp=ops.Ramp(5), **kw)  # MSG's layer growth
        assert len(model.encoder.layer) == 4 and model.config.num_hidden_layers == 4
    assert r.details["max_abs_dout"] <= 1e-5
    assert (_out(model, x) - before).abs().max() <= 1e-5
    check_consistent(model, opt)
    moment = opt.state[model.encoder.layer[0].attention.self.query.weight]["exp_avg"]
    assert moment[:32].abs().sum() > 0  # the old rows kept their moments


def test_what_bert_cannot_take_is_refused_and_leaves_it_as_it_was():
    model, x = _bert()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(GrowthInputError, match="pre-LN"):
        ops.insert_identity_block(model, 1, example=x)  # post-LN: a zero block is not identity
    with pytest.raises(EditVerificationError, match="rolled back"):
        ops.clone_width(model, 2, example=x)  # the stream's width: not wired for BERT
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
