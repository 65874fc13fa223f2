"""`python -m pipeline.rethreshold`: the educational subset for another threshold, from scores/
and the original shards, without running the model.

  python -m pipeline.rethreshold --output DIR --threshold 4 [--edu_output DIR/edu_t4] [Beam options]

Writes one Parquet file per chunk, named as in edu/, with every original field plus score and
int_score, and a `_stats.json` with the counts. edu/ itself is left as the scoring run wrote it.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import io, manifest, outputs
from pipeline.records import Scored
from pipeline.run import _runner

log = logging.getLogger("koedu")


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m pipeline.rethreshold", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--output", required=True, help="The scoring run's output directory.")
  parser.add_argument("--threshold", type=float, required=True, help="Keep int_score >= threshold.")
  parser.add_argument("--edu_output", default=None, help="Where to write (default DIR/edu_t<threshold>).")
  return parser


def _kept_of_chunk(scores_path: str, threshold: float):
  """(source, (chunk name, [kept scores])) for one scores/ file."""
  fs, path = io.filesystem(scores_path)
  with fs.open(path, "rb") as f:
    rows = pq.read_table(f).to_pylist()
  name = scores_path.rsplit("/", 1)[-1][:-len(".parquet")]
  kept = [Scored(**r) for r in rows if r["int_score"] >= threshold]
  if rows:
    yield rows[0]["source"], (name, kept)


def _write_shard(element, edu_output: str, threshold: float) -> dict:
  """Reads the shard once, up to its last kept row, and writes each chunk's edu file."""
  source, chunks = element
  chunks = list(chunks)
  wanted = {s.row for _, kept in chunks for s in kept}
  originals = {}
  if wanted:
    last = max(wanted)
    for row, item in io.iter_rows(source):
      if row in wanted:
        originals[row] = item
      if row >= last:
        break
  for name, kept in chunks:
    outputs.write_edu(edu_output, name, kept, originals, threshold)
  return {"source": source, "kept": len(wanted)}


def _finish(counts, edu_output: str, threshold: float) -> None:
  counts = list(counts)
  report = {"threshold": threshold, "kept": sum(c["kept"] for c in counts), "shards": len(counts)}
  io.write_bytes_atomic(io.join(edu_output, "_stats.json"), json.dumps(report, indent=2).encode())
  print(f"koedu: {report['kept']:,} records kept at int_score >= {threshold:g} "
        f"from {report['shards']} shards, in {edu_output}")


def main(argv: list[str] | None = None) -> int:
  logging.basicConfig(level=logging.WARNING)
  # Our flags are not PipelineOptions: --output would clash with pipeline.run's.
  o, beam_args = _parser().parse_known_args(sys.argv[1:] if argv is None else argv)
  options = PipelineOptions(beam_args)
  output = o.output.rstrip("/")
  if not 0 <= o.threshold <= 5:
    print(f"error: --threshold must be within 0..5, got {o.threshold}", file=sys.stderr)
    return 2
  edu_output = o.edu_output or io.join(output, f"edu_t{o.threshold:g}")
  if edu_output.rstrip("/") == io.join(output, outputs.EDU):
    print("error: --edu_output must not be the run's own edu/", file=sys.stderr)
    return 2
  scores = [io.join(output, outputs.SCORES, n) for n in io.list_names(io.join(output, outputs.SCORES), ".parquet")]
  if not scores or not io.exists(io.join(output, manifest.RUN_MANIFEST)):
    print(f"error: {output} holds no scoring run (no scores/ or {manifest.RUN_MANIFEST})", file=sys.stderr)
    return 2
  with beam.Pipeline(runner=_runner(options), options=options) as p:
    (p
     | "ScoresFiles" >> beam.Create(scores)
     | "Kept" >> beam.FlatMap(_kept_of_chunk, o.threshold)
     | "ByShard" >> beam.GroupByKey()
     | "WriteEdu" >> beam.Map(_write_shard, edu_output, o.threshold)
     | "All" >> beam.combiners.ToList()
     | "Stats" >> beam.Map(_finish, edu_output, o.threshold))
  return 0


if __name__ == "__main__":
  sys.exit(main())
