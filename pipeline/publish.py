"""`python -m pipeline.publish`: a finished run's educational subset as a dataset people load.

  python -m pipeline.publish --output DIR --dataset DEST [--threshold T] [--max_file_bytes N]
      [--row_group_bytes N] [--push_to_hub REPO [--dry_run]] [Beam options]

Writes DEST/data/train-XXXXX-of-YYYYY.parquet (one schema: the union of the records' fields)
and DEST/README.md, the dataset card `datasets.load_dataset(DEST)` reads. At the run's threshold
the chunks and their schemas come from the run's unit summaries; at another one, from scores/
and the shards, without the model, as pipeline.rethreshold does. pipeline/dataset.py has the
steps; docs/operations.md, the way from a run to the Hub.
"""
from __future__ import annotations

import gc

if __name__ == "__main__":  # no garbage collection while the imports load: process.imports_done
  gc.disable()
  from pipeline import process as _process
  _process.start_logging()  # before Beam's import

import dataclasses
import json
import logging
import math
import shlex
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

import options as declarations
from pipeline import dataset, faults, io, process, schemas, state
from pipeline.run import make_runner

log = logging.getLogger("koedu")
MB = 10**6


@dataclasses.dataclass(frozen=True)
class PublishConfig:
  output: str  # the scoring run's directory (pipeline.run --output)
  dataset: str  # where the dataset is written: data/ and README.md
  threshold: float | None = None  # keep int_score >= threshold; None: the run's own
  max_file_bytes: int = 500 * MB  # a file's size at most (the Hub's and datasets' shard size), unless one chunk is larger
  row_group_bytes: int = 100 * MB  # uncompressed bytes per row group: what a streaming reader holds at once
  push_to_hub: str | None = None  # a Hub dataset repo id to upload DEST to
  dry_run: bool = False  # with push_to_hub: list what would be uploaded, upload nothing
  from_scores: bool = False  # rebuild the subset from scores/ and the shards even at the run's threshold

  def __post_init__(self):
    if self.threshold is not None and not 0 <= self.threshold <= 5:
      raise ValueError(f"--threshold must be within 0..5, got {self.threshold}")
    if self.max_file_bytes < 1 or self.row_group_bytes < 1:
      raise ValueError("--max_file_bytes and --row_group_bytes must be positive")
    if self.dataset.rstrip("/") == self.output.rstrip("/"):
      raise ValueError("--dataset must be a directory of its own, not the run's --output")
    if self.push_to_hub and "://" in self.dataset:
      raise ValueError("--push_to_hub uploads a local --dataset; publish to a local disk, or copy "
                       f"{self.dataset} down first (docs/operations.md)")


def run_info(output: str) -> dict:
  """The run's settings and counts: _run.json and stats.json (two small files)."""
  run_manifest, stats_path = io.join(output, state.RUN), io.join(output, state.STATS)
  if not io.exists(run_manifest):
    raise FileNotFoundError(f"{output} holds no scoring run (no {state.RUN})")
  if not io.exists(stats_path):
    raise FileNotFoundError(f"the run in {output} is not finished (no {state.STATS}): rerun its "
                            "pipeline.run command to complete it first")
  return {**json.loads(io.read_bytes(run_manifest)), **json.loads(io.read_bytes(stats_path))}


def publish(config: PublishConfig, options: PipelineOptions, command: str) -> dict:
  run = run_info(config.output)
  threshold = run["threshold"] if config.threshold is None else config.threshold
  histogram = run["int_score_histogram"]
  expected = sum(histogram[str(i)] for i in range(6) if i >= threshold)
  if not expected:
    raise ValueError(f"no record of {config.output} reaches int_score >= {threshold:g}: nothing to publish")
  # Another threshold that keeps the same int_scores is the run's own subset.
  from_summaries = math.ceil(threshold) == math.ceil(run["threshold"]) and not config.from_scores
  with beam.Pipeline(runner=make_runner(options), options=options) as p:
    dataset.build(p, config.output, config.dataset, threshold, from_summaries, config.max_file_bytes,
                  config.row_group_bytes, run.get("max_record_bytes", 1 << 62), run, command, expected)
  report = json.loads(io.read_bytes(io.join(config.dataset, dataset.STATE, "publish.json")))
  if "conflict" in report:
    raise schemas.SchemaConflict(report["conflict"])
  return report


