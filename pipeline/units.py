"""Scoring a work unit: reading, parsing, tokenizing, scoring and writing it, fused in one step.

A unit's own thread only reads and parses; each chunk then goes through the worker's pools
(pipeline/worker.py): a host thread tokenizes it and packs it for the devices, the device
thread scores it, a writer thread writes its outputs. Several chunks are in flight, across the
units of a bundle too, so reading, tokenizing, the devices and the uploads all overlap.

A failure of the tokenizer on a document is the document's: the chunk's texts are halved until
the documents at fault are found, and those go to errors/ as `tokenizer_failed`. Everything
after tokenization is the machine's: DeviceFault and StorageFault fail the unit, which the
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
from pipeline.faults import TOKENIZER_FAILED, RecordFault
from pipeline.options import ScoringConfig
from pipeline.outputs import ScoredChunk
from pipeline.records import Document, Rejected, parse
from pipeline.worker import Worker, load_worker, then

log = logging.getLogger(__name__)
NAMESPACE = "koedu"
PROGRESS_EVERY_SECONDS = 30
_FATAL = (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError)


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
      fault = RecordFault(TOKENIZER_FAILED, f"{type(err).__name__}: {err}")
      return [None], [None], [Rejected.of(fault, d.source, d.row, d.text)]
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


@dataclasses.dataclass
class _UnitProgress:
  unit: shards.Unit
  totals: dict = dataclasses.field(default_factory=outputs.empty_totals)  # all its chunks
  here: dict = dataclasses.field(default_factory=outputs.empty_totals)  # those scored by this attempt
  pending: int = 0  # chunks submitted and not finished
  read: bool = False  # every chunk of the unit submitted


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

  def start_bundle(self):
    # Chunks in flight, oldest first, across units: while one unit's last chunks are on the
    # devices and being written, the next unit is read. A unit's summary goes out once all its
    # chunks are done, in order; the bundle's last ones at its end.
    self._window = collections.deque()
    self._units = collections.deque()

  def process(self, unit: shards.Unit):
    c, w = self._config, self._load()
    state = _UnitProgress(unit)
    self._units.append(state)
    for raw in shards.read_unit(unit, c.chunk_size, c.unit_bytes, c.max_record_bytes):
      while not w.slots.acquire(timeout=0.05):  # the process is full: finish what is done meanwhile
        self._finish_ready()
      if raw.done:
        future = w.writers.submit(lambda i=raw.index: (outputs.read_marker(c.output, unit.source, i), False))
      else:
        documents, rejected, originals = parse_chunk(raw, unit.source, c)
        queued = w.host.submit(tokenize_chunk, w, unit.source, raw.index, documents, rejected, originals)
        future = then(w.writers, _scores_of(queued), self._write)
      future.add_done_callback(lambda _: w.slots.release())
      state.pending += 1
      self._window.append((state, future))
      # Chunks in flight: one being read, some tokenizing, some on the devices or uploading.
      while len(self._window) > c.threads + 2:
        self._finish_oldest()
      yield from self._summaries()
    state.read = True
    yield from self._summaries()

  def finish_bundle(self):
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.windowed_value import WindowedValue
    while self._window:
      self._finish_oldest()
    for summary in self._summaries():
      yield WindowedValue(summary, GlobalWindow().max_timestamp(), [GlobalWindow()])

  def _finish_ready(self) -> None:
    while self._window and self._window[0][1].done():
      self._finish_oldest()

  def _finish_oldest(self) -> None:
    state, future = self._window.popleft()
    counts, new = future.result()  # a machine fault raises here, and fails the bundle
    outputs.add(state.totals, counts)
    if new:
      outputs.add(state.here, counts)
      self._count(counts)
    state.pending -= 1

  def _summaries(self):
    while self._units and self._units[0].read and not self._units[0].pending:
      state = self._units.popleft()
      u = state.unit
      yield outputs.write_summary(self._config.output, u.source, u.index, u.count, state.totals,
                                  state.here, self._worker.precision())

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
