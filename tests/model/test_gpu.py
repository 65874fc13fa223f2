"""GPUs on CPU: how model/runtime.py resolves a GPU (and a TPU) from a stubbed device list, and
the numerics of the Pallas attention run by Pallas's interpreter.

cuDNN's attention cannot run without a GPU: bench/gpu.py checks it against XLA's on one.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import gpu_attention, packing, runtime
from model.attention import batched_attention
from model.checkpoint import load_classifier, read_config
from model.runner import EncoderRunner, RunnerConfig
from model.tokenize import DocumentTokenizer
from tests.model.reference import mixed_texts


@dataclasses.dataclass(frozen=True)
class StubDevice:
  """What jax.make_mesh and the runtime read of a device."""
  id: int
  platform: str = "gpu"
  device_kind: str = "NVIDIA H100 80GB HBM3"
  process_index: int = 0
  coords: tuple = (0, 0, 0)  # a TPU's place in its slice
  core_on_chip: int = 0


def gpus(n: int = 2, platform: str = "gpu") -> list[StubDevice]:
  if platform == "tpu":
    return [StubDevice(i, "tpu", "TPU v5 lite", coords=(i % 2, i // 2, 0)) for i in range(n)]
  return [StubDevice(i, platform) for i in range(n)]


@pytest.fixture(scope="module")
def cfg(checkpoint_dir):
  return read_config(checkpoint_dir)


@pytest.fixture(scope="module")
def large_heads(cfg):
  return dataclasses.replace(cfg, hidden_size=1024, num_attention_heads=16)  # XLM-R's 64-wide heads


def test_a_gpu_resolves_as_a_tpu_does(cfg):
  for platform in ("gpu", "tpu"):
    rt = runtime.resolve(cfg, devices=gpus(4, platform))
    assert (rt.precision, rt.attention, rt.platform, rt.devices) == ("bfloat16", "batched", platform, 4)
    assert rt.compiler_options == ()  # CPU's options are CPU's alone
    assert rt.model_kwargs()["dtype"] == jnp.bfloat16 and rt.model_kwargs()["matmul"] == "native"
  assert runtime.GPU_ATTENTION == "batched"  # until bench/gpu.py has measured the fused kernels


def test_a_gpu_keeps_every_precision_and_attention_asked_for(cfg, large_heads):
  for precision in ("float32", "bfloat16_3x", "bfloat16"):
    assert runtime.resolve(cfg, precision, "rows", devices=gpus()).precision == precision
  assert runtime.resolve(large_heads, "bfloat16", "cudnn", devices=gpus()).attention == "cudnn"
  assert runtime.resolve(large_heads, "float32", "pallas", devices=gpus()).attention == "pallas"
  with pytest.raises(ValueError, match="'cudnn' cannot run here: cuDNN's flash attention takes bfloat16"):
    runtime.resolve(large_heads, "float32", "cudnn", devices=gpus())
  with pytest.raises(ValueError, match="'cudnn' cannot run here: .*multiple of 8"):
    runtime.resolve(cfg, "bfloat16", "cudnn", devices=gpus())  # the tiny model's heads are 12 wide
  with pytest.raises(ValueError, match="'fused' cannot run here: it runs on CPU only"):
    runtime.resolve(cfg, "float32", "fused", devices=gpus())
  with pytest.raises(ValueError, match="attention must be"):
    runtime.resolve(cfg, "bfloat16", "flash", devices=gpus())


def test_auto_falls_back_to_xla_where_the_measured_kernel_cannot_run(cfg, large_heads, monkeypatch, caplog):
  monkeypatch.setattr(runtime, "GPU_ATTENTION", "cudnn")  # as a measurement would set it
  assert runtime.resolve(large_heads, devices=gpus()).attention == "cudnn"
  assert runtime.resolve(large_heads, "float32", devices=gpus()).attention == "batched"
  assert "cudnn attention unavailable" in caplog.text


def test_gpu_kernels_are_refused_off_gpus(cfg, checkpoint_dir):
  for name in gpu_attention.GPU_ATTENTIONS:
    with pytest.raises(ValueError, match=f"'{name}' cannot run here: it runs on GPUs only"):
      runtime.resolve(cfg, "bfloat16", name)


def test_pallas_refuses_rows_it_cannot_tile(cfg):
  rt = runtime.resolve(cfg, "float32", "pallas", devices=gpus())
  rt.check_lengths((128, 256, 512))
  rt.check_lengths((64,))
  with pytest.raises(ValueError, match=r"cannot run these rows: .*\[500\]"):
    rt.check_lengths((128, 500))
  with pytest.raises(ValueError, match=r"\[48\]"):
    rt.check_lengths((48,))


def packed_rows(lengths, length: int, seed: int):
  """qkv and segment ids of rows packed as the runner packs them."""
  rng = np.random.default_rng(seed)
  ids = [np.concatenate([[0], rng.integers(3, 300, n - 2), [2]]).astype(np.int32) for n in lengths]
  rows = packing.assign_rows(np.array(lengths), (length,), pack=True)
  (batch,) = packing.make_batches(ids, rows, {length: [len(rows)]}, 1, pack=True)
  qkv = rng.standard_normal((*batch.shape, 3, 2, 64)).astype(np.float32)
  return jnp.asarray(qkv), jnp.asarray(batch.segment_ids)


@pytest.mark.parametrize("dtype, tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_pallas_attention_equals_xla_on_packed_rows(dtype, tolerance):
  qkv, segments = packed_rows([5, 17, 9, 30, 64, 3, 2, 40, 11], 64, seed=3)
  assert (segments.max(axis=1) > 1).any(), "no row holds two documents"
  ours = gpu_attention.pallas_attention(qkv.astype(dtype), segments, interpret=True)
  xla = batched_attention(qkv.astype(dtype), segments)
  real = np.asarray(segments) > 0  # padding's outputs are never read
  diff = np.abs(np.asarray(ours, np.float32) - np.asarray(xla, np.float32))[real]
  assert ours.dtype == dtype and diff.max() <= tolerance, diff.max()


def test_a_model_attending_with_pallas_scores_as_xla(checkpoint_dir, max_abs_diff):
  # The whole encoder through the runner's packing, each layer's attention the Pallas kernel
  # (interpreted): its segment handling holds across layers, positions and the `<s>` gather.
  ids = DocumentTokenizer(checkpoint_dir, 32)(mixed_texts(seed=41)).ids
  config = RunnerConfig(max_length=32, row_lengths=(16,), tokens_per_device=64, smallest_batch_fraction=2)
  rt = runtime.resolve(read_config(checkpoint_dir), "float32", "rows", devices=jax.local_devices()[:1])
  scores = {}
  for name, attend in (("xla", batched_attention),
                       ("pallas", functools.partial(gpu_attention.pallas_attention, interpret=True))):
    _, model = load_classifier(checkpoint_dir, **{**rt.model_kwargs(), "attention": attend})
    scores[name] = EncoderRunner(model, rt, config).run(ids)
  assert np.ptp(scores["xla"]) > 1e-2
  assert max_abs_diff("pallas vs XLA attention, float32", scores["pallas"], scores["xla"]) <= 1e-5
