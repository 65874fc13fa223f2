"""What each compute setting (`--dtype`) means for the encoder's parameters and matmuls.

- "float32": fp32 throughout. On TPU every dot runs at HIGHEST precision: JAX's default for
  fp32 there is a single bf16 pass, and a "float32" run is the reference that
  `pipeline.compare` holds the faster settings against.
- "bfloat16_3x": fp32 parameters and activations; each weight matmul is three bf16 products,
  hi*hi + hi*lo + lo*hi, with every operand split into a bf16 high part and a bf16 remainder
  (what TPUs call bf16_3x: about 16 mantissa bits, three MXU passes). Written out rather than
  asked of the compiler as a precision, so that CPUs compute, and bench/ measures, exactly what
  a TPU does; CPUs ignore matmul precisions. Other dots (attention) ask for bf16_3x. The weights
  are split on every call: an elementwise pass over them, small beside the matmuls of a batch.
- "bfloat16": bf16 parameters and matmul inputs, fp32 accumulation: one MXU pass.

Under both bf16 settings LayerNorm, the position and token-type rows and the head stay fp32
(model/xlmr.py says why).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from model import cpu_matmul


def bfloat16_3x_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                            **kwargs):
  """lax.dot_general as three bf16 products accumulated in fp32; `precision` is what it replaces."""
  del precision, preferred_element_type

  def split(x):
    high = x.astype(jnp.bfloat16)
    return high, (x.astype(jnp.float32) - high.astype(jnp.float32)).astype(jnp.bfloat16)

  (lhs_high, lhs_low), (rhs_high, rhs_low) = split(lhs), split(rhs)
  # One bf16 pass each, whatever default precision the caller's context sets for other dots.
  dot = functools.partial(jax.lax.dot_general, dimension_numbers=dimension_numbers,
                          precision=jax.lax.Precision.DEFAULT, preferred_element_type=jnp.float32,
                          **kwargs)
  # The two small cross terms first, then the large one, as TPUs add them.
  return (dot(lhs_high, rhs_low) + dot(lhs_low, rhs_high)) + dot(lhs_high, rhs_high)


# "amx": bf16 weight matmuls on Intel AMX tiles with kernels packed at load (model/cpu_matmul.py),
# which model/runtime.py puts in place of "native" for bfloat16 on CPUs that have them.
DOT_GENERAL = {"native": jax.lax.dot_general, "bfloat16_3x": bfloat16_3x_dot_general,
               "amx": cpu_matmul.dot_general}


@dataclasses.dataclass(frozen=True)
class Compute:
  dtype: Any  # parameters and matmul inputs of the encoder (shared parameters stay fp32)
  matmul: str  # weight matmuls: a key of DOT_GENERAL
  precision: str | None  # jax.default_matmul_precision for every other dot; None: JAX's default

  def __post_init__(self):
    if self.matmul not in DOT_GENERAL:
      raise ValueError(f"matmul must be one of {sorted(DOT_GENERAL)}, got {self.matmul!r}")


COMPUTE = {
    "float32": Compute(jnp.float32, "native", "highest"),
    "bfloat16_3x": Compute(jnp.float32, "bfloat16_3x", "BF16_BF16_F32_X3"),
    "bfloat16": Compute(jnp.bfloat16, "native", None),
}
