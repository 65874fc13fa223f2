"""A chunk's outputs: scores/, edu/, errors/ (its `_done/` marker, written after them, is the
run's state: pipeline/state).

Every file of a chunk is written whole and named by the chunk alone, so a retried or rerun chunk
replaces, never adds to, what an earlier attempt left: its errors/ file is written when it has
errors and removed when it has none.
"""
from __future__ import annotations

import collections
import dataclasses
import io as _io
import json
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import io, schemas, state
from pipeline.records import Rejected

log = logging.getLogger(__name__)
SCORE_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("row", pa.int64()), ("score", pa.float32()),
    ("int_score", pa.int64()), ("num_tokens", pa.int64()), ("truncated", pa.bool_())])
# Raw scores binned finely for the run's picture: -1..6 in steps of 0.1, outliers in the end bins.
SCORE_BINS = np.round(np.arange(-1.0, 6.0001, 0.1), 1)
COUNTS = ("records", "scored", "kept", "errored", "tokens", "truncated")


@dataclasses.dataclass
class ScoredChunk:
  """A chunk after scoring, column by column (one entry per scored document, by row)."""
  source: str
  index: int
  rows: np.ndarray  # int64, ascending
  ids: list[str]
  score: np.ndarray  # float32
  int_score: np.ndarray  # int64
  num_tokens: np.ndarray  # int64
  truncated: np.ndarray  # bool
  originals: list  # each document's record as read (JSON line bytes or Parquet row), for edu/
  rejected: list[Rejected]


def parquet_bytes(table: pa.Table) -> bytes:
  buffer = _io.BytesIO()
  pq.write_table(table, buffer, compression="zstd")
  return buffer.getvalue()


def scores_table(chunk: ScoredChunk) -> pa.Table:
  return pa.table({"id": pa.array(chunk.ids, pa.string()),
                   "source": pa.array([chunk.source] * len(chunk.ids), pa.string()),
                   "row": pa.array(chunk.rows, pa.int64()), "score": pa.array(chunk.score, pa.float32()),
                   "int_score": pa.array(chunk.int_score, pa.int64()),
                   "num_tokens": pa.array(chunk.num_tokens, pa.int64()),
                   "truncated": pa.array(chunk.truncated, pa.bool_())}, schema=SCORE_SCHEMA)


def edu_bytes(originals: list, score: np.ndarray, int_score: np.ndarray) -> bytes:
  """The kept records, every original field plus score and int_score, as Parquet."""
  records = [item if isinstance(item, dict) else json.loads(item) for item in originals]
  try:
    table = _table_from_records(records)
    for name in ("score", "int_score"):
      if name in table.column_names:  # a record's own field of that name yields to ours
        table = table.drop_columns([name])
    table = table.append_column("score", pa.array(score, pa.float32()))
    return parquet_bytes(table.append_column("int_score", pa.array(int_score, pa.int64())))
  except Exception as err:  # field names or values Parquet will not take: keep each record whole
    log.warning("edu records kept as JSON text (%s: %s)", type(err).__name__, err)
    return parquet_bytes(pa.table({
        "record": pa.array([json.dumps(r, ensure_ascii=False, default=str) for r in records], pa.string()),
        "score": pa.array(score, pa.float32()), "int_score": pa.array(int_score, pa.int64())}))


def edu_entry(data: bytes) -> dict:
  """What publishing needs of a chunk's edu/ file, from its footer: its rows, its size and its
  schema (pipeline/publish.py unions these instead of opening every file)."""
  parquet = pq.ParquetFile(pa.BufferReader(data))
  return {"rows": parquet.metadata.num_rows, "bytes": len(data),
          "schema": schemas.encode(parquet.schema_arrow)}


