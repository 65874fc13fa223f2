"""The work of a run, found by the workers: which shards there are (and what each is), what
earlier runs finished, and the units left to score.

Nothing here grows on the launcher or in the job graph with the corpus: the graph holds the
globs (or the manifest's URL) and 16 partition names; matching, listing and planning run as
steps on the workers, and the only shuffle carries shard descriptors and file names. A shard's
identity comes with its match (a glob's listing, or the one lookup a manifest's shard needs);
the identity it was scored at comes with the names of its summaries, so a rerun of a finished
run still reads no marker or summary. Only a shard left half done (markers, units left) costs
one marker read, to learn what it was.
"""
from __future__ import annotations

import logging

import apache_beam as beam

from pipeline import io, shards
from pipeline.state import layout, progress

log = logging.getLogger(__name__)
PRIOR, SHARD, SAMPLE = "prior", "shard", "sample"


class MatchShards(beam.DoFn):
  """A glob -> (source, size, identity) for every file it matches."""

  def process(self, pattern: str):
    found = io.match_info(pattern)
    if not found:
      log.warning("--input %s matches no file", pattern)
    for source, info in found:
      yield source, int(info.get("size") or 0), progress.shard_identity(info)


class ReadManifest(beam.DoFn):
  """--input_manifest: one shard URL a line (blank lines and '#' comments skipped)."""

  def process(self, url: str):
    for line in io.read_bytes(url).decode("utf-8").splitlines():
      line = line.strip()
      if line and not line.startswith("#"):
        yield line


class LookUpShard(beam.DoFn):
  """A listed shard's size and identity; a shard that is not there is left for its unit to
  report."""

  def process(self, source: str):
    info = progress.look_up(source)
    yield source, int((info or {}).get("size") or 0), progress.shard_identity(info)


class ListState(beam.DoFn):
  """One partition of _done/ or _units/ -> (shard key, ("chunk", index) | ("unit", k, n,
  version)); and (SAMPLE) the partition's first file, from which the output's precision is read."""

  def __init__(self, output: str):
    self._output = output

  def process(self, kind_and_partition: tuple[str, str]):
    kind, part = kind_and_partition
    names = layout.list_partition(self._output, kind, part)
    if names:
      yield beam.pvalue.TaggedOutput(SAMPLE, (kind, part, names[0]))
    for name in names:
      if kind == layout.DONE:
        key, index = layout.parse_marker(name)
        yield key, ("chunk", index)
      else:
        key, unit, units, version = layout.parse_summary(name)
        yield key, ("unit", unit, units, version)


def recorded_precision(output: str):
  """(samples of ListState, units to score) -> the precision the output was scored at, None for
  a new output: one read, since no output holds two (progress.check_precision), and none when
  there is nothing to score."""
  def read(samples, units_this_run: int):
    samples = sorted(samples)
    if not samples or not units_this_run:
      return None
    return progress.read_state_file(output, *samples[0]).get("precision")
  return read


class PlanShard(beam.DoFn):
  """A shard and what earlier runs finished of it -> its units to score (main output), the
  summaries of its finished units (PRIOR), and its accounting (SHARD). A shard whose finished
  chunks were read from other bytes than it holds now fails the run (progress.ShardChanged)."""

  def __init__(self, output: str, unit_bytes: int):
    self._output, self._unit_bytes = output, unit_bytes

  def process(self, keyed):
    key, grouped = keyed
    state = list(grouped["state"])
    matched = sorted(set(grouped["shard"]))
    done_chunks = frozenset(entry[1] for entry in state if entry[0] == "chunk")
    summaries = {entry[1:] for entry in state if entry[0] == "unit"}
    if not matched:  # a shard of an earlier run that this run's input does not list
      for unit, units, version in sorted(summaries):
        yield beam.pvalue.TaggedOutput(PRIOR, (key, unit, units, version))
      return
    source, size, identity = matched[0]
    if len(matched) > 1:  # the same path cannot have two sizes in one listing; be safe
      log.warning("%s matched as %s; using %s", source, [m[1:] for m in matched], identity)
    version = layout.version(identity)
    self._check(source, identity, summaries, version, done_chunks)
    count = shards.units_of(size, self._unit_bytes)
    todo = 0
    for unit in range(count):
      if (unit, count, version) in summaries:
        yield beam.pvalue.TaggedOutput(PRIOR, (key, unit, count, version))
      else:
        todo += 1
        yield shards.Unit(source, size, unit, count, done_chunks, identity)
    yield beam.pvalue.TaggedOutput(SHARD, {"matched": 1, "this_run": int(todo > 0), "units": count,
                                           "units_this_run": todo})

  def _check(self, source, identity, summaries, version, done_chunks) -> None:
    """Whether what earlier runs finished of the shard was read from the bytes it holds now:
    by the names of its summaries, else by one of its markers."""
    for unit, units, other in summaries:
      if other != version:
        recorded = progress.read_summary(self._output, io.shard_key(source), unit, units, other)["shard"]
        progress.check_shard(self._output, source, recorded, identity)
    if done_chunks and not summaries:
      marker = progress.read_marker(self._output, source, min(done_chunks))
      progress.check_shard(self._output, source, marker.get("shard"), identity)


def summaries_needed(entry, units_this_run: int, output) -> bool:
  """The filter on earlier units' summaries: read only when stats.json is to be written."""
  return output.stats_needed(units_this_run)


def read_prior(output: str):
  def read(entry):
    return progress.read_summary(output, *entry)
  return read
