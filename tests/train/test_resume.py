"""An interrupted run resumes to exactly the result of one that never stopped, whether the
whole model trains (with dropout) or the head alone; a crash between a new best checkpoint and
the latest one that names it, and a best/ left by an earlier run, change nothing."""
from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import pytest

from model import checkpoint
from train import base, evaluate
from train.checkpoints import Checkpoints
from train.config import FULL_LEARNING_RATE, TrainConfig
from train.loop import train_and_evaluate


class Interrupted(Exception):
  pass


def _config(data, encoder_dir, output, **overrides):
  # The whole model trains at the full fine-tune's default learning rate, with the checkpoint's
  # dropout, so the resumed state includes every parameter's Adam moments and the dropout key;
  # 3 steps per epoch and 7 steps put the interruption after an epoch's evaluation.
  settings = dict(freeze_encoder=False, max_steps=7, checkpoint_every=2)
  return TrainConfig.tiny(data, str(output), encoder_dir, **{**settings, **overrides})


def _frozen(data, encoder_dir, output, **overrides):
  """The default recipe: a fresh head on cached features; 3 steps per epoch."""
  return TrainConfig.tiny(data, str(output), encoder_dir,
                          **{"epochs": 2, "learning_rate": 1e-2, "warmup_ratio": 0, **overrides})


def _outputs(directory):
  with open(os.path.join(directory, "model.safetensors"), "rb") as f:
    weights = f.read()
  with open(os.path.join(directory, evaluate.REPORT_JSON), encoding="utf-8") as f:
    report = json.load(f)
  return weights, report


def _interrupt_at(step):
  def on_step(done):
    if done == step:
      raise Interrupted
  return on_step


def test_a_full_fine_tune_resumes_to_an_uninterrupted_run(small_corpus, encoder_dir, tmp_path):
  data = shutil.copy(small_corpus, str(tmp_path / "data.jsonl"))
  straight = train_and_evaluate(_config(data, encoder_dir, tmp_path / "straight"))
  history = straight["history"]
  assert [h["step"] for h in history] == [3, 6, 7]
  # At the default learning rate a tiny model's held-out error falls from the first epoch on.
  # (Its training loss, over three dropout-noised batches an epoch, need not: CI's CPU once
  # measured 13.38 then 13.54.)
  assert _config(data, encoder_dir, "-").peak_learning_rate == FULL_LEARNING_RATE
  assert history[0]["mse"] > history[1]["mse"] > history[2]["mse"], history

  resumed_dir = tmp_path / "resumed"
  with pytest.raises(Interrupted):
    train_and_evaluate(_config(data, encoder_dir, resumed_dir), on_step=_interrupt_at(5))

  # New documents matching the glob would change every later batch: refused, by what changed.
  lines = open(data, encoding="utf-8").read()
  with open(data, "a", encoding="utf-8") as f:
    f.write(json.dumps({"text": "새로 들어온 문서", "score": 2.0}, ensure_ascii=False) + "\n")
  with pytest.raises(ValueError, match="data changed since .* 96 \\+ 24 documents .* 97 \\+ 24"):
    train_and_evaluate(_config(data, encoder_dir, resumed_dir))
  with open(data, "w", encoding="utf-8") as f:
    f.write(lines)

  steps = []
  resumed = train_and_evaluate(_config(data, encoder_dir, resumed_dir), on_step=steps.append)
  assert steps == [5, 6, 7], "resumes from the checkpoint at step 4"
  assert resumed["history"] == straight["history"]
  assert _outputs(resumed_dir) == _outputs(tmp_path / "straight")

  # Resuming with another recipe would mix two runs in one model.
  with pytest.raises(ValueError, match="other settings \\(learning_rate\\)"):
    train_and_evaluate(_config(data, encoder_dir, resumed_dir, learning_rate=1.0))

  # Training the whole model moved the encoder.
  cfg = checkpoint.read_config(str(resumed_dir))
  _, trained = checkpoint.load_classifier(str(resumed_dir))
  start = base.load(encoder_dir, seed=0)
  word = trained.embeddings.word.embedding.get_value()
  assert not np.array_equal(np.asarray(word), start.params[("embeddings", "word", "embedding")])
  assert cfg.num_labels == 1

  # A finished run resumed again does no step and writes the same model.
  again = train_and_evaluate(_config(data, encoder_dir, resumed_dir), on_step=steps.append)
  assert steps == [5, 6, 7] and again["best"] == resumed["best"]
  assert _outputs(resumed_dir) == _outputs(tmp_path / "straight")


def _crash_in_save_latest(monkeypatch, at_step):
  """A crash after step `at_step`'s best checkpoint is written, before the latest one."""
  original = Checkpoints.save_latest

  def save_latest(self, step, state, meta):
    if step == at_step:
      raise Interrupted
    return original(self, step, state, meta)
  monkeypatch.setattr(Checkpoints, "save_latest", save_latest)


def _restore(directory, step):
  """The arrays of one checkpoint step, as saved."""
  import orbax.checkpoint as ocp
  manager = ocp.CheckpointManager(str(directory))
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
  manager.close()
  return jax.tree.map(np.asarray, state)


def test_a_frozen_run_resumes_from_a_crash_between_best_and_latest(small_corpus, encoder_dir, tmp_path,
                                                                   monkeypatch):
  straight = train_and_evaluate(_frozen(small_corpus, encoder_dir, tmp_path / "straight"))
  history = straight["history"]
  assert [h["step"] for h in history] == [3, 6]
  assert history[1]["macro_f1"] > history[0]["macro_f1"], "step 6 is a new best (the window below)"

  # An earlier run in the same directory died after its first best checkpoint, before any
  # latest one: nothing to resume, and a best/ step 3 that is not this run's.
  crashed = tmp_path / "crashed"
  shutil.copytree(tmp_path / "straight" / "checkpoints" / "best" / "6", crashed / "checkpoints" / "best" / "3")
  with monkeypatch.context() as m:
    _crash_in_save_latest(m, 6)
    with pytest.raises(Interrupted):
      train_and_evaluate(_frozen(small_corpus, encoder_dir, crashed))
  ckpt = Checkpoints(str(crashed / "checkpoints"), keep=2)
  # The newest latest checkpoint (step 4) names best step 3: it is still there, and it is this
  # run's step 3, as its latest checkpoint of step 3 holds it.
  assert ckpt.latest_step() == 4 and ckpt.best_steps() == [3, 6]
  ckpt.close()
  best, latest = _restore(crashed / "checkpoints" / "best", 3), _restore(crashed / "checkpoints" / "latest", 3)
  assert jax.tree.all(jax.tree.map(np.array_equal, best, latest["params"]))

  resumed = train_and_evaluate(_frozen(small_corpus, encoder_dir, crashed))
  assert resumed["history"] == straight["history"]
  assert _outputs(crashed) == _outputs(tmp_path / "straight")
