"""Run statistics: `stats.json`, combined in the pipeline from every unit's summary (this run's,
and those earlier runs wrote), the score histogram picture, and the summary a local run prints.
No pass over markers: a summary per unit holds its chunks' counts."""
from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import time

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline import histogram, io, outputs, state
from pipeline.options import ScoringConfig
from pipeline.units import NAMESPACE

log = logging.getLogger(__name__)
NO_SHARDS = "the input matches no file"
# The Beam counter (namespace units.NAMESPACE) by which a job that matched no shard tells its
# launcher so: a failed job reaches a launcher as text only, and its counters not at all.
NO_INPUT = "inputs_matching_nothing"


def iso(timestamp: float) -> str:
  return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat()


@dataclasses.dataclass(frozen=True)
class RunInfo:
  model: str
  revision: str | None
  weights_digest: str
  started: float  # time.time() when the run started


class SumStats(beam.CombineFn):
  """What every unit summary (this run's and earlier runs') and every shard's plan add up to."""

  def create_accumulator(self):
    return {"totals": outputs.empty_totals(), "this_run": outputs.empty_totals(), "matched": 0,
            "shards_this_run": 0, "units": 0, "units_this_run": 0, "precision": []}

  def add_input(self, acc, element):
    kind, value = element
    if kind == "shard":
      acc["matched"] += value["matched"]
      acc["shards_this_run"] += value["this_run"]
    else:
      counts = {k: value[k] for k in outputs.empty_totals()}
      outputs.add(acc["totals"], counts)
      acc["units"] += 1
      if kind == "new":
        outputs.add(acc["this_run"], value["this_attempt"])
        acc["units_this_run"] += 1
      if value.get("precision") and value["precision"] not in acc["precision"]:
        acc["precision"] = sorted(acc["precision"] + [value["precision"]])
    return acc

  def merge_accumulators(self, accumulators):
    accumulators = list(accumulators)
    merged = self.create_accumulator()
    for acc in accumulators:
      outputs.add(merged["totals"], acc["totals"])
      outputs.add(merged["this_run"], acc["this_run"])
      for k in ("matched", "shards_this_run", "units", "units_this_run"):
        merged[k] += acc[k]
      merged["precision"] = sorted(set(merged["precision"]) | set(acc["precision"]))
    return merged

  def extract_output(self, acc):
    return acc


def report(acc: dict, config: ScoringConfig, run: RunInfo) -> dict:
  t, wall = acc["totals"], time.time() - run.started
  this_run = acc["this_run"]["scored"]
  return {"records_read": t["records"], "scored": t["scored"], "kept": t["kept"], "errored": t["errored"],
          "errors_by_reason": t["errors_by_reason"], "tokens": t["tokens"], "truncated": t["truncated"],
          "int_score_histogram": {str(i): n for i, n in enumerate(t["int_score_histogram"])},
          "score_histogram": {"bin_edges": [float(e) for e in outputs.SCORE_BINS],
                              "counts": t["score_histogram"]},
          "shards": {"matched": acc["matched"], "this_run": acc["shards_this_run"]},
          "units": acc["units"], "chunks": t["chunks"],
          "model": run.model, "model_revision": run.revision, "weights_digest": run.weights_digest,
          "precision": acc["precision"][0] if len(acc["precision"]) == 1 else acc["precision"],
          "threshold": config.threshold, "max_length": config.max_length,
          "text_field": config.text_field, "id_field": config.id_field,
          "started": iso(run.started),
          "wall_time_seconds": round(wall, 3),
          "documents_per_second": round(this_run / wall, 3) if wall > 0 else None,
          "scored_this_run": this_run}


def finish(acc: dict, config: ScoringConfig, run: RunInfo, output: state.Output) -> dict | None:
  """Writes stats.json and the histogram picture, unless this run found nothing to do in a
  finished output (a rerun changes nothing) or the input matched no shard (then it counts
  NO_INPUT, and the launcher fails the run: pipeline.run)."""
  if not acc["matched"]:
    log.error("%s: %s", NO_SHARDS, config.input or config.input_manifest)
    Metrics.counter(NAMESPACE, NO_INPUT).inc()
    return None
  if not output.stats_needed(acc["units_this_run"]):
    log.info("every shard was already done; stats.json left as it was")
    return None
  result = report(acc, config, run)
  io.write_bytes_atomic(io.join(config.output, state.STATS), json.dumps(result, indent=2).encode())
  io.write_bytes_atomic(io.join(config.output, state.HISTOGRAM), histogram.png(result, config.threshold))
  return result


def summary(report: dict) -> str:
  lines = [f"koedu: {report['records_read']:,} records read, {report['scored']:,} scored, "
           f"{report['kept']:,} kept (int_score >= {report['threshold']:g}), {report['errored']:,} errors"]
  for reason, n in report["errors_by_reason"].items():
    lines.append(f"  errors {reason}: {n:,}")
  lines.append("  int_score histogram: " + ", ".join(f"{k}: {v:,}" for k, v in report["int_score_histogram"].items()))
  lines.append(f"  shards: {report['shards']['matched']} matched, {report['shards']['this_run']} read this run")
  if report.get("documents_per_second") is not None:
    lines.append(f"  this run: {report['scored_this_run']:,} documents in {report['wall_time_seconds']:.1f}s "
                 f"({report['documents_per_second']:.1f} documents/s)")
  return "\n".join(lines)
