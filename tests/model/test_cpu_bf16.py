"""bf16 on CPU: the AMX weight matmuls (model/cpu_matmul.py) and the fused attention in bf16
(model/kernels/attention.h), each against XLA's bf16 of the same values, and the whole encoder
against fp32 and transformers.

Kernels this CPU cannot run are skipped with the reason; the fused attention's bf16 path is
tested in every variant the CPU runs (dot products by AVX512-BF16, or widened to fp32).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from model import cpu_kernels, cpu_matmul, fused_attention, runtime
from model.attention import row_attention
from model.checkpoint import load_classifier, read_config
from model.runner import EncoderRunner, RunnerConfig, load_runner
from model.tokenize import DocumentTokenizer
from tests.model.reference import mixed_texts, torch_classifier, torch_document_scores
from tests.model.test_fused_attention import SHAPES, attention_float64, packed_segments

AMX = cpu_matmul.unavailable_reason()
needs_amx = pytest.mark.skipif(AMX is not None, reason=f"AMX matmul: {AMX}")
VARIANTS = [pytest.param(v, marks=pytest.mark.skipif(cpu_kernels.unavailable_reason(v) is not None,
                                                     reason=f"{v}: {cpu_kernels.unavailable_reason(v)}"))
            for v in cpu_kernels.VARIANTS]


def bf16(rng, shape, scale=1.0):
  return (rng.standard_normal(shape) * scale).astype(ml_dtypes.bfloat16)


def test_packing_is_a_permutation():
  kernel = np.arange(64 * 96, dtype=np.float32).reshape(64, 96)
  packed = cpu_matmul.pack(kernel)
  assert packed.shape == cpu_matmul.packed_shape(64, 96) == (3, 32, 32, 2)
  assert packed[2, 5, 7, 1] == kernel[11, 71]
  np.testing.assert_array_equal(cpu_matmul.unpack(packed), kernel)
  assert cpu_matmul.shape_reason([(64, 96), (36, 64)]) == "weight shapes 36x64 are not multiples of 32"


@needs_amx
@pytest.mark.parametrize("m,k,n", [(1, 32, 32), (37, 64, 96), (300, 512, 96), (64, 768, 2304), (40, 1056, 608)])
def test_amx_matmul_matches_float64_of_the_same_bf16(m, k, n):
  # Odd M: the rows past the last 32 go through a padded copy; K past 1024: two depth passes;
  # N past 512: two panels.
  rng = np.random.default_rng(m + k + n)
  a, w = bf16(rng, (m, k)), bf16(rng, (k, n))
  ours = np.asarray(jax.jit(lambda x, p: cpu_matmul.dot_general(x, p, (((1,), (0,)), ((), ()))))(
      jnp.asarray(a), jnp.asarray(cpu_matmul.pack(w))))
  exact = a.astype(np.float64) @ w.astype(np.float64)
  scale = np.abs(a).astype(np.float64) @ np.abs(w).astype(np.float64)
  assert ours.dtype == np.float32 and ours.shape == (m, n)
  assert (np.abs(ours - exact) / scale).max() < 1e-6  # fp32 accumulation of exact products
  xla = np.asarray(jax.lax.dot_general(jnp.asarray(a), jnp.asarray(w), (((1,), (0,)), ((), ())),
                                       preferred_element_type=jnp.float32))
  assert (np.abs(ours - xla) / scale).max() < 1e-6


@needs_amx
@pytest.mark.parametrize("activation", [None, "gelu"])
@pytest.mark.parametrize("out_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("m,k,n,parts", [(37, 64, 96, 1), (70, 768, 192, 3), (33, 1056, 64, 1)])
def test_amx_linear_epilogue_is_xlas_bias_gelu_and_rounding(m, k, n, parts, activation, out_dtype):
  # What the model asks of it: query, key and value read side by side (parts=3), bias, erf GELU
  # and bf16 output in the epilogue, against XLA doing each step after a bf16 dot. K past 1024
  # with a bf16 output takes all of K in one pass.
  rng = np.random.default_rng(m + k + n + parts)
  a = bf16(rng, (m, k))
  weights = [bf16(rng, (k, n)) for _ in range(parts)]
  biases = [rng.standard_normal(n).astype(np.float32) for _ in range(parts)]
  out_dtype = jnp.dtype(out_dtype)
  ours = jax.jit(lambda x, ws, bs: cpu_matmul.linear(x, ws, bs, activation=activation, out_dtype=out_dtype))(
      jnp.asarray(a), [jnp.asarray(cpu_matmul.pack(w)) for w in weights], biases)
  assert ours.dtype == out_dtype and ours.shape == (m, n * parts)

  def xla(x, w, b):
    y = jax.lax.dot_general(x, w, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32) + b
    return (jax.nn.gelu(y, approximate=False) if activation else y).astype(out_dtype)
  expected = np.asarray(jax.jit(xla)(jnp.asarray(a), jnp.asarray(np.concatenate(weights, 1)),
                                     np.concatenate(biases)), np.float32)
  ours = np.asarray(ours, np.float32)
  scale = np.abs(a).astype(np.float64) @ np.abs(np.concatenate(weights, 1)).astype(np.float64) + 1
  # Accumulation order and GELU's erf (4e-7 against XLA's 3e-7) differ by parts in 1e6 of the
  # pre-activation's scale; a bf16 output then rounds that value to the same step, or to its
  # neighbour (2^-8 away) near a tie.
  step = 2.0 ** -8 if out_dtype == jnp.bfloat16 else 0.0
  assert (np.abs(ours - expected) <= step * np.abs(expected) + 2e-6 * scale).all()
  if out_dtype == jnp.bfloat16:
    # GELU's far negative tail is 1 + erf(x) cancelling in both (values under 1e-6, absolute
    # error checked above); elsewhere both round the same fp32 value alike.
    seen = np.abs(expected) > 1e-2
    assert (ours == expected)[seen].mean() > 0.999


@needs_amx
@pytest.mark.parametrize("m,k,n", [(37, 96, 64), (300, 1056, 768)])
def test_amx_linear_adds_the_residual_and_layer_norms_as_flax(m, k, n):
  # The end of each post-LN block: LayerNorm(x @ W + b + residual), x handed over in fp32 (a
  # LayerNorm's output) and rounded to bf16 inside the call as XLA's convert rounds it.
  rng = np.random.default_rng(m + k)
  x = rng.standard_normal((m, k)).astype(np.float32)
  w = bf16(rng, (k, n))
  b, residual = rng.standard_normal(n).astype(np.float32), rng.standard_normal((m, n)).astype(np.float32)
  norm = nnx.LayerNorm(n, epsilon=1e-5, use_fast_variance=False, rngs=nnx.Rngs(0))
  norm.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, n), jnp.float32)
  norm.bias[...] = jnp.asarray(rng.standard_normal(n), jnp.float32)
  ours = np.asarray(jax.jit(lambda x, p: cpu_matmul.linear(
      x, [p], [b], residual=residual, norm=(norm.scale[...], norm.bias[...], norm.epsilon)))(
          jnp.asarray(x), jnp.asarray(cpu_matmul.pack(w))))
  y = jax.lax.dot_general(jnp.asarray(x, jnp.bfloat16), jnp.asarray(w), (((1,), (0,)), ((), ())),
                          preferred_element_type=jnp.float32) + b
  expected = np.asarray(norm(y + residual))
  assert ours.dtype == np.float32 and ours.shape == (m, n)
  np.testing.assert_allclose(ours, expected, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bf16_attention_matches_xla_bf16_attention(variant, shape):
  rng = np.random.default_rng(sum(shape))
  rows, length, heads, head_dim = shape
  qkv = jnp.asarray(rng.standard_normal((rows, length, 3, heads, head_dim)) * 3, jnp.bfloat16)
  segments = packed_segments(rng, rows, length)
  segments[0, : length // 2] = 1
  segments[-1, ::3] = 7
  ours = jax.jit(lambda x, s: fused_attention.fused_attention(x, s, variant))(qkv, jnp.asarray(segments))
  assert ours.dtype == jnp.bfloat16
  ours = np.asarray(ours, np.float32)
  xla = np.asarray(jax.jit(row_attention)(qkv, jnp.asarray(segments)), np.float32)
  exact = attention_float64(np.asarray(qkv, np.float32), segments)
  real = segments != 0
  scale = np.abs(exact[real]).max()
  # XLA's bf16 attention rounds q * scale, the softmax weights and the output to bf16; so does
  # the kernel (a bf16 step of the output is 2^-8 of it), widened or by AVX512-BF16 dot products.
  assert np.abs(ours - xla)[real].max() <= 8e-3 * scale
  assert np.abs(ours - exact)[real].max() <= np.abs(xla - exact)[real].max() + 4e-3 * scale
  assert (ours[~real] == 0).all(), "padding queries get zeros"


ON_AMX = cpu_kernels.unavailable_reason("amx")
needs_amx_attention = pytest.mark.skipif(ON_AMX is not None, reason=f"amx kernels: {ON_AMX}")


@needs_amx_attention
@pytest.mark.parametrize("head_dim", [64, 20])
def test_amx_attention_matches_float64_of_the_same_bf16(head_dim):
  # Documents of 1, 15, 17, 31, 33 and 500 tokens back to back, then padding, in rows of 610 (not
  # a multiple of 16): key spans off the 16-query tiles and 32-key steps, a document alone in a
  # tile's rows and one whose span crosses many; head_dim 20 leaves most of each tile zeros.
  assert cpu_kernels.load("amx")[1].KoeduAttentionOnAmx() == 1, "the amx build runs bf16 on AMX tiles"
  rng = np.random.default_rng(head_dim)
  rows, length, heads = 2, 610, 3
  lengths = [1, 15, 17, 31, 33, 500]
  segments = np.zeros((rows, length), np.int32)
  for row, order in zip(segments, (lengths, lengths[::-1])):
    bounds = np.cumsum([0] + order)
    for segment, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]), start=1):
      row[a:b] = segment
  qkv = bf16(rng, (rows, length, 3, heads, head_dim), 3.0)
  ours = jax.jit(lambda x, s: fused_attention.fused_attention(x, s, "amx"))(jnp.asarray(qkv), jnp.asarray(segments))
  ours = np.asarray(ours, np.float32)
  # The kernel, like XLA's bf16 attention, rounds 1 / sqrt(head_dim) and q * scale to bf16
  # (exact for 64, not for 20): float64 from those queries on.
  scale = np.float32(ml_dtypes.bfloat16(1 / np.sqrt(head_dim)))
  wide = qkv.astype(np.float64)
  wide[:, :, 0] = (qkv[:, :, 0].astype(np.float32) * scale).astype(ml_dtypes.bfloat16).astype(np.float64) * np.sqrt(head_dim)
  exact = attention_float64(wide, segments)
  real = segments != 0
  # Per document: bf16 weights (2^-9 relative each) and a bf16 output (2^-9 of it) put the error
  # within a bf16 step (2^-8) of the document's largest output: 3e-3 measured.
  for segment in range(1, len(lengths) + 1):
    own = segments == segment
    assert np.abs(ours - exact)[own].max() <= 5e-3 * np.abs(exact[own]).max(), segment
  assert (ours[~real] == 0).all(), "padding queries get zeros"


# A width the AMX matmul runs (multiples of 32), heads of 32; the session's default checkpoint
# (hidden 36) runs XLA's dots.
WIDE = dict(hidden_size=64, num_attention_heads=2, intermediate_size=96, num_hidden_layers=2)


@pytest.fixture(scope="module")
def wide_checkpoint(make_checkpoint):
  return make_checkpoint(**WIDE)


def runner(model_dir, precision, attention="auto", matmul="auto") -> EncoderRunner:
  rt = runtime.resolve(read_config(model_dir), precision, attention)
  if matmul != "auto":
    rt = dataclasses.replace(rt, matmul=matmul)
  _, model = load_classifier(model_dir, **rt.model_kwargs())
  return EncoderRunner(model, rt, RunnerConfig(max_length=45, row_lengths=(16, 32, 48), tokens_per_device=96))


def test_cpu_bfloat16_resolves_to_the_fastest_kernels(wide_checkpoint, checkpoint_dir):
  rt = runtime.resolve(read_config(wide_checkpoint), "bfloat16")
  assert rt.compiler_options == runtime.CPU_COMPILER_OPTIONS["bfloat16"] == ()
  assert runtime.resolve(read_config(wide_checkpoint), "float32").compiler_options == \
      (("xla_cpu_experimental_ynn_fusion_type", ""),)
  assert rt.matmul == ("amx" if AMX is None else None)
  if fused_attention.unavailable_reason() is None:
    assert rt.attention == "fused"
  assert runtime.resolve(read_config(checkpoint_dir), "bfloat16").matmul is None  # hidden 36
  assert runtime.resolve(read_config(wide_checkpoint), "float32").matmul is None
  with pytest.raises(ValueError, match="bfloat16 inference only"):
    dataclasses.replace(rt, precision="float32", matmul="amx")


def test_cpu_auto_is_bfloat16_where_the_amx_kernels_run(wide_checkpoint, checkpoint_dir, monkeypatch):
  # The stand-in kept every int_score through these kernels (docs/benchmarks.md): auto takes
  # bf16 where they run, fp32 wherever bf16 would fall back to XLA's dots.
  cfg = read_config(wide_checkpoint)
  assert runtime.resolve(cfg).precision == ("bfloat16" if AMX is None else "float32")
  assert runtime.resolve(read_config(checkpoint_dir)).precision == "float32"  # hidden 36: no AMX shape
  assert runtime.resolve(cfg, training=True).precision == "float32"
  monkeypatch.setattr(cpu_matmul, "unavailable_reason", lambda: "this CPU has no AMX (stubbed)")
  assert runtime.resolve(cfg).precision == "float32"


@needs_amx
def test_weights_are_packed_once_at_load(wide_checkpoint):
  scorer = runner(wide_checkpoint, "bfloat16")
  layer = scorer._state["layers"][0]
  kernel = layer["mlp"]["intermediate"]["kernel"]
  assert kernel.shape == cpu_matmul.packed_shape(64, 96) and kernel.dtype == jnp.bfloat16
  _, plain = load_classifier(wide_checkpoint)
  np.testing.assert_array_equal(cpu_matmul.unpack(np.asarray(kernel, np.float32)),
                                np.asarray(plain.layers[0].mlp.intermediate.kernel[...].astype(jnp.bfloat16), np.float32))
  # The compiled program calls the kernel and no XLA dot for the encoder's weights.
  spec = jax.ShapeDtypeStruct((2, 16), jnp.int32)
  text = scorer._forward.lower(scorer._state, spec, spec, spec, jax.ShapeDtypeStruct((2, 2), jnp.int32)).as_text()
  calls = sum(text.count(target) for target in cpu_kernels.AMX_LINEAR.values())
  assert calls == 4 * WIDE["num_hidden_layers"]  # QKV, output, FFN x2


@pytest.fixture(scope="module")
def wide_documents(wide_checkpoint):
  return DocumentTokenizer(wide_checkpoint, 45)(mixed_texts(seed=29)).ids


def test_bfloat16_scores_stay_near_float32_and_transformers(wide_checkpoint, wide_documents, max_abs_diff):
  fp32 = runner(wide_checkpoint, "float32").run(wide_documents)
  fast = runner(wide_checkpoint, "bfloat16").run(wide_documents)
  xla = runner(wide_checkpoint, "bfloat16", attention="rows", matmul=None).run(wide_documents)
  spread = np.ptp(fp32)
  # Rounding error of bf16 on random weights, as large as XLA's own bf16 makes it (1-2% of the
  # spread, varying with the session's random documents), and no larger.
  xla_error = np.abs(xla - fp32).max()
  assert max_abs_diff("bfloat16 (fastest kernels) vs float32", fast, fp32) <= 1.25 * xla_error + 1e-6
  assert xla_error <= 0.04 * spread
  # The same products as XLA's bf16 dots and attention: nearer each other than either is to fp32.
  assert max_abs_diff("bfloat16 kernels vs XLA bfloat16", fast, xla) <= 0.5 * np.abs(xla - fp32).max() + 1e-6
  ref = torch_document_scores(torch_classifier(wide_checkpoint), wide_documents)
  assert max_abs_diff("bfloat16 vs transformers", fast, ref) <= 1.25 * xla_error + 1e-4
