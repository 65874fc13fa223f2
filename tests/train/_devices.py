"""Run by test_parallel.py in a fresh process with 8 fake CPU devices (JAX fixes its devices at
import): the same training on 1 device and on all 8, printed as JSON differences."""
from __future__ import annotations

import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from model import checkpoint, convert  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.loop import train_and_evaluate  # noqa: E402


def run(data, model, output, devices, **overrides):
  config = TrainConfig.tiny(data, output, model, **overrides)
  summary = train_and_evaluate(config, devices=devices)
  cfg = checkpoint.read_config(output)
  return summary, convert.hf_to_nnx(checkpoint.read_hf_state(output), cfg)


def compare(a, b) -> dict:
  (sa, pa), (sb, pb) = a, b
  return {"max_param_diff": max(float(np.max(np.abs(pa[k] - pb[k]))) for k in pa),
          "max_mse_diff": max(abs(x["mse"] - y["mse"]) for x, y in zip(sa["history"], sb["history"])),
          "same_confusion": sa["report"]["confusion_matrix"] == sb["report"]["confusion_matrix"]}


def gradients(data, model, devices, device_batch_size):
  """One step's accumulated gradients of the whole model, on a mesh of `devices`."""
  from model.tokenize import DocumentTokenizer
  from train import base, batches, optim, parallel, steps
  config = TrainConfig.tiny(data, "-", model, freeze_encoder=False, device_batch_size=device_batch_size)
  start = base.load(model, seed=0)
  mesh = parallel.make_mesh(devices)
  graphdef, params = steps.split_params(convert.model_from_params(start.config, start.params), False)
  run = steps.Steps(graphdef, optim.optimizer(config, params, 10), mesh, cached=False)
  params = parallel.replicate(mesh, params)
  texts = [json.loads(line)["text"] for line in open(data, encoding="utf-8")][:32]
  ids = DocumentTokenizer(model, 64)(texts).ids
  labels = np.linspace(0, 5, 32, dtype=np.float32)
  rows = batches.micro_rows(32, device_batch_size, len(devices))
  grads, passes = run.zeros(params), 0
  for _, batch in batches.token_batches(ids, labels, np.arange(32), rows, config.lengths, 1):
    grads, _ = run.accumulate(params, grads, parallel.shard_rows(mesh, batch), np.float32(32))
    passes += 1
  return passes, jax.tree.leaves(jax.tree.map(np.asarray, grads))


def main(data, model, out):
  devices = jax.devices()
  assert len(devices) == 8, devices
  result = {}
  # Cached features: the encoder pass and the head's steps, each split 8 ways.
  result["cached"] = compare(run(data, model, f"{out}/c1", devices[:1], epochs=2),
                             run(data, model, f"{out}/c8", devices, epochs=2))
  # The whole model: 1 device accumulating 4 passes of 8 against 8 devices doing 1 pass of 32.
  full = dict(freeze_encoder=False, max_steps=3, learning_rate=1e-3)
  result["full"] = compare(run(data, model, f"{out}/f1", devices[:1], device_batch_size=8, **full),
                           run(data, model, f"{out}/f8", devices, **full))
  (passes1, g1), (passes8, g8) = gradients(data, model, devices[:1], 8), gradients(data, model, devices, None)
  scale = max(float(np.max(np.abs(g))) for g in g1)
  result["gradients"] = {"passes": [passes1, passes8], "scale": scale,
                         "max_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(g1, g8))}
  print("RESULT " + json.dumps(result))


if __name__ == "__main__":
  main(*sys.argv[1:])
