"""Labelled documents from shards, every rejected row counted with its reason, and the split.

The reader is a minimal one of its own (JSON lines, .gz, .zst, Parquet through fsspec) so that
training did not wait for `pipeline/io.py`; it should later share that module's reader.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import json
import math

import fsspec
import numpy as np

from model.scorer import int_scores

JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")
PARQUET_SUFFIXES = (".parquet",)
RAW_CHARS = 1000  # of a bad row kept in the report: enough to find it, not a copy of the corpus
LABEL_RANGE = (0.0, 5.0)


@dataclasses.dataclass
class Examples:
  texts: list[str]
  labels: np.ndarray  # float32, clipped to 0-5

  def take(self, index: np.ndarray) -> "Examples":
    return Examples([self.texts[i] for i in index], self.labels[index])


@dataclasses.dataclass
class DataReport:
  shards: int = 0
  rows: int = 0  # rows seen, good and bad
  used: int = 0
  clipped: int = 0  # labels outside 0-5, used after clipping
  bad: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # reason -> rows
  bad_rows: list = dataclasses.field(default_factory=list)  # {source, row, reason, raw}

  def reject(self, source: str, row: int | None, reason: str, raw) -> None:
    self.bad[reason] += 1
    raw = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    raw = raw if isinstance(raw, str) or raw is None else json.dumps(raw, ensure_ascii=False, default=str)
    self.bad_rows.append({"source": source, "row": row, "reason": reason,
                          "raw": None if raw is None else raw[:RAW_CHARS]})

  def summary(self) -> dict:
    return {"shards": self.shards, "rows": self.rows, "used": self.used, "clipped": self.clipped,
            "bad": sum(self.bad.values()), "bad_by_reason": dict(sorted(self.bad.items()))}


class BadRow(ValueError):
  pass


def expand(patterns) -> list[str]:
  """Every shard the globs match; a glob matching nothing is an error, not an empty corpus."""
  found = []
  for pattern in patterns:
    fs, path = fsspec.core.url_to_fs(pattern)
    matches = fs.glob(path) if fsspec.core.has_magic(path) else [path] if fs.exists(path) else []
    matches = [m for m in matches if not fs.isdir(m)]
    if not matches:
      raise FileNotFoundError(f"no shard matches {pattern!r}")
    found += [fs.unstrip_protocol(m) if "://" in pattern else m for m in matches]
  return sorted(set(found))


def _records(source: str):
  """(row, item): raw line bytes for JSON lines, dicts for Parquet."""
  if source.endswith(PARQUET_SUFFIXES):
    import pyarrow.parquet as pq
    row = 0
    with fsspec.open(source, "rb") as f:
      for batch in pq.ParquetFile(f).iter_batches(batch_size=4096):
        for item in batch.to_pylist():
          yield row, item
          row += 1
  elif source.endswith(JSON_SUFFIXES):
    with fsspec.open(source, "rb", compression="infer") as f:
      # zstandard's stream reader cannot iterate lines by itself; a buffer over it can.
      lines = io.BufferedReader(f) if source.endswith(".zst") else f
      for row, line in enumerate(lines):
        yield row, line
  else:
    raise BadRow(f"unsupported_format: expected {', '.join(JSON_SUFFIXES + PARQUET_SUFFIXES)}")


def parse(item, text_field: str, label_field: str) -> tuple[str, float]:
  if isinstance(item, bytes):
    if not item.strip():
      raise BadRow("blank_line")
    try:
      item = json.loads(item)
    except ValueError:
      raise BadRow("invalid_json") from None
  if not isinstance(item, dict):
    raise BadRow("not_an_object")
  text, label = item.get(text_field), item.get(label_field)
  if text is None:
    raise BadRow("missing_text")
  if not isinstance(text, str):
    raise BadRow("text_not_a_string")
  if not text.strip():
    raise BadRow("empty_text")
  if label is None:
    raise BadRow("missing_label")
  if isinstance(label, bool) or not isinstance(label, (int, float)):
    raise BadRow("label_not_a_number")
  if not math.isfinite(label):
    raise BadRow("label_not_finite")
  return text, float(label)


def read(patterns, text_field: str, label_field: str, report: DataReport | None = None
         ) -> tuple[Examples, DataReport]:
  report = report or DataReport()
  texts, labels = [], []
  for source in expand(patterns):
    report.shards += 1
    row = None
    try:
      for row, item in _records(source):
        report.rows += 1
        try:
          text, label = parse(item, text_field, label_field)
        except BadRow as err:
          report.reject(source, row, str(err), item)
          continue
        texts.append(text)
        labels.append(label)
    except BadRow as err:
      report.reject(source, None, str(err), None)
    except Exception as err:  # unreadable file, truncated gzip, corrupt Parquet: say where
      reason = "truncated_shard" if row is not None else "unreadable_shard"
      report.reject(source, None if row is None else row + 1, f"{reason}: {type(err).__name__}: {err}", None)
  raw = np.asarray(labels, np.float32)
  clipped = np.clip(raw, *LABEL_RANGE)
  report.clipped += int(np.sum(clipped != raw))
  report.used += len(texts)
  return Examples(texts, clipped), report


def stratified_split(labels: np.ndarray, eval_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, eval) indices, each int_score class split in proportion, as fineweb-edu's
  stratified split. Unlike scikit-learn's, a class with a single document is no error."""
  n = len(labels)
  n_eval = int(round(eval_size * n)) if eval_size < 1 else int(eval_size)
  if not 0 < n_eval < n:
    raise ValueError(f"eval_size {eval_size} leaves {n_eval} of {n} documents for evaluation")
  classes = int_scores(labels)
  values, counts = np.unique(classes, return_counts=True)
  quota = counts * n_eval / n
  take = np.floor(quota).astype(int)
  # Largest remainders get the documents floor() left over, so exactly n_eval are held out.
  for i in np.argsort(-(quota - take), kind="stable")[:n_eval - take.sum()]:
    take[i] += 1
  rng = np.random.default_rng(seed)
  eval_index = [rng.permutation(np.flatnonzero(classes == v))[:k] for v, k in zip(values, take)]
  eval_index = np.sort(np.concatenate(eval_index))
  return np.setdiff1d(np.arange(n), eval_index), eval_index
