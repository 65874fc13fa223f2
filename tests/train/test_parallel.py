"""Data parallel and FSDP over the "data" mesh axis: 8 fake CPU devices train what 1 device
trains, hold an eighth of every matrix and its Adam moments, and reduce gradients once a step;
laid out as 2 slices of 4 ("slice" x "data"), they train the same with each matrix split 4 ways."""
from __future__ import annotations

import collections

import pytest

from tests.train.conftest import run_on_fake_devices


@pytest.fixture(scope="module")
def result(small_corpus, make_checkpoint, tmp_path_factory):
  # Widths 8 divides (hidden 48, FFN 64), so that the matrices are split over the devices.
  model = make_checkpoint(encoder_only=True, hidden_size=48, intermediate_size=64)
  return run_on_fake_devices("tests.train._devices", small_corpus, model, str(tmp_path_factory.mktemp("devices")))


def test_eight_devices_train_what_one_device_trains(result):
  # One step's gradients: 1 device accumulating 4 passes equals 8 devices in one pass, up to
  # the order of float sums.
  grads = result["gradients"]
  assert grads["passes"] == [4, 1] and grads["scale"] > 1e-3, result
  assert grads["max_diff"] < 1e-5 * grads["scale"], result
  for mode, tolerance in (("cached", 1e-6), ("full", 1e-4)):
    # Adam divides by sqrt(v): for parameters whose gradients are float noise, that noise becomes
    # updates of up to the learning rate (1e-3 here), so the whole model agrees less tightly
    # than the head, and the key bias (a gradient of exactly 0 but for noise) only within 3
    # steps of the learning rate. The full run trains with dropout: equal results also say that
    # each document drew the same masks on 1 device in 4 passes as on 8 in one.
    assert result[mode]["max_param_diff"] < tolerance, result
    assert result[mode]["max_key_bias_diff"] < 3e-3, result
    assert result[mode]["max_mse_diff"] < 1e-5, result
    assert result[mode]["same_confusion"], result


def test_fsdp_splits_every_matrix_and_its_adam_moments_eight_ways(result):
  layout = result["sharding"]
  params = {p["path"]: p for p in layout["params"]}
  assert len(params) > 20
  for p in params.values():
    shard = p["shard"]
    assert sum(a != b for a, b in zip(p["shape"], shard)) == 1, p  # along one axis
    assert max(p["shape"][i] // shard[i] for i in range(len(shard))) == 8, p  # 8 ways
  # Adam's two moments of every matrix, laid out as the matrix is, and nothing else whole.
  matrices = collections.Counter((tuple(p["shape"]), tuple(p["shard"])) for p in params.values())
  state = collections.Counter((tuple(m["shape"]), tuple(m["shard"])) for m in layout["opt_state"])
  assert state == collections.Counter({k: 2 * n for k, n in matrices.items()})


def test_gradients_cross_devices_once_per_step(result):
  collectives = result["sharding"]["collectives"]
  # A micro-batch gathers the parameters and reduces nothing across devices...
  assert collectives["accumulate"]["all-reduce"] == collectives["accumulate"]["reduce-scatter"] == 0
  assert collectives["accumulate"]["all-gather"] > 0
  # ...the step's update does the one reduction (an all-reduce on CPU, where XLA does not
  # rewrite it into a reduce-scatter as it does for TPUs).
  assert collectives["apply"]["all-reduce"] + collectives["apply"]["reduce-scatter"] > 0


def test_two_slices_split_parameters_within_a_slice_and_train_what_one_device_trains(result):
  # 8 devices laid out as 2 slices of 4: the full fine-tune of the 1-device run, within the
  # same tolerances as one slice of 8.
  multi = result["multislice"]
  assert multi["max_param_diff"] < 1e-4 and multi["max_key_bias_diff"] < 3e-3, result
  assert multi["max_mse_diff"] < 1e-5 and multi["same_confusion"], result
  # FSDP within a slice (4 ways), each slice a whole copy; the batch over all 8 devices.
  layout = result["multislice_sharding"]
  assert layout["mesh"] == {"slice": 2, "data": 4}
  for p in layout["params"]:
    assert sum(a != b for a, b in zip(p["shape"], p["shard"])) == 1, p
    assert max(p["shape"][i] // p["shard"][i] for i in range(len(p["shard"]))) == 4, p
  assert layout["batch_shard_rows"] == layout["batch_rows"] // 8


def test_slices_are_read_from_the_devices():
  import jax

  from model import placement

  class SliceDevice:  # what a multislice TPU device reports of itself, on CPU
    def __init__(self, slice_index):
      self.slice_index = slice_index

  assert placement.slices(jax.devices()[:1]) == 1
  assert placement.slices([SliceDevice(0), SliceDevice(1), SliceDevice(0), SliceDevice(1)]) == 2
  assert placement.make_mesh(jax.devices()[:1]).axis_names == (placement.DATA_AXIS,)
  with pytest.raises(ValueError, match="equal slices"):
    placement.make_mesh(jax.devices()[:1] * 3, 2)
