"""GradMax on attention heads (torchgrow's extension): zero q, k, v; output columns from the SVD."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchgrow import methods, models, ops
from torchgrow.errors import GrowthInputError
from torchgrow.ops.optim_state import check_consistent

VOCAB, T = 11, 8


def _gpt():
    torch.manual_seed(0)
    return models.gpt(VOCAB, context=T, n_layer=2, d_model=16, n_head=2, head_dim=4)


def _llama():  # grouped-query attention: 2 query heads per key-value head
    tr = pytest.importorskip("transformers")
    tr.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = tr.LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=24, max_position_embeddings=T, head_dim=4,
    )  # fmt: skip
    return tr.LlamaForCausalLM(cfg)


def _gpt2():  # fused [q; k; v] in a transposed Conv1D
    tr = pytest.importorskip("transformers")
    tr.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = tr.GPT2Config(
        vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=T, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return tr.GPT2LMHeadModel(cfg)


def _data():
    gen = torch.Generator().manual_seed(3)
    return torch.randint(0, VOCAB, (6, T), generator=gen), torch.randint(
        0, VOCAB, (6, T), generator=gen
    )


def _loss(model, x, y):
    out = model(x)
    logits = getattr(out, "logits", out)
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


def _new_value_grads(model, x, y, rows):
    model.zero_grad()
    _loss(model, x, y).backward()
    return [ops.find_layout(model).blocks[i].attn.v.weight.grad[-rows:] for i in range(2)]


@pytest.mark.parametrize(("build", "group"), [(_gpt, 1), (_llama, 2)])
def test_gradmax_heads_keeps_the_function_and_maximises_the_new_values_gradient(build, group):
    model = build().eval()
    x, y = _data()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    _loss(model, x, y).backward()
    opt.step()
    before = _loss(model, x, y).detach()
    k, hd = 2, 4
    records = methods.gradmax_heads(model, lambda: _loss(model, x, y), k, optimizer=opt, example=x)
    # zero values: the new heads add exact zeros; only the wider output matmul's summation
    # order can move the output, by float32 rounding (0 on some CPUs, 3e-8 on others)
    assert all(r.details["max_abs_dout"] <= 1e-6 for r in records) and len(records) == 2
    assert float((_loss(model, x, y).detach() - before).abs()) <= 1e-6
    check_consistent(model, opt)
    attn = [ops.find_layout(model).blocks[i].attn for i in range(2)]
    heads = 2 if group == 1 else 4
    assert [a.n_head for a in attn] == [heads + k] * 2
    rows = k // group * hd
    grads = _new_value_grads(model, x, y, rows)
    for a, r, g in zip(attn, records, grads, strict=True):
        o_new = a.o.weight.detach()[:, -k * hd :]
        radius = o_new.norm(dim=0)[:rows]
        sv = torch.tensor(r.details["singular_values"], dtype=torch.float32)
        # a value row's gradient is (the fan-outs that read it)^T M: norm group * r * sigma
        torch.testing.assert_close(g.norm(dim=1), group * radius * sv, rtol=1e-3, atol=1e-7)
    # the same norms in random directions give the new values a smaller gradient
    model2 = build().eval()
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-3)
    _loss(model2, x, y).backward()
    opt2.step()
    gen = torch.Generator().manual_seed(0)
    for i, a in enumerate(attn):
        o_new = a.o.weight.detach()[:, -k * hd :]
        rand = torch.randn(o_new.shape, generator=gen)
        rand = rand / rand.norm(dim=0) * o_new.norm(dim=0)
        d_in = a.v.weight.shape[1]
        zero_kv = torch.zeros(rows, d_in)
        ops.add_given_heads(model2, i, q=torch.zeros(k * hd, d_in), k=zero_kv, v=zero_kv, o=rand,
                            example=x)  # fmt: skip
    rand_grads = _new_value_grads(model2, x, y, rows)
    assert sum(float(g.pow(2).sum()) for g in grads) > sum(
        float(g.pow(2).sum()) for g in rand_grads
    )


def test_gradmax_heads_on_a_fused_projection_and_refusals_change_nothing():
    model = _gpt2().eval()
    x, y = _data()
    before = _loss(model, x, y).detach()
    records = methods.gradmax_heads(model, lambda: _loss(model, x, y), 1, block=0, example=x)
    assert records[0].details["max_abs_dout"] == 0.0
    assert model.transformer.h[0].attn.c_attn.weight.shape == (16, 3 * 24)  # 3 heads of 8
    assert float((_loss(model, x, y).detach() - before).abs()) <= 1e-6
    llama = _llama()
    state = {n: p.clone() for n, p in llama.state_dict().items()}
    with pytest.raises(GrowthInputError, match="multiple of 2"):
        methods.gradmax_heads(llama, lambda: _loss(llama, x, y), 1)
    with pytest.raises(GrowthInputError, match="k must be a positive int"):
        methods.gradmax_heads(llama, lambda: _loss(llama, x, y), 0)
    with pytest.raises(GrowthInputError, match="shape"):
        ops.add_given_heads(llama, 0, q=torch.zeros(8, 16), k=torch.zeros(3, 16),
                            v=torch.zeros(4, 16), o=torch.zeros(16, 8))  # fmt: skip
    assert all(torch.equal(p, state[n]) for n, p in llama.state_dict().items())


def test_gradmax_heads_for_an_encoder_pulls_back_over_every_position():
    torch.manual_seed(0)
    model = models.vit(3, n_layer=1, d_model=16, n_head=2).eval()
    x = torch.randn(24, 1, 28, 28)  # rank of the pulled-back matrix <= images
    y = torch.randint(0, 3, (24,))
    before = model(x).detach()

    def loss():
        return F.cross_entropy(model(x), y)

    records = methods.gradmax_heads(model, loss, 2, causal=False, example=x)
    assert records[0].details["max_abs_dout"] == 0.0
    assert (model(x) - before).abs().max() <= 1e-6
    sv = records[0].details["singular_values"]
    assert sv == sorted(sv, reverse=True) and sv[0] > 0
