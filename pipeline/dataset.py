"""The steps of `python -m pipeline.publish`: which edu chunks there are, the one schema, the
plan of files, and the files.

  unit summaries (or a rethreshold of scores/) -> Edu: a unit's chunks (index, rows, bytes), schemas
  units' distinct schemas -> combined -> the one schema (or SchemaConflict)
  units' chunks -> combined -> sorted by (source, index) -> cut into files -> FileSpec
  FileSpec -> spread over the workers -> read its chunks in order, conform, write -> its counts

Files are planned before any is written, from the byte counts the scoring run recorded, so
every name carries its `-of-YYYYY` from the start and no file is renamed. Each file is written
whole (io.put_file_atomic) and then its marker, which holds the digest of its plan: a rerun
skips a file whose marker agrees and writes the others, with the same bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import io, schemas
from pipeline.state import layout

STATE = ".koedu"  # under DEST: markers and the report; not part of the dataset, not uploaded
DATA = "data"
LAST = ("score", "int_score")  # our columns, after the records' own


class Edu(NamedTuple):
  """A unit's (or shard's) chunks that kept records, as its summary (or the rethreshold step)
  describes their edu files: compact, since every chunk of the corpus meets in one plan."""
  source: str
  chunks: np.ndarray  # int64 [k, 3]: chunk index, rows, bytes
  schemas: tuple  # ((first chunk index holding it, schemas.encode), ...), each schema once


class FileSpec(NamedTuple):
  name: str  # data/<name>
  runs: tuple  # ((source, int64 [k, 2]: chunk index, rows), ...): its chunks, in order
  digest: str  # of the name and the chunks; with the schema, what the marker must agree with


def edu_of(source: str, entries: list[dict]) -> Edu | None:
  """Edu from outputs.edu_entry dicts (with "chunk"), or None if no chunk kept a record."""
  entries = sorted((e for e in entries if e["rows"]), key=lambda e: e["chunk"])
  if not entries:
    return None
  first = {}
  for e in entries:
    first.setdefault(e["schema"], e["chunk"])
  return Edu(source, np.array([(e["chunk"], e["rows"], e["bytes"]) for e in entries], np.int64),
             tuple((index, text) for text, index in first.items()))


def read_summary(path: str):
  """A unit summary's path -> its Edu."""
  summary = json.loads(io.read_bytes(path))
  edu = summary.get("edu")
  if edu is None or "edu_schemas" not in summary or len(edu) != summary["chunks"]:
    raise ValueError(
        f"{path} does not record its chunks' edu schemas (scored by an earlier koedu): publish "
        "with --from_scores, which rebuilds the subset from scores/ and the shards")
  found = edu_of(summary["source"], [{**e, "schema": summary["edu_schemas"][e["schema"]]} for e in edu])
  if found is not None:
    yield found


def summary_paths(output: str):
  """A partition of _units/ -> the paths of its summaries: one listing."""
  def list_part(part: str):
    return [io.join(output, layout.UNITS, part, name)
            for name in layout.list_partition(output, layout.UNITS, part)]
  return list_part


class UnionSchemas(beam.CombineFn):
  """(source, index, schema) of every chunk -> {"schema": the records' one schema} or
  {"conflict": SchemaConflict's message, naming the field, the types, a shard for each}: a
  value, not an exception, so that it reaches the launcher from any runner by its type. Fields
  are ordered by the first chunk (in source, index order) holding each, so the result does not
  depend on the order the runner combines in."""

  def create_accumulator(self):
    return None

  def add_input(self, acc, element):
    source, index, text = element
    schema = schemas.decode(text)
    found = schemas.paths(schema)
    one = {"schema": schema, "order": {p: (source, index, i) for i, p in enumerate(found)},
           "witness": {p: (str(t), source) for p, t in found.items()}}
    return self._merge(acc, one)

  def merge_accumulators(self, accumulators):
    merged = None
    for acc in accumulators:
      merged = self._merge(merged, acc)
    return merged

  def extract_output(self, acc):
    if acc is None or "conflict" in acc:
      return acc
    fields = [f for f in acc["schema"] if f.name not in LAST] + [acc["schema"].field(n) for n in LAST]
    return {"schema": schemas.encode(pa.schema(fields))}

  @staticmethod
  def _merge(a, b):
    if a is None or b is None:
      return a or b
    if "conflict" in a or "conflict" in b:  # the first in (message) order, whatever the runner's
      return min((x for x in (a, b) if "conflict" in x), key=lambda x: x["conflict"])
    try:
      return UnionSchemas._union(a, b)
    except schemas.SchemaConflict as err:
      return {"conflict": str(err)}

  @staticmethod
  def _union(a, b):
    order = {p: min(k for k in (a["order"].get(p), b["order"].get(p)) if k is not None)
             for p in a["order"].keys() | b["order"].keys()}
    try:
      schema = schemas.union(a["schema"], b["schema"], order)
    except schemas.Clash as clash:
      (left, in_left), (right, in_right) = a["witness"][clash.path], b["witness"][clash.path]
      raise schemas.SchemaConflict(
          f"schema conflict: field {clash.path!r} is {left} in {in_left} and {right} in {in_right}; "
          "no lossless promotion joins them (make the field one type in the shards, or drop it)") from None
    witness = {}
    for path, t in schemas.paths(schema).items():
      holders = sorted(w[path] for w in (a["witness"], b["witness"]) if path in w)
      exact = [h for h in holders if h[0] == str(t)]
      witness[path] = (exact or holders)[0]
    return {"schema": schema, "order": order, "witness": witness}


