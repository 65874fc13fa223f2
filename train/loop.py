"""`train_and_evaluate(config)`: the steps, evaluation at every epoch's end, checkpoints, and the
export of the best model by macro F1."""
from __future__ import annotations

import json
import logging
import time

import jax
import numpy as np

from model import placement
from train import agreement, batches, evaluate, export, memory, optim, prepare, steps
from train.checkpoints import Checkpoints
from train.config import TrainConfig

log = logging.getLogger(__name__)
RECIPE, SUMMARY = "train_config.json", "train_summary.json"


def check_recipe(output: export.Output, config: TrainConfig, resuming: bool) -> None:
  """Resuming a different run would mix two recipes in one model: refuse. Without checkpoints
  there is nothing to resume, so a run that failed early (say, a wrong --model) may be fixed."""
  recipe = json.loads(json.dumps(config.recipe()))
  if resuming and output.exists(RECIPE):
    before = json.loads(output.read(RECIPE))
    changed = sorted(k for k in recipe.keys() | before.keys() if recipe.get(k) != before.get(k))
    if changed:
      raise ValueError(f"{output.root} holds checkpoints of a run with other settings "
                       f"({', '.join(changed)}); use another --output, or the same settings to resume it")
  elif placement.is_primary():
    output.write(RECIPE, json.dumps(recipe, indent=2).encode())


class _Inputs:
  """Micro-batches of cached features or of token ids, whichever this run trains on."""

  def __init__(self, config: TrainConfig, prepared: prepare.Prepared, mesh, rows_per_device: int):
    self.rows = batches.micro_rows(config.batch_size, rows_per_device, mesh.devices.size)
    self._config, self._prepared, self._mesh = config, prepared, mesh

  def micro(self, inputs, labels, docs):
    if self._config.cached:
      return batches.feature_batches(inputs, labels, docs, self.rows)
    return batches.token_batches(inputs, labels, docs, self.rows, self._config.lengths,
                                 self._prepared.base.config.pad_token_id)

  def predict(self, run: steps.Steps, params) -> np.ndarray:
    held_out = self._prepared.eval
    scores = np.empty(len(held_out.labels), np.float32)
    docs = np.arange(len(scores))
    for chunk, batch in self.micro(self._prepared.eval_inputs, held_out.labels, docs):
      scores[chunk] = placement.to_host(run.predict(params, placement.shard_rows(self._mesh, batch)))[:len(chunk)]
    return scores


def train_and_evaluate(config: TrainConfig, *, devices=None, mesh=None, on_step=None) -> dict:
  """Train, evaluate, export; returns the summary also written to train_summary.json.
  `mesh`: default model/placement.make_mesh over `devices` (default: every device of every
  host). `on_step(step)` runs after each step is done and checkpointed (tests interrupt with it)."""
  started = time.perf_counter()
  mesh = mesh or placement.make_mesh(devices or jax.devices())
  output = export.Output(config.output)
  ckpt = Checkpoints(output.path("checkpoints"), config.keep_checkpoints)
  try:
    resuming = ckpt.latest_step() is not None
    check_recipe(output, config, resuming)
    if not resuming:
      ckpt.start_fresh()
    return _train(config, mesh, output, ckpt, on_step, started)
  finally:
    ckpt.close()


