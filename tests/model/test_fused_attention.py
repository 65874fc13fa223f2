"""The fused CPU attention kernel (model/kernels/) against float64 attention in numpy.

Whole-model parity with transformers under "fused" is in test_parity.py, packed against
unpacked in test_packing.py, and the per-device split in test_devices.py.
"""
from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import cpu_kernels, fused_attention
from model.attention import row_attention
from model.runtime import choose_attention

needs_kernel = pytest.mark.skipif(fused_attention.unavailable_reason() is not None,
                                  reason=f"fused attention: {fused_attention.unavailable_reason()}")


def attention_float64(qkv: np.ndarray, segments: np.ndarray) -> np.ndarray:
  q, k, v = (qkv[:, :, i].astype(np.float64) for i in range(3))
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  same = (segments[:, :, None] == segments[:, None, :]) & (segments[:, None, :] != 0)
  logits = np.where(same[:, None], logits, -np.inf)
  with np.errstate(invalid="ignore"):  # padding queries see no key: NaN, never compared
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    return np.einsum("bhqk,bkhd->bqhd", weights / weights.sum(-1, keepdims=True), v)


def packed_segments(rng, rows: int, length: int) -> np.ndarray:
  """Documents of 1..length tokens one after another, then padding, as model/packing.py lays out."""
  out = np.zeros((rows, length), np.int32)
  for row in out:
    start, segment = 0, 1
    while start < length and rng.random() < 0.9:
      n = int(rng.integers(1, length - start + 1))
      row[start:start + n] = segment
      start, segment = start + n, segment + 1
  return out


# (rows, length, heads, head_dim): lengths off and on the kernel's 16-key and 64-key blocks and
# its 6-query blocks; head sizes on every count of 16-float value vectors, 64 the model's.
SHAPES = [(3, 37, 2, 12), (2, 16, 1, 16), (4, 100, 3, 33), (2, 130, 2, 48), (2, 512, 12, 64),
          (5, 7, 1, 1)]


@needs_kernel
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_kernel_matches_float64_attention(shape):
  rng = np.random.default_rng(sum(shape))
  rows, length, heads, head_dim = shape
  # Logits spread over +-30: exp's whole range, most weights underflowing against the max.
  qkv = (rng.standard_normal((rows, length, 3, heads, head_dim)) * 3).astype(np.float32)
  segments = packed_segments(rng, rows, length)
  segments[0, : length // 2] = 1  # the first row's documents include one long one
  segments[-1, ::3] = 7  # and the last row a document that is not one contiguous run
  if rows > 2:
    segments[1] = 0  # a row of padding alone
  ours = np.asarray(jax.jit(fused_attention.fused_attention)(jnp.asarray(qkv), jnp.asarray(segments)))
  expected = attention_float64(qkv, segments)
  real = segments != 0
  assert real.sum() > length
  error = np.abs(ours - expected)[real].max()
  assert error <= 2e-5 * np.abs(expected[real]).max(), error
  assert (ours[~real] == 0).all(), "padding queries get zeros"
  # What the scorer ran before: the same to float32 rounding.
  rows_out = np.asarray(jax.jit(row_attention)(jnp.asarray(qkv), jnp.asarray(segments)))
  assert np.abs(ours - rows_out)[real].max() <= 2e-5 * np.abs(expected[real]).max()


@needs_kernel
@pytest.mark.parametrize("spread", [1, 5, 30])
def test_softmax_weights_to_float_rounding(spread):
  # Every query sees logits t (q . k / 8 with q = 8 e0, k = t e0: exact) and values e_j, so
  # the output is the softmax weights themselves: the kernel's own exp and sum, measured alone.
  rng = np.random.default_rng(spread)
  qkv = np.zeros((2, 64, 3, 1, 64), np.float32)
  qkv[:, :, 0, 0, 0] = 8.0
  qkv[:, :, 1, 0, 0] = rng.uniform(-spread, spread, (2, 64)).astype(np.float32)
  qkv[:, :, 2, 0, :] = np.eye(64, dtype=np.float32)
  ours = np.asarray(jax.jit(fused_attention.fused_attention)(
      jnp.asarray(qkv), jnp.ones((2, 64), jnp.int32)))[:, :, 0]
  logits = qkv[:, :, 1, 0, 0].astype(np.float64)
  weights = np.exp(logits - logits.max(1, keepdims=True))
  weights = (weights / weights.sum(1, keepdims=True))[:, None, :]
  assert np.abs(ours - weights).max() <= 3e-7 * weights.max()


def test_what_the_kernel_cannot_run_is_said():
  assert "float32 or bfloat16, not float16" in fused_attention.supports(64, jnp.float16)
  assert "head_dim 80" in fused_attention.supports(80, jnp.float32)
  assert cpu_kernels.best_variant(frozenset({"avx512f", "avx512_bf16"})) == "avx512bf16"
  assert cpu_kernels.best_variant(frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})) == "amx"
  assert cpu_kernels.best_variant(frozenset({"avx2"})) is None
  if fused_attention.unavailable_reason() is None:
    assert fused_attention.supports(64, jnp.float32) is None
  else:
    with pytest.raises(RuntimeError, match="cannot run here"):
      fused_attention.fused_attention(jnp.zeros((1, 16, 3, 1, 64)), jnp.ones((1, 16), jnp.int32))


@needs_kernel
def test_build_is_cached_and_atomic(tmp_path):
  cxx = cpu_kernels.compiler()
  built = cpu_kernels.build(cxx, str(tmp_path))
  stamp = os.stat(built).st_mtime_ns
  assert cpu_kernels.build(cxx, str(tmp_path)) == built
  assert cpu_kernels.build(None, str(tmp_path)) == built, "a built library needs no compiler"
  assert os.stat(built).st_mtime_ns == stamp, "a cached build was rebuilt"
  assert os.listdir(tmp_path) == [os.path.basename(built)], "a partial build was left behind"


def test_a_failing_or_missing_compiler_is_a_clear_error(tmp_path):
  with pytest.raises(RuntimeError, match="false could not build the avx512 CPU kernels"):
    cpu_kernels.build("false", str(tmp_path))
  with pytest.raises(RuntimeError, match=r"no C\+\+ compiler to build .*koedu_kernels_avx512_"):
    cpu_kernels.build(None, str(tmp_path))
  assert os.listdir(tmp_path) == []


def test_cxx_names_the_compiler(monkeypatch):
  monkeypatch.setenv("CXX", "true")
  assert cpu_kernels.compiler() == "true"
  monkeypatch.setenv("CXX", "no-such-compiler-here")
  assert cpu_kernels.compiler() in ("c++", "g++", None)


def test_the_scorer_falls_back_and_says_why(caplog):
  with caplog.at_level(logging.WARNING, logger="model.runtime"):
    assert choose_attention("auto", True, jnp.float32, 80) == "rows"
  assert "head_dim 80 is over the kernel's 64" in caplog.text
  assert choose_attention("auto", False, jnp.float32, 64) == "batched"
  assert choose_attention("rows", True, jnp.float32, 64) == "rows"
  with pytest.raises(ValueError, match="CPU only"):
    choose_attention("fused", False, jnp.float32, 64)
  if fused_attention.unavailable_reason() is None:
    assert choose_attention("auto", True, jnp.float32, 64) == "fused"
