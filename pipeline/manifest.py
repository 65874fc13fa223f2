"""`_run.json`: the settings an output directory was made with.

Resuming into a directory written with another model or threshold would mix two runs' outputs
in one place without a trace, so it is refused with a way out.
"""
from __future__ import annotations

import json

from model.hub import ModelInfo
from pipeline import io
from pipeline.options import ScoringConfig

RUN_MANIFEST = "_run.json"
MUST_AGREE = ("weights_digest", "threshold", "max_length", "text_field", "id_field")


class OutputMismatch(ValueError):
  pass


def check_or_write(config: ScoringConfig, info: ModelInfo, write: bool = True) -> None:
  wanted = {"model": info.name, "weights_digest": info.digest, "threshold": config.threshold,
            "max_length": config.max_length, "text_field": config.text_field,
            "id_field": config.id_field}
  path = io.join(config.output, RUN_MANIFEST)
  fs, local = io.filesystem(path)
  if not fs.exists(local):
    if write:
      io.write_bytes_atomic(path, json.dumps(wanted, indent=2).encode())
    return
  found = json.loads(io.read_bytes(path))
  differs = [k for k in MUST_AGREE if found.get(k) != wanted[k]]
  if differs:
    details = ", ".join(f"{k}: {found.get(k)!r} there, {wanted[k]!r} now" for k in differs)
    raise OutputMismatch(
        f"{config.output} holds a run with other settings ({details}). Score into a new --output, "
        "or rebuild edu/ for another threshold with `python -m pipeline.rethreshold`.")