def _train(config, mesh, output, ckpt, on_step, started) -> dict:
  prepared, data_summary = prepare.prepare(config, mesh, output)
  train_labels = prepared.train.labels
  per_epoch = batches.steps_per_epoch(len(train_labels), config.batch_size)
  total = config.max_steps or config.num_epochs * per_epoch
  graphdef, host_params = steps.split_params(prepared.model, config.cached)
  optimizer = optim.optimizer(config, host_params, total)
  run = steps.Steps(graphdef, optimizer, prepared.runtime, host_params, cached=config.cached,
                    frozen=config.freeze_encoder and not config.cached, dropout=config.dropout,
                    mesh=mesh)
  device_batch = choose_device_batch(config, run, host_params)
  inputs = _Inputs(config, prepared, mesh, device_batch.rows_per_device)
  params = run.place(host_params)
  del host_params
  state = {"params": params, "opt_state": run.init(params),
           "rng": placement.replicate(mesh, steps.run_key(config.seed))}
  meta = {"history": [], "best": None, "loss_sum": 0.0, "data": prepared.data}
  restored = ckpt.restore_latest(state)
  start = 0
  if restored:
    start, state, meta = restored
    agreement.check_resume(prepared.data, meta.get("data"), output.path("checkpoints"))
    log.info("resuming at step %d of %d", start, total)
  params, opt_state, rng = state["params"], state["opt_state"], state["rng"]
  log.info("training %d steps (%d per epoch) on %d documents, evaluating on %d, devices %s",
           total, per_epoch, len(train_labels), len(prepared.eval.labels), dict(mesh.shape))
  for step in range(start, total):
    epoch, within = divmod(step, per_epoch)
    docs = batches.step_documents(len(train_labels), config.batch_size, config.seed, epoch, within)
    sums = run.zeros()
    for _, batch in inputs.micro(prepared.train_inputs, train_labels, docs):
      sums = run.accumulate(params, sums, placement.shard_rows(mesh, batch), np.float32(len(docs)),
                            rng, np.int32(step))
    params, opt_state, loss = run.apply(params, opt_state, sums)
    loss = placement.scalar(loss)
    meta["loss_sum"] += loss
    done = step + 1
    if done % config.log_every == 0:
      log.info("step %d/%d epoch %d loss %.4f", done, total, epoch + 1, loss)
    if done % per_epoch == 0 or done == total:
      rep = evaluate.report(prepared.eval.labels, inputs.predict(run, params), config.threshold)
      steps_in_epoch = done - epoch * per_epoch
      entry = {"step": done, "epoch": epoch + 1, "train_loss": meta["loss_sum"] / steps_in_epoch,
               **evaluate.summary(rep)}
      meta["history"].append(entry)
      meta["loss_sum"] = 0.0
      log.info("eval after epoch %d (step %d): %s", epoch + 1, done, entry)
      if meta["best"] is None or entry["macro_f1"] > meta["best"]["macro_f1"]:
        ckpt.save_best(done, params)
        meta["best"] = entry
    if done % per_epoch == 0 or done == total or done % config.checkpoint_every == 0:
      ckpt.save_latest(done, {"params": params, "opt_state": opt_state, "rng": rng}, meta)
    if on_step:
      on_step(done)
  run_report = {"device_batch": device_batch.to_json(), "precision": prepared.precision}
  return _finish(config, prepared, inputs, run, ckpt, params, meta, output,
                 data_summary, run_report, time.perf_counter() - started)


def choose_device_batch(config: TrainConfig, run: steps.Steps, params) -> memory.Choice:
  """--device_batch_size, or the most that fits each device's memory (train/memory.py)."""
  whole = -(-config.batch_size // run.devices)
  if config.device_batch_size:
    return memory.Choice(config.device_batch_size, -(-whole // config.device_batch_size), "given")
  if config.cached:  # the head alone: a few floats per document
    return memory.Choice(whole, 1, "whole")
  budget = memory.device_memory(run.mesh, config.device_memory_bytes)
  if budget is None:
    log.info("the devices report no memory limit (and no --device_memory_bytes): each takes its "
             "whole share of a step, %d documents, in one pass", whole)
  return memory.choose(run, params, batch_size=config.batch_size, length=max(config.lengths), budget=budget)


def _finish(config, prepared, inputs, run, ckpt, params, meta, output, data_summary, run_report,
            seconds) -> dict:
  best = meta["best"]
  best_params = ckpt.restore_best(params, best["step"])
  rep = evaluate.report(prepared.eval.labels, inputs.predict(run, best_params), config.threshold)
  summary = {"best": best, "history": meta["history"], "data": data_summary, **run_report,
             "fresh_head": prepared.base.fresh_head, "model": config.model,
             "output": output.root, "seconds": round(seconds, 1)}
  weights = export.flat_params(prepared.base.params, best_params)  # a collective: on every host
  if placement.is_primary():
    export.export(output, prepared.base.config, weights, prepared.model_dir)
    evaluate.write(output, rep, {"step": best["step"], "epoch": best["epoch"],
                                 "history": meta["history"], **run_report})
    output.write(SUMMARY, json.dumps(summary, indent=2).encode())
  log.info("best: step %d, macro F1 %.3f; model written to %s\n%s", best["step"], best["macro_f1"],
           output.root, evaluate.text(rep))
  return {**summary, "report": rep}
