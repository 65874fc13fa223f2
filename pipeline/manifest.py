"""`_run.json`: the settings an output directory was made with.

Every setting that changes a result or the chunk and unit layout is recorded, and a rerun into
the directory with another value is refused, naming the setting and both values: resuming with
another model, --batch_size or --dtype would mix two runs' outputs in one place without a trace
(chunk k of size 7 is not chunk k of size 10).
"""
from __future__ import annotations

import json

from model.hub import ModelInfo
from pipeline import io
from pipeline.faults import UsageError
from pipeline.options import ScoringConfig

RUN_MANIFEST = "_run.json"
# The layout of chunks, units, markers and summaries this code reads and writes.
LAYOUT = 2
MUST_AGREE = ("layout", "weights_digest", "threshold", "max_length", "text_field", "id_field",
              "batch_size", "dtype", "max_record_bytes", "unit_bytes")


class OutputMismatch(UsageError):
  """The output holds a run with other settings (or another layout)."""


def wanted(config: ScoringConfig, info: ModelInfo) -> dict:
  return {"layout": LAYOUT, "model": info.name, "weights_digest": info.digest,
          "threshold": config.threshold, "max_length": config.max_length,
          "text_field": config.text_field, "id_field": config.id_field,
          "batch_size": config.batch_size, "dtype": config.dtype,
          "max_record_bytes": config.max_record_bytes, "unit_bytes": config.unit_bytes}


def check_or_write(config: ScoringConfig, info: ModelInfo, write: bool = True) -> None:
  want = wanted(config, info)
  path = io.join(config.output, RUN_MANIFEST)
  if not io.exists(path):
    if write:
      io.write_bytes_atomic(path, json.dumps(want, indent=2).encode())
    return
  found = json.loads(io.read_bytes(path))
  if found.get("layout") != LAYOUT:
    raise OutputMismatch(f"{config.output} was written by another version of koedu (output layout "
                         f"{found.get('layout', 1)}, this one writes {LAYOUT}); score into a new --output")
  differs = [k for k in MUST_AGREE if found.get(k) != want[k]]
  if differs:
    label = lambda k: "the model's weights digest" if k == "weights_digest" else f"--{k}"
    details = ", ".join(f"{label(k)} {found.get(k)!r} there, {want[k]!r} now" for k in differs)
    raise OutputMismatch(
        f"{config.output} holds a run with other settings ({details}). Rerun with the same "
        "settings to finish it, or score into a new --output; for another threshold, rebuild edu/ "
        "with `python -m pipeline.rethreshold`.")
