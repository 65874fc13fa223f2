"""Per-shard outputs: scores/, edu/, errors/, and the `_shards/` marker that says a shard is done.

Every shard's files are written whole (see io.write_bytes_atomic) and its marker last, so a
shard either counts as done with all its outputs present, or is redone on the next run.
"""
from __future__ import annotations

import collections
import io as _io
import json
import time
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import io
from pipeline.records import Rejected, Scored

SCORES, EDU, ERRORS, MARKERS = "scores", "edu", "errors", "_shards"
SCORE_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("row", pa.int64()), ("score", pa.float32()),
    ("int_score", pa.int64()), ("num_tokens", pa.int64()), ("truncated", pa.bool_())])


def _parquet_bytes(table: pa.Table) -> bytes:
  buffer = _io.BytesIO()
  pq.write_table(table, buffer, compression="zstd")
  return buffer.getvalue()


def scores_table(scored: list[Scored]) -> pa.Table:
  scored = sorted(scored, key=lambda s: s.row)
  return pa.table({name: [getattr(s, name) for s in scored] for name in SCORE_SCHEMA.names},
                  schema=SCORE_SCHEMA)


def edu_table(source: str, kept: dict[int, Scored], text_field: str, id_field: str) -> pa.Table:
  """The kept records with every original field, plus score and int_score, read again from the
  shard: records are not carried through the model, and a new threshold needs no rescoring."""
  from pipeline.records import parse

  if not kept:
    table, rows = pa.table({}), []  # never reread a shard for nothing: it may be unreadable
  elif source.endswith(io.PARQUET_SUFFIXES):
    # Keep the shard's own schema: read the table and take the kept rows.
    import fsspec
    with fsspec.open(source, "rb") as f:
      table = pq.read_table(f)
    rows = sorted(kept)
    table = table.take(pa.array(rows, pa.int64()))
  else:
    records, rows, last = [], [], max(kept)
    # Stop at the last kept row: the rest may be unreadable (a truncated shard) or just long.
    for row, item in io.iter_rows(source):
      if row in kept:
        records.append(json.loads(item))
        rows.append(row)
      if row >= last:
        break
    table = _table_from_records(records)
  scores = [kept[r] for r in rows]
  for name in ("score", "int_score"):
    if name in table.column_names:  # the record's own field of that name yields to ours
      table = table.drop_columns([name])
  table = table.append_column("score", pa.array([s.score for s in scores], pa.float32()))
  return table.append_column("int_score", pa.array([s.int_score for s in scores], pa.int64()))


def _table_from_records(records: list[dict]) -> pa.Table:
  if not records:
    return pa.table({})
  try:
    return pa.Table.from_pylist(records)
  except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
    # Web records disagree on field types from one line to the next; keep every field, with the
    # ones Arrow cannot unify written as JSON text.
    names = list(dict.fromkeys(k for r in records for k in r))
    columns = {}
    for name in names:
      values = [r.get(name) for r in records]
      try:
        columns[name] = pa.array(values)
      except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        columns[name] = pa.array([None if v is None else json.dumps(v, ensure_ascii=False)
                                  for v in values], pa.string())
    return pa.table(columns)


def shard_stats(source: str, scored: list[Scored], rejected: list[Rejected], threshold: float) -> dict:
  histogram = np.bincount([s.int_score for s in scored], minlength=6)[:6]
  return {
      "source": source,
      "records": len(scored) + sum(r.row is not None for r in rejected),
      "scored": len(scored),
      "kept": sum(s.int_score >= threshold for s in scored),
      "errored": len(rejected),
      "errors_by_reason": dict(collections.Counter(r.code for r in rejected)),
      "tokens": int(sum(s.num_tokens for s in scored)),
      "truncated": int(sum(s.truncated for s in scored)),
      "int_score_histogram": [int(n) for n in histogram],
  }


def write_shard(output: str, source: str, scored: Iterable[Scored], rejected: Iterable[Rejected],
                threshold: float, text_field: str, id_field: str) -> dict:
  """All outputs of one shard, marker last; returns the shard's stats."""
  scored, rejected = list(scored), sorted(rejected, key=lambda r: (r.row is not None, r.row or 0))
  key = io.shard_key(source)
  io.write_bytes_atomic(io.join(output, SCORES, f"{key}.parquet"), _parquet_bytes(scores_table(scored)))
  write_edu(output, EDU, source, scored, threshold, text_field, id_field)
  if rejected:
    io.write_bytes_atomic(io.join(output, ERRORS, f"{key}.jsonl"),
                          "".join(r.to_json() + "\n" for r in rejected).encode("utf-8"))
  stats = shard_stats(source, scored, rejected, threshold)
  stats["written"] = time.time()  # tells this run's shards from earlier runs' in stats.json
  io.write_bytes_atomic(io.join(output, MARKERS, f"{key}.json"), json.dumps(stats).encode())
  return stats


def write_edu(output: str, subdir: str, source: str, scored: Iterable[Scored], threshold: float,
              text_field: str, id_field: str) -> int:
  kept = {s.row: s for s in scored if s.int_score >= threshold}
  table = edu_table(source, kept, text_field, id_field)
  io.write_bytes_atomic(io.join(output, subdir, f"{io.shard_key(source)}.parquet"), _parquet_bytes(table))
  return len(kept)


def read_markers(output: str) -> dict[str, dict]:
  """source -> stats of every shard a previous run finished."""
  markers = {}
  for name in io.list_names(io.join(output, MARKERS), ".json"):
    stats = json.loads(io.read_bytes(io.join(output, MARKERS, name)))
    markers[stats["source"]] = stats
  return markers
