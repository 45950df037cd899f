"""Hugging Face style growth batches: dicts of keyword inputs, outputs with ``.loss``/``.logits``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchgrow
from torchgrow.batches import head_rows, split_batch
from torchgrow.connections import dense_weight_gradients
from torchgrow.errors import GrowthInputError
from torchgrow.grower import default_loss
from torchgrow.how import GradMax
from torchgrow.ops import check_consistent
from torchgrow.size import Units
from torchgrow.stats import CONSUMER_GRAD, gather
from torchgrow.when import Manual
from torchgrow.where import Layers

T = pytest.importorskip("transformers")
T.logging.set_verbosity_error()

VOCAB = 40


def _config(kind: str):
    if kind == "bert":
        cfg = T.BertConfig(
            vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=24, max_position_embeddings=16, num_labels=3,
        )  # fmt: skip
        return T.BertForSequenceClassification(cfg), "bert.encoder.layer.{}.intermediate.dense"
    if kind == "gpt2":
        cfg = T.GPT2Config(
            vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=16,
            bos_token_id=0, eos_token_id=0,
        )  # fmt: skip
        return T.GPT2LMHeadModel(cfg), "transformer.h.{}.mlp.c_fc"
    cfg = T.LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=24, max_position_embeddings=16,
    )  # fmt: skip
    return T.LlamaForCausalLM(cfg), "model.layers.{}.mlp.gate_proj"


def _batch(kind: str, n: int = 6, seq: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (n, seq), generator=g)
    labels = torch.randint(0, 3, (n,), generator=g) if kind == "bert" else ids
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_gradmax_grows_a_hugging_face_model_from_a_dict_batch(kind):
    torch.manual_seed(0)
    model, pattern = _config(kind)
    model.eval()  # no dropout: the logits compare exactly
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = _batch(kind)
    model(**batch).loss.backward()
    opt.step()
    opt.zero_grad()
    layers = [pattern.format(i) for i in range(2)]
    grower = torchgrow.Grower(
        model, opt, when=Manual(), where=Layers(layers), how=GradMax(), size=Units(4)
    )
    before = model(**batch).logits.detach()
    events = grower.grow(batch)  # the model's own loss (its output's .loss)
    after = model(**batch).logits.detach()
    assert [(e.unit, e.width_after - e.width_before) for e in events] == [(u, 4) for u in layers]
    assert (after - before).abs().max() <= 1e-5
    assert all(e.max_abs_delta <= 1e-5 for e in events)
    if kind != "llama":  # zero fan-in of a gated unit has no first-order gradient (silu(0)*0)
        assert all(e.grad_norm_fan_in > 0 for e in events)
    check_consistent(model, opt)
    model(**batch).loss.backward()  # and it trains on
    opt.step()


def test_statistics_of_a_dict_batch_use_the_models_own_loss():
    torch.manual_seed(0)
    model, pattern = _config("gpt2")
    model.eval()
    batch = _batch("gpt2")
    torchgrow.graph.set_example(model, **head_rows(batch, 2)[1])
    unit = torchgrow.graph.find_unit(model, pattern.format(0))
    stats = gather(model, batch, default_loss, [unit], {CONSUMER_GRAD})
    assert stats.loss == pytest.approx(float(model(**batch).loss.detach()), rel=1e-6)

    # the same gradient as from the logits and a hand-written causal loss on a (x, y) pair
    def shifted(out, y):
        return F.cross_entropy(out.logits[:, :-1].flatten(0, 1), y[:, 1:].flatten())

    ids = batch["input_ids"]
    pair = gather(model, ({"input_ids": ids}, ids), shifted, [unit], {CONSUMER_GRAD})
    for name, g in stats.consumer_grads.items():
        torch.testing.assert_close(g, pair.consumer_grads[name], atol=1e-7, rtol=1e-5)


def test_nest_connection_scores_take_a_dict_batch():
    torch.manual_seed(0)
    model, _ = _config("bert")
    model.eval()
    batch = _batch("bert")
    layer = "bert.encoder.layer.0.intermediate.dense"
    got = dense_weight_gradients(model, batch, default_loss, [layer])[layer]
    w = model.get_submodule(layer).weight
    (expected,) = torch.autograd.grad(model(**batch).loss, [w])
    torch.testing.assert_close(got, expected, atol=1e-7, rtol=1e-5)


def test_measure_full_reads_the_logits_of_a_dict_batch():
    torch.manual_seed(0)
    model, pattern = _config("bert")
    model.eval()
    grower = torchgrow.Grower(
        model, None, when=Manual(), where=Layers([pattern.format(0)]), how=GradMax(),
        size=Units(2), measure="full",
    )  # fmt: skip
    (event,) = grower.grow(_batch("bert"))
    assert event.max_abs_delta <= 1e-5 and event.grad_norm_fan_in > 0


def test_dict_batches_split_and_refuse_clearly():
    ids = torch.zeros(3, 4, dtype=torch.long)
    inputs, labels = split_batch({"input_ids": ids, "labels": ids})
    assert labels is ids and set(inputs) == {"input_ids", "labels"}
    assert split_batch({"input_ids": ids})[1] is None
    assert set(head_rows({"input_ids": ids, "labels": ids}, 2)[1]) == {"input_ids"}
    with pytest.raises(GrowthInputError, match="dict growth batch must hold"):
        split_batch({"text": "hello"})
    with pytest.raises(GrowthInputError, match="Hugging Face style"):
        split_batch(ids)
    model, _ = _config("bert")
    out = model(input_ids=ids)  # no labels: no .loss
    with pytest.raises(GrowthInputError, match="add 'labels'"):
        default_loss(out, None)
    assert default_loss(out, torch.zeros(3, dtype=torch.long)).shape == ()  # from .logits
