"""Scoring a work unit: reading, parsing, tokenizing, scoring and writing it, fused in one step.

Per worker process (`Worker`, loaded once in `DoFn.setup` and shared by every thread): the
tokenizer, the device service (model/runner.py behind pipeline/device.py, or a proxy to the one
process of the machine that owns the devices), a pool of host threads that tokenize, and a pool
of writer threads. A unit's own thread only reads and parses; each chunk then goes through the
pools, several chunks in flight, so reading, tokenizing, the devices and the uploads overlap
across chunks and across the units other threads are scoring.

A failure of the tokenizer on a document is the document's: the chunk's texts are halved until
the documents at fault are found, and those go to errors/ as `tokenizer_failed`. Everything
after tokenization is the machine's: DeviceFailed and StorageError fail the unit, which the
runner retries (its finished chunks stay done).
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import time

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from model.hub import ModelInfo
from model.recipe import int_scores
from model.tokenize import DocumentTokenizer
from pipeline import outputs, shards
from pipeline.options import ScoringConfig
from pipeline.outputs import ScoredChunk
from pipeline.records import Document, Rejected, parse

log = logging.getLogger(__name__)
NAMESPACE = "koedu"
WRITER_THREADS = 16  # uploads wait on the network, not the CPU
PROGRESS_EVERY_SECONDS = 30
_FATAL = (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError)


@dataclasses.dataclass
class Worker:
  tokenizer: DocumentTokenizer
  service: object  # DeviceService, or a proxy to the process that owns the devices
  host: concurrent.futures.ThreadPoolExecutor
  writers: concurrent.futures.ThreadPoolExecutor
  precision: str
  local: bool  # the service lives in this process: it takes batches without a thread waiting

  def start_scoring(self, ids: list[np.ndarray]) -> concurrent.futures.Future:
    if not ids:
      done = concurrent.futures.Future()
      done.set_result(np.zeros(0, np.float32))
      return done
    if self.local:
      return self.service.submit(ids)
    return self.writers.submit(self.service.score, ids)  # a proxy's call blocks: a writer waits


def then(pool: concurrent.futures.Executor, future: concurrent.futures.Future, fn) -> concurrent.futures.Future:
  """fn(future's result) run on `pool` once the future is done, as a future; no thread waits."""
  chained = concurrent.futures.Future()

  def relay(inner):
    if inner.exception() is not None:
      chained.set_exception(inner.exception())
    else:
      chained.set_result(inner.result())

  def start(done):
    if done.exception() is not None:
      chained.set_exception(done.exception())
      return
    try:
      pool.submit(fn, done.result()).add_done_callback(relay)
    except RuntimeError as err:  # the pool is shutting down
      chained.set_exception(err)

  future.add_done_callback(start)
  return chained


def load_device_service(config: ScoringConfig, info: ModelInfo):
  """The devices' owner: the model fetched, verified, compiled for every shape and probed."""
  from model import hub
  from model.runner import load_runner
  from model.text_scorer import enable_compilation_cache
  from pipeline.device import DeviceService
  enable_compilation_cache(config.compilation_cache_dir)
  model_dir = hub.fetch(info, cache_dir=config.model_cache_dir)
  runner = load_runner(model_dir, config.runner_config(), precision=config.dtype,
                       allow_pickle=config.allow_pickle)
  runner.warmup()  # once, here: never by threads racing each other for the same shape
  tokenizer = DocumentTokenizer(model_dir, config.max_length).load()
  if tokenizer.vocab_size > runner.model_config.vocab_size:
    raise ValueError(f"{info.name}: the tokenizer has {tokenizer.vocab_size} tokens, the model "
                     f"{runner.model_config.vocab_size} embeddings")
  probe = tokenizer(["", "koedu probe: 광합성은 식물이 빛 에너지를 화학 에너지로 바꾸는 과정이다."]).ids
  service = DeviceService(runner, probe, retries=config.device_retries)
  log.info("the devices are ready: %s precision, %s attention, %d %s device(s)", runner.runtime.precision,
           runner.runtime.attention, runner.runtime.devices, runner.runtime.platform)
  return service


def load_worker(config: ScoringConfig, info: ModelInfo) -> Worker:
  from model import hub
  local = not config.share_model_across_processes
  if local:
    service = load_device_service(config, info)
  else:
    from apache_beam.utils.multi_process_shared import MultiProcessShared
    tag = f"koedu-devices-{info.content_digest[7:23]}-{config.dtype}-{config.max_length}"
    service = MultiProcessShared(lambda: load_device_service(config, info), tag=tag,
                                 always_proxy=True).acquire()
  tokenizer = DocumentTokenizer(hub.fetch(info, cache_dir=config.model_cache_dir), config.max_length).load()
  return Worker(tokenizer, service,
                concurrent.futures.ThreadPoolExecutor(config.threads, thread_name_prefix="koedu-host"),
                concurrent.futures.ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="koedu-write"),
                service.describe()["precision"], local)


def _scores_of(queued: concurrent.futures.Future) -> concurrent.futures.Future:
  """(pending chunk, its scores) once the devices are done with it, from the future of
  (pending chunk, future scores) a host thread returns. Callbacks only: no thread waits."""
  result = concurrent.futures.Future()

  def scores_ready(pending, device):
    if device.exception() is not None:
      result.set_exception(device.exception())
    else:
      result.set_result((pending, device.result()))

  def queued_ready(done):
    if done.exception() is not None:
      result.set_exception(done.exception())
      return
    pending, device = done.result()
    device.add_done_callback(lambda d: scores_ready(pending, d))

  queued.add_done_callback(queued_ready)
  return result


