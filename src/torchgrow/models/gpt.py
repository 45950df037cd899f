"""A decoder-only transformer written plainly, for growing in width and depth.

Pre-LN blocks in an ``nn.ModuleList`` (``blocks.0``, ``blocks.1``...), each
``x = x + attn(norm1(x))`` then ``x = x + mlp(norm2(x))``; multi-head causal
attention through :func:`torch.nn.functional.scaled_dot_product_attention`
with separate ``q``, ``k``, ``v`` and ``o`` projections. The number of heads is
read off the projections (``q.out_features // head_dim``) at every call, so an
edit that adds whole heads' rows keeps the model consistent without an
attribute to update. Grouped-query attention: ``k`` and ``v`` may have fewer
heads than ``q``; query head ``i`` reads key-value head ``i // group``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._layers import scale_width

__all__ = ["GPT", "GPTBlock", "CausalSelfAttention", "FeedForward", "gpt"]

_NORMS = ("layernorm", "rmsnorm")
_MLPS = ("gelu", "swiglu")


def _norm(kind: str, width: int, eps: float) -> nn.Module:
    return nn.LayerNorm(width, eps=eps) if kind == "layernorm" else nn.RMSNorm(width, eps=eps)


class CausalSelfAttention(nn.Module):
    """Multi-head (or grouped-query) causal self-attention.

    Parameters
    ----------
    d_model : int
        Residual-stream width.
    n_head : int
        Query heads.
    head_dim : int
        Width of one head (fixed when heads are added).
    n_kv_head : int, optional
        Key-value heads (default ``n_head``); must divide ``n_head``.
    bias : bool
        Biases on the four projections.
    """

    def __init__(
        self, d_model: int, n_head: int, head_dim: int, n_kv_head: int | None, bias: bool
    ) -> None:
        super().__init__()
        n_kv_head = n_head if n_kv_head is None else n_kv_head
        if n_head % n_kv_head:
            raise ValueError(f"n_kv_head ({n_kv_head}) must divide n_head ({n_head})")
        self.head_dim = head_dim
        self.q = nn.Linear(d_model, n_head * head_dim, bias=bias)
        self.k = nn.Linear(d_model, n_kv_head * head_dim, bias=bias)
        self.v = nn.Linear(d_model, n_kv_head * head_dim, bias=bias)
        self.o = nn.Linear(n_head * head_dim, d_model, bias=bias)

    @property
    def n_head(self) -> int:
        """Query heads, read off ``q``."""
        return self.q.out_features // self.head_dim

    @property
    def n_kv_head(self) -> int:
        """Key-value heads, read off ``k``."""
        return self.k.out_features // self.head_dim

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, -1, self.head_dim).transpose(1, 2)
        k = self.k(x).view(b, t, -1, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, t, -1, self.head_dim).transpose(1, 2)
        group = q.shape[1] // k.shape[1]
        if group > 1:
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    """The block's MLP: ``down(gelu(up(x)))`` or SwiGLU ``down(silu(gate(x)) * up(x))``.

    Parameters
    ----------
    d_model, d_ff : int
        Stream and hidden widths.
    kind : {"gelu", "swiglu"}
        The MLP form; SwiGLU has a ``gate`` projection beside ``up``.
    bias : bool
        Biases on the projections.
    """

    def __init__(self, d_model: int, d_ff: int, kind: str, bias: bool) -> None:
        super().__init__()
        self.kind = kind
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.gate = nn.Linear(d_model, d_ff, bias=bias) if kind == "swiglu" else None
        self.act = nn.SiLU() if kind == "swiglu" else nn.GELU()
        self.down = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.gate is not None:
            return self.down(self.act(self.gate(x)) * self.up(x))
        return self.down(self.act(self.up(x)))


class GPTBlock(nn.Module):
    """One pre-LN block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(
        self,
        d_model: int,
        n_head: int,
        head_dim: int,
        n_kv_head: int | None,
        d_ff: int,
        mlp: str,
        norm: str,
        bias: bool,
        eps: float,
    ) -> None:
        super().__init__()
        self.norm1 = _norm(norm, d_model, eps)
        self.attn = CausalSelfAttention(d_model, n_head, head_dim, n_kv_head, bias)
        self.norm2 = _norm(norm, d_model, eps)
        self.mlp = FeedForward(d_model, d_ff, mlp, bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """Token and position embeddings, a stack of pre-LN blocks, a final norm and an LM head.

    Build it with :func:`gpt`. The forward takes token ids ``(B, T)`` with
    ``T <= context`` and returns logits ``(B, T, vocab_size)``.
    """

    def __init__(
        self,
        vocab_size: int,
        context: int,
        n_layer: int,
        d_model: int,
        n_head: int,
        head_dim: int,
        n_kv_head: int | None,
        d_ff: int,
        mlp: str,
        norm: str,
        tie: bool,
        bias: bool,
        eps: float,
    ) -> None:
        super().__init__()
        self.context = context
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(
            GPTBlock(d_model, n_head, head_dim, n_kv_head, d_ff, mlp, norm, bias, eps)
            for _ in range(n_layer)
        )
        self.norm_f = _norm(norm, d_model, eps)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.apply(self._init)
        if tie:
            self.lm_head.weight = self.tok_emb.weight

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: Tensor) -> Tensor:
        t = idx.shape[1]
        if t > self.context:
            raise ValueError(f"sequence of {t} tokens is longer than the context ({self.context})")
        pos = torch.arange(t, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm_f(x))


