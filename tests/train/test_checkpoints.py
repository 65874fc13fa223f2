"""Checkpoints hold what the run had at their step, and the best one they name is on disk."""
from __future__ import annotations

import copy
import threading

import jax.numpy as jnp
import pytest

from train.checkpoints import Checkpoints

STATE = {"params": {"w": jnp.arange(4.0)}, "rng": jnp.zeros(2, jnp.uint32)}


def test_meta_is_kept_as_it_was_at_save(tmp_path, monkeypatch):
  # Orbax writes JSON on its commit thread after save() returns; hold that thread until the
  # loop has moved on, as a slow disk or a busy host would.
  from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler
  released, original = threading.Event(), handler.JsonCheckpointHandler._save_fn

  async def delayed(self, item, directory):
    released.wait(10)
    return await original(self, item, directory)
  monkeypatch.setattr(handler.JsonCheckpointHandler, "_save_fn", delayed)

  ckpt = Checkpoints(str(tmp_path), keep=2)
  meta = {"history": [{"step": 3, "macro_f1": 0.4}], "best": {"step": 3, "macro_f1": 0.4}, "loss_sum": 2.5}
  at_save = copy.deepcopy(meta)
  ckpt.save_latest(4, STATE, meta)
  # What the loop does next, while the checkpoint is being written.
  meta["history"].append({"step": 6, "macro_f1": 0.5})
  meta["best"]["step"], meta["loss_sum"] = 6, 0.0
  released.set()
  ckpt.close()
  step, _, restored = Checkpoints(str(tmp_path), keep=2).restore_latest(STATE)
  assert step == 4 and restored == at_save


def test_a_best_checkpoint_goes_only_once_a_latest_one_names_its_successor(tmp_path):
  ckpt = Checkpoints(str(tmp_path), keep=2)
  ckpt.save_best(3, STATE["params"])
  ckpt.save_latest(3, STATE, {"best": {"step": 3}})
  ckpt.save_best(6, {"w": jnp.ones(4)})
  # A crash here resumes from the checkpoint at step 3, which names best step 3.
  assert ckpt.best_steps() == [3, 6]
  ckpt.save_latest(6, STATE, {"best": {"step": 6}})
  assert ckpt.best_steps() == [6]
  # Resumed at step 3 after that crash: a best no latest checkpoint names goes, and is saved
  # again if its step is best again.
  ckpt.save_best(9, STATE["params"])
  ckpt.save_latest(8, STATE, {"best": {"step": 6}})
  assert ckpt.best_steps() == [6]
  ckpt.save_best(9, {"w": jnp.ones(4)})
  ckpt.save_latest(9, STATE, {"best": {"step": 9}})
  assert ckpt.best_steps() == [9]
  ckpt.close()
  reopened = Checkpoints(str(tmp_path), keep=2)
  assert reopened.best_steps() == [9] and reopened.latest_step() == 9
  assert (reopened.restore_best(STATE["params"], 9)["w"] == 1).all()
  reopened.close()


def test_a_fresh_run_starts_with_an_empty_best(tmp_path):
  ckpt = Checkpoints(str(tmp_path), keep=2)
  ckpt.save_best(3, STATE["params"])  # another run's, which died before any latest checkpoint
  ckpt.close()
  again = Checkpoints(str(tmp_path), keep=2)
  assert again.latest_step() is None and again.best_steps() == [3]
  again.start_fresh()
  assert again.best_steps() == []
  with pytest.raises(FileNotFoundError):
    again.restore_best(STATE["params"], 3)
  again.close()
