"""Run by test_parallel.py in a fresh process with 8 fake CPU devices (JAX fixes its devices at
import): the same training on 1 device and on all 8, printed as JSON differences."""
from __future__ import annotations

import json
import os
import re
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from model import checkpoint, convert  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.loop import train_and_evaluate  # noqa: E402


def run(data, model, output, devices, mesh=None, **overrides):
  config = TrainConfig.tiny(data, output, model, **overrides)
  summary = train_and_evaluate(config, devices=devices, mesh=mesh)
  cfg = checkpoint.read_config(output)
  return summary, convert.hf_to_nnx(checkpoint.read_hf_state(output), cfg)


def compare(a, b) -> dict:
  (sa, pa), (sb, pb) = a, b
  diffs = {".".join(map(str, k)): float(np.max(np.abs(pa[k] - pb[k]))) for k in pa}
  # Attention's key bias adds the same logit to every key of a query, which softmax ignores:
  # its gradient is zero but for float noise, and Adam scales noise up to updates of the
  # learning rate. It is compared apart.
  noise = {k: v for k, v in diffs.items() if k.endswith("attention.key.bias")}
  diffs = {k: v for k, v in diffs.items() if k not in noise}
  return {"max_param_diff": max(diffs.values()), "worst_param": max(diffs, key=diffs.get),
          "max_key_bias_diff": max(noise.values(), default=0.0),
          "max_mse_diff": max(abs(x["mse"] - y["mse"]) for x, y in zip(sa["history"], sb["history"])),
          "same_confusion": sa["report"]["confusion_matrix"] == sb["report"]["confusion_matrix"]}


def _steps(model, devices, config, dropout: bool, mesh=None):
  """Steps for the whole model of `model` on a mesh of `devices` (or `mesh`), and its placed parameters."""
  from model import runtime
  from train import base, optim, steps
  start = base.load(model, seed=0)
  rt = runtime.resolve(start.config, "float32", devices=devices, training=True)
  graphdef, params = steps.split_params(convert.model_from_params(start.config, start.params,
                                                                  **rt.model_kwargs()), False)
  run = steps.Steps(graphdef, optim.optimizer(config, params, 10), rt, params, cached=False,
                    frozen=False, dropout=dropout, mesh=mesh)
  return run, run.place(params), run.mesh


def _token_batches(data, model, rows, config):
  from model.tokenize import DocumentTokenizer
  from train import batches
  texts = [json.loads(line)["text"] for line in open(data, encoding="utf-8")][:32]
  ids = DocumentTokenizer(model, 64)(texts).ids
  labels = np.linspace(0, 5, 32, dtype=np.float32)
  return list(batches.token_batches(ids, labels, np.arange(32), rows, config.lengths, 1))


def gradients(data, model, devices, device_batch_size):
  """One step's accumulated gradients of the whole model, on a mesh of `devices`, without
  dropout: the per-device sums, reduced as `Steps.apply` reduces them."""
  from model import placement
  from train import batches, steps
  config = TrainConfig.tiny(data, "-", model, freeze_encoder=False, device_batch_size=device_batch_size)
  run, params, mesh = _steps(model, devices, config, dropout=False)
  sums, passes = run.zeros(), 0
  key = placement.replicate(mesh, steps.run_key(0))
  for _, batch in _token_batches(data, model, batches.micro_rows(32, device_batch_size, len(devices)), config):
    sums = run.accumulate(params, sums, placement.shard_rows(mesh, batch), np.float32(32), key, np.int32(0))
    passes += 1
  return passes, [np.asarray(g).sum(0) for g in jax.tree.leaves(sums["grads"])]


COLLECTIVES = ("all-reduce", "reduce-scatter", "all-gather")


def sharding(data, model, devices) -> dict:
  """How a full fine-tune lays its state over `devices`, and the collectives of each program."""
  from model import placement
  from train import optim, steps
  config = TrainConfig.tiny(data, "-", model, freeze_encoder=False)
  run, params, mesh = _steps(model, devices, config, dropout=True)
  opt_state = run.init(params)
  split = lambda tree: [{"path": ".".join(optim.names(path)), "shape": list(x.shape),
                         "shard": list(x.sharding.shard_shape(x.shape))}
                        for path, x in jax.tree_util.tree_flatten_with_path(tree)[0] if x.ndim >= 2]
  batch = placement.shard_rows(mesh, _token_batches(data, model, 32, config)[0][1])
  key = placement.replicate(mesh, steps.run_key(0))
  programs = {"accumulate": run.accumulate.lower(params, run.zeros(), batch, np.float32(32), key, np.int32(0)),
              "apply": run.apply.lower(params, opt_state, run.zeros())}
  counts = {}
  for name, lowered in programs.items():
    text = lowered.compile().as_text()
    counts[name] = {op: len(re.findall(rf" {op}(-start)?\(", text)) for op in COLLECTIVES}
  return {"params": split(params), "opt_state": split(opt_state), "collectives": counts}


def multislice_layout(data, model, mesh) -> dict:
  from model import placement
  from train import optim, steps
  config = TrainConfig.tiny(data, "-", model, freeze_encoder=False)
  run_, params, _ = _steps(model, list(mesh.devices.flat), config, dropout=True, mesh=mesh)
  batch = placement.shard_rows(mesh, _token_batches(data, model, 32, config)[0][1])
  ids = batch["input_ids"]
  return {"mesh": dict(mesh.shape), "batch_rows": ids.shape[0], "batch_shard_rows": ids.sharding.shard_shape(ids.shape)[0],
          "params": [{"path": ".".join(optim.names(path)), "shape": list(x.shape),
                      "shard": list(x.sharding.shard_shape(x.shape))}
                     for path, x in jax.tree_util.tree_flatten_with_path(params)[0] if x.ndim >= 2]}


def main(data, model, out):
  """`model`: a tiny encoder whose widths 8 divides, so that FSDP splits its matrices."""
  devices = jax.devices()
  assert len(devices) == 8, devices
  result = {}
  # Cached features: the encoder pass and the head's steps, each split 8 ways.
  result["cached"] = compare(run(data, model, f"{out}/c1", devices[:1], epochs=2),
                             run(data, model, f"{out}/c8", devices, epochs=2))
  # The whole model: 1 device accumulating 4 passes of 8 against 8 devices doing 1 pass of 32.
  full = dict(freeze_encoder=False, max_steps=3, learning_rate=1e-3)
  one = run(data, model, f"{out}/f1", devices[:1], device_batch_size=8, **full)
  result["full"] = compare(one, run(data, model, f"{out}/f8", devices, **full))
  # Two slices of 4 (fake: CPU devices report no slice): FSDP within each, data parallel across.
  from model import placement
  two = placement.make_mesh(devices, 2)
  result["multislice"] = compare(one, run(data, model, f"{out}/s2", None, mesh=two, **full))
  result["multislice_sharding"] = multislice_layout(data, model, two)
  (passes1, g1), (passes8, g8) = gradients(data, model, devices[:1], 8), gradients(data, model, devices, None)
  scale = max(float(np.max(np.abs(g))) for g in g1)
  result["gradients"] = {"passes": [passes1, passes8], "scale": scale,
                         "max_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(g1, g8))}
  result["sharding"] = sharding(data, model, devices)
  print("RESULT " + json.dumps(result))


if __name__ == "__main__":
  main(*sys.argv[1:])
