"""`_run.json`, the settings an output directory was made with, and what the launcher learns of
the output before the graph is built (two calls, whatever its size).

Every setting that changes a result or the chunk and unit layout is recorded, and a rerun into
the directory with another value is refused, naming the setting and both values: resuming with
another model, --batch_size or --dtype would mix two runs' outputs in one place without a trace
(chunk k of size 7 is not chunk k of size 10). The precision --dtype resolves to is known only
on the workers: each chunk records it, and they refuse another one the same way
(progress.check_precision).
"""
from __future__ import annotations

import dataclasses
import json

from model.hub import ModelInfo
from pipeline import io
from pipeline.faults import UsageError
from pipeline.options import ScoringConfig
from pipeline.state import layout

# The layout of chunks, units, markers and summaries this code reads and writes. 3: markers and
# summaries record the precision and the shard's identity; summary names its version.
LAYOUT = 3
MUST_AGREE = ("layout", "weights_digest", "threshold", "max_length", "text_field", "id_field",
              "batch_size", "dtype", "max_record_bytes", "unit_bytes")
LABELS = {"weights_digest": "the model's weights digest", "precision": "the precision --dtype resolved to"}


class OutputMismatch(UsageError):
  """The output holds a run with other settings (or another layout, precision or version of a
  shard): a rerun that would mix them in one directory is refused, nothing written."""


RERUN = ("Rerun with the same settings to finish it, or score into a new --output; for another "
         "threshold, rebuild edu/ with `python -m pipeline.rethreshold`.")


def mismatch(output: str, differs: dict, remedy: str = RERUN) -> OutputMismatch:
  """The refusal naming each setting, with its value there and now: {setting: (there, now)}."""
  details = ", ".join(f"{LABELS.get(k, '--' + k)} {there!r} there, {now!r} now"
                      for k, (there, now) in differs.items())
  return OutputMismatch(f"{output} holds a run with other settings ({details}). {remedy}")


def wanted(config: ScoringConfig, info: ModelInfo) -> dict:
  return {"layout": LAYOUT, "model": info.name, "weights_digest": info.digest,
          "threshold": config.threshold, "max_length": config.max_length,
          "text_field": config.text_field, "id_field": config.id_field,
          "batch_size": config.batch_size, "dtype": config.dtype,
          "max_record_bytes": config.max_record_bytes, "unit_bytes": config.unit_bytes}


def check_or_write(config: ScoringConfig, info: ModelInfo, write: bool = True) -> None:
  want = wanted(config, info)
  path = io.join(config.output, layout.RUN)
  if not io.exists(path):
    if write:
      io.write_bytes_atomic(path, json.dumps(want, indent=2).encode())
    return
  found = json.loads(io.read_bytes(path))
  if found.get("layout") != LAYOUT:
    raise OutputMismatch(f"{config.output} was written by another version of koedu (output layout "
                         f"{found.get('layout', 1)}, this one writes {LAYOUT}); score into a new --output")
  differs = {k: (found.get(k), want[k]) for k in MUST_AGREE if found.get(k) != want[k]}
  if differs:
    raise mismatch(config.output, differs)


def recorded(output: str) -> dict | None:
  """The settings `output` was scored with, or None when it holds no scoring run."""
  path = io.join(output, layout.RUN)
  return json.loads(io.read_bytes(path)) if io.exists(path) else None


@dataclasses.dataclass(frozen=True)
class Output:
  """What the launcher learnt of the output directory when the run started."""
  path: str
  finished: bool  # stats.json was there: the directory holds a finished run

  def stats_needed(self, units_this_run: int) -> bool:
    """A rerun with nothing to do leaves stats.json as it is, and reads nothing it sums."""
    return units_this_run > 0 or not self.finished

  def was_complete(self, report: dict, started: str) -> bool:
    """Whether stats.json is still the one an earlier run wrote: this run scored nothing."""
    return self.finished and report.get("started") != started


def open_output(config: ScoringConfig, info: ModelInfo, write: bool = True) -> Output:
  """Checks (and unless `write` is False, records) the settings; notes whether the output holds
  a finished run. Reads nothing that grows with the corpus."""
  check_or_write(config, info, write)
  return Output(config.output, finished=write and io.exists(io.join(config.output, layout.STATS)))
