"""The output directory of an annotation run, which is also its state.

    annotations/part-<run>-<seq>.parquet   labels: what `train.run --data 'DIR/annotations/*.parquet'` reads
    errors/part-<run>-<seq>.jsonl          sampled rows the reader rejected, answers no score could be read from
    _run.json                              the settings a rerun must keep (config.FIXED), and the sample's size
    _active/<run>.json                     the lease of the run writing here (lease.py)
    stats.json                             counts, label histogram, tokens, settings

A document is finished when a part holding it is written: parts are written whole or not at
all (pipeline.io.write_bytes_atomic), as answers complete (every --flush_every answers or
--flush_seconds), so a run killed at any moment loses at most the answers not yet in a part,
and a rerun asks again for those and nothing else: the finished set is read back from the parts'
(source, row) columns. A part's annotations and errors are two files written one after the
other; a crash between them costs the second file's documents one more request, never a
duplicate, since each document is in exactly one of them.
"""
from __future__ import annotations

import collections
import concurrent.futures
import json
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import faults, io
from train.annotate.config import FIXED

ANNOTATIONS, ERRORS, RUN, STATS = "annotations", "errors", "_run.json", "stats.json"
READ_THREADS = 16  # parts read at once when a run starts (what is finished) and ends (stats)
SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("row", pa.int64()), ("text", pa.string()),
    ("score", pa.int64()), ("answer", pa.string()), ("llm", pa.string()),
    ("prompt_sha256", pa.string()), ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()),
])


class SettingsRefused(faults.UsageError):
  """A rerun into an output made with other settings: names the setting."""


def settings(config, prompt_sha256: str) -> dict:
  record = {name: getattr(config, name) for name in FIXED if name != "prompt_sha256"}
  record["input"] = list(config.input)
  record["prompt_sha256"] = prompt_sha256
  record["sample"] = config.sample
  return record


def claim(output: str, record: dict) -> None:
  """Records the run's settings, or refuses those that differ from the output's."""
  path = io.join(output, RUN)
  if io.exists(path):
    before = json.loads(io.read_bytes(path))
    for name in FIXED:
      if before.get(name) != record[name]:
        flag = "prompt" if name == "prompt_sha256" else name
        raise SettingsRefused(
            f"{output} was annotated with {flag}={before.get(name)!r}, not {record[name]!r}: a label "
            f"made another way would mix with its labels; use another --output (or the same --{flag})")
    if record["sample"] < before["sample"]:
      raise SettingsRefused(f"{output} holds a sample of {before['sample']:,}; --sample {record['sample']:,} "
                            f"is smaller (a larger --sample extends it; a smaller one needs another --output)")
    if record["sample"] == before["sample"]:
      return
  io.write_bytes_atomic(path, json.dumps(record, indent=2, ensure_ascii=False).encode())


def run_id() -> str:
  """Names this invocation's parts: sortable by start, unique among concurrent starts."""
  return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def write_part(output: str, name: str, annotated: list[dict], errors: list[dict]) -> None:
  if errors:
    lines = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors)
    io.write_bytes_atomic(io.join(output, ERRORS, name + ".jsonl"), lines.encode())
  if annotated:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(annotated, SCHEMA), sink, compression="zstd")
    io.write_bytes_atomic(io.join(output, ANNOTATIONS, name + ".parquet"), sink.getvalue().to_pybytes())


def _read_parquet(path: str, columns: list[str]) -> pa.Table:
  fs, target = io.filesystem(path)
  return io.retrying(lambda: pq.read_table(fs.open(target, "rb"), columns=columns), f"reading {path}")


def _each(read, paths: list[str]):
  """read(path) for every part, READ_THREADS at a time: 2,000 parts of a 500k run on an object
  store are 2,000 round trips, a minute and a half one after the other."""
  with concurrent.futures.ThreadPoolExecutor(READ_THREADS) as pool:
    yield from pool.map(read, paths)


def _annotation_tables(output: str, columns: list[str]):
  directory = io.join(output, ANNOTATIONS)
  paths = [io.join(directory, name) for name in io.list_names(directory, ".parquet")]
  yield from _each(lambda path: _read_parquet(path, columns), paths)


def _error_lines(output: str):
  directory = io.join(output, ERRORS)
  paths = [io.join(directory, name) for name in io.list_names(directory, ".jsonl")]
  for data in _each(io.read_bytes, paths):
    for line in data.splitlines():
      yield json.loads(line)


def finished(output: str) -> set[tuple[str, int | None]]:
  """(source, row) of every document a part holds; (source, None) for an unreadable shard reported."""
  done = set()
  for table in _annotation_tables(output, ["source", "row"]):
    done.update(zip(table["source"].to_pylist(), table["row"].to_pylist()))
  for error in _error_lines(output):
    done.add((error["source"], error["row"]))
  return done


def summarize(output: str, sample, record: dict, this_run: dict) -> dict:
  """stats.json, from the parts themselves: it covers every invocation that wrote into `output`."""
  histogram, tokens_in, tokens_out, annotated = [0] * 6, 0, 0, 0
  for table in _annotation_tables(output, ["score", "prompt_tokens", "completion_tokens"]):
    for score, count in collections.Counter(table["score"].to_pylist()).items():
      histogram[score] += count
    tokens_in += sum(table["prompt_tokens"].to_pylist())
    tokens_out += sum(table["completion_tokens"].to_pylist())
    annotated += table.num_rows
  reasons, errored, shards_unreadable = collections.Counter(), 0, 0
  for error in _error_lines(output):
    reasons[error["reason"].split(":", 1)[0]] += 1
    tokens_in += error.get("prompt_tokens", 0)
    tokens_out += error.get("completion_tokens", 0)
    if error["row"] is None:
      shards_unreadable += 1
    else:
      errored += 1
  stats = {
      "complete": annotated + errored == len(sample.rows),
      "sampled": len(sample.rows), "annotated": annotated, "errored": errored,
      "errors_by_reason": dict(sorted(reasons.items())), "unreadable_shards": shards_unreadable,
      "population": {"shards": sample.shards, "rows": sample.total_rows},
      "score_histogram": {str(s): n for s, n in enumerate(histogram)},
      "tokens": {"prompt": tokens_in, "completion": tokens_out},
      "settings": record, "this_run": this_run,
  }
  io.write_bytes_atomic(io.join(output, STATS), json.dumps(stats, indent=2, ensure_ascii=False).encode())
  return stats
