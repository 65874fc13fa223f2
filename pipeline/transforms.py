"""The scoring graph, as a list of small steps:

  shards -> read into chunks of consecutive records (documents + rejected), skipping done chunks
  chunks -> RunInference (tokenize, pack, score)
  scored chunks -> write scores/, edu/, errors/ and the chunk's marker -> run statistics

No step groups by shard: a group would hold every write back until the whole corpus is scored,
and a run killed at 90% would then have nothing to resume from.
"""
from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference

from model.hub import ModelInfo
from pipeline import io, outputs, stats
from pipeline.handler import NAMESPACE, KoeduModelHandler, ScoredChunk
from pipeline.options import ScoringConfig
from pipeline.records import Chunk, Rejected, parse

log = logging.getLogger(__name__)


class ReadShard(beam.DoFn):
  """A shard as chunks of `chunk_size` records; chunks an earlier run finished are skipped."""

  def __init__(self, config: ScoringConfig):
    self._config = config
    self._read = Metrics.counter(NAMESPACE, "records_read")
    self._errored = Metrics.counter(NAMESPACE, "records_errored")

  def process(self, source: str):
    c = self._config
    done = outputs.done_chunks(c.output, source)
    chunk = Chunk(source, 0, [], [], {})
    try:
      for row, item in io.iter_rows(source):
        index = row // c.chunk_size
        if index != chunk.index:
          yield from self._emit(chunk, done)
          chunk = Chunk(source, index, [], [], {})
        if index in done:
          continue
        self._read.inc()
        record = parse(source, row, item, c.text_field, c.id_field)
        if isinstance(record, Rejected):
          self._errored.inc()
          chunk.rejected.append(record)
        else:
          chunk.documents.append(record)
          chunk.originals[row] = item
    except io.ShardError as err:
      self._errored.inc()
      if err.row is not None:  # where a shard broke off counts as one (unreadable) record
        self._read.inc()
      log.warning("%s: %s", source, err.reason)
      chunk.rejected.append(Rejected(source, err.row, err.reason, ""))
    yield from self._emit(chunk, done)
    outputs.write_shard_manifest(c.output, source, chunk.index + 1)

  @staticmethod
  def _emit(chunk: Chunk, done: set[int]):
    if chunk.index not in done:
      yield chunk


class WriteChunk(beam.DoFn):
  """One chunk's scores/, edu/, errors/ and marker."""

  def __init__(self, config: ScoringConfig):
    self._config = config
    self._kept = Metrics.counter(NAMESPACE, "records_kept")

  def process(self, result: ScoredChunk):
    chunk = result.chunk
    written = outputs.write_chunk(self._config.output, chunk.source, chunk.index, result.scored,
                                  chunk.rejected + result.failed, chunk.originals,
                                  self._config.threshold)
    self._kept.inc(written["kept"])
    log.info("wrote %s chunk %d: %d scored, %d kept, %d errors", chunk.source, chunk.index,
             written["scored"], written["kept"], written["errored"])
    yield written


def _inference_failed(element) -> ScoredChunk:
  """A chunk the model could not score: its documents go to errors/ with the reason."""
  batch, error = element
  # Beam gives (exception type, repr, traceback); keep the first two.
  what = f"{error[0].__name__}: {error[1]}" if isinstance(error, tuple) else repr(error)
  (chunk,) = batch  # batches hold one chunk
  failed = [Rejected(d.source, d.row, f"inference_failed: {what}", d.text) for d in chunk.documents]
  return ScoredChunk(chunk, [], failed)


def build(pipeline: beam.Pipeline, config: ScoringConfig, shards: list[str], run: stats.RunInfo,
          model: ModelInfo) -> None:
  """Adds the scoring steps for `shards` to `pipeline`."""
  chunks = (pipeline
            | "Shards" >> beam.Create(shards)
            | "SpreadShards" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadShard(config))
            # One shard is read by one worker; its chunks should be scored by all of them.
            | "SpreadChunks" >> beam.Reshuffle())
  scored, dead = chunks | "Score" >> RunInference(
      KoeduModelHandler(config, model)).with_exception_handling()
  failed = dead.failed_inferences | "FailedChunks" >> beam.Map(_inference_failed)
  (((scored, failed) | "AllChunks" >> beam.Flatten())
   | "Write" >> beam.ParDo(WriteChunk(config))
   | "CountChunks" >> beam.combiners.Count.Globally()
   | "WriteStats" >> beam.Map(lambda _, c=config, r=run: stats.finish(c, r)))
