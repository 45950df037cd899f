"""A vision transformer for small images (Fashion-MNIST in 7x7 patches), grown like the GPT.

The image is cut into non-overlapping ``patch x patch`` squares; each flattened
square is multiplied by a ``(patch_dim, d_model)`` matrix (held like an
embedding table, so the width edits tile it as they tile token embeddings); a
class token and learned positions are added; pre-LN blocks of bidirectional
attention and an FFN follow (the GPT's blocks without the causal mask); the
class token's final state, normed, goes to a linear classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._layers import scale_width
from .gpt import GPT, CausalSelfAttention, GPTBlock, _norm

__all__ = ["ViT", "ViTBlock", "PatchEmbedding", "SelfAttention", "vit"]


class PatchEmbedding(nn.Module):
    """Flattened patches times ``weight`` ``(in_channels * patch**2, d_model)``.

    Parameters
    ----------
    in_channels, patch, d_model : int
        Image channels, patch side, stream width.
    """

    def __init__(self, in_channels: int, patch: int, d_model: int) -> None:
        super().__init__()
        self.patch = patch
        self.embedding_dim = d_model
        self.weight = nn.Parameter(torch.randn(in_channels * patch * patch, d_model) * 0.02)

    def forward(self, images: Tensor) -> Tensor:
        squares = F.unfold(images, self.patch, stride=self.patch)  # (B, C*p*p, N)
        return squares.transpose(1, 2) @ self.weight


class SelfAttention(CausalSelfAttention):
    """Multi-head self-attention without a mask (every patch sees every patch)."""

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        q, k, v = (
            p(x).view(b, t, -1, self.head_dim).transpose(1, 2) for p in (self.q, self.k, self.v)
        )
        group = q.shape[1] // k.shape[1]
        if group > 1:
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.o(y.transpose(1, 2).reshape(b, t, -1))


class ViTBlock(GPTBlock):
    """A pre-LN block with bidirectional attention."""

    def __init__(self, d_model: int, n_head: int, head_dim: int, d_ff: int, mlp: str, norm: str,
                 bias: bool, eps: float) -> None:  # fmt: skip
        super().__init__(d_model, n_head, head_dim, None, d_ff, mlp, norm, bias, eps)
        self.attn = SelfAttention(d_model, n_head, head_dim, None, bias)


class ViT(nn.Module):
    """Patches, a class token and positions, pre-LN blocks, a final norm and a classifier.

    Build it with :func:`vit`. The forward takes images ``(B, C, H, W)`` (or
    flattened ``(B, C * H * W)``) and returns logits ``(B, num_classes)``.
    """

    def __init__(self, num_classes: int, image_size: int, patch: int, in_channels: int,
                 n_layer: int, d_model: int, n_head: int, head_dim: int, d_ff: int, mlp: str,
                 norm: str, bias: bool, eps: float) -> None:  # fmt: skip
        super().__init__()
        self.image_size, self.in_channels = image_size, in_channels
        n_patches = (image_size // patch) ** 2
        self.patch_emb = PatchEmbedding(in_channels, patch, d_model)
        self.cls_token = nn.Embedding(1, d_model)
        self.pos_emb = nn.Embedding(n_patches + 1, d_model)
        self.blocks = nn.ModuleList(
            ViTBlock(d_model, n_head, head_dim, d_ff, mlp, norm, bias, eps) for _ in range(n_layer)
        )
        self.norm_f = _norm(norm, d_model, eps)
        self.head = nn.Linear(d_model, num_classes)
        self.apply(GPT._init)

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() == 2:
            side = self.image_size
            images = images.view(images.shape[0], self.in_channels, side, side)
        tokens = self.patch_emb(images)
        cls = self.cls_token.weight.expand(tokens.shape[0], 1, -1)
        x = torch.cat([cls, tokens], dim=1) + self.pos_emb.weight[: tokens.shape[1] + 1]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm_f(x[:, 0]))


def vit(
    num_classes: int = 10,
    *,
    image_size: int = 28,
    patch: int = 7,
    in_channels: int = 1,
    n_layer: int = 4,
    d_model: int = 64,
    n_head: int = 4,
    head_dim: int | None = None,
    d_ff: int | None = None,
    mlp: str = "gelu",
    norm: str = "layernorm",
    bias: bool = True,
    eps: float = 1e-5,
    width_mult: float = 1.0,
) -> ViT:
    """A vision transformer (defaults: Fashion-MNIST, 28x28 in 16 patches of 7x7).

    Parameters
    ----------
    num_classes : int, default 10
        Classes.
    image_size : int, default 28
        Side of the square images.
    patch : int, default 7
        Side of a patch; must divide ``image_size``.
    in_channels : int, default 1
        Image channels.
    n_layer : int, default 4
        Blocks.
    d_model : int, default 64
        Residual-stream width.
    n_head : int, default 4
        Heads.
    head_dim : int, optional
        Width of a head (default ``d_model // n_head``).
    d_ff : int, optional
        FFN hidden width (default ``4 * d_model``).
    mlp, norm, bias, eps
        As in :func:`torchgrow.models.gpt`.
    width_mult : float, default 1.0
        Multiplies ``d_model``, ``d_ff`` and the heads; ``head_dim`` stays.

    Returns
    -------
    ViT
        The model, initialised N(0, 0.02) with zero biases.

    Raises
    ------
    ValueError
        On a non-positive size, a patch that does not divide the image, or an
        unknown ``mlp`` or ``norm``.
    """
    sizes = {"num_classes": num_classes, "image_size": image_size, "patch": patch,
             "in_channels": in_channels, "n_layer": n_layer, "d_model": d_model, "n_head": n_head}  # fmt: skip
    if any(int(v) < 1 for v in sizes.values()):
        raise ValueError(f"sizes must be positive, got {sizes}")
    if image_size % patch:
        raise ValueError(f"patch={patch} does not divide image_size={image_size}")
    if mlp not in ("gelu", "swiglu") or norm not in ("layernorm", "rmsnorm"):
        raise ValueError(f"mlp must be 'gelu' or 'swiglu' and norm 'layernorm' or 'rmsnorm', "
                         f"got {mlp!r}, {norm!r}")  # fmt: skip
    head_dim = d_model // n_head if head_dim is None else head_dim
    if head_dim < 1:
        raise ValueError(f"head_dim must be positive (d_model={d_model}, n_head={n_head})")
    d_ff = 4 * d_model if d_ff is None else d_ff
    return ViT(
        num_classes, image_size, patch, in_channels, n_layer, scale_width(d_model, width_mult),
        scale_width(n_head, width_mult), head_dim, scale_width(d_ff, width_mult), mlp, norm, bias,
        eps,
    )  # fmt: skip
