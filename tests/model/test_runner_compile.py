"""The runner's programs: each shape compiled once per process, whichever threads ask for it
and in whatever order (the device thread on first use, a compile-ahead thread meanwhile), and a
compile that failed is tried again by the next ask."""
from __future__ import annotations

import collections
import threading
import time

import pytest

from model.runner import RunnerConfig, load_runner


@pytest.fixture
def runner(checkpoint_dir):
  return load_runner(checkpoint_dir, RunnerConfig(max_length=40, row_lengths=(16,), tokens_per_device=64))


def test_threads_racing_for_shapes_compile_each_once(runner):
  calls, real = collections.Counter(), runner._compile

  def slow_compile(rows, length):
    calls[(rows, length)] += 1
    time.sleep(0.05)  # long enough for the other threads to ask for the same shape meanwhile
    return real(rows, length)

  runner._compile = slow_compile
  # Two compile-ahead passes and a device thread wanting the smallest shape first.
  threads = [threading.Thread(target=runner.warmup) for _ in range(2)]
  threads += [threading.Thread(target=runner._executable, args=runner.shapes[-1])]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=120)
  assert calls == {shape: 1 for shape in runner.shapes}
  assert len(runner.shapes) > 1


def test_a_failed_compile_is_tried_again_by_the_next_ask(runner):
  real, failures = runner._compile, []

  def failing_once(rows, length):
    if not failures:
      failures.append((rows, length))
      raise RuntimeError("RESOURCE_EXHAUSTED: out of host memory while compiling")
    return real(rows, length)

  runner._compile = failing_once
  shape = runner.shapes[0]
  with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED"):
    runner._executable(*shape)
  assert runner._executable(*shape) is runner._executable(*shape)  # compiled on the second ask, kept
