"""How many documents each device takes per pass when --device_batch_size is not given: the
most that fit, read from XLA's memory analysis of the compiled step.

A full fine-tune holds, per device, its share of the parameters and Adam state, one whole
gradient sum, and while a pass runs the gathered parameters and every activation of its rows
(about 2.8 GiB per 512-token row of XLM-R-large: docs/benchmarks.md). Taking a chip's whole
share of the global batch in one pass (2048 / 16 = 128 rows on a v5e-16) runs out of memory, and
a fixed default would waste the larger chips. So the step is compiled ahead of time for a few
pass sizes at the longest row length, and the largest whose peak fits the device's memory
(less a margin for the runtime's own buffers) is taken. The compiler's analysis is the one the
run itself will use; nothing is allocated to find out.

The device's memory is `memory_stats()["bytes_limit"]` where the backend reports it (TPU, GPU),
or --device_memory_bytes. CPU reports none: there the whole share is taken, as before.
With cached features only the head trains and a pass is a few floats per document: the whole
share, always.
"""
from __future__ import annotations

import dataclasses
import logging
import math

import jax
import jax.numpy as jnp
import numpy as np

from model import placement
from pipeline.faults import UsageError

log = logging.getLogger(__name__)
# Of the device's memory, what a step may plan to use: the rest is for the runtime's own
# buffers, fragmentation, and the host-to-device copies of the next pass.
USABLE = 0.9
GIB = 2**30


class DoesNotFit(UsageError):
  """Not even one document per device fits: the message says what would (exit 2)."""


@dataclasses.dataclass(frozen=True)
class Choice:
  rows_per_device: int  # documents per device per pass
  passes: int  # passes per full step (gradient accumulation)
  how: str  # "given" (--device_batch_size), "memory" (fit to the budget), "whole" (no budget known, or head only)
  budget_bytes: int | None = None  # the device's memory, as reported or given
  peak_bytes: int | None = None  # XLA's peak per device of one pass at rows_per_device
  apply_peak_bytes: int | None = None  # of the optimiser update
  tried: dict = dataclasses.field(default_factory=dict)  # rows per device -> peak bytes

  def to_json(self) -> dict:
    return {**dataclasses.asdict(self), "tried": {str(k): v for k, v in sorted(self.tried.items())}}


def device_memory(mesh, given: int | None) -> int | None:
  """Bytes one device holds: `given`, else what the backend reports; None where it does not."""
  if given:
    return given
  try:
    stats = mesh.devices.flat[0].memory_stats()
  except Exception:  # backends without allocator statistics raise, others return None
    stats = None
  return int(stats["bytes_limit"]) if stats and stats.get("bytes_limit") else None


def _bytes_per_device(tree) -> int:
  return sum(int(np.prod(x.sharding.shard_shape(x.shape))) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def token_batch(mesh, rows: int, length: int) -> dict:
  """Shapes of a token micro-batch of `rows` rows (train/batches.py's token_batches)."""
  width = 1  # one document per row: cls_index holds its one <s>
  spec = lambda dtype, *shape: jax.ShapeDtypeStruct((rows, *shape), dtype, sharding=placement.rows(mesh))
  return {"input_ids": spec(jnp.int32, length), "segment_ids": spec(jnp.int32, length),
          "position_ids": spec(jnp.int32, length), "cls_index": spec(jnp.int32, width),
          "label": spec(jnp.float32), "weight": spec(jnp.float32), "document": spec(jnp.int32)}


def _shapes(run, params) -> tuple:
  with_sharding = lambda tree, shardings: jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
  return with_sharding(params, run.param_shardings), with_sharding(run.opt_shapes, run.opt_shardings)


def _resident(run, params) -> int:
  """Bytes per device that stay across a step: parameters, Adam state, gradient sums."""
  p, o = _shapes(run, params)
  return _bytes_per_device(p) + _bytes_per_device(o) + _bytes_per_device(run.sum_shapes)


def _added(compiled) -> int:
  """What a program adds while it runs: temporaries, and outputs not written over a donated input."""
  m = compiled.memory_analysis()
  return m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes


def pass_peak(run, params, rows_per_device: int, length: int) -> int:
  """Peak bytes per device of one forward and backward pass (`accumulate`) of `rows_per_device`
  rows of `length` tokens: the resident state, the pass's batch, and what the program adds.
  `run`: train.steps.Steps; `params`: the trained tree, as arrays or shapes."""
  p, _ = _shapes(run, params)
  batch = token_batch(run.mesh, rows_per_device * run.devices, length)
  scalar = lambda dtype, *shape: jax.ShapeDtypeStruct(shape, dtype, sharding=placement.replicated(run.mesh))
  compiled = run.accumulate.lower(p, run.sum_shapes, batch, scalar(jnp.float32), scalar(jnp.uint32, 2),
                                  scalar(jnp.int32)).compile()
  return _resident(run, params) + _bytes_per_device(batch) + _added(compiled)


def update_peak(run, params) -> int:
  """Peak bytes per device of the step's reduction and AdamW update (`apply`)."""
  p, o = _shapes(run, params)
  return _resident(run, params) + _added(run.apply.lower(p, o, run.sum_shapes).compile())


def candidates(whole: int) -> list[int]:
  """Pass sizes tried: powers of two below the whole share, and the whole share."""
  return sorted({2**k for k in range(whole.bit_length()) if 2**k < whole} | {whole})


def choose(run, params, *, batch_size: int, length: int, budget: int | None) -> Choice:
  """The largest pass (rows per device) whose compiled peak fits USABLE of `budget`, by
  bisection over `candidates` (a handful of compilations: peaks grow with rows), once the
  optimiser update is known to fit."""
  whole = math.ceil(batch_size / run.devices)
  if budget is None:
    return Choice(whole, 1, "whole")
  limit = int(budget * USABLE)
  apply_peak = update_peak(run, params)
  tried = {}

  def does_not_fit(what: str, peak: int) -> DoesNotFit:
    return DoesNotFit(
        f"a full step does not fit in {budget / GIB:.2f} GiB per device ({USABLE:.0%} usable): {what} "
        f"peaks at {peak / GIB:.2f} GiB. Use more devices (parameters and Adam state are split over "
        "them), a shorter --max_length, or --freeze_encoder")
  if apply_peak > limit:
    raise does_not_fit("the optimiser update", apply_peak)

  def fits(rows: int) -> bool:
    tried[rows] = pass_peak(run, params, rows, length)
    log.info("a pass of %d rows x %d tokens per device: peak %.2f GiB of %.2f GiB usable", rows,
             length, tried[rows] / GIB, limit / GIB)
    return tried[rows] <= limit
  sizes = candidates(whole)
  lo, hi = 0, len(sizes)  # sizes[:lo] fit, sizes[hi:] do not
  while lo < hi:
    mid = (lo + hi) // 2
    if fits(sizes[mid]):
      lo = mid + 1
    else:
      hi = mid
  if lo == 0:
    raise does_not_fit(f"one {length}-token row per device", tried[1])
  rows = sizes[lo - 1]
  choice = Choice(rows, math.ceil(whole / rows), "memory", budget, tried[rows], apply_peak, tried)
  log.info("device batch: %d documents per device per pass, %d passes a step (peak %.2f GiB of %.2f "
           "GiB per device, from XLA's analysis)", rows, choice.passes, tried[rows] / GIB, budget / GIB)
  return choice
