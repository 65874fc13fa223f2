"""The device thread's fault handling, in-process against the real EncoderRunner of a tiny
model with its dispatch failing on cue: retries, the probe, and giving up."""
from __future__ import annotations

import logging

import jax
import numpy as np
import pytest

from model import runner as runners
from model.runner import RunnerConfig, load_runner
from model.tokenize import DocumentTokenizer
from pipeline import device
from pipeline.faults import DeviceFault
from tests.model.reference import mixed_texts


@pytest.fixture(scope="module")
def setup(checkpoint_dir):
  runner = load_runner(checkpoint_dir, RunnerConfig(max_length=40, row_lengths=(16,), tokens_per_device=64))
  ids = DocumentTokenizer(checkpoint_dir, 40)(mixed_texts(seed=41)).ids
  return runner, ids, runner.run(ids)


def failing(monkeypatch, calls: set[int], method: str = "dispatch"):
  """The runner's `method` fails on the call numbers in `calls` (1-based), as a halted device
  does: when a batch is started ("dispatch") or when its result is read ("collect")."""
  real, count = getattr(runners.EncoderRunner, method), [0]

  def maybe(self, *args):
    count[0] += 1
    if count[0] in calls:
      raise jax.errors.JaxRuntimeError(f"INTERNAL: halted ({method} {count[0]})")
    return real(self, *args)
  monkeypatch.setattr(runners.EncoderRunner, method, maybe)


def test_a_halt_mid_run_is_retried_after_the_probe(setup, monkeypatch, caplog):
  runner, ids, expected = setup
  service = device.DeviceService(runner, retries=4)
  monkeypatch.setattr(device.io, "backoff", lambda attempt: 0.01)
  first = service.score(ids[:2])  # the first batch scored becomes the probe
  # The next batch's result fails to come back, and so does the probe's first try.
  failing(monkeypatch, {1, 2}, "collect")
  with caplog.at_level(logging.INFO, logger="pipeline.device"):
    scores = service.score(ids)
  np.testing.assert_allclose(first, expected[:2], atol=1e-6)
  np.testing.assert_allclose(scores, expected, atol=1e-6)
  assert "the devices work again" in caplog.text and "probe batch failed" in caplog.text


def test_a_first_batch_that_fails_is_retried_without_a_probe(setup, monkeypatch, caplog):
  runner, ids, expected = setup
  service = device.DeviceService(runner, retries=3)
  monkeypatch.setattr(device.io, "backoff", lambda attempt: 0.01)
  failing(monkeypatch, {1, 2}, "collect")
  with caplog.at_level(logging.INFO, logger="pipeline.device"):
    scores = service.score(ids)
  np.testing.assert_allclose(scores, expected, atol=1e-6)
  assert caplog.text.count("before any batch scored") == 2


def test_a_device_that_stays_down_fails_every_caller(setup, monkeypatch):
  runner, ids, _ = setup
  service = device.DeviceService(runner, retries=2)
  monkeypatch.setattr(device.io, "backoff", lambda attempt: 0.01)
  service.score(ids[:2])
  failing(monkeypatch, set(range(1, 1000)))
  with pytest.raises(DeviceFault, match="INTERNAL: halted"):
    service.score(ids)
  with pytest.raises(DeviceFault):  # and every later call, at once
    service.submit(ids)


def test_a_probe_that_scores_wrong_is_a_failure_not_a_recovery(setup, monkeypatch):
  runner, ids, _ = setup
  service = device.DeviceService(runner, retries=2)
  monkeypatch.setattr(device.io, "backoff", lambda attempt: 0.01)
  service.score(ids[:2])
  batch, scores = service._probe
  service._probe = (batch, scores + 1.0)  # what the first batch scored no longer comes out
  failing(monkeypatch, {1, 2}, "collect")
  with pytest.raises(DeviceFault, match="probe batch scored"):
    service.score(ids)


def test_a_device_that_never_worked_fails_its_first_call_and_every_later_one(setup, monkeypatch):
  runner, ids, _ = setup
  monkeypatch.setattr(device.io, "backoff", lambda attempt: 0.01)
  failing(monkeypatch, set(range(1, 1000)))
  service = device.DeviceService(runner, retries=3)  # no work at start-up: nothing fails yet
  with pytest.raises(DeviceFault, match="a batch failed 4 times"):
    service.submit(ids[:1]).result(timeout=60)  # a call of one batch: the batch that failed
  with pytest.raises(DeviceFault):
    service.submit(ids[:2])