def push(dest: str, repo: str, dry_run: bool) -> None:
  """DEST's card and data files to the Hub repo, by huggingface_hub's resumable upload: a rerun
  after an interruption skips what was committed and re-sends no chunk the Hub already holds."""
  names = ["README.md"] + [f"{dataset.DATA}/{n}" for n in io.list_names(io.join(dest, dataset.DATA), ".parquet")]
  if dry_run:
    fs, root = io.filesystem(dest)
    total = 0
    for name in names:
      size = fs.size(io.join(root, name))
      total += size
      print(f"  {name}  {size:,} bytes")
    print(f"koedu: would upload {len(names)} files ({total:,} bytes) to the dataset repo {repo} "
          "(HfApi.upload_folder, resumable); nothing was uploaded")
    return
  from huggingface_hub import HfApi
  api = HfApi()
  api.create_repo(repo, repo_type="dataset", exist_ok=True)
  # huggingface_hub 2.x folded upload_large_folder into upload_folder: streamed, committed in
  # several commits, resumed by rerunning. The repo ends as DEST: stale data files are deleted.
  api.upload_folder(repo_id=repo, repo_type="dataset", folder_path=dest,
                    allow_patterns=["README.md", f"{dataset.DATA}/*.parquet"],
                    delete_patterns=[f"{dataset.DATA}/*.parquet"], commit_message="koedu: publish")
  print(f"koedu: uploaded {len(names)} files to https://huggingface.co/datasets/{repo}")


def making_command(argv: list[str]) -> str:
  """The command that makes DEST, for its card: the upload's flags left out, so that a card
  reads the same whether or not it was pushed."""
  kept, skip = [], False
  for arg in argv:
    if skip:
      skip = False
    elif arg == "--push_to_hub":
      skip = True
    elif arg != "--dry_run" and not arg.startswith("--push_to_hub="):
      kept.append(arg)
  return shlex.join(["python", "-m", "pipeline.publish", *kept])


def main(argv: list[str] | None = None) -> int:
  process.start_logging()
  argv = list(sys.argv[1:] if argv is None else argv)
  # Our flags (options/catalog.py) are not PipelineOptions: --output would clash with pipeline.run's.
  o, beam_args = declarations.parser("pipeline.publish", doc=__doc__).parse_known_args(argv)
  from pipeline.options import unknown_flags
  unknown = unknown_flags(beam_args)  # Beam would only warn, and a typo would go unnoticed
  if unknown:
    print(f"error: unknown option {', '.join(unknown)}", file=sys.stderr)
    return 2
  try:
    # The namespace is exactly a PublishConfig (tests/options checks it).
    config = PublishConfig(**{**vars(o), "output": o.output.rstrip("/"), "dataset": o.dataset.rstrip("/")})
    report = publish(config, PipelineOptions(beam_args), making_command(argv))
  except Exception as err:
    status = faults.exit_code(err)
    if status == faults.EXIT_USAGE:
      print(f"error: {err}", file=sys.stderr)
    else:  # the job failed: a storage or worker fault; a rerun writes what is missing
      print(f"error: publishing failed ({type(err).__name__}: {err}). Files already written are kept; "
            "rerun the same command to finish.", file=sys.stderr)
    return status
  print(f"koedu: {report['rows']:,} records (int_score >= {report['threshold']:g}) in {report['files']} "
        f"files, {report['bytes']:,} bytes, in {config.dataset}")
  if config.push_to_hub:
    push(config.dataset, config.push_to_hub, config.dry_run)
  return 0


if __name__ == "__main__":
  process.imports_done()
  process.exit_now(main())
