"""Layout finders of the transformer families torchgrow knows: its own GPT, Hugging Face
GPT-2 and Llama (read by attribute name, so torchgrow never imports transformers)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .tx_layout import AttentionParts, BlockParts, FFNParts, TransformerParts, set_attr

__all__ = ["FINDERS"]

Steps = list[tuple[Callable[[], None], Callable[[], None]]]


def _gpt(model: nn.Module) -> TransformerParts:
    blocks = []
    for i, blk in enumerate(model.blocks):
        a = blk.attn
        attn = AttentionParts(
            f"blocks.{i}.attn", a, a.q, a.k, a.v, None, a.o, a.head_dim, a.n_head, a.n_kv_head,
            set_heads=lambda h, kv: [],
        )  # fmt: skip
        f = blk.mlp
        blocks.append(
            BlockParts(f"blocks.{i}", blk, attn, FFNParts(f"blocks.{i}.mlp", f.up, f.gate, f.down))
        )
    return TransformerParts("blocks", blocks)


def _hf_depth(config: object, attn_of: Callable[[nn.Module], nn.Module], key: str) -> Callable:
    def set_depth(new_blocks: list[nn.Module]) -> Steps:
        steps = [set_attr(config, key, len(new_blocks))]
        types = getattr(config, "layer_types", None)
        if isinstance(types, list) and len(set(types)) == 1:
            steps.append(set_attr(config, "layer_types", [types[0]] * len(new_blocks)))
        for i, blk in enumerate(new_blocks):
            attn = attn_of(blk)
            if hasattr(attn, "layer_idx"):
                steps.append(set_attr(attn, "layer_idx", i))
            if hasattr(blk, "layer_idx"):
                steps.append(set_attr(blk, "layer_idx", i))
        return steps

    return set_depth


def _gpt2(model: nn.Module) -> TransformerParts:
    base = getattr(model, "transformer", model)
    prefix = "transformer.h" if base is not model else "h"
    blocks = []
    for i, blk in enumerate(base.h):
        a = blk.attn
        if getattr(a, "is_cross_attention", False) or getattr(a, "q_attn", None) is not None:
            raise NotImplementedError("GPT-2 cross-attention is not supported")
        n = a.split_size // a.head_dim

        def set_heads(h: int, kv: int, a: nn.Module = a) -> Steps:
            return [set_attr(a, "num_heads", h), set_attr(a, "split_size", h * a.head_dim)]

        attn = AttentionParts(
            f"{prefix}.{i}.attn", a, None, None, None, a.c_attn, a.c_proj, a.head_dim, n, n,
            set_heads=set_heads,
        )  # fmt: skip
        m = blk.mlp
        ffn = FFNParts(f"{prefix}.{i}.mlp", m.c_fc, None, m.c_proj)
        blocks.append(BlockParts(f"{prefix}.{i}", blk, attn, ffn))
    depth = _hf_depth(model.config, lambda b: b.attn, "n_layer")
    return TransformerParts(prefix, blocks, set_depth=depth)


def _llama(model: nn.Module) -> TransformerParts:
    base = getattr(model, "model", model)
    prefix = "model.layers" if base is not model else "layers"
    blocks = []
    for i, blk in enumerate(base.layers):
        a = blk.self_attn
        hd = a.head_dim
        h, kv = a.q_proj.out_features // hd, a.k_proj.out_features // hd
        attn = AttentionParts(
            f"{prefix}.{i}.self_attn", a, a.q_proj, a.k_proj, a.v_proj, None, a.o_proj, hd, h, kv,
            set_heads=lambda h, kv: [],
        )  # fmt: skip
        m = blk.mlp
        ffn = FFNParts(f"{prefix}.{i}.mlp", m.up_proj, m.gate_proj, m.down_proj)
        blocks.append(BlockParts(f"{prefix}.{i}", blk, attn, ffn))
    depth = _hf_depth(model.config, lambda b: b.self_attn, "num_hidden_layers")
    return TransformerParts(prefix, blocks, set_depth=depth)


#: Built-in finders by qualified class name.
FINDERS: dict[str, Callable[[nn.Module], TransformerParts]] = {
    "torchgrow.models.gpt.GPT": _gpt,
    "transformers.models.gpt2.modeling_gpt2.GPT2Model": _gpt2,
    "transformers.models.gpt2.modeling_gpt2.GPT2LMHeadModel": _gpt2,
    "transformers.models.llama.modeling_llama.LlamaModel": _llama,
    "transformers.models.llama.modeling_llama.LlamaForCausalLM": _llama,
}
