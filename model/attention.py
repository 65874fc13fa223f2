"""XLA's attention, in the two forms the encoder can run it.

Every attention takes qkv (batch, length, 3, heads, head_dim) and segment ids (batch, length)
and returns (batch, length, heads, head_dim). `segment_ids[b, t]` is 0 for padding and k > 0
for the k-th document of row b; tokens attend only within their own document. The fused CPU
kernel (model/fused_attention.py) has the same signature; model/runtime.py chooses among them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def segment_mask(segment_ids: jax.Array) -> jax.Array:
  """(..., query, key): same document, and the key is not padding."""
  return (segment_ids[..., :, None] == segment_ids[..., None, :]) & (segment_ids[..., None, :] != 0)


def batched_attention(qkv, segment_ids):
  """One fused op over the whole batch: what TPUs and GPUs run best."""
  q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
  return jax.nn.dot_product_attention(q, k, v, mask=segment_mask(segment_ids)[:, None])


def row_attention(qkv, segment_ids):
  """One row at a time, heads leading, normalising after the AV product.

  The batched op writes every row's (heads, length, length) scores to memory and reads them
  back three times; one row's scores stay in cache, and with heads leading each head's
  products are plain [length, 64] matmuls with no strided reads. On CPU this ran attention at
  512 tokens in about half the batched op's time (docs/benchmarks.md); on accelerators the
  batched op is the one to use. Padding queries see no key and average v, as the batched op does;
  their outputs are never read.
  """
  q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
  scale = 1 / np.sqrt(q.shape[-1])

  def one_row(row):
    q, k, v, segments = row  # (heads, length, head_dim) and (length,)
    logits = jnp.einsum("hqd,hkd->hqk", q * scale.astype(q.dtype), k,
                        preferred_element_type=jnp.float32)
    # The mask built per head, not broadcast over heads inside the select: XLA's CPU loop
    # for the broadcast form ran the whole attention 1.8x slower.
    per_head = jnp.broadcast_to(segments, (q.shape[0], segments.shape[-1]))
    logits = jnp.where(segment_mask(per_head), logits, jnp.finfo(jnp.float32).min)
    weights = jnp.exp(logits - logits.max(-1, keepdims=True))
    attended = jnp.einsum("hqk,hkd->hqd", weights.astype(v.dtype), v,
                          preferred_element_type=jnp.float32)
    return (attended / weights.sum(-1)[..., None]).astype(v.dtype)

  heads_first = lambda x: jnp.swapaxes(x, 1, 2)
  return heads_first(jax.lax.map(one_row, (heads_first(q), heads_first(k), heads_first(v),
                                           segment_ids)))
