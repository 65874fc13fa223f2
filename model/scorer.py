"""The compiled scorer: token ids in, one float score per document out.

Compiles one program per (rows, length) shape ahead of time, data-parallel over every local
device on a mesh axis named "data". Calling a compiled executable with any other shape is an
error rather than a silent recompilation, so "nothing recompiles after warm-up" holds by
construction.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from model import fused_attention, packing
from model.precision import COMPUTE
from model.xlmr import ATTENTION, XLMRobertaClassifier

log = logging.getLogger(__name__)
# This jaxlib hands CPU dots to YNNPACK, which ran the encoder 10-29% slower than XLA's own Eigen
# dots at every compiled shape (bench/shapes.py, docs/benchmarks.md). Set per compilation, not
# through XLA_FLAGS, so that it holds whatever the process was started with.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@dataclasses.dataclass(frozen=True)
class ScorerConfig:
  max_length: int = 512  # tokens per document after truncation, <s> and </s> included
  row_lengths: tuple[int, ...] = (128, 256, 512)  # compiled sequence lengths; longer ones are clipped to max_length
  tokens_per_device: int = 16384  # tokens in one device's share of the largest batch of each length
  smallest_batch_fraction: int = 8  # also compile batches of 1/2 .. 1/this of full, for the tail of a call
  pack: bool = True  # several documents per row (block-diagonal attention); False: one per row
  dtype: str = "float32"  # a key of model.precision.COMPUTE: "float32", "bfloat16_3x", "bfloat16"
  attention: str = "auto"  # a key of model.xlmr.ATTENTION, or "auto" (see choose_attention)

  def __post_init__(self):
    if self.attention != "auto" and self.attention not in ATTENTION:
      raise ValueError(f"attention must be 'auto' or one of {sorted(ATTENTION)}, "
                       f"got {self.attention!r}")
    if self.dtype not in COMPUTE:
      raise ValueError(f"dtype must be one of {sorted(COMPUTE)}, got {self.dtype!r}")
    if list(self.row_lengths) != sorted(set(self.row_lengths)) or not self.row_lengths:
      raise ValueError(f"row_lengths must be increasing and distinct, got {self.row_lengths}")
    if self.tokens_per_device < max(self.lengths):
      raise ValueError("tokens_per_device must hold at least one row of the longest length")
    if self.smallest_batch_fraction < 1:
      raise ValueError("smallest_batch_fraction must be >= 1")

  @property
  def lengths(self) -> tuple[int, ...]:
    """Row lengths actually compiled: the configured ones up to max_length, and max_length."""
    return tuple(sorted({min(l, self.max_length) for l in self.row_lengths} | {self.max_length}))


@dataclasses.dataclass
class ScorerStats:
  documents: int = 0
  real_tokens: int = 0
  computed_tokens: int = 0  # rows x length of every batch run, padding included
  compile_seconds: dict = dataclasses.field(default_factory=dict)  # shape -> seconds

  @property
  def padding_fraction(self) -> float:
    return 1 - self.real_tokens / self.computed_tokens if self.computed_tokens else 0.0


class Scorer:

  def __init__(self, model: XLMRobertaClassifier, config: ScorerConfig, devices=None):
    cfg = model.config
    if config.max_length > cfg.max_length:
      raise ValueError(f"max_length {config.max_length} exceeds the checkpoint's "
                       f"{cfg.max_length} positions")
    self.config = config
    self.pad_token_id = cfg.pad_token_id
    devices = list(devices or jax.local_devices())
    # Auto axes: the batch is the only thing sharded and XLA propagates it through the model.
    self.mesh = jax.make_mesh((len(devices),), ("data",), devices=devices,
                              axis_types=(jax.sharding.AxisType.Auto,))
    self._rows = NamedSharding(self.mesh, P("data"))
    on_cpu = devices[0].platform == "cpu"
    self._compiler_options = CPU_COMPILER_OPTIONS if on_cpu else None
    self.attention = choose_attention(config.attention, on_cpu, model.layers[0].attention.query.dtype,
                                      cfg.hidden_size // cfg.num_attention_heads)
    replicated = NamedSharding(self.mesh, P())
    self._graphdef, state = nnx.split(model)
    self._state = jax.device_put(state, replicated)
    self._sizes = {l: packing.batch_sizes(max(1, config.tokens_per_device // l) * len(devices),
                                          len(devices), config.smallest_batch_fraction)
                   for l in config.lengths}
    self._compiled = {}
    self.stats = ScorerStats()

    precision = COMPUTE[config.dtype].precision

    def forward(state, input_ids, segment_ids, position_ids, cls_index):
      model = nnx.merge(self._graphdef, state)
      with jax.default_matmul_precision(precision):
        return model(input_ids, segment_ids, position_ids, cls_index, self.attention)[..., 0]

    self._forward = jax.jit(forward, in_shardings=(replicated,) + (self._rows,) * 4,
                            out_shardings=self._rows)

  @property
  def shapes(self) -> list[tuple[int, int]]:
    """Every (rows, length) this scorer may run."""
    return [(s, l) for l in sorted(self._sizes) for s in self._sizes[l]]

  def _executable(self, rows: int, length: int):
    key = (rows, length)
    if key not in self._compiled:
      width = packing.max_documents_per_row(length, self.config.pack)
      spec = lambda shape: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=self._rows)
      start = time.perf_counter()
      with jax.set_mesh(self.mesh):  # the fused kernel splits its custom call over "data"
        lowered = self._forward.lower(
            self._state, spec((rows, length)), spec((rows, length)), spec((rows, length)),
            spec((rows, width)))
      self._compiled[key] = lowered.compile(compiler_options=self._compiler_options)
      self.stats.compile_seconds[key] = time.perf_counter() - start
      log.info("compiled scorer for %d x %d tokens in %.1fs", rows, length,
               self.stats.compile_seconds[key])
    return self._compiled[key]

  def warmup(self) -> None:
    for shape in self.shapes:
      self._executable(*shape)

  def score(self, ids: list[np.ndarray]) -> np.ndarray:
    """Raw model outputs (float32), one per document of `ids` (each `<s>` ... `</s>`)."""
    if not ids:
      return np.zeros(0, np.float32)
    lengths = np.fromiter((len(d) for d in ids), np.int64, len(ids))
    if lengths.max() > self.config.max_length or lengths.min() < 2:
      raise ValueError(f"documents must have 2..{self.config.max_length} tokens, "
                       f"got {lengths.min()}..{lengths.max()}")
    rows = packing.assign_rows(lengths, self.config.lengths, self.config.pack)
    batches = packing.make_batches(ids, rows, self._sizes, self.pad_token_id, self.config.pack)
    # Dispatch everything first: JAX runs asynchronously, so the host fills the next batch
    # while the devices compute this one.
    pending = []
    for batch in batches:
      run = self._executable(*batch.shape)
      pending.append((batch, run(self._state, *(jax.device_put(a, self._rows) for a in (
          batch.input_ids, batch.segment_ids, batch.position_ids, batch.cls_index)))))
      self.stats.computed_tokens += batch.input_ids.size
      self.stats.real_tokens += batch.real_tokens
    scores = np.empty(len(ids), np.float32)
    for batch, out in pending:
      scores[batch.documents] = np.asarray(out)[batch.slots]
    self.stats.documents += len(ids)
    return scores


def choose_attention(requested: str, on_cpu: bool, dtype, head_dim: int) -> str:
  """The attention to compile. "auto": on CPU the fused kernel where it can run (attention at
  512 tokens 2.8x faster than "rows", docs/benchmarks.md), else "rows", which keeps each row's
  scores in cache; accelerators get the one batched op they fuse themselves."""
  if requested == "fused" or (requested == "auto" and on_cpu):
    reason = fused_attention.supports(head_dim, dtype) if on_cpu else "it runs on CPU only"
    if reason is None:
      return "fused"
    if requested == "fused":
      raise ValueError(f"attention 'fused' cannot run here: {reason}")
    log.warning("fused CPU attention unavailable (%s); using XLA's per-row attention", reason)
    return "rows"
  return "batched" if requested == "auto" else requested


def int_scores(scores: np.ndarray) -> np.ndarray:
  """round(clip(score, 0, 5)) with halves to even, as fineweb-edu's int(round(...))."""
  return np.rint(np.clip(scores, 0, 5)).astype(np.int64)
