"""Data parallel over the "data" mesh axis: 8 fake CPU devices train what 1 device trains."""
from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_eight_devices_train_what_one_device_trains(small_corpus, encoder_dir, tmp_path):
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-m", "tests.train._devices", small_corpus, encoder_dir,
                         str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.split("RESULT ", 1)[1])
  # One step's gradients: 1 device accumulating 4 passes equals 8 devices in one pass, up to
  # the order of float sums.
  grads = result["gradients"]
  assert grads["passes"] == [4, 1] and grads["scale"] > 1e-3, result
  assert grads["max_diff"] < 1e-5 * grads["scale"], result
  for mode, tolerance in (("cached", 1e-6), ("full", 1e-4)):
    # Adam divides by sqrt(v): for parameters whose gradients are float noise (embedding rows of
    # absent tokens), that noise becomes updates of up to the learning rate (1e-3 here), so the
    # whole model agrees less tightly than the head.
    assert result[mode]["max_param_diff"] < tolerance, result
    assert result[mode]["max_mse_diff"] < 1e-5, result
    assert result[mode]["same_confusion"], result
