"""Attention as one fused CPU kernel (model/kernels/attention.*), an XLA custom call.

XLA's CPU backend runs attention as separate dots and softmax passes over every row's
(heads, length, length) scores in memory, at a quarter to a third of the machine's matmul
peak; at 512 tokens that was a third of the encoder's time for a tenth of its FLOPs. The kernel
computes scores, softmax and the weighted values for six queries at a time in cache, and skips
the keys of other documents in packed rows (docs/benchmarks.md has the figures).

fp32 or bf16 in and out, as the encoder's compute dtype: bf16 multiplies on AMX tiles where the
CPU has them (attention_amx.h), else by AVX512-BF16 dot products (softmax and accumulation stay
fp32), else is widened to fp32.
It needs x86-64 with AVX-512F; model/cpu_kernels.py builds and loads it. Inference only: the
custom call has no gradient, and training keeps XLA's attention.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from model import cpu_kernels

MAX_HEAD_DIM = 64  # kMaxHeadDim in attention.h
TARGETS = {jnp.dtype(jnp.float32): cpu_kernels.ATTENTION_F32,
           jnp.dtype(jnp.bfloat16): cpu_kernels.ATTENTION_BF16}


def unavailable_reason(variant: str | None = None) -> str | None:
  """None once the kernel is built and registered with XLA; else why it cannot be."""
  return cpu_kernels.unavailable_reason(variant)


def supports(head_dim: int, dtype) -> str | None:
  """None if the kernel can run a model of this head size and compute dtype; else why not."""
  if jnp.dtype(dtype) not in TARGETS:
    return f"the kernel computes in float32 or bfloat16, not {jnp.dtype(dtype).name}"
  if head_dim > MAX_HEAD_DIM:
    return f"head_dim {head_dim} is over the kernel's {MAX_HEAD_DIM}"
  return unavailable_reason()


def fused_attention(qkv: jax.Array, segment_ids: jax.Array, variant: str | None = None) -> jax.Array:
  """qkv (batch, length, 3, heads, head_dim), float32 or bfloat16 -> (batch, length, heads,
  head_dim) of the same dtype, on the rows this device holds. `variant`: which build of the
  kernels (model/cpu_kernels.py; default the best this CPU runs)."""
  reason = supports(qkv.shape[-1], qkv.dtype) or unavailable_reason(variant)
  if reason is not None:
    raise RuntimeError(f"fused attention cannot run here: {reason}")
  target = cpu_kernels.target(TARGETS[jnp.dtype(qkv.dtype)], variant)
  return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(qkv.shape[:2] + qkv.shape[3:], qkv.dtype))(
      qkv, segment_ids.astype(jnp.int32))


def per_device(mesh: jax.sharding.Mesh, axis: str):
  """The kernel run by each device of `mesh` on its own rows (split along `axis`): XLA cannot
  partition a custom call and would otherwise gather every row onto every device."""
  return jax.shard_map(fused_attention, mesh=mesh, in_specs=(P(axis), P(axis)), out_specs=P(axis))
