"""How the encoder runs on this machine, decided in one place: precision, attention, compiler
options and the device mesh.

`resolve()` turns the user's settings ("auto" included) and the backend into a frozen `Runtime`
once; the model is built from it (`Runtime.model_kwargs`) and the runner compiles with it
(model/runner.py), for scoring and training alike. Nothing downstream looks at the backend,
a dtype string or the mesh's axis names again.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from model import placement
from model.attention import batched_attention, row_attention
from model.config import ModelConfig
from model.placement import DATA_AXIS
from model.precision import COMPUTE

log = logging.getLogger(__name__)
ATTENTIONS = ("batched", "rows", "fused", "cudnn", "pallas")
ACCELERATORS = ("tpu", "gpu")  # jax's platform names for TPUs and CUDA (or ROCm) GPUs
# What "auto" attends with on a GPU. XLA's batched op with the segment mask until bench/gpu.py
# has measured cuDNN's and Pallas's fused kernels against it on a GPU (docs/benchmarks.md, "GPUs"):
# it runs on any GPU, at any precision and row length, and is the op TPUs run.
GPU_ATTENTION = "batched"
# This jaxlib hands CPU dots to YNNPACK, which ran the fp32 encoder 10-29% slower than XLA's own
# Eigen dots at every compiled shape (bench/shapes.py, docs/benchmarks.md); for bf16 dots it is the
# other way round (YNNPACK about 2x Eigen, which widens them to fp32: bench/matmul.py), so bfloat16
# keeps the default. Set per compilation, not through XLA_FLAGS, so that it holds whatever the
# process was started with.
CPU_COMPILER_OPTIONS = {
    "float32": (("xla_cpu_experimental_ynn_fusion_type", ""),),
    "bfloat16_3x": (("xla_cpu_experimental_ynn_fusion_type", ""),),
    "bfloat16": (),
}


@dataclasses.dataclass(frozen=True)
class Runtime:
  precision: str  # a key of model.precision.COMPUTE: what the encoder multiplies in
  attention: str  # one of ATTENTIONS: how its tokens attend
  mesh: jax.sharding.Mesh  # the devices the encoder runs on, along the one axis DATA_AXIS
  compiler_options: tuple[tuple[str, str], ...] = ()  # XLA options for every compilation
  # Training keeps parameters in fp32 (the optimiser's master copy) under any precision, and
  # needs an attention with a gradient.
  training: bool = False
  # The weight matmuls' kernel, a key of model.precision.DOT_GENERAL; None: the precision's own.
  # "amx" (bf16 on Intel AMX, kernels packed at load) where choose_matmul finds it runs.
  matmul: str | None = None

  def __post_init__(self):
    if self.precision not in COMPUTE:
      raise ValueError(f"precision must be one of {sorted(COMPUTE)}, got {self.precision!r}")
    if self.attention not in ATTENTIONS:
      raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
    if self.mesh.axis_names != (DATA_AXIS,):
      raise ValueError(f"the mesh must have the one axis {DATA_AXIS!r}, got {self.mesh.axis_names}")
    if self.training and self.attention == "fused":
      raise ValueError("the fused attention kernel has no gradient; training needs 'rows' or 'batched'")
    if self.matmul is not None and (self.training or self.precision != "bfloat16"):
      raise ValueError(f"matmul {self.matmul!r} is for bfloat16 inference only")

  @property
  def platform(self) -> str:
    return self.mesh.devices.flat[0].platform

  @property
  def devices(self) -> int:
    return self.mesh.devices.size

  @property
  def rows(self) -> NamedSharding:
    """Arrays split by their first axis over the devices: batches."""
    return placement.rows(self.mesh)

  @property
  def replicated(self) -> NamedSharding:
    return placement.replicated(self.mesh)

  def attention_fn(self) -> Callable:
    if self.attention == "fused":
      from model import fused_attention  # builds a C++ kernel: only where it runs
      return fused_attention.per_device(self.mesh, DATA_AXIS)
    if self.attention in ("cudnn", "pallas"):
      from model import gpu_attention
      return gpu_attention.attention(self.attention, self.mesh, DATA_AXIS)
    return {"batched": batched_attention, "rows": row_attention}[self.attention]

  def check_lengths(self, lengths) -> None:
    """Refuses row lengths the attention cannot tile (the runner's compiled lengths)."""
    if self.attention == "pallas":
      from model import gpu_attention
      reason = gpu_attention.supports("pallas", 0, COMPUTE[self.precision].dtype, lengths)
      if reason is not None:
        raise ValueError(f"attention 'pallas' cannot run these rows: {reason}")

  def model_kwargs(self) -> dict:
    """What XLMRobertaClassifier (and checkpoint.load_classifier) build the model with."""
    compute = COMPUTE[self.precision]
    return dict(dtype=compute.dtype, param_dtype=jnp.float32 if self.training else compute.dtype,
                matmul=self.matmul or compute.matmul, attention=self.attention_fn())

  def matmul_precision(self):
    """The context every traced function of the encoder runs under: the precision TPUs use for
    dots the model does not write out itself."""
    precision = COMPUTE[self.precision].precision
    return jax.default_matmul_precision(precision) if precision else contextlib.nullcontext()


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """model/placement.py's one-axis mesh over `devices` (default: this host's)."""
  return placement.data_mesh(devices or jax.local_devices())


def resolve(cfg: ModelConfig, precision: str = "auto", attention: str = "auto", devices=None,
            training: bool = False) -> Runtime:
  """The runtime for a model of `cfg` on `devices` (default: every local device)."""
  mesh = make_mesh(devices)
  platform = mesh.devices.flat[0].platform
  on_cpu = platform == "cpu"
  if precision == "auto":
    # Accelerators (TPUs and GPUs alike) multiply in bf16. One pass kept every int_score of a
    # trained classifier (a base-width stand-in; its differences from fp32 would have to grow
    # 20x to cost 0.5% of them: docs/benchmarks.md, "bf16 on a trained classifier"): that is a
    # property of the precision, measured on CPU, not of the chip. Three passes would triple
    # the matrix-unit work for nothing. CPUs with AMX do too: through koedu's AMX matmul and
    # attention kernels the stand-in kept all 2048 int_scores (differences 35x short of costing
    # 0.5%) at 5x fp32's speed (docs/benchmarks.md, "CPU workers at bf16"). Other CPUs keep fp32:
    # without AMX, bf16 runs on XLA's dots and is no faster than fp32 there.
    precision = ("bfloat16" if platform in ACCELERATORS
                 or (on_cpu and not training and choose_matmul(cfg, mesh) == "amx") else "float32")
  if precision not in COMPUTE:
    raise ValueError(f"precision must be 'auto' or one of {sorted(COMPUTE)}, got {precision!r}")
  if platform == "gpu":
    attention = choose_gpu_attention(attention, COMPUTE[precision].dtype, cfg.head_dim)
  else:
    attention = choose_attention(attention, on_cpu, COMPUTE[precision].dtype, cfg.head_dim, training)
  if not on_cpu:
    return Runtime(precision, attention, mesh, (), training)
  matmul = choose_matmul(cfg, mesh) if precision == "bfloat16" and not training else None
  return Runtime(precision, attention, mesh, CPU_COMPILER_OPTIONS[precision], training, matmul)


def choose_matmul(cfg: ModelConfig, mesh: jax.sharding.Mesh) -> str | None:
  """bf16 weight matmuls on CPU: "amx" where the AMX kernel can run them (2-3x this jaxlib's
  best bf16 dots, docs/benchmarks.md), else None (XLA's dots)."""
  from model import cpu_matmul
  h, f = cfg.hidden_size, cfg.intermediate_size
  reason = (cpu_matmul.shape_reason([(h, h), (h, f), (f, h)]) or
            ("it runs on one device; this mesh has %d" % mesh.devices.size if mesh.devices.size > 1 else None)
            or cpu_matmul.unavailable_reason())
  if reason is None:
    return "amx"
  log.info("bf16 weight matmuls through XLA's dots, not AMX: %s", reason)
  return None


def choose_gpu_attention(requested: str, dtype, head_dim: int) -> str:
  """"auto": GPU_ATTENTION where it can run, else XLA's batched op; a fused kernel asked for by
  name and unable to run (cuDNN at float32) is refused."""
  from model import gpu_attention
  if requested != "auto" and requested not in ATTENTIONS:
    raise ValueError(f"attention must be 'auto' or one of {ATTENTIONS}, got {requested!r}")
  if requested == "fused":
    raise ValueError("attention 'fused' cannot run here: it runs on CPU only")
  name = GPU_ATTENTION if requested == "auto" else requested
  if name in gpu_attention.GPU_ATTENTIONS:
    reason = gpu_attention.supports(name, head_dim, dtype)
    if reason is not None:
      if requested != "auto":
        raise ValueError(f"attention {name!r} cannot run here: {reason}")
      log.warning("%s attention unavailable (%s); using XLA's batched attention", name, reason)
      return "batched"
  return name


def choose_attention(requested: str, on_cpu: bool, dtype, head_dim: int, training: bool = False) -> str:
  """"auto": on CPU the fused kernel where it can run (attention at 512 tokens 2.8x faster than
  "rows", docs/benchmarks.md), else "rows", which keeps each row's scores in cache;
  accelerators get the one batched op they fuse themselves. Training never gets the kernel,
  which has no gradient."""
  if requested != "auto" and requested not in ATTENTIONS:
    raise ValueError(f"attention must be 'auto' or one of {ATTENTIONS}, got {requested!r}")
  if requested in ("cudnn", "pallas"):
    raise ValueError(f"attention {requested!r} cannot run here: it runs on GPUs only")
  if requested == "fused" or (requested == "auto" and on_cpu and not training):
    from model import fused_attention
    reason = fused_attention.supports(head_dim, dtype) if on_cpu else "it runs on CPU only"
    if reason is None:
      return "fused"
    if requested == "fused":
      raise ValueError(f"attention 'fused' cannot run here: {reason}")
    log.warning("fused CPU attention unavailable (%s); using XLA's per-row attention", reason)
    return "rows"
  if requested == "auto":
    return "rows" if on_cpu else "batched"
  return requested
