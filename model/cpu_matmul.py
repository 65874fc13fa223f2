"""The encoder's weight matmuls in bf16 on Intel AMX tiles (model/kernels/matmul.*), an XLA
custom call, for `--dtype bfloat16` on CPUs that have them.

This jaxlib's CPU dot libraries do not use AMX: its bf16 dots run at 300 GFLOP/s at best (YNNPACK;
Eigen and its oneDNN path widen them to fp32), where AMX multiplies 16 x 16 x 32 blocks per
instruction. The kernel reads the weights packed in AMX's pair layout (`pack`), which is done
once when the model loads: a kernel parameter of this path holds (N / 32, K / 2, 32, 2) bf16
in place of (K, N) (model/xlmr.py declares it, model/convert.py fills it). Products of bf16
inputs accumulate in fp32, as XLA's bf16 dots with fp32 output do; `linear` adds the bias,
applies GELU and rounds to bf16 where the next matmul wants bf16, in the same call.

One device only: XLA cannot partition a custom call, and CPU scoring runs one device unless
told otherwise; model/runtime.py chooses this path only then.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from model import cpu_kernels

LAYOUT = "amx"  # the Param metadata that marks a packed kernel
BLOCK = 32  # K and N must be multiples of it


def unavailable_reason() -> str | None:
  """None where the AMX kernels are built and registered; else why not."""
  if cpu_kernels.best_variant() != "amx":
    return "this CPU has no AMX (amx_bf16, amx_tile) or no AVX512-BF16"
  return cpu_kernels.unavailable_reason("amx")


def shape_reason(shapes) -> str | None:
  """None if every (K, N) in `shapes` is a multiple of the kernel's block; else why not."""
  odd = [f"{k}x{n}" for k, n in shapes if k % BLOCK or n % BLOCK]
  return f"weight shapes {', '.join(odd)} are not multiples of {BLOCK}" if odd else None


def packed_shape(k: int, n: int) -> tuple[int, int, int, int]:
  return (n // BLOCK, k // 2, BLOCK, 2)


def pack(kernel):
  """(K, N) -> (N / 32, K / 2, 32, 2): strips of 32 columns, each its K / 2 rows of column pairs,
  packed[s, r, j, i] = kernel[2r + i, 32s + j] (matmul.h says why). A jax.Array stays on its
  device (XLA transposes it), anything else becomes a contiguous numpy array."""
  if isinstance(kernel, jax.Array):
    k, n = kernel.shape
    return kernel.reshape(k // 2, 2, n // BLOCK, BLOCK).transpose(2, 0, 3, 1)
  kernel = np.asarray(kernel)
  k, n = kernel.shape
  return np.ascontiguousarray(kernel.reshape(k // 2, 2, n // BLOCK, BLOCK).transpose(2, 0, 3, 1))


def unpack(packed) -> np.ndarray:
  """The inverse of `pack`: what the checkpoint holds."""
  packed = np.asarray(packed)
  strips, pairs = packed.shape[:2]
  return np.ascontiguousarray(packed.transpose(1, 3, 0, 2).reshape(pairs * 2, strips * BLOCK))


def init(key, shape, dtype):
  """A kernel_init for nnx.Linear that declares the packed shape (values come from the checkpoint)."""
  del key
  return jnp.zeros(packed_shape(*shape), dtype)


ACTIVATIONS = {None: 0, "gelu": 1}  # matmul.h's Activation


def linear(x, kernels, biases, *, activation: str | None = None, out_dtype=jnp.float32,
           residual=None, norm=None):
  """activation(x (..., K) @ kernels side by side + biases) in out_dtype, in one custom call;
  with `residual` and `norm` (scale, bias, eps), LayerNorm(that + residual) instead, in fp32.

  `kernels`: packed weights of equal shape, read as their concatenated columns (query, key and
  value join without a copy); `biases` the matching fp32 vectors; `activation` None or "gelu"
  (erf GELU, as transformers' "gelu"); x bf16, or fp32 rounded to bf16 inside the call. The
  epilogue runs on each finished block in cache (bias, GELU, rounding to bf16) and on each
  finished item of rows (residual, LayerNorm): as XLA passes over the whole output they cost
  half as much as the matmuls."""
  out = jax.ShapeDtypeStruct(x.shape[:-1] + (sum(k.shape[0] for k in kernels) * BLOCK,), out_dtype)
  target = cpu_kernels.target(cpu_kernels.AMX_LINEAR[jnp.dtype(out_dtype).name], "amx")
  bias = jnp.concatenate([jnp.asarray(b, jnp.float32) for b in biases])
  layer_norm = []
  if norm is not None:
    scale, shift, eps = norm
    layer_norm = [jnp.asarray(a, jnp.float32) for a in (residual, scale, shift)]
  x = x if x.dtype == jnp.float32 else x.astype(jnp.bfloat16)
  return jax.ffi.ffi_call(target, out)(x, bias, *layer_norm, *(k.astype(jnp.bfloat16) for k in kernels),
                                       activation=np.int32(ACTIVATIONS[activation]),
                                       norm=np.int32(norm is not None),
                                       eps=np.float32(norm[2] if norm is not None else 0.0))


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs):
  """lhs (..., K) @ a packed kernel -> (..., N) float32: nnx.Linear's one contraction."""
  del precision, preferred_element_type, kwargs
  if tuple(map(tuple, dimension_numbers[0])) != ((lhs.ndim - 1,), (0,)) or rhs.ndim != 4:
    raise ValueError(f"the AMX matmul takes (..., K) @ a packed kernel, got {dimension_numbers}")
  return linear(lhs, [rhs], [jnp.zeros(rhs.shape[0] * BLOCK, jnp.float32)])
