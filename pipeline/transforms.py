"""The scoring graph, as a list of small steps:

  globs (or a manifest) -> shards matched on the workers -> (shard key, source, size, identity)
  16 partitions of _done/ and _units/ -> listed on the workers -> (shard key, finished chunk or unit)
  both, grouped by shard key -> units left to score        | summaries of finished units
  units -> spread over the workers -> read, parse, tokenize, score, write: fused, one unit at a time
  unit summaries (new and earlier) + shard counts -> summed -> stats.json, score_histogram.png

The one shuffle (the group by shard key, and the spreading of units) carries shard
descriptors and file names, never documents: each unit's records are read by the worker that
scores and writes them, so the first outputs appear while most shards are still unread, and
nothing waits on the corpus being read first. pipeline/state decides what is done.
"""
from __future__ import annotations

import apache_beam as beam

from model.hub import ModelInfo
from pipeline import io, state, stats
from pipeline.options import ScoringConfig
from pipeline.state import plan
from pipeline.units import ScoreUnits


def build(pipeline: beam.Pipeline, config: ScoringConfig, run: stats.RunInfo, model: ModelInfo,
          output: state.Output) -> None:
  """Adds the scoring steps to `pipeline`."""
  if config.input_manifest:
    shards = (pipeline
              | "Manifest" >> beam.Create([config.input_manifest])
              | "ReadManifest" >> beam.ParDo(plan.ReadManifest())
              | "SpreadListed" >> beam.Reshuffle()
              | "SizeShards" >> beam.ParDo(plan.LookUpShard()))
  else:
    shards = (pipeline
              | "Globs" >> beam.Create(list(config.inputs))
              | "MatchShards" >> beam.ParDo(plan.MatchShards()))
  keyed = shards | "KeyShards" >> beam.Map(lambda s: (io.shard_key(s[0]), s))
  listed = (pipeline
            | "Partitions" >> beam.Create([(kind, p) for kind in (state.DONE, state.UNITS)
                                           for p in state.PARTITIONS])
            | "ListState" >> beam.ParDo(plan.ListState(config.output)).with_outputs(plan.SAMPLE, main="state"))
  planned = ({"shard": keyed, "state": listed.state}
             | "ByShard" >> beam.CoGroupByKey()
             | "Plan" >> beam.ParDo(plan.PlanShard(config.output, config.unit_bytes)).with_outputs(
                 plan.PRIOR, plan.SHARD, main="units"))
  units = planned.units
  units_this_run = beam.pvalue.AsSingleton(units | "CountUnits" >> beam.combiners.Count.Globally())
  recorded = (listed[plan.SAMPLE]
              | "StateSamples" >> beam.combiners.ToList()
              | "RecordedPrecision" >> beam.Map(plan.recorded_precision(config.output), units_this_run))
  new = (units
         | "SpreadUnits" >> beam.Reshuffle()
         | "ScoreUnits" >> beam.ParDo(ScoreUnits(config, model), beam.pvalue.AsSingleton(recorded))
         | "New" >> beam.Map(lambda summary: ("new", summary)))
  prior = (planned[plan.PRIOR]
           | "IfStatsNeeded" >> beam.Filter(plan.summaries_needed, units_this_run, output)
           | "SpreadPrior" >> beam.Reshuffle()
           | "ReadPrior" >> beam.Map(plan.read_prior(config.output))
           | "Prior" >> beam.Map(lambda summary: ("prior", summary)))
  shard_counts = planned[plan.SHARD] | "Shards" >> beam.Map(lambda counts: ("shard", counts))
  ((new, prior, shard_counts)
   | "Everything" >> beam.Flatten()
   | "Sum" >> beam.CombineGlobally(stats.SumStats())
   | "WriteStats" >> beam.Map(stats.finish, config, run, output))
