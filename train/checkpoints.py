"""Orbax checkpoints: the latest ones, to resume from, and the best by macro F1, to export.

Kept as two managers because Orbax's own best-of policy may delete the newest checkpoint, and a
resume needs the newest. Orbax writes each step to a temporary directory and renames it when
complete, so a run killed mid-save resumes from the previous step.

The invariant: the best step that the newest latest checkpoint names is on disk. So a new best
is written (and waited for) before the latest checkpoint that names it, and an older best is
deleted only once that latest checkpoint is committed (`save_latest`); a crash anywhere in
between resumes with both bests present.
"""
from __future__ import annotations

import json

import jax
import orbax.checkpoint as ocp

LATEST, BEST = "latest", "best"


def _abstract(tree):
  """Shapes, dtypes and shardings to restore into: restored arrays land where they were."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Checkpoints:

  def __init__(self, directory: str, keep: int):
    directory = directory.rstrip("/")
    self._latest = ocp.CheckpointManager(
        f"{directory}/{LATEST}", options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
    # No max_to_keep: Orbax would delete the previous best as soon as the next one is saved,
    # before any latest checkpoint names the new one.
    self._best = ocp.CheckpointManager(
        f"{directory}/{BEST}", options=ocp.CheckpointManagerOptions(create=True))

  def latest_step(self) -> int | None:
    return self._latest.latest_step()

  def start_fresh(self) -> None:
    """For a run with nothing to resume: best checkpoints left in the directory belong to
    another run (one that failed before its first latest checkpoint, perhaps with another
    recipe), and reusing one would export that run's model."""
    for step in self._best.all_steps():
      self._best.delete(step)

  def save_latest(self, step: int, state: dict, meta: dict) -> None:
    """`state`: arrays (params, opt_state, rng); `meta`: JSON (history, best, ...)."""
    if step in self._latest.all_steps():
      return
    # Orbax serialises JSON on its commit thread, after save() returns, while the loop goes on
    # changing `meta`: hand it a copy frozen at this step.
    meta = json.loads(json.dumps(meta))
    self._latest.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
    best = (meta.get("best") or {}).get("step")
    if best is not None and set(self._best.all_steps()) - {best}:
      # The latest checkpoint names `best` once committed; only then may the others go.
      self._latest.wait_until_finished()
      for old in sorted(set(self._best.all_steps()) - {best}):
        self._best.delete(old)

  def restore_latest(self, state: dict):
    """(step, state, meta) of the newest checkpoint, or None for a fresh run. `state`: arrays
    of the shapes, dtypes and shardings to restore into."""
    step = self._latest.latest_step()
    if step is None:
      return None
    restored = self._latest.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(state)), meta=ocp.args.JsonRestore()))
    return step, restored.state, restored.meta

  def save_best(self, step: int, params) -> None:
    # A resumed run repeats the evaluation that made this step best; the saved one is the same.
    if step not in self._best.all_steps():
      self._best.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(params)))
    # Finished before the latest checkpoint that names it as best is written: a crash between
    # the two then leaves a best checkpoint newer than the resume point, never a missing one.
    self._best.wait_until_finished()

  def best_steps(self) -> list[int]:
    return list(self._best.all_steps())

  def restore_best(self, params, step: int):
    restored = self._best.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(params))))
    return restored.state

  def close(self) -> None:
    for manager in (self._latest, self._best):
      manager.wait_until_finished()
      manager.close()
