"""The compiled encoder: token ids in, one score (or `<s>` feature vector) per document out.

Packs documents into a few fixed (rows, length) shapes (model/packing.py), compiles one program
per shape ahead of time on the runtime's mesh, dispatches batches split over its devices and
gathers the outputs. Calling a compiled executable with any other shape is an error rather than
a silent recompilation, so "nothing recompiles after warm-up" holds by construction.

Scoring takes scores from it (the pipeline), training the `<s>` features of a frozen encoder.
`pack` is plain numpy and thread-safe, so a pool of host threads can pack while the thread that
owns the devices only calls `dispatch` and `collect`.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from model import checkpoint, packing, placement, runtime as runtimes
from model.precision import COMPUTE
from model.runtime import Runtime
from model.xlmr import XLMRobertaClassifier

log = logging.getLogger(__name__)
OUTPUTS = ("scores", "features")


@dataclasses.dataclass(frozen=True)
class RunnerConfig:
  max_length: int = 512  # tokens per document after truncation, <s> and </s> included
  row_lengths: tuple[int, ...] = (128, 256, 512)  # compiled sequence lengths; longer ones are clipped to max_length
  tokens_per_device: int = 16384  # tokens in one device's share of the largest batch of each length
  # Also compile batches of 1/2 .. 1/this of full, for the tail of a call. None: 32 on CPU,
  # where an empty row costs its full compute; 8 on accelerators, where a small batch costs
  # about what a larger one does and every shape compiles ahead.
  smallest_batch_fraction: int | None = None
  pack: bool = True  # several documents per row (block-diagonal attention); False: one per row

  def __post_init__(self):
    if self.max_length < 3:
      raise ValueError(f"max_length must be at least 3 (<s>, one token, </s>), got {self.max_length}")
    if list(self.row_lengths) != sorted(set(self.row_lengths)) or not self.row_lengths:
      raise ValueError(f"row_lengths must be increasing and distinct, got {self.row_lengths}")
    if self.tokens_per_device < max(self.lengths):
      raise ValueError("tokens_per_device must hold at least one row of the longest length")
    if self.smallest_batch_fraction is not None and self.smallest_batch_fraction < 1:
      raise ValueError("smallest_batch_fraction must be >= 1")

  @property
  def lengths(self) -> tuple[int, ...]:
    return packing.compiled_lengths(self.row_lengths, self.max_length)


@dataclasses.dataclass
class RunnerStats:
  documents: int = 0
  real_tokens: int = 0
  computed_tokens: int = 0  # rows x length of every batch run, padding included
  compile_seconds: dict = dataclasses.field(default_factory=dict)  # shape -> seconds


@dataclasses.dataclass
class Dispatched:
  """A batch on its way through the devices."""
  batch: packing.Batch
  output: jax.Array


class EncoderRunner:

  def __init__(self, model: XLMRobertaClassifier, runtime: Runtime, config: RunnerConfig,
               output: str = "scores"):
    cfg = model.config
    cfg.check_max_length(config.max_length)
    if model.embeddings.word.dtype != COMPUTE[runtime.precision].dtype:
      raise ValueError(f"the model was not built for this runtime ({runtime.precision}): build it "
                       "with runtime.model_kwargs()")
    if output not in OUTPUTS:
      raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    runtime.check_lengths(config.lengths)
    self.config, self.runtime, self.output = config, runtime, output
    self.model_config = cfg
    self.pad_token_id = cfg.pad_token_id
    self._graphdef, state = nnx.split(model)
    self._state = placement.place(state, runtime.replicated)
    devices = runtime.devices
    fraction = config.smallest_batch_fraction or (32 if runtime.platform == "cpu" else 8)
    self._sizes = {l: packing.batch_sizes(max(1, config.tokens_per_device // l) * devices,
                                          devices, fraction)
                   for l in config.lengths}
    self._compiled = {}
    self._compile_lock = threading.Lock()
    self.stats = RunnerStats()

    def forward(state, input_ids, segment_ids, position_ids, cls_index):
      model = nnx.merge(self._graphdef, state)
      with runtime.matmul_precision():
        if output == "features":
          return model.features(input_ids, segment_ids, position_ids, cls_index).astype(jnp.float32)
        return model(input_ids, segment_ids, position_ids, cls_index)[..., 0]

    self._forward = jax.jit(forward, in_shardings=(runtime.replicated,) + (runtime.rows,) * 4,
                            out_shardings=runtime.rows)

  @property
  def shapes(self) -> list[tuple[int, int]]:
    """Every (rows, length) this runner may run."""
    return [(s, l) for l in sorted(self._sizes) for s in self._sizes[l]]

  def _executable(self, rows: int, length: int):
    """The program for one shape, compiled once per process: a thread asking for a shape another
    is compiling waits for that one, not for every shape."""
    key = (rows, length)
    with self._compile_lock:
      future = self._compiled.get(key)
      compiling = future is None
      if compiling:
        future = self._compiled[key] = concurrent.futures.Future()
    if compiling:
      try:
        future.set_result(self._compile(rows, length))
      except BaseException as err:
        with self._compile_lock:  # the next ask compiles again: the fault may be the machine's
          del self._compiled[key]
        future.set_exception(err)
    return future.result()

  def _compile(self, rows: int, length: int):
    width = packing.max_documents_per_row(length, self.config.pack)
    spec = lambda shape: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=self.runtime.rows)
    start = time.perf_counter()
    lowered = self._forward.lower(self._state, spec((rows, length)), spec((rows, length)),
                                  spec((rows, length)), spec((rows, width)))
    compiled = lowered.compile(compiler_options=dict(self.runtime.compiler_options))
    self.stats.compile_seconds[(rows, length)] = time.perf_counter() - start
    log.info("compiled the encoder for %d x %d tokens in %.1fs", rows, length,
             self.stats.compile_seconds[(rows, length)])
    return compiled

  def warmup(self, shapes=None, threads: int = 1) -> float:
    """Compiles `shapes` (default: every shape; loaded from the persistent cache where it holds
    them), the full batches first: what a stream of documents needs soonest. With several
    threads XLA compiles shapes side by side (tracing holds the GIL, compiling does not).
    Seconds."""
    shapes = sorted(self.shapes if shapes is None else set(shapes), key=lambda s: -s[0] * s[1])
    start = time.perf_counter()
    if threads <= 1:  # in this thread, under whatever jax config it has set (log_compiles...)
      for shape in shapes:
        self._executable(*shape)
    else:
      with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="koedu-compile") as pool:
        list(pool.map(lambda shape: self._executable(*shape), shapes))
    seconds = time.perf_counter() - start
    log.info("%d compiled shapes ready in %.1fs", len(shapes), seconds)
    return seconds

  def pack(self, ids: list[np.ndarray]) -> list[packing.Batch]:
    """Batches of the compiled shapes holding `ids` (each `<s>` ... `</s>`)."""
    if not ids:
      return []
    lengths = np.fromiter((len(d) for d in ids), np.int64, len(ids))
    if lengths.max() > self.config.max_length or lengths.min() < 2:
      raise ValueError(f"documents must have 2..{self.config.max_length} tokens, "
                       f"got {lengths.min()}..{lengths.max()}")
    rows = packing.assign_rows(lengths, self.config.lengths, self.config.pack)
    return packing.make_batches(ids, rows, self._sizes, self.pad_token_id, self.config.pack)

  def dispatch(self, batch: packing.Batch) -> Dispatched:
    """Starts `batch` on the devices and returns at once (JAX runs asynchronously)."""
    run = self._executable(*batch.shape)
    arrays = (batch.input_ids, batch.segment_ids, batch.position_ids, batch.cls_index)
    output = run(self._state, *(placement.place(a, self.runtime.rows) for a in arrays))
    self.stats.computed_tokens += batch.input_ids.size
    self.stats.real_tokens += batch.real_tokens
    return Dispatched(batch, output)

  def collect(self, dispatched: Dispatched, out: np.ndarray) -> None:
    """Waits for a dispatched batch and writes its documents' outputs into `out`."""
    batch = dispatched.batch
    out[batch.documents] = placement.to_host(dispatched.output)[batch.slots]
    self.stats.documents += len(batch.documents)

  def empty(self, n: int) -> np.ndarray:
    hidden = self._state["head"]["dense"]["kernel"].shape[0]
    return np.empty((n, hidden) if self.output == "features" else (n,), np.float32)

  def run(self, ids: list[np.ndarray], in_flight: int = 4) -> np.ndarray:
    """Outputs of every document of `ids`: scores (float32) or features (documents, hidden)."""
    out = self.empty(len(ids))
    pending = []
    # The host packs and places the next batch while the devices compute this one; a few in
    # flight bound the inputs held on the devices.
    for batch in self.pack(ids):
      pending.append(self.dispatch(batch))
      if len(pending) > in_flight:
        self.collect(pending.pop(0), out)
    for dispatched in pending:
      self.collect(dispatched, out)
    return out


def load_runner(model_dir: str, config: RunnerConfig, *, precision: str = "auto",
                attention: str = "auto", devices=None, output: str = "scores",
                allow_pickle: bool = False) -> EncoderRunner:
  """The compiled encoder of the local model directory `model_dir`, run as `resolve()` decides
  for these settings and devices."""
  runtime = runtimes.resolve(checkpoint.read_config(model_dir), precision, attention, devices)
  _, model = checkpoint.load_classifier(model_dir, allow_pickle=allow_pickle, **runtime.model_kwargs())
  return EncoderRunner(model, runtime, config, output)