def parse_chunk(raw: shards.RawChunk, source: str, config: ScoringConfig):
  """(documents, rejected, originals by row) of a chunk's records."""
  documents, rejected, originals = [], [], {}
  for row, item in raw.rows:
    record = parse(source, row, item, config.text_field, config.id_field)
    if isinstance(record, Rejected):
      rejected.append(record)
    else:
      documents.append(record)
      originals[row] = item
  if raw.broken is not None:
    rejected.append(raw.broken)
  return documents, rejected, originals


def tokenize_isolating(tokenizer: DocumentTokenizer, documents: list[Document]):
  """(token ids, truncated, rejected) for the documents, halving on a tokenizer failure until
  the documents at fault are found; ids and truncated hold None for those."""
  if not documents:
    return [], [], []
  try:
    tokens = tokenizer([d.text for d in documents])
    return tokens.ids, list(tokens.truncated), []
  except _FATAL:
    raise
  except BaseException as err:  # Rust panics arrive as BaseException (pyo3's PanicException)
    if len(documents) == 1:
      d = documents[0]
      log.warning("%s row %d: the tokenizer failed: %s: %s", d.source, d.row, type(err).__name__, err)
      return [None], [None], [Rejected(d.source, d.row, f"tokenizer_failed: {type(err).__name__}: {err}", d.text)]
    half = len(documents) // 2
    a, b = tokenize_isolating(tokenizer, documents[:half]), tokenize_isolating(tokenizer, documents[half:])
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


def tokenize_chunk(worker: Worker, source: str, index: int, documents, rejected, originals):
  """On a host thread: tokenize, queue for the devices, and return at once with what the
  writer needs once the scores are there."""
  ids, truncated, failed = tokenize_isolating(worker.tokenizer, documents)
  good = [i for i, t in enumerate(ids) if t is not None]
  ids, docs = [ids[i] for i in good], [documents[i] for i in good]
  pending = ScoredChunk(source, index, np.fromiter((d.row for d in docs), np.int64, len(docs)),
                        [d.id for d in docs], None, None,
                        np.fromiter((len(t) for t in ids), np.int64, len(ids)),
                        np.asarray([truncated[i] for i in good], bool),
                        [originals[d.row] for d in docs], rejected + failed)
  return pending, worker.start_scoring(ids)


class ScoreUnits(beam.DoFn):
  """Unit descriptors in, unit summaries out; every output of the unit written on the way."""

  def __init__(self, config: ScoringConfig, info: ModelInfo):
    from apache_beam.utils import shared
    self._config, self._info = config, info
    self._shared = shared.Shared()
    self._read = Metrics.counter(NAMESPACE, "records_read")
    self._scored = Metrics.counter(NAMESPACE, "records_scored")
    self._errored = Metrics.counter(NAMESPACE, "records_errored")
    self._kept = Metrics.counter(NAMESPACE, "records_kept")
    self._tokens = Metrics.counter(NAMESPACE, "tokens")
    self._truncated = Metrics.counter(NAMESPACE, "truncated")

  def setup(self):
    self._worker = None
    self._progress = (time.monotonic(), 0)
    self._scored_total = 0

  def _load(self) -> Worker:
    # At the first unit, not in setup(): a run with nothing left to score loads no model. One
    # load (and one warm-up) per process, whichever thread comes first.
    if self._worker is None:
      self._worker = self._shared.acquire(lambda: load_worker(self._config, self._info),
                                          tag=("koedu-worker", self._info.content_digest))
    return self._worker

  def process(self, unit: shards.Unit):
    c, w = self._config, self._load()
    totals, here = outputs.empty_totals(), outputs.empty_totals()
    window = collections.deque()
    depth = c.threads + 2  # chunks in flight per unit: one read, some tokenizing, one on the devices

    def finish(future):
      counts, new = future.result()
      outputs.add(totals, counts)
      if new:
        outputs.add(here, counts)
        self._count(counts)

    for raw in shards.read_unit(unit, c.chunk_size, c.unit_bytes, c.max_record_bytes):
      if raw.done:
        window.append(w.writers.submit(lambda i=raw.index: (outputs.read_marker(c.output, unit.source, i), False)))
      else:
        documents, rejected, originals = parse_chunk(raw, unit.source, c)
        queued = w.host.submit(tokenize_chunk, w, unit.source, raw.index, documents, rejected, originals)
        scored = _scores_of(queued)
        window.append(then(w.writers, scored, self._write))
      while len(window) > depth:
        finish(window.popleft())
    while window:
      finish(window.popleft())
    yield outputs.write_summary(c.output, unit.source, unit.index, unit.count, totals, here, w.precision)

  def _write(self, pending_and_scores):
    chunk, scores = pending_and_scores
    chunk.score, chunk.int_score = scores, int_scores(scores)
    return outputs.write_chunk(self._config.output, chunk, self._config.threshold), True

  def _count(self, counts: dict) -> None:
    self._read.inc(counts["records"])
    self._scored.inc(counts["scored"])
    self._errored.inc(counts["errored"])
    self._kept.inc(counts["kept"])
    self._tokens.inc(counts["tokens"])
    self._truncated.inc(counts["truncated"])
    self._scored_total += counts["scored"]
    since, done = self._progress
    now = time.monotonic()
    if now - since >= PROGRESS_EVERY_SECONDS:
      log.info("scored %d documents (%.1f/s over the last %.0fs)", self._scored_total,
               (self._scored_total - done) / (now - since), now - since)
      self._progress = (now, self._scored_total)
