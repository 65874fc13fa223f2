"""Scoring work units: a DoFn that reads each unit's chunks and sends them through the worker's
stages (pipeline/stages.py), with several chunks in flight across the units of a bundle, so
that reading, tokenizing, the devices and the uploads all overlap.

  ScoreUnits   Beam's side: the worker loaded once per process, a unit read chunk by chunk
  _InFlight    the chunks in flight, oldest first: back-pressure, and each unit's summary
               once all its chunks are done, in order
  _Counters    Beam metrics and the progress line
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import time

import apache_beam as beam
from apache_beam.metrics import Metrics

from model.hub import ModelInfo
from pipeline import outputs, shards, stages
from pipeline.options import ScoringConfig
from pipeline.state import check_precision, write_summary
from pipeline.worker import Worker, load_worker

log = logging.getLogger(__name__)
NAMESPACE = "koedu"
PROGRESS_EVERY_SECONDS = 30


class ScoreUnits(beam.DoFn):
  """Unit descriptors in, unit summaries out; every output of the unit written on the way."""

  def __init__(self, config: ScoringConfig, info: ModelInfo):
    from apache_beam.utils import shared
    self._config, self._info = config, info
    self._shared = shared.Shared()

  def setup(self):
    self._worker = None
    self._counters = _Counters()
    self._resolved = None  # the precision --dtype resolved to in this process
    self._recorded = None  # the precision the output was scored at (a side input)

  def _load(self) -> Worker:
    # At the first unit, not in setup(): a run with nothing left to score loads no model. One
    # load (and one warm-up) per process, whichever thread comes first.
    if self._worker is None:
      self._worker = self._shared.acquire(lambda: load_worker(self._config, self._info),
                                          tag=("koedu-worker", self._info.content_digest))
    return self._worker

  def start_bundle(self):
    self._in_flight = None  # made at the first unit, which loads the worker

  def process(self, unit: shards.Unit, recorded: str | None = None):
    """`recorded`: the precision the output was scored at, None for a new output."""
    c, w = self._config, self._load()
    self._recorded = recorded
    if self._in_flight is None:
      self._in_flight = _InFlight(c, w, self._counters, self._precision)
    flight = self._in_flight
    state = flight.start(unit)
    for raw in shards.read_unit(unit, c.chunk_size, c.unit_bytes, c.max_record_bytes):
      flight.wait_for_room()
      flight.add(state, stages.score_chunk(w, c, unit, raw, recorded, self._precision))
      yield from flight.summaries()
    state.read = True
    yield from flight.summaries()

  def _precision(self) -> str:
    """What --dtype resolved to here; refused if the output was scored at another precision.
    Asked once the devices are loaded (a chunk's scores are there, or a summary is due)."""
    if self._resolved is None:
      self._resolved = self._worker.precision()
    check_precision(self._config.output, self._config.dtype, self._recorded, self._resolved)
    return self._resolved

  def finish_bundle(self):
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.windowed_value import WindowedValue
    if self._in_flight is None:
      return
    for summary in self._in_flight.drain():
      yield WindowedValue(summary, GlobalWindow().max_timestamp(), [GlobalWindow()])


@dataclasses.dataclass
class _UnitProgress:
  unit: shards.Unit
  totals: dict = dataclasses.field(default_factory=outputs.empty_totals)  # all its chunks
  here: dict = dataclasses.field(default_factory=outputs.empty_totals)  # those scored by this attempt
  edu: list = dataclasses.field(default_factory=list)  # each chunk's edu_entry, from its marker
  pending: int = 0  # chunks submitted and not finished
  read: bool = False  # every chunk of the unit submitted


class _InFlight:
  """A bundle's chunks in flight, oldest first, across units: while one unit's last chunks are
  on the devices and being written, the next unit is read. Two bounds: the process's chunks in
  flight across its harness threads (Worker.slots: what bounds its memory, a chunk being a few
  tens of MB at most), and this thread's (`window`: one being read, some tokenizing, some on
  the devices or uploading). A unit's summary goes out once all its chunks are done, in order."""

  def __init__(self, config: ScoringConfig, worker: Worker, counters: _Counters, precision):
    self._config, self._worker, self._counters = config, worker, counters
    self._precision = precision  # what the devices run at, checked against the output's
    self._window = config.threads + 2
    self._chunks = collections.deque()  # (unit progress, future of (counts, scored here))
    self._units = collections.deque()

  def start(self, unit: shards.Unit) -> _UnitProgress:
    state = _UnitProgress(unit)
    self._units.append(state)
    return state

  def wait_for_room(self) -> None:
    """Until the process has room for one more chunk, finishing what is done meanwhile."""
    while not self._worker.slots.acquire(timeout=0.05):
      while self._chunks and self._chunks[0][1].done():
        self._finish_oldest()

  def add(self, state: _UnitProgress, future: stages.Future) -> None:
    future.add_done_callback(lambda _: self._worker.slots.release())
    state.pending += 1
    self._chunks.append((state, future))
    while len(self._chunks) > self._window:
      self._finish_oldest()

  def drain(self):
    while self._chunks:
      self._finish_oldest()
    return self.summaries()

  def summaries(self):
    while self._units and self._units[0].read and not self._units[0].pending:
      state = self._units.popleft()
      yield write_summary(self._config.output, state.unit, state.totals, state.here, self._precision(),
                          **outputs.edu_fields(state.edu))

  def _finish_oldest(self) -> None:
    state, future = self._chunks.popleft()
    counts, new = future.result()  # a machine fault raises here, and fails the bundle
    outputs.add(state.totals, counts)
    if "edu" in counts:  # markers of an earlier koedu lack it; publishing then refuses the unit
      state.edu.append({"chunk": counts["chunk"], **counts["edu"]})
    if new:
      outputs.add(state.here, counts)
      self._counters.count(counts)
    state.pending -= 1


class _Counters:
  """Beam metrics of the chunks this process scored, and a progress line now and then."""

  def __init__(self):
    self._metrics = {name: Metrics.counter(NAMESPACE, metric) for name, metric in (
        ("records", "records_read"), ("scored", "records_scored"), ("errored", "records_errored"),
        ("kept", "records_kept"), ("tokens", "tokens"), ("truncated", "truncated"))}
    self._scored = 0
    self._since = (time.monotonic(), 0)

  def count(self, counts: dict) -> None:
    for name, counter in self._metrics.items():
      counter.inc(counts[name])
    self._scored += counts["scored"]
    since, done = self._since
    now = time.monotonic()
    if now - since >= PROGRESS_EVERY_SECONDS:
      log.info("scored %d documents (%.1f/s over the last %.0fs)", self._scored,
               (self._scored - done) / (now - since), now - since)
      self._since = (now, self._scored)
