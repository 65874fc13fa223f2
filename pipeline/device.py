"""The thread that owns the devices: token ids in, scores out, batches always in flight.

Host threads call `submit(ids)` (a proxy in another process, `score(ids)`): they pack the
documents into the runner's compiled shapes themselves and queue the batches; one device thread
only dispatches and collects, keeping several batches in flight across calls, so the devices
never wait for a host thread to tokenize or write. The queue holds at most what the processes'
chunks in flight allow (Worker.slots, each process's): when the devices fall behind, the
processes stop reading instead of piling up batches in memory, and no host thread ever waits
on the queue itself.

Faults. Every batch reaching the devices holds valid token ids of compiled shapes, so nothing a
document holds can make a device fail: a failure is the machine's (a device error, out of
memory, a runtime halt). The device thread then retries with backoff, each time first running
a probe: the first batch it ever scored, whose scores it kept. Once the probe scores as it did,
the batches in flight are dispatched anew; before any batch has scored, the failed batch's own
retry is the check. No probe is computed at start-up: on a CPU worker the smallest compiled
batch costs seconds of compute, paid by every short job. If the device never recovers, every
waiting and later call raises DeviceFault: the bundle fails and is retried by the runner, or
the run fails; no document is ever put in errors/ for it.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import queue
import threading
import time

import numpy as np

from model import packing
from model.runner import EncoderRunner
from pipeline import io
from pipeline.faults import DeviceFault

log = logging.getLogger(__name__)
PROBE_TOLERANCE = 1e-5


@dataclasses.dataclass
class _Job:
  batches: list
  out: np.ndarray
  future: concurrent.futures.Future
  remaining: int


class DeviceService:

  def __init__(self, runner: EncoderRunner, retries: int = 8, in_flight: int = 4):
    self.runner = runner
    self._retries, self._in_flight = retries, in_flight
    # Not bounded in batches: what bounds it is each process's chunks in flight (Worker.slots).
    # A bound in batches blocked the threads that submit, so finished chunks waited to be
    # written while the device drained, then the device waited for the host (a 0.5 s stall in
    # 10 s of bench.feed's simulated device, when writer threads submitted).
    self._queue: queue.Queue = queue.Queue()
    self._failed: BaseException | None = None
    self._probe: tuple[packing.Batch, np.ndarray] | None = None  # (first batch scored, its scores)
    self._thread = threading.Thread(target=self._loop, name="koedu-device", daemon=True)
    self._thread.start()

  # --------------------------------------------------------------------------- host threads

  def submit(self, ids: list[np.ndarray]) -> concurrent.futures.Future:
    """Packs `ids` in the calling thread and queues them; the future gives their scores."""
    future = concurrent.futures.Future()
    batches = self.runner.pack(ids)
    job = _Job(batches, self.runner.empty(len(ids)), future, len(batches))
    if not batches:
      future.set_result(job.out)
      return future
    self._raise_if_failed()
    for batch in batches:
      self._queue.put((job, batch))
    if self._failed is not None:  # failed while we queued, after its last look at the queue
      try:
        future.set_exception(DeviceFault(f"the devices failed: {self._failed}"))
      except concurrent.futures.InvalidStateError:
        pass
    return future

  def score(self, ids: list[np.ndarray]) -> np.ndarray:
    """Scores of `ids`, waiting for them: what a proxy in another process calls."""
    return self.submit(ids).result()

  def describe(self) -> dict:
    runtime = self.runner.runtime
    return {"precision": runtime.precision, "attention": runtime.attention,
            "devices": runtime.devices, "platform": runtime.platform}

  def _raise_if_failed(self) -> None:
    if self._failed is not None:
      raise DeviceFault(f"the devices failed: {self._failed}") from self._failed

  # --------------------------------------------------------------------------- device thread

  def _loop(self) -> None:
    pending = collections.deque()  # (job, batch, dispatched), oldest first
    try:
      while True:
        while len(pending) < self._in_flight:
          try:
            job, batch = self._queue.get(block=not pending, timeout=None if not pending else 0)
          except queue.Empty:
            break
          pending.append((job, batch, self._dispatch(batch)))
        self._collect(*pending[0], pending)
        pending.popleft()
    except BaseException as err:  # recovery gave up: fail every caller, now and later
      self._failed = err
      log.error("the devices failed, every waiting batch fails with them: %s", err)
      for job, _, _ in pending:
        if not job.future.done():
          job.future.set_exception(DeviceFault(f"the devices failed: {err}"))
      while True:
        try:
          job, _ = self._queue.get_nowait()
        except queue.Empty:
          break
        if not job.future.done():
          job.future.set_exception(DeviceFault(f"the devices failed: {err}"))

  def _dispatch(self, batch):
    """The batch started on the devices, or None if starting it failed (`_collect` starts it
    again and meets the error there, with the retries)."""
    try:
      return self.runner.dispatch(batch)
    except Exception as err:
      log.warning("dispatching a batch failed: %s: %s", type(err).__name__, str(err)[:300])
      return None

  def _collect(self, job: _Job, batch, dispatched, pending) -> None:
    for attempt in range(self._retries + 1):
      try:
        if dispatched is None:
          dispatched = self.runner.dispatch(batch)
        self.runner.collect(dispatched, job.out)
        break
      except Exception as err:
        if attempt == self._retries:
          raise DeviceFault(f"a batch failed {attempt + 1} times: {type(err).__name__}: {err}") from err
        self._recover(err, attempt + 1)
        # What was in flight with it may be lost too: all of it starts again.
        dispatched = None
        for i, (other_job, other_batch, _) in enumerate(pending):
          pending[i] = (other_job, other_batch, None)
    if self._probe is None:
      self._probe = (batch, job.out[batch.documents].copy())
    job.remaining -= 1
    if job.remaining == 0:
      job.future.set_result(job.out)

  def _recover(self, err: BaseException, attempt: int) -> None:
    if self._probe is None:  # nothing scored yet to compare with: retrying the batch is the check
      log.warning("device error before any batch scored (%s: %s); retrying (attempt %d of %d)",
                  type(err).__name__, str(err)[:500], attempt, self._retries)
      time.sleep(io.backoff(attempt))
      return
    log.warning("device error (%s: %s); checking the devices with the probe batch",
                type(err).__name__, str(err)[:500])
    self._run_probe_with_retries(first_error=err)

  def _score_probe(self) -> np.ndarray:
    batch, _ = self._probe
    out = self.runner.empty(int(batch.documents.max()) + 1)
    self.runner.collect(self.runner.dispatch(batch), out)
    return out[batch.documents]

  def _run_probe_with_retries(self, first_error: BaseException) -> None:
    """Runs the probe until it scores as it first did; DeviceFault after the retries."""
    expected, last = self._probe[1], first_error
    for attempt in range(1, self._retries + 1):
      time.sleep(io.backoff(attempt))
      try:
        scores = self._score_probe()
      except Exception as err:
        last = err
        log.warning("probe batch failed (attempt %d of %d): %s: %s", attempt, self._retries,
                    type(err).__name__, str(err)[:300])
        continue
      if np.allclose(scores, expected, rtol=0, atol=PROBE_TOLERANCE):
        log.info("the devices work again (the probe batch scored as it first did)")
        return
      last = RuntimeError(f"probe batch scored {scores.tolist()}, not {expected.tolist()}")
      log.warning("%s", last)
    raise DeviceFault(f"the devices did not recover after {self._retries} tries; last error: "
                       f"{type(last).__name__}: {last}") from last
