"""The one future helper that links a chunk's stages: where each step runs, and that a fault
anywhere reaches whoever takes the result (a machine fault must fail the unit, never vanish in
a callback)."""
from __future__ import annotations

import concurrent.futures
import threading

import pytest

from pipeline.faults import DeviceFault
from pipeline.stages import then


def test_steps_run_on_the_completing_thread_or_the_executor_and_futures_returned_are_followed():
  device = concurrent.futures.Future()
  threads = {}
  with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="writer") as writers:
    inner = concurrent.futures.Future()

    def pack(value):  # no executor: runs on whichever thread completes `device`
      threads["pack"] = threading.current_thread().name
      return inner  # a future: its outcome becomes the step's
    packed = then(device, pack)

    def write(value):
      threads["write"] = threading.current_thread().name
      return value * 2
    written = then(packed, write, writers)
    finisher = threading.Thread(target=device.set_result, args=(1,), name="device")
    finisher.start()
    finisher.join()
    assert threads == {"pack": "device"} and not packed.done()
    inner.set_result(21)
    assert written.result(timeout=10) == 42 and threads["write"].startswith("writer")
  done = concurrent.futures.Future()
  done.set_result(3)
  assert then(done, lambda v: v + 1).result(timeout=0) == 4  # already done: at once, here


def test_a_fault_anywhere_is_the_outcome():
  failed = concurrent.futures.Future()
  failed.set_exception(DeviceFault("the devices failed"))
  calls = []
  with pytest.raises(DeviceFault):
    then(then(failed, calls.append), calls.append).result(timeout=10)
  assert calls == []  # no later step runs

  ok = concurrent.futures.Future()
  ok.set_result(0)

  def breaks(_):
    raise OSError("disk full")
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    with pytest.raises(OSError, match="disk full"):
      then(then(ok, breaks, pool), calls.append).result(timeout=10)
    inner_fails = then(ok, lambda _: failed)  # a returned future that fails
    with pytest.raises(DeviceFault):
      inner_fails.result(timeout=10)
  pool_gone = concurrent.futures.ThreadPoolExecutor(1)
  pool_gone.shutdown()
  with pytest.raises(RuntimeError):  # a pool shut down: said, not hung
    then(ok, calls.append, pool_gone).result(timeout=10)
  assert calls == []