def gpt(
    vocab_size: int,
    *,
    context: int = 64,
    n_layer: int = 4,
    d_model: int = 128,
    n_head: int = 4,
    head_dim: int | None = None,
    n_kv_head: int | None = None,
    d_ff: int | None = None,
    mlp: str = "gelu",
    norm: str = "layernorm",
    tie: bool = False,
    bias: bool = True,
    eps: float = 1e-5,
    width_mult: float = 1.0,
) -> GPT:
    """A decoder-only transformer (defaults: the character-level target of the growth benchmark).

    Parameters
    ----------
    vocab_size : int
        Number of tokens.
    context : int, default 64
        Longest sequence (learned absolute positions).
    n_layer : int, default 4
        Blocks.
    d_model : int, default 128
        Residual-stream width.
    n_head : int, default 4
        Query heads.
    head_dim : int, optional
        Width of a head (default ``d_model // n_head`` at ``width_mult=1``).
    n_kv_head : int, optional
        Key-value heads for grouped-query attention (default ``n_head``).
    d_ff : int, optional
        FFN hidden width (default ``4 * d_model``).
    mlp : {"gelu", "swiglu"}, default "gelu"
        FFN form.
    norm : {"layernorm", "rmsnorm"}, default "layernorm"
        The norms (pre-LN blocks and the final norm).
    tie : bool, default False
        Share the LM head's weight with the token embedding.
    bias : bool, default True
        Biases on the projections (the LM head has none).
    eps : float, default 1e-5
        The norms' epsilon.
    width_mult : float, default 1.0
        Multiplies ``d_model``, ``d_ff`` and the head counts; ``head_dim`` stays.

    Returns
    -------
    GPT
        The model, initialised N(0, 0.02) with zero biases.

    Raises
    ------
    ValueError
        On a non-positive size, an unknown ``mlp`` or ``norm``, or
        ``n_kv_head`` not dividing ``n_head``.
    """
    if mlp not in _MLPS:
        raise ValueError(f"mlp must be one of {_MLPS}, got {mlp!r}")
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
    sizes = {"vocab_size": vocab_size, "context": context, "n_layer": n_layer}
    sizes |= {"d_model": d_model, "n_head": n_head}
    if any(int(v) < 1 for v in sizes.values()):
        raise ValueError(f"sizes must be positive, got {sizes}")
    head_dim = d_model // n_head if head_dim is None else head_dim
    if head_dim < 1:
        raise ValueError(f"head_dim must be positive (d_model={d_model}, n_head={n_head})")
    d_ff = 4 * d_model if d_ff is None else d_ff
    heads = scale_width(n_head, width_mult)
    kv = None if n_kv_head is None else scale_width(n_kv_head, width_mult)
    return GPT(
        vocab_size,
        context,
        n_layer,
        scale_width(d_model, width_mult),
        heads,
        head_dim,
        kv,
        scale_width(d_ff, width_mult),
        mlp,
        norm,
        tie,
        bias,
        eps,
    )
