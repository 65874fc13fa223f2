"""The work of a run, found by the workers: which shards there are, what earlier runs finished,
and the units left to score.

Nothing here grows on the launcher or in the job graph with the corpus: the graph holds the
globs (or the manifest's URL) and 16 partition names; matching, listing and planning run as
steps on the workers, and the only shuffle carries shard descriptors and file names.
"""
from __future__ import annotations

import logging

import apache_beam as beam

from pipeline import io, layout, shards

log = logging.getLogger(__name__)
PRIOR, SHARD = "prior", "shard"


class MatchShards(beam.DoFn):
  """A glob -> (source, size) for every file it matches."""

  def process(self, pattern: str):
    found = io.match(pattern)
    if not found:
      log.warning("--input %s matches no file", pattern)
    yield from found


class ReadManifest(beam.DoFn):
  """--input_manifest: one shard URL a line (blank lines and '#' comments skipped)."""

  def process(self, url: str):
    for line in io.read_bytes(url).decode("utf-8").splitlines():
      line = line.strip()
      if line and not line.startswith("#"):
        yield line


class SizeShard(beam.DoFn):
  """A listed shard's size; a shard that is not there is left for its unit to report."""

  def process(self, source: str):
    fs, path = io.filesystem(source)
    try:
      size = io.retrying(lambda: fs.size(path), f"looking up {source}")
    except FileNotFoundError:
      size = 0
    yield source, int(size or 0)


class ListState(beam.DoFn):
  """One partition of _done/ or _units/ -> (shard key, ("chunk", index) | ("unit", k, n))."""

  def __init__(self, output: str):
    self._output = output

  def process(self, kind_and_partition: tuple[str, str]):
    kind, part = kind_and_partition
    for name in layout.list_partition(self._output, kind, part):
      if kind == layout.DONE:
        key, index = layout.parse_marker(name)
        yield key, ("chunk", index)
      else:
        key, unit, units = layout.parse_summary(name)
        yield key, ("unit", unit, units)


class PlanShard(beam.DoFn):
  """A shard and what earlier runs finished of it -> its units to score (main output), the
  summaries of its finished units (PRIOR), and its accounting (SHARD)."""

  def __init__(self, output: str, unit_bytes: int):
    self._output, self._unit_bytes = output, unit_bytes

  def process(self, keyed):
    key, grouped = keyed
    state = list(grouped["state"])
    matched = sorted(set(grouped["shard"]))
    done_chunks = frozenset(entry[1] for entry in state if entry[0] == "chunk")
    summaries = {(entry[1], entry[2]) for entry in state if entry[0] == "unit"}
    if not matched:  # a shard of an earlier run that this run's input does not list
      for unit, units in sorted(summaries):
        yield beam.pvalue.TaggedOutput(PRIOR, (key, unit, units))
      return
    source, size = matched[0]
    if len(matched) > 1:  # the same path cannot have two sizes in one listing; be safe
      log.warning("%s matched with sizes %s; using %d", source, [s for _, s in matched], size)
    count = shards.units_of(size, self._unit_bytes)
    stale = {s for s in summaries if s[1] != count}
    if stale:
      log.warning("%s: summaries for another split of this shard (%s): it changed size since",
                  source, sorted(stale))
    todo = 0
    for unit in range(count):
      if (unit, count) in summaries:
        yield beam.pvalue.TaggedOutput(PRIOR, (key, unit, count))
      else:
        todo += 1
        yield shards.Unit(source, size, unit, count, done_chunks)
    yield beam.pvalue.TaggedOutput(SHARD, {"matched": 1, "this_run": int(todo > 0), "units": count,
                                           "units_this_run": todo})

