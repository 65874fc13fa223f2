"""Shards for the annotation tests and bench: documents marked `[doc N]` (N unique over the corpus,
which the chat server's rule scores N % 6), in every format the pipeline reads, with a few rows
the reader rejects."""
from __future__ import annotations

import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from model.random_checkpoint import korean_sentences

BROKEN = ("{broken json", '{"text": null}', '["not", "an", "object"]')


def write(directory: str, per_shard: int = 100, shards: int = 3, broken: int = 1, seed: int = 0) -> dict:
  """Writes `shards` shards (.jsonl, .jsonl.gz, .parquet in turn); returns {(source, row): N or
  None for a broken row}."""
  os.makedirs(directory, exist_ok=True)
  texts = korean_sentences(per_shard * shards, seed=seed)
  rows = {}
  for s in range(shards):
    kind = ("jsonl", "jsonl.gz", "parquet")[s % 3]
    path = os.path.join(directory, f"shard-{s:03d}.{kind}")
    records = []
    for i in range(per_shard):
      n = s * per_shard + i
      records.append({"id": f"d{n}", "text": f"[doc {n}] {texts[n]}"})
    if kind == "parquet":
      pq.write_table(pa.Table.from_pylist(records), path, row_group_size=64)
      for row, record in enumerate(records):
        rows[(path, row)] = int(record["id"][1:])
      continue
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    for b in range(broken):  # spread through the shard
      lines.insert((b + 1) * len(lines) // (broken + 1), BROKEN[b % len(BROKEN)])
    opener = gzip.open if kind.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
      f.write("".join(line + "\n" for line in lines))
    for row, line in enumerate(lines):
      rows[(path, row)] = int(json.loads(line)["id"][1:]) if line.startswith('{"id"') else None
  return rows