def plan_files(units: list, max_file_bytes: int) -> list[FileSpec]:
  """(source, int64 [k, 3]: index, rows, bytes) of every unit -> the files: chunks in (source,
  index) order, cut where a file would pass max_file_bytes (a larger chunk is a file alone)."""
  by_source = {}
  for source, chunks in units:
    by_source.setdefault(source, []).append(chunks)
  groups, current, size = [], [], 0
  for source in sorted(by_source):
    chunks = np.concatenate(by_source[source])
    chunks = chunks[np.argsort(chunks[:, 0], kind="stable")]
    start = 0
    for i, nbytes in enumerate(chunks[:, 2].tolist()):
      if (current or i > start) and size + nbytes > max_file_bytes:
        if i > start:
          current.append((source, chunks[start:i, :2]))
        groups.append(current)
        current, size, start = [], 0, i
      size += nbytes
    current.append((source, chunks[start:, :2]))
  if current:
    groups.append(current)
  specs = []
  for i, group in enumerate(groups):
    name = f"train-{i:05d}-of-{len(groups):05d}.parquet"
    digest = hashlib.sha256(json.dumps([name, [(s, c.tolist()) for s, c in group]]).encode()).hexdigest()
    specs.append(FileSpec(name, tuple(group), digest))
  return specs


def _read_table(path: str) -> pa.Table:
  fs, p = io.filesystem(path)
  with fs.open(p, "rb") as f:
    return pq.read_table(f)


def marker_path(dest: str, name: str) -> str:
  return io.join(dest, STATE, "files", name + ".json")


