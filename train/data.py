"""Labelled documents from shards, every rejected row counted with its reason, and the split.

Shards are read by the scoring pipeline's reader and records decoded by its parser
(pipeline/shards.py, pipeline/records.py), so training accepts exactly the formats, paths,
broken files and bad records that scoring does, with the same reasons; a label missing, not a
number or outside 0-5 adds its own. Every rejected row is listed in bad_rows.jsonl in the
form of scoring's errors/ records.
"""
from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np

from model.recipe import int_scores
from pipeline import faults, io as shard_io, records, shards
from pipeline.faults import RecordFault
from pipeline.records import Rejected

# As scoring's --max_record_bytes default: a record larger than this is a bad row, read past
# without being held, so the reader's memory is bounded whatever the data holds.
MAX_RECORD_BYTES = 16 << 20
LABEL_RANGE = (0.0, 5.0)


@dataclasses.dataclass
class Examples:
  texts: list[str]
  labels: np.ndarray  # float32, each in 0-5

  def take(self, index: np.ndarray) -> "Examples":
    return Examples([self.texts[i] for i in index], self.labels[index])


@dataclasses.dataclass
class DataReport:
  shards: int = 0
  rows: int = 0  # rows seen, good and bad
  used: int = 0
  bad: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # reason code -> rows
  bad_rows: list[Rejected] = dataclasses.field(default_factory=list)  # as scoring's errors/ records

  def reject(self, rejected: Rejected) -> None:
    self.bad[rejected.code] += 1
    self.bad_rows.append(rejected)

  def summary(self) -> dict:
    return {"shards": self.shards, "rows": self.rows, "used": self.used,
            "bad": sum(self.bad.values()), "bad_by_reason": dict(sorted(self.bad.items()))}


def expand(patterns) -> list[str]:
  """Every shard the globs match; a glob matching nothing is an error, not an empty corpus."""
  found = []
  for pattern in patterns:
    matches = [source for source, _ in shard_io.match(pattern)]
    if not matches:
      raise FileNotFoundError(f"no shard matches {pattern!r}")
    found += matches
  return sorted(set(found))


def parse(source: str, row: int, item, text_field: str, label_field: str) -> tuple[str, float] | Rejected:
  """(text, label) of one record, or why not: scoring's faults (pipeline/records.py) for the
  text, so that training accepts exactly the documents scoring scores, then the label's."""
  try:
    record = records.decode(item, text_field)
    return record[text_field], _label(record, label_field)
  except RecordFault as fault:
    return records.rejected(fault, source, row, item)


def _label(record: dict, field: str) -> float:
  label = record.get(field)
  if label is None:
    raise RecordFault(faults.MISSING_LABEL, f"no {field!r} field" if field not in record else f"{field!r} is null")
  if isinstance(label, bool) or not isinstance(label, (int, float)):
    raise RecordFault(faults.LABEL_NOT_A_NUMBER, f"{field!r} is a {type(label).__name__}")
  if not math.isfinite(label):
    raise RecordFault(faults.LABEL_NOT_FINITE, f"{field!r} is {label}")
  if not LABEL_RANGE[0] <= label <= LABEL_RANGE[1]:
    # Not clipped: a 9 on a 0-5 scale is a mistake in the labelling (another scale, a typo),
    # and training on 5 in its place would hide it.
    raise RecordFault(faults.LABEL_OUT_OF_RANGE, f"{field!r} is {label}, outside 0-5")
  return float(label)


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
        report.reject(item)
        continue
      report.rows += 1
      parsed = parse(source, row, item, text_field, label_field)
      if isinstance(parsed, Rejected):
        report.reject(parsed)
        continue
      texts.append(parsed[0])
      labels.append(parsed[1])
  report.used += len(texts)
  return Examples(texts, np.asarray(labels, np.float32)), report


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
