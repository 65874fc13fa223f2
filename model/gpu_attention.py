"""Attention for packed rows on GPUs, the two fused candidates beside XLA's batched op.

XLA's op with the segment mask (model/attention.py `batched_attention`) writes every row's
(heads, length, length) scores to memory. Two fused kernels keep them on chip:

- "cudnn": cuDNN's flash attention through `jax.nn.dot_product_attention(implementation=
  "cudnn")`. Of what jax exposes, only a `mask` expresses several documents per row
  (`query_seq_lengths`/`key_value_seq_lengths` describe one sequence per row, padding after it);
  jax hands cuDNN the mask as an additive bias of (rows, 1, length, length), which the kernel
  reads tile by tile. Needs bf16 or fp16 and a head size that is a multiple of 8 (XLM-R's 64
  is). cuDNN's packed (THD) layout with per-document offsets would skip the mask, but jax 0.10
  has it only in a private module.
- "pallas": jax's own Pallas flash attention for GPUs (Triton), which takes segment ids as they
  are and builds the mask inside each tile. Runs on CPU in Pallas's interpreter, which is how
  the tests check its numerics.

Neither can be partitioned by XLA, so each runs under shard_map on the rows its device holds.
Which one a GPU uses is measured (bench/gpu.py) and set in model/runtime.py.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from model.attention import segment_mask

GPU_ATTENTIONS = ("cudnn", "pallas")
PALLAS_BLOCK = 128  # query and key tile of the Pallas kernel (jax's default for GPUs)


def cudnn_attention(qkv: jax.Array, segment_ids: jax.Array) -> jax.Array:
  q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
  return jax.nn.dot_product_attention(q, k, v, mask=segment_mask(segment_ids)[:, None],
                                      implementation="cudnn")


def pallas_attention(qkv: jax.Array, segment_ids: jax.Array, interpret: bool = False) -> jax.Array:
  from jax.experimental.pallas.ops.gpu import attention as pallas
  q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
  length, head_dim = q.shape[1], q.shape[-1]
  block = _pallas_block(length)
  # Padding (segment 0) attends to padding only; documents never see it. Padding's outputs are
  # never read.
  return pallas.mha(q, k, v, segment_ids.astype(jnp.int32), sm_scale=float(1 / np.sqrt(head_dim)),
                    block_sizes=pallas.BlockSizes(block_q=block, block_k=block), interpret=interpret)


def _pallas_block(length: int) -> int:
  return min(PALLAS_BLOCK, length)


def supports(name: str, head_dim: int, dtype, lengths=()) -> str | None:
  """None if attention `name` can run a model of this head size and compute dtype on rows of
  these lengths; else why not. Whether this machine has the GPU is the runtime's question."""
  if name == "cudnn":
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
      return f"cuDNN's flash attention takes bfloat16 or float16, not {jnp.dtype(dtype).name}"
    if head_dim % 8 or head_dim > 128:
      return f"cuDNN's flash attention needs a head size that is a multiple of 8 up to 128, got {head_dim}"
    return None
  if name == "pallas":
    odd = [l for l in lengths if l % _pallas_block(l) or (l < PALLAS_BLOCK and l & (l - 1))]
    if odd:
      return f"the Pallas kernel tiles rows by {PALLAS_BLOCK} (or one power-of-two tile), not {odd}"
    return None
  raise ValueError(f"GPU attention must be one of {GPU_ATTENTIONS}, got {name!r}")


def attention(name: str, mesh: jax.sharding.Mesh, axis: str, interpret: bool = False):
  """Attention `name`, run by each device of `mesh` on its own rows (split along `axis`)."""
  fn = cudnn_attention if name == "cudnn" else functools.partial(pallas_attention, interpret=interpret)
  return jax.shard_map(fn, mesh=mesh, in_specs=(P(axis), P(axis)), out_specs=P(axis))
