"""The device batch, when --device_batch_size is not given: the most documents per device per
pass whose compiled step fits the device's memory, on 8 fake CPU devices with a budget."""
from __future__ import annotations


import pytest

from tests.train.conftest import run_on_fake_devices
from train import memory


@pytest.fixture(scope="module")
def result(small_corpus, make_checkpoint, tmp_path_factory):
  model = make_checkpoint(encoder_only=True, hidden_size=48, intermediate_size=64)
  return run_on_fake_devices("tests.train._memory", small_corpus, model, str(tmp_path_factory.mktemp("memory")))


def test_the_largest_pass_that_fits_the_budget_is_chosen_and_reported(result):
  peaks = {int(rows): peak for rows, peak in result["peaks"].items()}
  assert peaks[2] < peaks[4], peaks  # activations grow with rows
  chosen = result["summary"]
  assert chosen["rows_per_device"] == 2 and chosen["passes"] == 2 and chosen["how"] == "memory"
  assert chosen["budget_bytes"] == result["budget"]
  assert chosen["peak_bytes"] == peaks[2] <= memory.USABLE * result["budget"] < peaks[4]
  # Bisection over 1, 2, 4: 2 fits, then 4 does not; 1 needs no compiling.
  assert chosen["tried"] == {"2": peaks[2], "4": peaks[4]}
  assert chosen["apply_peak_bytes"] <= memory.USABLE * result["budget"]
  assert result["eval_report"] == chosen  # the choice is in the run's report
  assert result["precision"] == {"scoring": "float32", "training": "float32", "evaluated": "float32"}


def test_a_budget_below_one_row_fails_naming_what_would_fit(result):
  assert "does not fit" in result["too_small"] and "the optimiser update" in result["too_small"]
  assert "more devices" in result["too_small"]


def test_candidates_cover_the_whole_share():
  assert memory.candidates(1) == [1]
  assert memory.candidates(12) == [1, 2, 4, 8, 12]
  assert memory.candidates(128) == [1, 2, 4, 8, 16, 32, 64, 128]
