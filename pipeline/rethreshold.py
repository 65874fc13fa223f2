"""`python -m pipeline.rethreshold`: the educational subset for another threshold, from scores/
and the original shards, without running the model.

  python -m pipeline.rethreshold --output DIR --threshold 4 [--edu_output DIR/edu_t4] [Beam options]

Writes one Parquet file per chunk, named as in edu/, with every original field plus score and
int_score, and a `_stats.json` with the counts. edu/ itself is left as the scoring run wrote it.
"""
from __future__ import annotations

import gc

if __name__ == "__main__":  # no garbage collection while the imports load: process.imports_done
  gc.disable()
  from pipeline import process as _process
  _process.start_logging()  # before Beam's import

import json
import logging
import sys

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

import options as declarations
from pipeline import io, outputs, process, shards, state
from pipeline.run import make_runner

log = logging.getLogger("koedu")


def _kept_of_chunk(scores_path: str, threshold: float):
  """(source, (chunk name, kept rows, their scores, their int_scores)) for one scores/ file."""
  fs, path = io.filesystem(scores_path)
  table = io.retrying(lambda: pq.read_table(fs.open(path, "rb")), f"reading {scores_path}")
  if not table.num_rows:
    return
  name = scores_path.rsplit("/", 1)[-1][:-len(".parquet")]
  int_score = table["int_score"].to_numpy()
  kept = np.flatnonzero(int_score >= threshold)
  yield table["source"][0].as_py(), (name, table["row"].to_numpy()[kept].tolist(),
                                     table["score"].to_numpy()[kept], int_score[kept])


def _write_shard(element, edu_output: str, max_record_bytes: int, output: str | None = None) -> dict:
  """Reads the shard once, up to its last kept row, and writes each chunk's edu file; returns
  the shard's counts and each chunk's outputs.edu_entry. A shard rewritten since it was scored
  into `output` is refused: its rows are no longer the ones scored."""
  source, chunks = element
  chunks = list(chunks)
  wanted = {row for _, rows, _, _ in chunks for row in rows}
  originals = {}
  if wanted:
    if output is not None:
      state.check_unchanged(output, source, [int(name.rsplit("-", 1)[1]) for name, _, _, _ in chunks])
    last = max(wanted)
    for row, item in shards.iter_records(source, max_record_bytes):
      if row in wanted:
        originals[row] = item
      if row is not None and row >= last:
        break
  written = []
  for name, rows, score, int_score in chunks:
    data = outputs.edu_bytes([originals[r] for r in rows], score, int_score)
    io.write_bytes_atomic(io.join(edu_output, f"{name}.parquet"), data)
    written.append({"name": name, **outputs.edu_entry(data)})
  return {"source": source, "kept": len(wanted), "chunks": written}


def _finish(counts, edu_output: str, threshold: float) -> None:
  counts = list(counts)
  report = {"threshold": threshold, "kept": sum(c["kept"] for c in counts), "shards": len(counts)}
  io.write_bytes_atomic(io.join(edu_output, "_stats.json"), json.dumps(report, indent=2).encode())
  print(f"koedu: {report['kept']:,} records kept at int_score >= {threshold:g} "
        f"from {report['shards']} shards, in {edu_output}")


def main(argv: list[str] | None = None) -> int:
  process.start_logging()
  # Our flags (options/catalog.py) are not PipelineOptions: --output would clash with pipeline.run's.
  parser = declarations.parser("pipeline.rethreshold", doc=__doc__)
  o, beam_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
  options = PipelineOptions(beam_args)
  output = o.output.rstrip("/")
  if not 0 <= o.threshold <= 5:
    print(f"error: --threshold must be within 0..5, got {o.threshold}", file=sys.stderr)
    return 2
  edu_output = o.edu_output or io.join(output, f"edu_t{o.threshold:g}")
  if edu_output.rstrip("/") == io.join(output, state.EDU):
    print("error: --edu_output must not be the run's own edu/", file=sys.stderr)
    return 2
  settings = state.recorded(output)
  if settings is None:
    print(f"error: {output} holds no scoring run (no {state.RUN})", file=sys.stderr)
    return 2
  max_record_bytes = settings.get("max_record_bytes", 1 << 62)
  scores_dir = io.join(output, state.SCORES)
  try:
    with beam.Pipeline(runner=make_runner(options), options=options) as p:
      (p
       | "Output" >> beam.Create([scores_dir])  # listed by a worker: nothing per chunk in the graph
       | "ScoresFiles" >> beam.FlatMap(lambda d: [io.join(d, n) for n in io.list_names(d, ".parquet")])
       | "Spread" >> beam.Reshuffle()
       | "Kept" >> beam.FlatMap(_kept_of_chunk, o.threshold)
       | "ByShard" >> beam.GroupByKey()  # row numbers and scores only, never documents
       | "WriteEdu" >> beam.Map(_write_shard, edu_output, max_record_bytes, output)
       | "All" >> beam.combiners.ToList()
       | "Stats" >> beam.Map(_finish, edu_output, o.threshold))
  except state.OutputMismatch as err:  # a shard rewritten since it was scored
    print(f"error: {err}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  process.imports_done()
  process.exit_now(main())
