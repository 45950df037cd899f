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
        ffn = FFNParts(f"blocks.{i}.mlp", f.up, f.gate, f.down)
        blocks.append(BlockParts(f"blocks.{i}", blk, attn, ffn, [blk.norm1, blk.norm2]))
    return TransformerParts(
        "blocks",
        blocks,
        embeddings=[model.tok_emb, model.pos_emb],
        final_norm=model.norm_f,
        head=model.lm_head,
        tied=model.lm_head.weight is model.tok_emb.weight,
    )


def _vit(model: nn.Module) -> TransformerParts:
    """torchgrow's ViT: the GPT's blocks; patches, class token and positions as embeddings."""
    parts = _gpt_blocks(model)
    return TransformerParts(
        "blocks", parts, embeddings=[model.patch_emb, model.cls_token, model.pos_emb],
        final_norm=model.norm_f, head=model.head,
    )  # fmt: skip


def _gpt_blocks(model: nn.Module) -> list[BlockParts]:
    blocks = []
    for i, blk in enumerate(model.blocks):
        a = blk.attn
        attn = AttentionParts(
            f"blocks.{i}.attn", a, a.q, a.k, a.v, None, a.o, a.head_dim, a.n_head, a.n_kv_head,
            set_heads=lambda h, kv: [],
        )  # fmt: skip
        f = blk.mlp
        ffn = FFNParts(f"blocks.{i}.mlp", f.up, f.gate, f.down)
        blocks.append(BlockParts(f"blocks.{i}", blk, attn, ffn, [blk.norm1, blk.norm2]))
    return blocks


def _hf_head(model: nn.Module, emb: nn.Module) -> tuple[nn.Module | None, bool]:
    head = getattr(model, "lm_head", None)
    return head, head is not None and head.weight is emb.weight


def _hf_width(config: object, keys: dict[str, str]) -> Callable:
    def set_width(d: int, h: int, kv: int, f: int) -> Steps:
        values = {"d": d, "h": h, "kv": kv, "f": f}
        return [set_attr(config, key, values[v]) for v, key in keys.items() if hasattr(config, key)]

    return set_width


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
            d_attn = h * a.head_dim
            return [
                set_attr(a, "num_heads", h),
                set_attr(a, "split_size", d_attn),
                set_attr(a, "embed_dim", d_attn),
            ]

        attn = AttentionParts(
            f"{prefix}.{i}.attn", a, None, None, None, a.c_attn, a.c_proj, a.head_dim, n, n,
            set_heads=set_heads,
        )  # fmt: skip
        m = blk.mlp
        ffn = FFNParts(f"{prefix}.{i}.mlp", m.c_fc, None, m.c_proj)
        blocks.append(BlockParts(f"{prefix}.{i}", blk, attn, ffn, [blk.ln_1, blk.ln_2]))
    depth = _hf_depth(model.config, lambda b: b.attn, "n_layer")
    head, tied = _hf_head(model, base.wte)
    keys = {"d": "n_embd", "h": "n_head", "f": "n_inner"}
    return TransformerParts(
        prefix, blocks, set_depth=depth, embeddings=[base.wte, base.wpe], final_norm=base.ln_f,
        head=head, tied=tied, set_width=_with_embed_dim(base, _hf_width(model.config, keys)),
    )  # fmt: skip


def _bert(model: nn.Module) -> TransformerParts:
    """Hugging Face BERT (post-LN): ``encoder.layer.i`` with ``attention.self``'s query, key and
    value, ``attention.output.dense``, ``intermediate.dense`` and ``output.dense``."""
    base = getattr(model, "bert", model)
    prefix = "bert.encoder.layer" if base is not model else "encoder.layer"
    blocks = []
    for i, blk in enumerate(base.encoder.layer):
        a = blk.attention.self
        if getattr(blk, "crossattention", None) is not None:
            raise NotImplementedError("BERT cross-attention is not supported")
        n = a.num_attention_heads

        def set_heads(h: int, kv: int, a: nn.Module = a) -> Steps:
            return [
                set_attr(a, "num_attention_heads", h),
                set_attr(a, "all_head_size", h * a.attention_head_size),
            ]

        attn = AttentionParts(
            f"{prefix}.{i}.attention", blk.attention, a.query, a.key, a.value, None,
            blk.attention.output.dense, a.attention_head_size, n, n, set_heads=set_heads,
        )  # fmt: skip
        ffn = FFNParts(f"{prefix}.{i}", blk.intermediate.dense, None, blk.output.dense)
        norms = [blk.attention.output.LayerNorm, blk.output.LayerNorm]
        blocks.append(BlockParts(f"{prefix}.{i}", blk, attn, ffn, norms))
    depth = _hf_depth(model.config, lambda b: b.attention.self, "num_hidden_layers")
    keys = {"d": "hidden_size", "h": "num_attention_heads", "f": "intermediate_size"}
    return TransformerParts(
        prefix, blocks, pre_ln=False, set_depth=depth, set_width=_hf_width(model.config, keys),
    )  # fmt: skip


def _with_embed_dim(base: nn.Module, inner: Callable) -> Callable:
    def set_width(d: int, h: int, kv: int, f: int) -> Steps:
        return [*inner(d, h, kv, f), set_attr(base, "embed_dim", d)]

    return set_width


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
            set_heads=lambda h, kv, a=a: [set_attr(a, "num_key_value_groups", h // kv)],
        )  # fmt: skip
        m = blk.mlp
        ffn = FFNParts(f"{prefix}.{i}.mlp", m.up_proj, m.gate_proj, m.down_proj)
        norms = [blk.input_layernorm, blk.post_attention_layernorm]
        blocks.append(BlockParts(f"{prefix}.{i}", blk, attn, ffn, norms))
    depth = _hf_depth(model.config, lambda b: b.self_attn, "num_hidden_layers")
    head, tied = _hf_head(model, base.embed_tokens)
    keys = {"d": "hidden_size", "h": "num_attention_heads", "kv": "num_key_value_heads"}
    keys["f"] = "intermediate_size"
    return TransformerParts(
        prefix, blocks, set_depth=depth, embeddings=[base.embed_tokens], final_norm=base.norm,
        head=head, tied=tied, set_width=_hf_width(model.config, keys),
    )  # fmt: skip


#: Built-in finders by qualified class name.
FINDERS: dict[str, Callable[[nn.Module], TransformerParts]] = {
    "torchgrow.models.gpt.GPT": _gpt,
    "torchgrow.models.vit.ViT": _vit,
    "transformers.models.gpt2.modeling_gpt2.GPT2Model": _gpt2,
    "transformers.models.gpt2.modeling_gpt2.GPT2LMHeadModel": _gpt2,
    "transformers.models.llama.modeling_llama.LlamaModel": _llama,
    "transformers.models.llama.modeling_llama.LlamaForCausalLM": _llama,
    "transformers.models.bert.modeling_bert.BertModel": _bert,
}
