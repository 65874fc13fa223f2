"""Run by test_memory.py in a fresh process with 8 fake CPU devices: the device batch a memory
budget allows, from XLA's analysis of the compiled step, and a run that trains with it."""
from __future__ import annotations

import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402

from tests.train._devices import _steps  # noqa: E402
from train import memory  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.loop import train_and_evaluate  # noqa: E402


def main(data, model, out):
  devices = jax.devices()
  assert len(devices) == 8, devices
  full = dict(freeze_encoder=False, batch_size=32, max_steps=1, eval_size=16)
  config = TrainConfig.tiny(data, "-", model, **full)
  run, params, _ = _steps(model, devices, config, dropout=True)
  length = max(config.lengths)
  result = {"peaks": {rows: memory.pass_peak(run, params, rows, length) for rows in (2, 4)}}
  # A budget that holds passes of 2 rows per device but not of 4 (the whole share, 32 / 8).
  budget = int((result["peaks"][2] + result["peaks"][4]) / 2 / memory.USABLE)
  summary = train_and_evaluate(TrainConfig.tiny(data, f"{out}/fit", model, device_memory_bytes=budget, **full),
                               devices=devices)
  with open(f"{out}/fit/eval_report.json") as f:
    result["eval_report"] = json.load(f)["device_batch"]
  result.update(budget=budget, summary=summary["device_batch"], precision=summary["precision"])
  try:  # below what the optimiser's update alone needs
    memory.choose(run, params, batch_size=32, length=length, budget=summary["device_batch"]["apply_peak_bytes"] // 2)
  except memory.DoesNotFit as err:
    result["too_small"] = str(err)
  print("RESULT " + json.dumps(result))


if __name__ == "__main__":
  main(*sys.argv[1:])
