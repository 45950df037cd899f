"""Hugging Face models built from tiny configs (nothing downloaded): analysed and grown."""

from __future__ import annotations

import warnings

import pytest
import torch

from torchgrow.errors import GraphError
from torchgrow.graph import analyse, find_unit, growable_units, set_example
from torchgrow.ops import check_consistent, shrink, widen
from torchgrow.ops.registry import lookup

T = pytest.importorskip("transformers")
T.logging.set_verbosity_error()

VOCAB = 50


def bert():
    cfg = T.BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=16,
        num_labels=3,
    )
    return T.BertForSequenceClassification(cfg), "bert.encoder.layer.{}.intermediate.dense"


def gpt2():
    cfg = T.GPT2Config(
        vocab_size=VOCAB,
        n_embd=16,
        n_layer=2,
        n_head=2,
        n_positions=16,
        bos_token_id=0,
        eos_token_id=0,
    )
    return T.GPT2LMHeadModel(cfg), "transformer.h.{}.mlp.c_fc"


def llama():
    cfg = T.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=24,
        max_position_embeddings=16,
    )
    return T.LlamaForCausalLM(cfg), "model.layers.{}.mlp.gate_proj"


MODELS = {"bert": bert, "gpt2": gpt2, "llama": llama}


def _logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("name", sorted(MODELS))
def test_ffn_of_every_layer_grows_preserving_the_logits_with_adamw_carried(name):
    torch.manual_seed(0)
    model, ffn = MODELS[name]()
    model.eval()
    ids = torch.randint(0, VOCAB, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(input_ids=ids, attention_mask=mask).logits.square().mean().backward()
    opt.step()
    set_example(model, input_ids=ids, attention_mask=mask)  # keyword inputs
    units = {u.name: u for u in growable_units(model)}
    for layer in range(2):
        unit = units[ffn.format(layer)]
        y0 = _logits(model, ids, mask)
        g = torch.Generator().manual_seed(layer)
        fan_out = {}
        for c in unit.consumers:
            m = model.get_submodule(c.name)
            fan_out[c.name] = torch.randn(lookup(m).fan_out_shape(m, 5, c.factor), generator=g)
        widen(model, unit.name, 5, fan_out=fan_out, optimizer=opt)
        check_consistent(model, opt)
        assert (_logits(model, ids, mask) - y0).abs().max() < 1e-5
        assert find_unit(model, unit.name).width == unit.width + 5
    opt.zero_grad()
    model(input_ids=ids, attention_mask=mask).logits.square().mean().backward()
    opt.step()
    assert torch.isfinite(_logits(model, ids, mask)).all()


def test_bert_residual_stream_grows_through_its_layernorms_with_a_warning():
    torch.manual_seed(0)
    model, _ = bert()
    model.eval()
    ids = torch.randint(0, VOCAB, (2, 6))
    units = {u.name: u for u in growable_units(model, ids)}
    stream = units["bert.embeddings.word_embeddings"]
    assert "bert.embeddings.position_embeddings" in stream.producers
    assert "bert.encoder.layer.1.output.LayerNorm" in stream.per_channel
    before = _logits(model, ids, None)
    with pytest.warns(UserWarning, match="LayerNorm"):
        widen(model, stream.name, 4)
    assert model.config.hidden_size == 16  # the config is not ours to edit; the modules are
    assert model.bert.embeddings.word_embeddings.embedding_dim == 20
    shrink(model, stream.name, range(16))
    assert (_logits(model, ids, None) - before).abs().max() < 1e-6


def test_gpt2_heads_are_refused_and_the_tied_lm_head_grows_with_the_embedding():
    torch.manual_seed(0)
    model, _ = gpt2()
    model.eval()
    ids = torch.randint(0, VOCAB, (2, 6))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        growable_units(model, ids)
        blocked = analyse(model).blocked
        assert "splits a dimension" in blocked["transformer.h.0.attn.c_attn"]
        stream = find_unit(model, "transformer.wte")
        assert "lm_head" in {c.name for c in stream.consumers}
        widen(model, "transformer.wte", 4, optimizer=opt)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.weight.shape == (VOCAB, 20)
    check_consistent(model, opt)
    model(ids).logits.square().mean().backward()
    opt.step()


def test_vit_patch_embedding_stream_grows_with_cls_token_and_position_embeddings():
    torch.manual_seed(0)
    cfg = T.ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=1,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        num_labels=3,
    )
    model = T.ViTForImageClassification(cfg).eval()
    x = torch.rand(2, 1, 8, 8)
    units = {u.name: u for u in growable_units(model, x)}
    stream = units["vit.embeddings.patch_embeddings.projection"]
    grown = {name for name, _, _ in stream.tensors}
    assert {"vit.embeddings.cls_token", "vit.embeddings.position_embeddings"} <= grown
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        widen(model, stream.name, 4)
    assert model.vit.embeddings.cls_token.shape == (1, 1, 20)
    assert model.vit.embeddings.position_embeddings.shape == (1, 5, 20)
    for i in range(2):  # the FFNs still grow exactly
        ffn = f"vit.layers.{i}.mlp.fc1"
        assert ffn in units
        y0 = model(x).logits
        widen(model, ffn, 3)
        assert (model(x).logits - y0).abs().max() < 1e-5


def test_llama_residual_stream_is_refused_because_rmsnorm_averages_over_it():
    model, _ = llama()
    ids = torch.randint(0, VOCAB, (2, 6))
    set_example(model, ids)
    with pytest.raises(GraphError, match="mean over a dimension carrying channels"):
        find_unit(model, "model.layers.0.mlp.down_proj")
    with pytest.raises(GraphError, match="heads"):
        find_unit(model, "model.layers.0.self_attn.q_proj")
