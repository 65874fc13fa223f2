"""An interrupted run resumes to exactly the result of one that never stopped."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from model import checkpoint
from train import base, evaluate
from train.config import TrainConfig
from train.loop import train_and_evaluate


class Interrupted(Exception):
  pass


def _config(small_corpus, encoder_dir, output, **overrides):
  # The whole model trains, so the resumed state includes every parameter's Adam moments;
  # 3 steps per epoch and 7 steps put the interruption after an epoch's evaluation.
  settings = dict(freeze_encoder=False, max_steps=7, checkpoint_every=2, learning_rate=1e-3)
  return TrainConfig.tiny(small_corpus, str(output), encoder_dir, **{**settings, **overrides})


def _outputs(directory):
  with open(os.path.join(directory, "model.safetensors"), "rb") as f:
    weights = f.read()
  with open(os.path.join(directory, evaluate.REPORT_JSON), encoding="utf-8") as f:
    report = json.load(f)
  return weights, report


def test_resume_after_interruption_equals_an_uninterrupted_run(small_corpus, encoder_dir, tmp_path):
  straight = train_and_evaluate(_config(small_corpus, encoder_dir, tmp_path / "straight"))
  assert [h["step"] for h in straight["history"]] == [3, 6, 7]

  def interrupt(step):
    if step == 5:
      raise Interrupted
  resumed_dir = tmp_path / "resumed"
  with pytest.raises(Interrupted):
    train_and_evaluate(_config(small_corpus, encoder_dir, resumed_dir), on_step=interrupt)
  steps = []
  resumed = train_and_evaluate(_config(small_corpus, encoder_dir, resumed_dir), on_step=steps.append)
  assert steps == [5, 6, 7], "resumes from the checkpoint at step 4"
  assert resumed["history"] == straight["history"]
  assert _outputs(resumed_dir) == _outputs(tmp_path / "straight")

  # Resuming with another recipe would mix two runs in one model.
  with pytest.raises(ValueError, match="other settings \\(learning_rate\\)"):
    train_and_evaluate(_config(small_corpus, encoder_dir, resumed_dir, learning_rate=1.0))

  # Training the whole model moved the encoder.
  cfg = checkpoint.read_config(str(resumed_dir))
  _, trained = checkpoint.load_classifier(str(resumed_dir))
  start = base.load(encoder_dir, seed=0)
  word = trained.embeddings.word.embedding.get_value()
  assert not np.array_equal(np.asarray(word), start.params[("embeddings", "word", "embedding")])
  assert cfg.num_labels == 1

  # A finished run resumed again does no step and writes the same model.
  again = train_and_evaluate(_config(small_corpus, encoder_dir, resumed_dir), on_step=steps.append)
  assert steps == [5, 6, 7] and again["best"] == resumed["best"]
  assert _outputs(resumed_dir) == _outputs(tmp_path / "straight")
