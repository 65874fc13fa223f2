"""Labelled documents from shards, every rejected row counted with its reason, and the split.

Shards are read by the scoring pipeline's reader (`pipeline.io`), so training accepts exactly
the formats, paths and broken files that scoring does, with the same reasons.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math

import numpy as np

from model.recipe import int_scores
from pipeline import io as shard_io, shards
from pipeline.records import Rejected, TooLarge, json_depth_exceeds

RAW_CHARS = 1000  # of a bad row kept in the report: enough to find it, not a copy of the corpus
# As scoring's --max_record_bytes default: a record larger than this is a bad row, read past
# without being held, so the reader's memory is bounded whatever the data holds.
MAX_RECORD_BYTES = 16 << 20
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
    matches = [source for source, _ in shard_io.match(pattern)]
    if not matches:
      raise FileNotFoundError(f"no shard matches {pattern!r}")
    found += matches
  return sorted(set(found))


def parse(item, text_field: str, label_field: str) -> tuple[str, float]:
  if isinstance(item, TooLarge):
    raise BadRow("record_too_large")
  if isinstance(item, bytes):
    if not item.strip():
      raise BadRow("blank_line")
    if json_depth_exceeds(item):
      raise BadRow("too_deep")
    try:
      item = json.loads(item)
    except (ValueError, RecursionError):
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
    # The scoring pipeline's reader: storage faults are retried and then raised (the run
    # fails, a rerun reads again); only what lies in the bytes becomes a bad row.
    for row, item in shards.iter_records(source, MAX_RECORD_BYTES):
      if isinstance(item, Rejected):  # unreadable, unsupported, or broken off at `row`
        report.reject(source, row, item.reason, None)
        continue
      report.rows += 1
      try:
        text, label = parse(item, text_field, label_field)
      except BadRow as err:
        report.reject(source, row, str(err), item.head if isinstance(item, TooLarge) else item)
        continue
      texts.append(text)
      labels.append(label)
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
