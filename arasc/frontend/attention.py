"""Attention decomposed into IR layers: scaled dot-product attention becomes
matmul(q, k^T) * 1/sqrt(d) (+ mask) -> softmax -> matmul(., v), the form ARAS executes
(Vaswani et al. 2017, eq. 1). `nn.MultiheadAttention` adds its input and output projections
as linear layers and the head split/merge as reshapes and permutes."""
from __future__ import annotations

import math

import torch


def _arg(args, kwargs, i, name, default=None):
    return kwargs.get(name, args[i] if i < len(args) else default)


def emit_sdpa(lw, q, k, v, mask=None, is_causal=False, scale=None, base=None):
    from .ids_and_masks import MaskedScores, combine, masked_softmax  # they register in the handler table

    base = base or lw.node_base_name(lw.node)
    dims = list(range(k.ndim))
    dims[-1], dims[-2] = dims[-2], dims[-1]
    kt = lw.emit("permute", [k], {"dims": tuple(dims)}, base=f"{base}.key_t")
    scores = lw.emit("matmul", [q, kt], base=f"{base}.scores")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    scores = lw.emit("mul", [scores], {"scalar": scale}, base=f"{base}.scaled")
    keep = None
    if is_causal:  # torch's causal mask is the upper-left aligned lower triangle
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
    if mask is not None:
        keep_of_mask = _keep_mask(lw, mask)
        if keep_of_mask is None:  # a general additive float mask
            scores = lw.emit("add", [scores, lw.as_val(mask)], base=f"{base}.masked")
        else:
            keep = keep_of_mask if keep is None else combine(lw, keep, keep_of_mask)
    if keep is None:
        probs = lw.emit("softmax", [scores], {"dim": scores.ndim - 1}, base=f"{base}.probs")
    else:
        probs = masked_softmax(lw, MaskedScores(scores, keep), scores.ndim - 1, base=f"{base}.probs")
    return lw.emit("matmul", [probs, v], base=base)


def _keep_mask(lw, mask):
    """The boolean keep-mask of an attention mask, or None for a general additive float mask."""
    from .ids_and_masks import KeepMask, keep_of_constant

    if isinstance(mask, KeepMask):
        return mask.keep
    if isinstance(mask, torch.Tensor):
        return mask if mask.dtype == torch.bool else keep_of_constant(mask)
    return mask if mask.type.dtype == "bool" else None


def lower_sdpa(lw, args, kwargs):
    q, k, v = args[:3]
    if _arg(args, kwargs, 4, "dropout_p", 0.0):
        lw.fail("scaled_dot_product_attention with dropout_p > 0 is training-only")
    if _arg(args, kwargs, 7, "enable_gqa", False):
        lw.fail("grouped-query attention (enable_gqa=True) is not supported")
    return emit_sdpa(lw, q, k, v, _arg(args, kwargs, 3, "attn_mask"), _arg(args, kwargs, 5, "is_causal", False),
                     _arg(args, kwargs, 6, "scale"))


class _NoAttentionWeights:
    """Stands for MultiheadAttention's second output, which arasc does not compute."""

    def __repr__(self):
        return "the attention-weights output of nn.MultiheadAttention (not supported; use need_weights=False)"


def lower_multihead_attention(lw, mod, args, kwargs):
    from .handlers import emit_linear, emit_permute, emit_reshape

    query, key, value = args[:3]
    if any(_arg(args, kwargs, i, n) is not None for i, n in ((3, "key_padding_mask"), (5, "attn_mask"))):
        lw.fail("nn.MultiheadAttention with key_padding_mask or attn_mask is not supported")
    if not mod._qkv_same_embed_dim or mod.bias_k is not None or mod.add_zero_attn:
        lw.fail("nn.MultiheadAttention with kdim/vdim, add_bias_kv or add_zero_attn is not supported")
    base = str(lw.node.target)
    if not mod.batch_first:  # [L, N, E] -> [N, L, E]
        query, key, value = (emit_permute(lw, t, (1, 0, 2)) for t in (query, key, value))
    e, h = mod.embed_dim, mod.num_heads
    w, b = mod.in_proj_weight, mod.in_proj_bias
    heads = []
    for i, (name, x) in enumerate((("q", query), ("k", key), ("v", value))):
        bias = None if b is None else b[i * e:(i + 1) * e]
        proj = emit_linear(lw, x, w[i * e:(i + 1) * e], bias, f"{base}.{name}_proj")
        split = emit_reshape(lw, proj, (proj.shape[0], proj.shape[1], h, e // h))
        heads.append(emit_permute(lw, split, (0, 2, 1, 3)))
    attended = emit_sdpa(lw, *heads, is_causal=bool(_arg(args, kwargs, 7, "is_causal", False)),
                         base=f"{base}.attention")
    merged = emit_permute(lw, attended, (0, 2, 1, 3))
    merged = emit_reshape(lw, merged, (merged.shape[0], merged.shape[1], e))
    out = emit_linear(lw, merged, mod.out_proj.weight, mod.out_proj.bias, f"{base}.out_proj")
    if not mod.batch_first:
        out = emit_permute(lw, out, (1, 0, 2))
    return (out, _NoAttentionWeights())
