"""The transformer methods on Hugging Face GPT-2 and Llama built from configs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from torchgrow import methods, ops
from torchgrow.ops.optim_state import check_consistent

transformers = pytest.importorskip("transformers")
VOCAB, T = 40, 12


def _model(kind):
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = transformers.GPT2Config(
            vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=16, bos_token_id=0,
            eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        )  # fmt: skip
        return transformers.GPT2LMHeadModel(cfg)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=24, max_position_embeddings=16, head_dim=4,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(cfg)


def _run(method, steps):
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        method.update(step)
        x = torch.randint(0, VOCAB, (2, T), generator=gen)
        logits = method.model(x).logits
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())
        method.optimizer.zero_grad()
        loss.backward()
        method.optimizer.step()
    return float(loss.detach())


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_msg_grows_hugging_face_models_keeping_their_function(kind):
    model = _model(kind)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, VOCAB, (2, T), generator=torch.Generator().manual_seed(2))
    parts = ops.find_layout(model)
    heads = parts.blocks[0].attn.n_head
    msg = methods.MSG(model, opt, 40, x, d_ff=48 if kind == "llama" else 96, n_head=heads + 2,
                      n_layer=4)  # fmt: skip
    loss = _run(msg, 40)
    parts = ops.find_layout(model)
    assert len(parts.blocks) == 4 and parts.blocks[3].attn.n_head == heads + 2
    assert all(e["max_abs_dout"] <= 1e-5 for e in msg.log), msg.log
    depth_key = "num_hidden_layers" if kind == "llama" else "n_layer"
    assert getattr(model.config, depth_key) == 4  # the config follows the stack
    check_consistent(model, msg.optimizer)
    assert math.isfinite(loss)  # the grown model trained


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_lemon_expands_hugging_face_models_losslessly(kind):
    model = _model(kind)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, VOCAB, (2, T), generator=torch.Generator().manual_seed(2))
    lemon = methods.LEMON(model, opt, 30, x)
    _run(lemon, 15)
    parts = ops.find_layout(model)
    assert len(parts.blocks) == 2 and lemon.log[0]["max_abs_dout"] <= 1e-5
    assert parts.embeddings[0].weight.shape[1] == 32
    check_consistent(model, lemon.optimizer)
