"""A chunk's way through a worker process, stage by stage, and the one future helper that links
the stages without a thread waiting between them:

  parse       the unit's own (harness) thread, as it reads
  tokenize    a host thread (Worker.host); the same thread then packs the documents into the
              runner's shapes and queues the batches for the devices (DeviceService.submit)
  score       the device thread (pipeline/device.py)
  write       a writer thread (Worker.writers): scores/, edu/, errors/, then the marker
              (pipeline/state), once the precision the devices ran at is the output's

Faults (pipeline/faults.py). A failure of the tokenizer on a document is the document's: the
chunk's texts are halved until the documents at fault are found, and those go to errors/ as
`tokenizer_failed`. Everything after tokenization is the machine's: a DeviceFault or
StorageFault is the chunk's future's outcome, and fails the unit, which the runner retries
(its finished chunks stay done).
"""
from __future__ import annotations

import concurrent.futures
import functools
import logging

import numpy as np

from model.recipe import int_scores
from model.tokenize import DocumentTokenizer
from pipeline import outputs, shards, state
from pipeline.faults import TOKENIZER_FAILED, RecordFault
from pipeline.options import ScoringConfig
from pipeline.outputs import ScoredChunk
from pipeline.records import Document, Rejected, parse

log = logging.getLogger(__name__)
Future = concurrent.futures.Future
_FATAL = (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError)


def then(future: Future, fn, executor: concurrent.futures.Executor | None = None) -> Future:
  """A future of fn(the result of `future`), run on `executor`, or else by the thread that
  completes `future` (this one, at once, if it is done: keep such an fn short, it may be the
  device thread). If fn returns a future, the outcome is that future's. An exception, of
  `future` or of fn, is the outcome: it reaches whoever takes the result."""
  out = Future()

  def adopt(inner: Future) -> None:
    if inner.exception() is not None:
      out.set_exception(inner.exception())
    else:
      out.set_result(inner.result())

  def run(value) -> None:
    try:
      result = fn(value)
    except BaseException as err:  # handed on to the thread that takes the result
      out.set_exception(err)
      return
    if isinstance(result, Future):
      result.add_done_callback(adopt)
    else:
      out.set_result(result)

  def start(done: Future) -> None:
    if done.exception() is not None:
      out.set_exception(done.exception())
    elif executor is None:
      run(done.result())
    else:
      try:
        executor.submit(run, done.result())
      except RuntimeError as err:  # the pool is shutting down
        out.set_exception(err)

  future.add_done_callback(start)
  return out


def score_chunk(worker, config: ScoringConfig, unit: shards.Unit, raw: shards.RawChunk,
                recorded: str | None, precision) -> Future:
  """The future of (the chunk's counts, whether this attempt scored it), through the stages
  above. A chunk an earlier run finished is only its marker, read on a writer thread.
  `recorded`: the precision the output was scored at (None: a new output); `precision()`: the
  devices', raising if the output holds another (units.ScoreUnits)."""
  source = unit.source
  if raw.done:
    return worker.writers.submit(lambda: (state.done_chunk(config.output, unit, raw.index, recorded), False))
  documents, rejected, originals = parse_chunk(raw, source, config)
  tokenized = worker.host.submit(tokenize_chunk, worker.tokenizer, source, raw.index, documents,
                                 rejected, originals)
  scored = then(tokenized, functools.partial(_queue, worker))  # on the host thread that tokenized
  return then(scored, functools.partial(_write, config, unit, precision), worker.writers)


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


def tokenize_chunk(tokenizer: DocumentTokenizer, source: str, index: int, documents, rejected, originals):
  """(the chunk as the writer needs it, less its scores; the token ids to score)."""
  ids, truncated, failed = tokenize_isolating(tokenizer, documents)
  good = [i for i, t in enumerate(ids) if t is not None]
  ids, docs = [ids[i] for i in good], [documents[i] for i in good]
  pending = ScoredChunk(source, index, np.fromiter((d.row for d in docs), np.int64, len(docs)),
                        [d.id for d in docs], None, None,
                        np.fromiter((len(t) for t in ids), np.int64, len(ids)),
                        np.asarray([truncated[i] for i in good], bool),
                        [originals[d.row] for d in docs], rejected + failed)
  return pending, ids


def _queue(worker, tokenized) -> Future:
  pending, ids = tokenized
  return then(worker.start_scoring(ids), lambda scores: (pending, scores))


def _write(config: ScoringConfig, unit: shards.Unit, precision, pending_and_scores) -> tuple[dict, bool]:
  chunk, scores = pending_and_scores
  resolved = precision()  # a resume at another precision is refused before any file is written
  chunk.score, chunk.int_score = scores, int_scores(scores)
  counts = outputs.write_chunk(config.output, chunk, config.threshold)
  return state.mark_chunk(config.output, unit, chunk.index, counts, resolved), True
