"""What is done, how, and from which version of its shard: chunk markers and unit summaries.

A chunk's marker (`_done/<p>/<chunk>.json`) is written after every other file of the chunk, so
a chunk is done exactly when its marker exists; it holds the chunk's counts, the precision the
workers scored it at and the identity of its shard as matched. A unit's summary
(`_units/<p>/<shard>-u<k>of<n>-<version>.json`), written once all its chunks are done, holds
their counts summed (what stats.json adds up), the same precision and identity, and any extra
fields a later step wants to find there without reading the chunks.

Both facts are checked wherever they are known: the identity by the planner against the shard
as matched (plan.PlanShard), the precision by the workers, the only ones that know what
--dtype resolved to (check_precision). A resume that would mix two precisions, or two versions
of a shard, in one output is refused by name.
"""
from __future__ import annotations

import datetime
import json
import time

from pipeline import io
from pipeline.shards import Unit
from pipeline.state import layout
from pipeline.state.settings import OutputMismatch, mismatch

# What names a version of an object, by store: GCS's generation, S3's version id, an ETag
# (S3, HTTP), and the modification time where nothing better exists (local files, most others).
VERSION_FIELDS = ("generation", "version_id", "VersionId", "etag", "ETag", "mtime")
ABSENT = "absent"


class ShardChanged(OutputMismatch):
  """A shard's bytes are not those its finished chunks were scored from."""


def shard_identity(info: dict | None) -> str:
  """What a shard is, from the metadata its listing (or lookup) returned: its size and the
  store's version of it. The same from a glob's detail and from info(), so a run that lists its
  shards by a glob and one given them in a manifest agree."""
  if info is None:
    return ABSENT
  size = int(info.get("size") or 0)
  for field in VERSION_FIELDS:
    value = info.get(field)
    if value not in (None, ""):
      value = value.isoformat() if isinstance(value, datetime.datetime) else value
      return f"size {size}, {field} {value}"
  return f"size {size}"


def look_up(source: str) -> dict | None:
  """The store's metadata of one shard (one call), None when it is not there."""
  fs, path = io.filesystem(source)
  try:
    return io.retrying(lambda: fs.info(path), f"looking up {source}")
  except FileNotFoundError:
    return None


def check_unchanged(output: str, source: str, indices) -> None:
  """For steps that go back to a scored shard's records (rethreshold): its bytes are still those
  its chunks (`indices`) were scored from. Two calls: a lookup and the first marker there is (a
  chunk of an unfinished run may have scores and no marker yet)."""
  for index in sorted(indices):
    try:
      marker = read_marker(output, source, index)
    except FileNotFoundError:
      continue
    check_shard(output, source, marker.get("shard"), shard_identity(look_up(source)))
    return


def check_shard(output: str, source: str, recorded: str, current: str) -> None:
  if recorded != current:
    key = io.shard_key(source)
    raise ShardChanged(
        f"{source} changed since it was scored into {output} (then: {recorded}; now: {current}): "
        "its outputs would mix two versions of it. Score into a new --output, or delete its files "
        f"({layout.SCORES}/{key}-*, {layout.EDU}/{key}-*, {layout.ERRORS}/{key}-*, "
        f"{layout.DONE}/{layout.partition(key)}/{key}-*, {layout.UNITS}/{layout.partition(key)}/{key}-*) "
        "and rerun to score it anew.")


def check_precision(output: str, dtype: str, recorded: str | None, resolved: str) -> None:
  """Refuses to score at `resolved` into an output whose chunks were scored at `recorded`."""
  if recorded is not None and recorded != resolved:
    raise mismatch(output, {"precision": (recorded, resolved)},
                   f"One output holds one precision: finish it on workers where --dtype {dtype} "
                   f"resolves to {recorded!r} (the hardware that began it), or score into a new --output.")


def mark_chunk(output: str, unit: Unit, index: int, counts: dict, precision: str) -> dict:
  """The chunk's marker, once every other file of it is written; returns its content."""
  marker = {**counts, "written": time.time(), "precision": precision, "shard": unit.identity}
  io.write_bytes_atomic(layout.marker_path(output, unit.source, index), json.dumps(marker).encode())
  return marker


def done_chunk(output: str, unit: Unit, index: int, precision: str | None) -> dict:
  """The marker of a chunk an earlier run finished, checked against the shard and the output's
  precision (`precision`: None when unknown)."""
  marker = read_marker(output, unit.source, index)
  check_shard(output, unit.source, marker.get("shard"), unit.identity)
  if precision is not None and marker.get("precision") != precision:
    raise mismatch(output, {"precision": (marker.get("precision"), precision)},
                   "One output holds one precision: score into a new --output.")
  return marker


def read_marker(output: str, source: str, index: int) -> dict:
  return json.loads(io.read_bytes(layout.marker_path(output, source, index)))


def write_summary(output: str, unit: Unit, totals: dict, scored_here: dict, precision: str,
                  **extra) -> dict:
  """A unit's summary, once all its chunks are done: what stats.json sums. `extra`: more fields
  for the steps that read summaries."""
  summary = {"source": unit.source, "unit": unit.index, "units": unit.count, **totals,
             "this_attempt": scored_here, "precision": precision, "shard": unit.identity,
             **extra, "written": time.time()}
  path = layout.summary_path(output, io.shard_key(unit.source), unit.index, unit.count,
                             layout.version(unit.identity))
  io.write_bytes_atomic(path, json.dumps(summary).encode())
  return summary


def read_summary(output: str, key: str, unit: int, units: int, shard_version: str) -> dict:
  return json.loads(io.read_bytes(layout.summary_path(output, key, unit, units, shard_version)))


def read_state_file(output: str, kind: str, part: str, name: str) -> dict:
  """A marker or summary by its listed name."""
  return json.loads(io.read_bytes(io.join(output, kind, part, name)))
