"""torchgrow's ViT: shapes, errors, learning on real digits, and the transformer edits on it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from torchgrow import methods, models, ops
from torchgrow.ops.optim_state import check_consistent


def _digits(n: int = 256):
    d = load_digits()
    x = torch.tensor(d.images[:n], dtype=torch.float32).unsqueeze(1) / 16.0  # (n, 1, 8, 8)
    return x, torch.tensor(d.target[:n])


def _small(**kw):
    torch.manual_seed(0)
    return models.vit(image_size=8, patch=4, n_layer=2, d_model=16, n_head=2, **kw)


def test_vit_takes_images_or_flat_rows_and_checks_its_sizes():
    m = models.vit()  # Fashion-MNIST: 16 patches of 7x7
    x = torch.randn(3, 1, 28, 28)
    assert m(x).shape == (3, 10)
    assert torch.equal(m(x), m(x.flatten(1)))
    assert m.pos_emb.weight.shape == (17, 64)
    assert models.build("vit", width_mult=0.5).blocks[0].attn.n_head == 2
    with pytest.raises(ValueError, match="divide"):
        models.vit(patch=5)
    with pytest.raises(ValueError, match="mlp"):
        models.vit(mlp="relu")


def test_vit_attention_is_bidirectional():
    m = _small().eval()
    base = m.blocks[0].attn(torch.randn(1, 5, 16, generator=torch.Generator().manual_seed(0)))
    changed = torch.randn(1, 5, 16, generator=torch.Generator().manual_seed(0))
    changed[:, -1] += 1.0  # the last position moves: an earlier one sees it
    assert not torch.allclose(m.blocks[0].attn(changed)[:, 0], base[:, 0])


def test_vit_learns_digits():
    x, y = _digits()
    m = _small()
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = float(F.cross_entropy(m(x), y))
    for _ in range(60):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * first


@pytest.mark.parametrize("edit", ["ffn", "heads", "clone", "insert", "clone_noise"])
def test_the_preserving_edits_keep_the_vits_function_and_carry_adam(edit):
    x, y = _digits(64)
    m = _small()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    F.cross_entropy(m(x), y).backward()
    opt.step()
    m.eval()
    before = m(x).detach()
    kw = {"optimizer": opt, "example": x[:8]}
    if edit == "ffn":
        ops.grow_ffn(m, 8, **kw)
    elif edit == "heads":
        ops.add_heads(m, 2, **kw)
    elif edit == "insert":
        ops.insert_identity_block(m, 1, source=0, **kw)
    else:
        snr = 10.0 if edit == "clone_noise" else None
        ops.clone_width(m, 2, snr_db=snr, generator=torch.Generator().manual_seed(0), **kw)
    assert (m(x) - before).abs().max() <= 1e-5
    check_consistent(m, opt)
    m.train()
    F.cross_entropy(m(x), y).backward()
    opt.step()  # the grown model trains with the carried state


def test_hypercloning_runs_on_the_vit():
    x, y = _digits(64)
    m = _small()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    hc = methods.HyperCloning(m, opt, 20, x[:8])
    for step in range(12):
        hc.update(step)
        loss = F.cross_entropy(m(x), y)
        hc.optimizer.zero_grad()
        loss.backward()
        hc.optimizer.step()
    assert m.norm_f.weight.shape == (32,) and hc.log[0]["max_abs_dout"] <= 1e-5
