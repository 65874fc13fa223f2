"""The compute settings of model/precision.py: what each multiplies in, and how near fp32 it stays.

int_score agreement on realistic documents is measured by bench/ (`bench.scorer --config
dtype=...`); a tiny random model's scores span too little of 0..5 for agreement to mean much.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import runtime
from model.checkpoint import load_classifier, read_config
from model.precision import COMPUTE, Compute, bfloat16_3x_dot_general
from model.runner import EncoderRunner, RunnerConfig, load_runner
from model.tokenize import DocumentTokenizer
from tests.model.reference import mixed_texts

CONTRACT = (((1,), (0,)), ((), ()))


def test_bfloat16_3x_products_are_near_float32():
  rng = np.random.default_rng(0)
  a, b = rng.standard_normal((64, 768)).astype(np.float32), rng.standard_normal((768, 96)).astype(np.float32)
  exact = a.astype(np.float64) @ b.astype(np.float64)
  dot = lambda f, x, y: np.asarray(jax.jit(f, static_argnums=2)(x, y, CONTRACT), np.float64)
  three = dot(lambda x, y, d: bfloat16_3x_dot_general(x, y, d), a, b)
  one = dot(lambda x, y, d: jax.lax.dot_general(x.astype(jnp.bfloat16), y.astype(jnp.bfloat16), d,
                                                preferred_element_type=jnp.float32), a, b)
  fp32 = dot(lambda x, y, d: jax.lax.dot_general(x, y, d), a, b)
  scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
  error = lambda out: (np.abs(out - exact) / scale).max()
  assert error(three) < 2e-5, error(three)  # about 16 mantissa bits
  assert error(one) > 30 * error(three), (error(one), error(three))  # bf16's 8 bits
  assert not np.array_equal(three, fp32), "three bf16 products came out as one fp32 product"


def test_every_setting_is_defined(checkpoint_dir):
  assert set(COMPUTE) == {"float32", "bfloat16_3x", "bfloat16"}
  with pytest.raises(ValueError, match="matmul must be one of"):
    Compute(jnp.float32, "tf32", None)
  with pytest.raises(ValueError, match="precision must be"):
    runtime.resolve(read_config(checkpoint_dir), precision="float16")


@pytest.fixture(scope="module")
def documents(checkpoint_dir):
  return DocumentTokenizer(checkpoint_dir, 45)(mixed_texts(seed=23)).ids


def scorer_for(checkpoint_dir, dtype: str, attention: str = "rows") -> EncoderRunner:
  return load_runner(checkpoint_dir, RunnerConfig(max_length=45, row_lengths=(15, 30), tokens_per_device=90),
                     precision=dtype, attention=attention)


def test_bfloat16_3x_scores_stay_near_float32(checkpoint_dir, documents, max_abs_diff):
  fp32 = scorer_for(checkpoint_dir, "float32").run(documents)
  three = scorer_for(checkpoint_dir, "bfloat16_3x")
  assert three._state["layers"][0]["mlp"]["intermediate"]["kernel"].dtype == jnp.float32
  three = three.run(documents)
  one = scorer_for(checkpoint_dir, "bfloat16").run(documents)
  assert not np.array_equal(three, fp32), "bfloat16_3x computed in fp32"
  three_diff = max_abs_diff("bfloat16_3x vs float32", three, fp32)
  one_diff = max_abs_diff("bfloat16 vs float32 (for bfloat16_3x)", one, fp32)
  assert three_diff <= 1e-3 * np.ptp(fp32)
  assert one_diff > 20 * three_diff


def lowered_dots(scorer: EncoderRunner) -> list[str]:
  spec = jax.ShapeDtypeStruct((4, 15), jnp.int32)
  text = scorer._forward.lower(scorer._state, spec, spec, spec,
                               jax.ShapeDtypeStruct((4, 3), jnp.int32)).as_text()
  return [line for line in text.splitlines() if "stablehlo.dot_general" in line]


def test_what_tpus_are_asked_for(checkpoint_dir):
  # CPUs ignore matmul precision, so each setting is checked where a TPU reads it: in the program
  # handed to XLA. Per layer: 4 weight matmuls (fused QKV, attention output, two FFN) and
  # per-row attention's 2 dots; then the head's 2 dense layers, always at HIGHEST.
  layers = len(load_classifier(checkpoint_dir)[1].layers)
  dots = lowered_dots(scorer_for(checkpoint_dir, "float32"))
  assert len(dots) == 6 * layers + 2
  assert all("precision = [HIGHEST, HIGHEST]" in d for d in dots), "float32 on TPU: six bf16 passes"

  dots = lowered_dots(scorer_for(checkpoint_dir, "bfloat16_3x"))
  three_products = [d for d in dots if "xbf16>" in d.split("->")[0] and "[DEFAULT, DEFAULT]" in d]
  attention = [d for d in dots if "num_primitive_operations = 3" in d]
  head = [d for d in dots if "[HIGHEST, HIGHEST]" in d]
  assert (len(three_products), len(attention), len(head)) == (3 * 4 * layers, 2 * layers, 2)
  assert len(dots) == len(three_products) + len(attention) + len(head)

  dots = lowered_dots(scorer_for(checkpoint_dir, "bfloat16"))
  assert sum("xbf16>" in d.split("->")[0] for d in dots) == 6 * layers
