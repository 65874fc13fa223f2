"""Orbax checkpoints: the latest ones, to resume from, and the best by macro F1, to export.

Kept as two managers because Orbax's own best-of policy may delete the newest checkpoint, and a
resume needs the newest. Orbax writes each step to a temporary directory and renames it when
complete, so a run killed mid-save resumes from the previous step.
"""
from __future__ import annotations

import jax
import orbax.checkpoint as ocp

LATEST, BEST = "latest", "best"


def _abstract(tree):
  """Shapes, dtypes and shardings to restore into: restored arrays land where they were."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Checkpoints:

  def __init__(self, directory: str, keep: int):
    options = lambda n: ocp.CheckpointManagerOptions(max_to_keep=n, create=True)
    self._latest = ocp.CheckpointManager(f"{directory.rstrip('/')}/{LATEST}", options=options(keep))
    self._best = ocp.CheckpointManager(f"{directory.rstrip('/')}/{BEST}", options=options(1))

  def latest_step(self) -> int | None:
    return self._latest.latest_step()

  def save_latest(self, step: int, params, opt_state, meta: dict) -> None:
    if step in self._latest.all_steps():
      return
    self._latest.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave({"params": params, "opt_state": opt_state}),
        meta=ocp.args.JsonSave(meta)))

  def restore_latest(self, params, opt_state):
    """(step, params, opt_state, meta) of the newest checkpoint, or None for a fresh run."""
    step = self._latest.latest_step()
    if step is None:
      return None
    target = _abstract({"params": params, "opt_state": opt_state})
    restored = self._latest.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    return step, restored.state["params"], restored.state["opt_state"], restored.meta

  def save_best(self, step: int, params) -> None:
    # A resumed run repeats the evaluation that made this step best; the saved one is the same.
    if step not in self._best.all_steps():
      self._best.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(params)))
    # Finished before the latest checkpoint that names it as best is written: a crash between
    # the two then leaves a best checkpoint newer than the resume point, never a missing one.
    self._best.wait_until_finished()

  def restore_best(self, params, step: int):
    restored = self._best.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(params))))
    return restored.state

  def close(self) -> None:
    for manager in (self._latest, self._best):
      manager.wait_until_finished()
      manager.close()
