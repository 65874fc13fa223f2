"""The scoring graph, as a list of small steps:

  globs (or a manifest) -> shards matched on the workers -> (shard key, source, size)
  16 partitions of _done/ and _units/ -> listed on the workers -> (shard key, finished chunk or unit)
  both, grouped by shard key -> units left to score        | summaries of finished units
  units -> spread over the workers -> read, parse, tokenize, score, write: fused, one unit at a time
  unit summaries (new and earlier) + shard counts -> summed -> stats.json, score_histogram.png

The one shuffle (the group by shard key, and the spreading of units) carries shard
descriptors and file names, never documents: each unit's records are read by the worker that
scores and writes them, so the first outputs appear while most shards are still unread, and
nothing waits on the corpus being read first.
"""
from __future__ import annotations

import apache_beam as beam

from model.hub import ModelInfo
from pipeline import io, layout, plan, stats
from pipeline.options import ScoringConfig
from pipeline.units import ScoreUnits


def _read_summary(output: str):
  def read(entry):
    import json
    key, unit, units = entry
    return json.loads(io.read_bytes(layout.summary_path(output, key, unit, units)))
  return read


def _prior_needed(entry, units_this_run: int, stats_existed: bool):
  # A rerun with nothing to do leaves stats.json as it is: no need to read what it sums.
  return units_this_run > 0 or not stats_existed


def build(pipeline: beam.Pipeline, config: ScoringConfig, run: stats.RunInfo, model: ModelInfo) -> None:
  """Adds the scoring steps to `pipeline`."""
  if config.input_manifest:
    shards = (pipeline
              | "Manifest" >> beam.Create([config.input_manifest])
              | "ReadManifest" >> beam.ParDo(plan.ReadManifest())
              | "SpreadListed" >> beam.Reshuffle()
              | "SizeShards" >> beam.ParDo(plan.SizeShard()))
  else:
    shards = (pipeline
              | "Globs" >> beam.Create(list(config.inputs))
              | "MatchShards" >> beam.ParDo(plan.MatchShards()))
  keyed = shards | "KeyShards" >> beam.Map(lambda s: (io.shard_key(s[0]), s))
  state = (pipeline
           | "Partitions" >> beam.Create([(kind, p) for kind in (layout.DONE, layout.UNITS)
                                          for p in layout.PARTITIONS])
           | "ListState" >> beam.ParDo(plan.ListState(config.output)))
  planned = ({"shard": keyed, "state": state}
             | "ByShard" >> beam.CoGroupByKey()
             | "Plan" >> beam.ParDo(plan.PlanShard(config.output, config.unit_bytes)).with_outputs(
                 plan.PRIOR, plan.SHARD, main="units"))
  units = planned.units
  units_this_run = beam.pvalue.AsSingleton(units | "CountUnits" >> beam.combiners.Count.Globally())
  new = (units
         | "SpreadUnits" >> beam.Reshuffle()
         | "ScoreUnits" >> beam.ParDo(ScoreUnits(config, model))
         | "New" >> beam.Map(lambda summary: ("new", summary)))
  prior = (planned[plan.PRIOR]
           | "IfStatsNeeded" >> beam.Filter(_prior_needed, units_this_run, run.stats_existed)
           | "SpreadPrior" >> beam.Reshuffle()
           | "ReadPrior" >> beam.Map(_read_summary(config.output))
           | "Prior" >> beam.Map(lambda summary: ("prior", summary)))
  shard_counts = planned[plan.SHARD] | "Shards" >> beam.Map(lambda counts: ("shard", counts))
  ((new, prior, shard_counts)
   | "Everything" >> beam.Flatten()
   | "Sum" >> beam.CombineGlobally(stats.SumStats())
   | "WriteStats" >> beam.Map(stats.finish, config, run))
