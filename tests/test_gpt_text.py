"""torchgrow's GPT model and the character-level text data (CPython's bundled documentation)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from torchgrow import data, models


def test_gpt_default_is_the_benchmark_target_and_counts_its_matmul_weights():
    model = models.gpt(103)
    mm = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert mm == 799_616  # 4 x (4*128^2 + 2*128*512) + 128*103
    x = torch.randint(0, 103, (2, 64))
    assert model(x).shape == (2, 64, 103)
    assert models.build("gpt", vocab_size=103, n_layer=1).blocks.__len__() == 1


def test_gpt_is_causal():
    torch.manual_seed(0)
    model = models.gpt(20, context=8, n_layer=2, d_model=16, n_head=4).eval()
    x = torch.randint(0, 20, (1, 8))
    y = x.clone()
    y[0, 5:] = (y[0, 5:] + 1) % 20
    assert torch.allclose(model(x)[0, :5], model(y)[0, :5], atol=1e-6)
    assert not torch.allclose(model(x)[0, 5:], model(y)[0, 5:])


def test_gpt_variants_and_width_mult():
    model = models.gpt(30, d_model=32, n_head=4, n_kv_head=2, mlp="swiglu", norm="rmsnorm",
                       tie=True, width_mult=2.0)  # fmt: skip
    attn = model.blocks[0].attn
    assert (attn.n_head, attn.n_kv_head, attn.head_dim) == (8, 4, 8)
    assert model.blocks[0].mlp.gate.out_features == 256
    assert isinstance(model.norm_f, torch.nn.RMSNorm)
    assert model.lm_head.weight is model.tok_emb.weight
    assert model(torch.randint(0, 30, (2, 10))).shape == (2, 10, 30)


@pytest.mark.parametrize(
    "kwargs", [{"mlp": "relu"}, {"norm": "batchnorm"}, {"n_kv_head": 3}, {"n_layer": 0}]
)
def test_gpt_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        models.gpt(10, **kwargs)


def test_gpt_rejects_a_sequence_longer_than_its_context():
    with pytest.raises(ValueError, match="context"):
        models.gpt(10, context=4, n_layer=1, d_model=8, n_head=2)(
            torch.zeros(1, 5, dtype=torch.long)
        )


def test_text_chars_splits_are_contiguous_and_cover_the_text():
    from pydoc_data import topics

    text = "".join(topics.topics.values())
    d = data.text_chars()
    assert d.vocab == "".join(sorted(set(text))) and d.vocab_size == len(set(text))
    assert len(d.train) + len(d.valid) + len(d.test) == len(text)
    assert (
        d.decode(torch.cat([d.train[-5:], d.valid[:5]]))
        == text[len(d.train) - 5 : len(d.train) + 5]
    )
    assert len(d.valid) == math.floor(0.05 * len(text))
    assert f"{len(text)} characters" in d.source and "sha256" in d.source
    assert torch.equal(d.encode(text[:50]), d.train[:50])


def test_text_chars_windows_and_batches():
    d = data.text_chars(context=32)
    x, y = d.windows("valid")
    assert x.shape == ((len(d.valid) - 1) // 32, 32) and torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(y[0, -1], x[1, 0])
    a = next(d.batches(8, seed=3))
    b = next(d.batches(8, seed=3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[0][:, 1:], a[1][:, :-1])
    assert not torch.equal(a[0], next(d.batches(8, seed=4))[0])


def test_text_chars_rejects_bad_settings():
    with pytest.raises(ValueError, match="context"):
        data.text_chars(context=0)
    with pytest.raises(ValueError, match="leave training text"):
        data.text_chars(valid_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="split"):
        data.text_chars().split("dev")


def test_a_gpt_learns_the_text_a_little():
    torch.manual_seed(0)
    d = data.text_chars(context=32)
    model = models.gpt(d.vocab_size, context=32, n_layer=1, d_model=32, n_head=2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    vx, vy = d.windows("valid")

    def val_loss() -> float:
        with torch.no_grad():
            return float(F.cross_entropy(model(vx[:64]).flatten(0, 1), vy[:64].flatten()))

    start = val_loss()
    for _, (x, y) in zip(range(60), d.batches(16, seed=0), strict=False):
        opt.zero_grad()
        F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
        opt.step()
    end = val_loss()
    assert start == pytest.approx(math.log(d.vocab_size), rel=0.05)
    assert end < start - 1.0
    assert data.bits_per_char(end) == pytest.approx(end / math.log(2))
