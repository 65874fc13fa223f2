"""The scoring graph, as a list of small steps:

  shards -> read and parse -> (documents | rejected)
  documents -> RunInference (tokenize, pack, score) -> scored
  (scored, rejected) grouped by shard -> write the shard's outputs -> run statistics
"""
from __future__ import annotations

import logging
import time

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference
from apache_beam.metrics import Metrics

from pipeline import io, outputs, stats
from pipeline.handler import NAMESPACE, KoeduModelHandler
from pipeline.options import ScoringConfig
from pipeline.records import Document, Rejected, parse

log = logging.getLogger(__name__)
REJECTED = "rejected"


class ReadShard(beam.DoFn):
  """Every record of a shard as a Document, or as a Rejected with the reason."""

  def __init__(self, text_field: str, id_field: str):
    self._text_field, self._id_field = text_field, id_field
    self._read = Metrics.counter(NAMESPACE, "records_read")
    self._errored = Metrics.counter(NAMESPACE, "records_errored")

  def process(self, source: str):
    try:
      for row, item in io.iter_rows(source):
        self._read.inc()
        record = parse(source, row, item, self._text_field, self._id_field)
        if isinstance(record, Rejected):
          self._errored.inc()
          yield beam.pvalue.TaggedOutput(REJECTED, record)
        else:
          yield record
    except io.ShardError as err:
      self._errored.inc()
      log.warning("%s: %s", source, err.reason)
      yield beam.pvalue.TaggedOutput(REJECTED, Rejected(source, err.row, err.reason, ""))


class WriteShard(beam.DoFn):
  """One shard's scores/, edu/, errors/ and marker, once all its records are in."""

  def __init__(self, config: ScoringConfig, total: int):
    self._config, self._total = config, total
    self._kept = Metrics.counter(NAMESPACE, "records_kept")
    self._shards = Metrics.counter(NAMESPACE, "shards_written")

  def process(self, element):
    source, grouped = element
    c = self._config
    result = outputs.write_shard(c.output, source, grouped["scored"], grouped["rejected"],
                                 c.threshold, c.text_field, c.id_field)
    self._kept.inc(result["kept"])
    self._shards.inc()
    log.info("wrote %s: %d scored, %d kept, %d errors", source, result["scored"], result["kept"],
             result["errored"])
    yield result


def _key_by_source(record):
  return record.source, record


def _inference_failures(element) -> list[Rejected]:
  """A batch the model could not score: each of its documents goes to errors/."""
  batch, error = element
  # Beam gives (exception type, repr, traceback); keep the first two.
  what = f"{error[0].__name__}: {error[1]}" if isinstance(error, tuple) else repr(error)
  return [Rejected(d.source, d.row, f"inference_failed: {what}", d.text) for d in batch]


def build(pipeline: beam.Pipeline, config: ScoringConfig, shards: list[str], run: stats.RunInfo,
          revision: str | None = None) -> None:
  """Adds the scoring steps for `shards` to `pipeline`."""
  sources = pipeline | "Shards" >> beam.Create(shards)
  read = sources | "Read" >> beam.ParDo(ReadShard(config.text_field, config.id_field)).with_outputs(
      REJECTED, main="documents")
  # Redistribute: one shard is read by one worker, but its documents should be scored by all.
  documents = read.documents | "Spread" >> beam.Reshuffle()
  scored, dead = documents | "Score" >> RunInference(
      KoeduModelHandler(config, revision)).with_exception_handling()
  failed = dead.failed_inferences | "FailuresToErrors" >> beam.FlatMap(_inference_failures)
  rejected = (read[REJECTED], failed) | "AllRejected" >> beam.Flatten()
  per_shard = {
      "shard": sources | "KeyShards" >> beam.Map(lambda s: (s, None)),
      "scored": scored | "KeyScored" >> beam.Map(_key_by_source),
      "rejected": rejected | "KeyRejected" >> beam.Map(_key_by_source),
  }
  written = (per_shard | "ByShard" >> beam.CoGroupByKey()
             | "Write" >> beam.ParDo(WriteShard(config, len(shards))))
  (written
   | "CountShards" >> beam.combiners.Count.Globally()
   | "WriteStats" >> beam.Map(lambda _, c=config, r=run: stats.finish(c, r)))