class WriteFile(beam.DoFn):
  """A FileSpec -> data/<name>, its chunks read in order and brought to the one schema, row
  groups of about row_group_bytes (uncompressed) -> the file's counts, also kept as its marker."""

  def __init__(self, dest: str, edu_dir: str, row_group_bytes: int):
    self._dest, self._edu_dir, self._row_group_bytes = dest, edu_dir, row_group_bytes

  def process(self, spec: FileSpec, union: dict):
    if "conflict" in union:
      return  # nothing is written: the launcher reports the conflict
    schema_text = union["schema"]
    schema = schemas.decode(schema_text)
    digest = hashlib.sha256((spec.digest + schema_text + str(self._row_group_bytes)).encode()).hexdigest()
    marker = marker_path(self._dest, spec.name)
    if io.exists(marker):
      done = json.loads(io.read_bytes(marker))
      if done["digest"] == digest:
        yield done
        return
    histogram = np.zeros(6, np.int64)
    rows = 0
    with tempfile.TemporaryDirectory(prefix="koedu-publish-") as tmp:
      local = os.path.join(tmp, spec.name)
      with pq.ParquetWriter(local, schema, compression="zstd", write_page_index=True) as writer:
        pending = []
        for source, index, expected in ((s, i, r) for s, c in spec.runs for i, r in c.tolist()):
          path = io.join(self._edu_dir, layout.chunk_name(source, index) + ".parquet")
          table = io.retrying(lambda: _read_table(path), f"reading {path}")
          if table.num_rows != expected:  # the run's outputs changed since its summary: stop
            raise RuntimeError(f"{path} holds {table.num_rows} rows, its unit summary {expected}")
          table = schemas.conform(table, schema)
          histogram += np.bincount(np.clip(table["int_score"].to_numpy(), 0, 5), minlength=6)
          rows += table.num_rows
          pending.append(table)
          pending = self._flush(writer, pending, final=False)
        self._flush(writer, pending, final=True)
      size = os.path.getsize(local)
      io.put_file_atomic(local, io.join(self._dest, DATA, spec.name))
    done = {"name": spec.name, "rows": rows, "bytes": size, "digest": digest,
            "int_score_histogram": histogram.tolist()}
    io.write_bytes_atomic(marker, json.dumps(done).encode())
    yield done

  def _flush(self, writer: pq.ParquetWriter, pending: list, final: bool) -> list:
    """Writes whole row groups of the pending rows (all of them when final); returns the rest."""
    if not pending:
      return pending
    table = pa.concat_tables(pending) if len(pending) > 1 else pending[0]
    if table.nbytes < self._row_group_bytes and not final:
      return [table]
    group = max(1, self._row_group_bytes * table.num_rows // max(1, table.nbytes))
    n = table.num_rows if final else table.num_rows // group * group
    if n:
      writer.write_table(table.slice(0, n), row_group_size=group)
    return [table.slice(n)] if n < table.num_rows else []


def staged(stage: str, max_record_bytes: int, output: str):
  """Another threshold: a shard's kept rows (from scores/) -> its chunks' edu files written
  under `stage` by rethreshold's own step (which refuses a shard changed since `output` scored
  it) -> the shard's Edu."""
  from pipeline import rethreshold

  def write(element):
    written = rethreshold._write_shard(element, stage, max_record_bytes, output)["chunks"]
    found = edu_of(element[0], [{"chunk": int(e["name"].rsplit("-", 1)[1]), **e} for e in written])
    if found is not None:
      yield found
  return write


def finish(files: list[dict], dest: str, union: dict | None, names: list[str], run: dict,
           threshold: float, command: str, expected_rows: int) -> dict:
  """Once every file is written: checks the counts, removes what an earlier publish with another
  plan left in data/, writes README.md and the report (publish.json, which the launcher reads).
  The card comes last: a DEST with a card is complete. A schema conflict only goes into the
  report."""
  from pipeline import card
  if union is not None and "conflict" in union:
    report = {"conflict": union["conflict"]}
    io.write_bytes_atomic(io.join(dest, STATE, "publish.json"), json.dumps(report, indent=2).encode())
    return report
  files = sorted(files, key=lambda f: f["name"])
  if [f["name"] for f in files] != sorted(names):
    raise RuntimeError(f"files written {[f['name'] for f in files]} are not the plan's {sorted(names)}")
  rows = sum(f["rows"] for f in files)
  if not files or rows != expected_rows:
    raise RuntimeError(f"published {rows:,} records; the run's stats.json counts {expected_rows:,} at "
                       f"int_score >= {threshold:g}")
  for kind, suffix in ((DATA, ".parquet"), (io.join(STATE, "files"), ".json")):
    for name in io.list_names(io.join(dest, kind), suffix):
      if name[:-len(suffix)] not in names and name not in names:
        io.remove(io.join(dest, kind, name))
  schema = schemas.decode(union["schema"])
  report = {"files": len(files), "rows": rows, "bytes": sum(f["bytes"] for f in files),
            "threshold": threshold, "columns": schema.names,
            "int_score_histogram": [sum(f["int_score_histogram"][i] for f in files) for i in range(6)]}
  io.write_bytes_atomic(io.join(dest, STATE, "publish.json"), json.dumps(report, indent=2).encode())
  io.write_bytes_atomic(io.join(dest, "README.md"),
                        card.card(schema, run, files, threshold, command).encode("utf-8"))
  return report


def build(pipeline: beam.Pipeline, output: str, dest: str, threshold: float, from_summaries: bool,
          max_file_bytes: int, row_group_bytes: int, max_record_bytes: int, run: dict, command: str,
          expected_rows: int) -> None:
  """Adds the publishing steps to `pipeline`. The graph holds names of directories only."""
  if from_summaries:
    chunks = (pipeline
              | "Partitions" >> beam.Create(list(layout.PARTITIONS))
              | "ListSummaries" >> beam.FlatMap(summary_paths(output))
              | "SpreadSummaries" >> beam.Reshuffle()
              | "Edu" >> beam.FlatMap(read_summary))
    edu_dir = io.join(output, layout.EDU)
  else:
    from pipeline import rethreshold
    edu_dir = io.join(dest, STATE, f"edu_t{threshold:g}")
    chunks = (pipeline
              | "Scores" >> beam.Create([io.join(output, layout.SCORES)])
              | "ScoresFiles" >> beam.FlatMap(lambda d: [io.join(d, n) for n in io.list_names(d, ".parquet")])
              | "SpreadScores" >> beam.Reshuffle()
              | "Kept" >> beam.FlatMap(rethreshold._kept_of_chunk, threshold)
              | "ByShard" >> beam.GroupByKey()  # row numbers and scores only, never documents
              | "Edu" >> beam.FlatMap(staged(edu_dir, max_record_bytes, output)))
  schema = (chunks
            | "Schemas" >> beam.FlatMap(lambda e: [(e.source, i, text) for i, text in e.schemas])
            | "UnionSchemas" >> beam.CombineGlobally(UnionSchemas()))
  plan = (chunks
          | "Sizes" >> beam.Map(lambda e: (e.source, e.chunks))
          | "AllSizes" >> beam.combiners.ToList()  # 24 bytes a chunk: 60 MB at 10B documents, on a worker
          | "Plan" >> beam.Map(plan_files, max_file_bytes))
  names = plan | "Names" >> beam.Map(lambda specs: [s.name for s in specs])
  (plan
   | "Files" >> beam.FlatMap(lambda specs: specs)
   | "SpreadFiles" >> beam.Reshuffle()
   | "Write" >> beam.ParDo(WriteFile(dest, edu_dir, row_group_bytes), beam.pvalue.AsSingleton(schema))
   | "Written" >> beam.combiners.ToList()
   | "Finish" >> beam.Map(finish, dest, beam.pvalue.AsSingleton(schema), beam.pvalue.AsSingleton(names),
                          run, threshold, command, expected_rows))
