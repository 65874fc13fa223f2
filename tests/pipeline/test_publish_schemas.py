"""One schema from chunks' schemas: lossless promotions only, conflicts named, an order that
does not depend on the order the runner combines in; the file plan."""
from __future__ import annotations

import itertools

import pyarrow as pa
import pytest

from pipeline import dataset, schemas


def union_of(*chunks):
  """The published schema of (source, index, schema) chunks, combined in the given order."""
  fn = dataset.UnionSchemas()
  acc = fn.create_accumulator()
  for source, index, schema in chunks:
    acc = fn.add_input(acc, (source, index, schemas.encode(schema)))
  out = fn.extract_output(acc)
  if "conflict" in out:
    raise schemas.SchemaConflict(out["conflict"])
  return schemas.decode(out["schema"])


OURS = [("score", pa.float32()), ("int_score", pa.int64())]


def test_fields_are_unioned_and_promoted_losslessly():
  a = pa.schema([("id", pa.string()), ("n", pa.int32()), ("url", pa.null()),
                 ("meta", pa.struct([("year", pa.int32())])), ("t", pa.timestamp("ms", "UTC")),
                 ("tags", pa.list_(pa.null())), *OURS])
  b = pa.schema([("id", pa.large_string()), ("n", pa.int64()), ("url", pa.string()),
                 ("meta", pa.struct([("lang", pa.string()), ("year", pa.int64())])),
                 ("t", pa.timestamp("us", "UTC")), ("tags", pa.list_(pa.string())), ("u8", pa.uint8()), *OURS])
  c = pa.schema([("u8", pa.int8()), ("x", pa.float32()), *OURS])
  want = pa.schema([("id", pa.large_string()), ("n", pa.int64()), ("url", pa.string()),
                    ("meta", pa.struct([("year", pa.int64()), ("lang", pa.string())])),
                    ("t", pa.timestamp("us", "UTC")), ("tags", pa.list_(pa.string())), ("u8", pa.int16()),
                    ("x", pa.float32()), *OURS])
  chunks = [("s1", 0, a), ("s2", 0, b), ("s3", 5, c)]
  for order in itertools.permutations(chunks):  # the runner's order changes nothing
    got = union_of(*order)
    assert got.equals(want), (order, got)


@pytest.mark.parametrize("left, right", [(pa.int64(), pa.float64()), (pa.string(), pa.int64()),
                                         (pa.uint64(), pa.int64()), (pa.timestamp("s"), pa.timestamp("s", "UTC"))])
def test_a_conflict_names_the_field_its_types_and_a_shard_for_each(left, right):
  a = pa.schema([("meta", pa.struct([("year", pa.null())])), *OURS])
  b = pa.schema([("meta", pa.struct([("year", left)])), *OURS])
  c = pa.schema([("meta", pa.struct([("year", right)])), *OURS])
  with pytest.raises(schemas.SchemaConflict) as err:
    union_of(("gs://a/0.jsonl", 0, a), ("gs://a/1.jsonl", 3, b), ("gs://a/2.parquet", 1, c))
  # The shard of the null year is not named for `left`: it does not hold that type.
  assert f"field 'meta.year' is {left} in gs://a/1.jsonl and {right} in gs://a/2.parquet" in str(err.value)


def test_conform_fills_missing_fields_and_casts_nested_ones():
  table = pa.table({"meta": pa.array([{"year": 1}, None], pa.struct([("year", pa.int32())])),
                    "tags": pa.array([[1], None], pa.list_(pa.int32())), "url": pa.nulls(2)})
  schema = pa.schema([("id", pa.string()), ("url", pa.string()),
                      ("meta", pa.struct([("lang", pa.string()), ("year", pa.int64())])),
                      ("tags", pa.large_list(pa.int64()))])
  got = schemas.conform(table, schema)
  assert got.schema.equals(schema)
  assert got.to_pylist() == [{"id": None, "url": None, "meta": {"lang": None, "year": 1}, "tags": [1]},
                             {"id": None, "url": None, "meta": None, "tags": None}]


def test_files_follow_source_and_chunk_order_and_stay_under_the_size():
  import numpy as np
  units = [("b", np.array([[1, 5, 40]])), ("a", np.array([[2, 5, 300], [3, 1, 10], [4, 2, 20]])),
           ("b", np.array([[0, 5, 50]])), ("a", np.array([[0, 5, 60]]))]
  specs = dataset.plan_files(units, max_file_bytes=100)
  assert [s.name for s in specs] == [f"train-{i:05d}-of-00004.parquet" for i in range(4)]
  runs = [[(source, c.tolist()) for source, c in s.runs] for s in specs]
  assert runs == [[("a", [[0, 5]])], [("a", [[2, 5]])],  # a2 alone: larger than a file
                  [("a", [[3, 1], [4, 2]]), ("b", [[0, 5]])], [("b", [[1, 5]])]]
  again = dataset.plan_files(units[::-1], max_file_bytes=100)
  assert [s.digest for s in again] == [s.digest for s in specs]


def test_an_edu_file_keeps_every_records_fields_and_null_only_ones():
  import json

  import numpy as np
  import pyarrow.parquet as pq

  from pipeline import outputs
  data = outputs.edu_bytes([json.dumps({"id": "1"}).encode(), {"id": "2", "url": None, "meta": {"k": 1}}],
                           np.float32([3.5, 4.0]), np.int64([4, 4]))
  table = pq.read_table(pa.BufferReader(data))
  assert table.schema.equals(pa.schema([("id", pa.string()), ("url", pa.null()),
                                        ("meta", pa.struct([("k", pa.int64())])), *OURS]))
  assert table["meta"].to_pylist() == [None, {"k": 1}]
  entry = outputs.edu_entry(data)
  assert (entry["rows"], entry["bytes"]) == (2, len(data)) and schemas.decode(entry["schema"]).equals(table.schema)
