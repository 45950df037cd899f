"""Layer kinds beyond the classic CNN/MLP ones: ``Embedding``, ``RMSNorm``, ``GroupNorm``
(refused with a reason) and Hugging Face transformers' ``Conv1D`` (GPT-2's linear layer,
registered by name so that torchgrow does not import transformers).
"""

from __future__ import annotations

from torch import Tensor, nn

from .edit import Change
from .layers import expand_index, tensor_change
from .registry import LayerOps, Role, register, register_by_name

__all__: list[str] = []


# ---------------------------------------------------------------- Embedding (a producer)
def _emb_unsupported(m: nn.Embedding) -> str | None:
    if m.max_norm is not None:
        return "an Embedding with max_norm renormalises its rows, so new columns change them"
    return None


def _emb_grow_out(m: nn.Embedding, k: int, fan_in: Tensor | None) -> list[Change]:
    w = m.weight
    block = w.new_zeros(m.num_embeddings, k) if fan_in is None else fan_in.t().to(w)
    return [
        tensor_change(m, "weight", 1, block=block),
        Change.attr(m, "embedding_dim", m.embedding_dim + k),
    ]


def _emb_keep_out(m: nn.Embedding, keep: Tensor) -> list[Change]:
    return [tensor_change(m, "weight", 1, keep=keep), Change.attr(m, "embedding_dim", len(keep))]


register(
    LayerOps(
        kind=nn.Embedding,
        role=Role.PRODUCER,
        channel_dim=-1,
        out_dim=1,
        out_width=lambda m: m.embedding_dim,
        in_width=lambda m: m.num_embeddings,
        grow_out=_emb_grow_out,
        keep_out=_emb_keep_out,
        fan_in_shape=lambda m, k: (k, m.num_embeddings),
        unsupported=_emb_unsupported,
    )
)


# ---------------------------------------------------------------- RMSNorm (per channel)
def _rms_unsupported(m: nn.RMSNorm) -> str | None:
    if len(m.normalized_shape) != 1:
        return f"RMSNorm over shape {tuple(m.normalized_shape)} cannot be resized per channel"
    return None


def _rms_grow(m: nn.RMSNorm, k: int) -> list[Change]:
    changes = [Change.attr(m, "normalized_shape", (m.normalized_shape[0] + k,))]
    if m.weight is not None:
        changes.append(tensor_change(m, "weight", 0, block=m.weight.new_ones(k)))
    return changes


def _rms_keep(m: nn.RMSNorm, keep: Tensor) -> list[Change]:
    changes = [Change.attr(m, "normalized_shape", (len(keep),))]
    if m.weight is not None:
        changes.append(tensor_change(m, "weight", 0, keep=keep))
    return changes


register(
    LayerOps(
        kind=nn.RMSNorm,
        role=Role.PER_CHANNEL,
        channel_dim=-1,
        unsupported=_rms_unsupported,
        out_width=lambda m: m.normalized_shape[0],
        in_width=lambda m: m.normalized_shape[0],
        grow_channels=_rms_grow,
        keep_channels=_rms_keep,
    )
)

# GroupNorm normalises over groups of channels: new channels change a group's statistics
# (and its group count); until duplication-style growth exists, units through it are refused.
register(
    LayerOps(
        kind=nn.GroupNorm,
        role=Role.PER_CHANNEL,
        unsupported=lambda m: (
            "GroupNorm normalises over groups of channels: zero-filled new channels would change "
            "every group's statistics, so torchgrow does not widen through it"
        ),
    )
)


# ---------------------------------------------------------------- transformers' Conv1D
# GPT-2's linear layer: weight (in, out), y = x @ W + b.
def _c1d_grow_out(m: nn.Module, k: int, fan_in: Tensor | None) -> list[Change]:
    w = m.weight
    block = w.new_zeros(w.shape[0], k) if fan_in is None else fan_in.t().to(w)
    return [
        tensor_change(m, "weight", 1, block=block),
        tensor_change(m, "bias", 0, block=m.bias.new_zeros(k)),
        Change.attr(m, "nf", w.shape[1] + k),
    ]


def _c1d_keep_out(m: nn.Module, keep: Tensor) -> list[Change]:
    return [
        tensor_change(m, "weight", 1, keep=keep),
        tensor_change(m, "bias", 0, keep=keep),
        Change.attr(m, "nf", len(keep)),
    ]


def _c1d_grow_in(m: nn.Module, k: int, fan_out: Tensor | None, factor: int) -> list[Change]:
    w = m.weight
    block = w.new_zeros(k * factor, w.shape[1]) if fan_out is None else fan_out.t().to(w)
    changes = [tensor_change(m, "weight", 0, block=block)]
    if hasattr(m, "nx"):
        changes.append(Change.attr(m, "nx", w.shape[0] + k * factor))
    return changes


def _c1d_keep_in(m: nn.Module, keep: Tensor, factor: int) -> list[Change]:
    idx = expand_index(keep, factor)
    changes = [tensor_change(m, "weight", 0, keep=idx)]
    if hasattr(m, "nx"):
        changes.append(Change.attr(m, "nx", len(idx)))
    return changes


register_by_name(
    "transformers.pytorch_utils.Conv1D",
    LayerOps(
        kind=nn.Module,
        role=Role.PRODUCER | Role.CONSUMER,
        channel_dim=-1,
        in_dim=0,
        out_dim=1,
        out_width=lambda m: m.weight.shape[1],
        in_width=lambda m: m.weight.shape[0],
        grow_out=_c1d_grow_out,
        keep_out=_c1d_keep_out,
        grow_in=_c1d_grow_in,
        keep_in=_c1d_keep_in,
        fan_in_shape=lambda m, k: (k, m.weight.shape[0]),
        fan_out_shape=lambda m, k, f: (m.weight.shape[1], k * f),
    ),
)


# ---------------------------------------------------------------- LSTM / GRU / RNN (consumers)
# Only the input side: the first layer's input-to-hidden weights read the unit's channels.
def _rnn_names(m: nn.RNNBase) -> list[str]:
    return ["weight_ih_l0", *(["weight_ih_l0_reverse"] if m.bidirectional else [])]


def _rnn_grow_in(m: nn.RNNBase, k: int, fan_out: Tensor | None, factor: int) -> list[Change]:
    names = _rnn_names(m)
    rows = getattr(m, names[0]).shape[0]
    changes = []
    for i, name in enumerate(names):
        w = getattr(m, name)
        block = (
            w.new_zeros(rows, k * factor) if fan_out is None else fan_out[i * rows : (i + 1) * rows]
        )
        changes.append(tensor_change(m, name, 1, block=block.to(w)))
    return [*changes, Change.attr(m, "input_size", m.input_size + k * factor)]


def _rnn_keep_in(m: nn.RNNBase, keep: Tensor, factor: int) -> list[Change]:
    idx = expand_index(keep, factor)
    changes = [tensor_change(m, name, 1, keep=idx) for name in _rnn_names(m)]
    return [*changes, Change.attr(m, "input_size", len(idx))]


register(
    LayerOps(
        kind=nn.RNNBase,
        role=Role.CONSUMER,
        channel_dim=-1,
        in_width=lambda m: m.input_size,
        grow_in=_rnn_grow_in,
        keep_in=_rnn_keep_in,
        fan_out_shape=lambda m, k, f: (
            len(_rnn_names(m)) * m.weight_ih_l0.shape[0],
            k * f,
        ),
    )
)
