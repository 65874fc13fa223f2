"""`python -m pipeline.run`: score web-crawl shards and keep the educational ones.

Parses options, checks the model and the output directory, and runs the graph of
`pipeline.transforms` on the chosen Beam runner. docs/contracts.md says what it writes.
"""
from __future__ import annotations

import gc

if __name__ == "__main__":  # no garbage collection while the imports load: process.imports_done
  gc.disable()
  from pipeline import process as _process
  _process.start_logging(fmt="%(asctime)s %(levelname)s %(name)s: %(message)s")  # before Beam's import

import argparse
import json
import logging
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import (DebugOptions, GoogleCloudOptions, PipelineOptions,
                                                  StandardOptions, TestOptions)

from model import hub
from model.config import ModelConfig
from pipeline import faults, io, process, state, stats, transforms
from pipeline.options import ScoringConfig, ScoringOptions, unknown_flags
from pipeline.units import NAMESPACE

log = logging.getLogger("koedu")


def make_runner(options: PipelineOptions):
  name = options.view_as(StandardOptions).runner
  if name in (None, "DirectRunner", "direct"):
    # Beam 2.77's DirectRunner first tries to download the Prism binary from GitHub; the
    # FnApiRunner is what it falls back to, and the one that knows --direct_running_mode.
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    return FnApiRunner()
  return name


def _counters(result) -> dict | None:
  """This run's koedu counters, as the runner aggregated them; None where it reports none."""
  from apache_beam.metrics.metric import MetricsFilter
  try:
    counters = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
  except Exception as err:  # not every runner reports metrics
    log.info("beam metrics unavailable (%s)", type(err).__name__)
    return None
  totals = {}
  for c in counters:
    totals[c.key.metric.name] = totals.get(c.key.metric.name, 0) + (c.committed or c.attempted or 0)
  return totals


def _write_job_file(options: PipelineOptions, result) -> None:
  job_file = options.view_as(DebugOptions).dataflow_job_file
  if options.view_as(TestOptions).dry_run and job_file and getattr(result, "job", None) is not None:
    from pipeline.dataflow import write_job_description
    write_job_description(result, job_file)


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if "-h" in argv or "--help" in argv:
    parser = argparse.ArgumentParser(prog="python -m pipeline.run", description=__doc__)
    ScoringOptions._add_argparse_args(parser)
    parser.print_help()
    print("\nAny Beam pipeline option is accepted too (--runner, --project, --direct_num_workers, ...).")
    return 0
  process.start_logging(fmt="%(asctime)s %(levelname)s %(name)s: %(message)s")
  for name in ("koedu", "model", "pipeline"):
    logging.getLogger(name).setLevel(logging.INFO)
  unknown = unknown_flags(argv)
  if unknown:
    print(f"error: unknown option {', '.join(unknown)}", file=sys.stderr)
    return 2
  options = PipelineOptions(argv)
  try:
    return score(ScoringConfig.from_options(options), options)
  except Exception as err:
    status = faults.exit_code(err)
    if status == faults.EXIT_USAGE:
      print(f"error: {err}", file=sys.stderr)
    else:  # the job failed: a device, storage or worker fault; a rerun resumes
      print(f"error: the run failed ({type(err).__name__}: {err}). Chunks already written are kept; "
            "rerun the same command to finish the rest.", file=sys.stderr)
    return status


def score(config: ScoringConfig, options: PipelineOptions) -> int:
  """Checks the model and the output directory, then runs the graph. Reads nothing that grows
  with the corpus: the workers match the shards and read the run's state."""
  started = time.time()
  config.use_caches()  # the launcher checksums the model files too
  info = hub.describe(config.model, allow_pickle=config.allow_pickle)  # fails before any work
  ModelConfig.from_hf_dict(info.config).check_max_length(config.max_length)
  describing = bool(options.view_as(TestOptions).dry_run or
                    options.view_as(GoogleCloudOptions).template_location)
  output = state.open_output(config, info, write=not describing)
  run = stats.RunInfo(info.name, info.revision, info.digest, started)
  pipeline = beam.Pipeline(runner=make_runner(options), options=options)
  transforms.build(pipeline, config, run, info, output)
  result = pipeline.run()
  if describing:
    _write_job_file(options, result)
    return 0
  result.wait_until_finish()
  counters = _counters(result)
  log.info("beam metrics: %s", "unavailable" if counters is None else
           ", ".join(f"{k}={v}" for k, v in sorted(counters.items())))
  if counters and counters.get(stats.NO_INPUT):
    raise faults.NoInput(f"{stats.NO_SHARDS}: {', '.join(config.inputs) or config.input_manifest}")
  report = json.loads(io.read_bytes(io.join(config.output, state.STATS)))
  if output.was_complete(report, stats.iso(run.started)):
    # A scheduler's log should not read as if the rerun had scored anything itself.
    print(f"koedu: {config.output} was already complete; its stats.json, unchanged:")
  print(stats.summary(report))
  return 0


if __name__ == "__main__":
  process.imports_done()
  process.exit_now(main())