def _table_from_records(records: list[dict]) -> pa.Table:
  try:
    # Every record's fields, not the first one's only (Table.from_pylist); a field null in
    # every record stays, typed null, so the chunk's file says it is there.
    return pa.Table.from_struct_array(pa.array(records)) if records else pa.table({})
  except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
    # Web records disagree on field types from one line to the next; keep every field, with the
    # ones Arrow cannot unify written as JSON text.
    columns = {}
    for name in dict.fromkeys(k for r in records for k in r):
      values = [r.get(name) for r in records]
      try:
        columns[name] = pa.array(values)
      except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        columns[name] = pa.array([None if v is None else json.dumps(v, ensure_ascii=False, default=str)
                                  for v in values], pa.string())
    return pa.table(columns)


def score_histogram(scores) -> list[int]:
  clipped = np.clip(np.asarray(scores, np.float64), SCORE_BINS[0], SCORE_BINS[-1])
  return [int(n) for n in np.histogram(clipped, bins=SCORE_BINS)[0]]


def chunk_stats(chunk: ScoredChunk, threshold: float) -> dict:
  return {
      "source": chunk.source,
      "chunk": chunk.index,
      "records": len(chunk.rows) + sum(r.row is not None for r in chunk.rejected),
      "scored": len(chunk.rows),
      "kept": int(np.sum(chunk.int_score >= threshold)),
      "errored": len(chunk.rejected),
      "errors_by_reason": dict(collections.Counter(r.code for r in chunk.rejected)),
      "tokens": int(chunk.num_tokens.sum()),
      "truncated": int(chunk.truncated.sum()),
      "int_score_histogram": [int(n) for n in np.bincount(chunk.int_score, minlength=6)[:6]],
      "score_histogram": score_histogram(chunk.score),
  }


def write_chunk(output: str, chunk: ScoredChunk, threshold: float) -> dict:
  """All outputs of one chunk but its marker; returns the chunk's counts (the marker's content,
  less what pipeline/state adds)."""
  source, index = chunk.source, chunk.index
  io.write_bytes_atomic(state.output_path(output, state.SCORES, source, index),
                        parquet_bytes(scores_table(chunk)))
  kept = np.flatnonzero(chunk.int_score >= threshold)
  edu = edu_bytes([chunk.originals[i] for i in kept], chunk.score[kept], chunk.int_score[kept])
  io.write_bytes_atomic(state.output_path(output, state.EDU, source, index), edu)
  errors = state.output_path(output, state.ERRORS, source, index)
  if chunk.rejected:
    rejected = sorted(chunk.rejected, key=lambda r: (r.row is not None, r.row or 0))
    io.write_bytes_atomic(errors, "".join(r.to_json() + "\n" for r in rejected).encode("utf-8"))
  else:
    io.remove(errors)  # an earlier attempt's, which this one replaces
  stats = chunk_stats(chunk, threshold)
  stats["edu"] = edu_entry(edu)
  return stats


def empty_totals() -> dict:
  return {**{k: 0 for k in COUNTS}, "errors_by_reason": {}, "int_score_histogram": [0] * 6,
          "score_histogram": [0] * (len(SCORE_BINS) - 1), "chunks": 0}


def add(totals: dict, counts: dict) -> dict:
  """Sums chunk counts (a marker) or totals (a summary) into `totals`, in place."""
  for k in COUNTS:
    totals[k] += counts[k]
  reasons = collections.Counter(totals["errors_by_reason"])
  reasons.update(counts["errors_by_reason"])
  totals["errors_by_reason"] = dict(sorted(reasons.items()))
  for name in ("int_score_histogram", "score_histogram"):
    totals[name] = [a + b for a, b in zip(totals[name], counts[name])]
  totals["chunks"] += counts.get("chunks", 1)
  return totals



def edu_fields(edu: list[dict]) -> dict:
  """A unit summary's fields for publishing: each chunk's edu_entry (with its "chunk" index),
  what publishing plans from. The unit's distinct edu schemas are listed once, in
  "edu_schemas", and its chunks point into that list."""
  distinct = list(dict.fromkeys(e["schema"] for e in edu))
  chunks = [{**e, "schema": distinct.index(e["schema"])} for e in sorted(edu, key=lambda e: e["chunk"])]
  return {"edu": chunks, "edu_schemas": distinct}
