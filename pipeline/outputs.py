"""Per-chunk outputs: scores/, edu/, errors/, and the `_done/` marker that says a chunk is done.

A chunk's files are each written whole (io.write_bytes_atomic) and its marker last, so a chunk
either counts as done with all its outputs present, or is redone by the next run. `_shards/`
records how many chunks each shard has once it has been read to the end, which lets a rerun
skip complete shards without opening them.
"""
from __future__ import annotations

import collections
import io as _io
import json
import logging
import time
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import io
from pipeline.records import Rejected, Scored

log = logging.getLogger(__name__)
SCORES, EDU, ERRORS, DONE, SHARDS = "scores", "edu", "errors", "_done", "_shards"
SCORE_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("row", pa.int64()), ("score", pa.float32()),
    ("int_score", pa.int64()), ("num_tokens", pa.int64()), ("truncated", pa.bool_())])


# Raw scores binned finely for the run's picture: -1..6 in steps of 0.1, outliers in the end bins.
SCORE_BINS = np.round(np.arange(-1.0, 6.0001, 0.1), 1)


def score_histogram(scores: list[float]) -> list[int]:
  clipped = np.clip(np.asarray(scores, np.float64), SCORE_BINS[0], SCORE_BINS[-1])
  return [int(n) for n in np.histogram(clipped, bins=SCORE_BINS)[0]]


def chunk_name(source: str, index: int) -> str:
  return f"{io.shard_key(source)}-{index:05d}"


def parquet_bytes(table: pa.Table) -> bytes:
  buffer = _io.BytesIO()
  pq.write_table(table, buffer, compression="zstd")
  return buffer.getvalue()


def scores_table(scored: list[Scored]) -> pa.Table:
  scored = sorted(scored, key=lambda s: s.row)
  return pa.table({name: [getattr(s, name) for s in scored] for name in SCORE_SCHEMA.names},
                  schema=SCORE_SCHEMA)


def edu_table(kept: list[tuple[Any, float, int]]) -> pa.Table:
  """(original record as read, score, int_score) to a table of every original field plus ours."""
  records = [item if isinstance(item, dict) else json.loads(item) for item, _, _ in kept]
  table = _table_from_records(records)
  for name in ("score", "int_score"):
    if name in table.column_names:  # a record's own field of that name yields to ours
      table = table.drop_columns([name])
  table = table.append_column("score", pa.array([s for _, s, _ in kept], pa.float32()))
  return table.append_column("int_score", pa.array([i for _, _, i in kept], pa.int64()))


def _table_from_records(records: list[dict]) -> pa.Table:
  names = list(dict.fromkeys(k for r in records for k in r))
  try:
    return pa.Table.from_pylist(records) if records else pa.table({})
  except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
    # Web records disagree on field types from one line to the next; keep every field, with the
    # ones Arrow cannot unify written as JSON text.
    columns = {}
    for name in names:
      values = [r.get(name) for r in records]
      try:
        columns[name] = pa.array(values)
      except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        columns[name] = pa.array([None if v is None else json.dumps(v, ensure_ascii=False, default=str)
                                  for v in values], pa.string())
    return pa.table(columns)


def chunk_stats(source: str, index: int, scored: list[Scored], rejected: list[Rejected],
                threshold: float) -> dict:
  histogram = np.bincount([s.int_score for s in scored], minlength=6)[:6]
  return {
      "source": source,
      "chunk": index,
      "records": len(scored) + sum(r.row is not None for r in rejected),
      "scored": len(scored),
      "kept": sum(s.int_score >= threshold for s in scored),
      "errored": len(rejected),
      "errors_by_reason": dict(collections.Counter(r.code for r in rejected)),
      "tokens": int(sum(s.num_tokens for s in scored)),
      "truncated": int(sum(s.truncated for s in scored)),
      "int_score_histogram": [int(n) for n in histogram],
      "score_histogram": score_histogram([s.score for s in scored]),
  }


def write_edu(directory: str, name: str, scored: Iterable[Scored], originals: dict[int, Any],
              threshold: float) -> int:
  kept = [(originals[s.row], s.score, s.int_score) for s in sorted(scored, key=lambda s: s.row)
          if s.int_score >= threshold]
  try:
    data = parquet_bytes(edu_table(kept))
  except Exception as err:  # field names or values Parquet will not take: keep each record whole
    log.warning("%s: edu records kept as JSON text (%s: %s)", name, type(err).__name__, err)
    records = [item if isinstance(item, dict) else json.loads(item) for item, _, _ in kept]
    data = parquet_bytes(pa.table({
        "record": pa.array([json.dumps(r, ensure_ascii=False, default=str) for r in records], pa.string()),
        "score": pa.array([s for _, s, _ in kept], pa.float32()),
        "int_score": pa.array([i for _, _, i in kept], pa.int64())}))
  io.write_bytes_atomic(io.join(directory, f"{name}.parquet"), data)
  return len(kept)


def write_chunk(output: str, source: str, index: int, scored: list[Scored], rejected: list[Rejected],
                originals: dict[int, Any], threshold: float) -> dict:
  """All outputs of one chunk, marker last; returns the chunk's stats."""
  name = chunk_name(source, index)
  rejected = sorted(rejected, key=lambda r: (r.row is not None, r.row or 0))
  io.write_bytes_atomic(io.join(output, SCORES, f"{name}.parquet"), parquet_bytes(scores_table(scored)))
  write_edu(io.join(output, EDU), name, scored, originals, threshold)
  if rejected:
    io.write_bytes_atomic(io.join(output, ERRORS, f"{name}.jsonl"),
                          "".join(r.to_json() + "\n" for r in rejected).encode("utf-8"))
  stats = chunk_stats(source, index, scored, rejected, threshold)
  stats["written"] = time.time()  # tells this run's chunks from earlier runs' in stats.json
  io.write_bytes_atomic(io.join(output, DONE, f"{name}.json"), json.dumps(stats).encode())
  return stats


def done_chunks(output: str, source: str) -> set[int]:
  prefix = io.shard_key(source) + "-"
  return {int(n[len(prefix):-len(".json")]) for n in io.list_names(io.join(output, DONE), ".json", prefix)}


def write_shard_manifest(output: str, source: str, chunks: int) -> None:
  path = io.join(output, SHARDS, f"{io.shard_key(source)}.json")
  if not io.exists(path):
    io.write_bytes_atomic(path, json.dumps({"source": source, "chunks": chunks}).encode())


def complete_shards(output: str) -> set[str]:
  """Shards read to the end by an earlier run with every chunk done."""
  done = collections.Counter(n.rsplit("-", 1)[0] for n in io.list_names(io.join(output, DONE), ".json"))
  complete = set()
  for name in io.list_names(io.join(output, SHARDS), ".json"):
    manifest = json.loads(io.read_bytes(io.join(output, SHARDS, name)))
    if done[name[:-len(".json")]] >= manifest["chunks"]:
      complete.add(manifest["source"])
  return complete


def read_markers(output: str) -> list[dict]:
  """Stats of every chunk done in this output directory."""
  directory = io.join(output, DONE)
  return [json.loads(io.read_bytes(io.join(directory, n))) for n in io.list_names(directory, ".json")]
