"""Where everything of a run lives under the output directory, and the run's state as names.

    scores/<chunk>.parquet, edu/<chunk>.parquet, errors/<chunk>.jsonl   per chunk
    _done/<p>/<chunk>.json                          a chunk's marker: written last, holds its counts
    _units/<p>/<shard>-u<k>of<n>-<version>.json     a unit's summary: its chunks' counts, summed
    _run.json, stats.json, score_histogram.png

<chunk> is `<shard key>-<chunk index>`, the shard key being its file name and a hash of its
path. <p> is the first hex digit of that hash: markers and summaries are spread over 16
prefixes, so that reading a run's state is 32 listings, made in parallel by the workers,
whatever the number of shards, and no prefix holds more than a sixteenth of the markers.
<version> is a hash of the shard's identity when it was scored (progress.shard_identity): a
listing alone tells a finished shard that changed since from one that did not.
"""
from __future__ import annotations

import hashlib

from pipeline import io

SCORES, EDU, ERRORS, DONE, UNITS = "scores", "edu", "errors", "_done", "_units"
RUN, STATS, HISTOGRAM = "_run.json", "stats.json", "score_histogram.png"
PARTITIONS = "0123456789abcdef"


def partition(key: str) -> str:
  return key[-12]  # the first hex digit of the path's hash in io.shard_key


def version(identity: str) -> str:
  """The short name of a shard's identity, for summary names."""
  return hashlib.sha256(identity.encode()).hexdigest()[:12]


def chunk_name(source: str, index: int) -> str:
  return f"{io.shard_key(source)}-{index:05d}"


def output_path(output: str, kind: str, source: str, index: int) -> str:
  suffix = ".jsonl" if kind == ERRORS else ".parquet"
  return io.join(output, kind, chunk_name(source, index) + suffix)


def marker_path(output: str, source: str, index: int) -> str:
  key = io.shard_key(source)
  return io.join(output, DONE, partition(key), f"{key}-{index:05d}.json")


def summary_path(output: str, key: str, unit: int, units: int, shard_version: str) -> str:
  """`key`: io.shard_key of the shard; `shard_version`: version() of its identity."""
  return io.join(output, UNITS, partition(key), f"{key}-u{unit:04d}of{units:04d}-{shard_version}.json")


def parse_marker(name: str) -> tuple[str, int]:
  """(shard key, chunk index) of a marker's file name."""
  key, index = name[:-len(".json")].rsplit("-", 1)
  return key, int(index)


def parse_summary(name: str) -> tuple[str, int, int, str]:
  """(shard key, unit, units, shard version) of a summary's file name."""
  key, unit, shard_version = name[:-len(".json")].rsplit("-", 2)
  index, units = unit[1:].split("of")
  return key, int(index), int(units), shard_version


def list_partition(output: str, kind: str, part: str) -> list[str]:
  """File names of one partition of _done/ or _units/: one listing."""
  return [name.rsplit("/", 1)[-1] for name in io.list_names(io.join(output, kind, part), ".json")]
