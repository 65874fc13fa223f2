"""Data parallelism over fake CPU devices, and a fixed set of compiled programs.

Eight devices run in a subprocess (jax fixes its device count at first import); this process
has its own single device, so one subprocess gives both sides of the comparison.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from model import fused_attention
from model.runner import EncoderRunner, RunnerConfig, load_runner
from model.tokenize import DocumentTokenizer
from tests.model.devices_worker import varied_calls
from tests.model.reference import mixed_texts

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "devices_worker.py")
SCORER = dict(max_length=40, row_lengths=(16,), tokens_per_device=48, smallest_batch_fraction=2)
DEVICES = 8


@pytest.fixture(scope="module")
def documents(checkpoint_dir) -> list[np.ndarray]:
  return DocumentTokenizer(checkpoint_dir, SCORER["max_length"])(mixed_texts(seed=31) + mixed_texts(seed=32)).ids


@pytest.fixture(scope="module")
def eight_devices(checkpoint_dir, documents, tmp_path_factory) -> dict:
  request = tmp_path_factory.mktemp("devices") / "request.json"
  request.write_text(json.dumps({"model_dir": checkpoint_dir, "scorer": SCORER, "calls": 12, "seed": 5,
                                 "ids": [d.tolist() for d in documents]}))
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={DEVICES}"
  env = dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  done = subprocess.run([sys.executable, WORKER, str(request)], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def one_device_scorer(checkpoint_dir) -> EncoderRunner:
  return load_runner(checkpoint_dir, RunnerConfig(**SCORER), precision="float32",
                     devices=jax.local_devices()[:1])


def test_eight_devices_score_like_one(eight_devices, one_device_scorer, documents, max_abs_diff):
  assert eight_devices["device_count"] == DEVICES
  ours = one_device_scorer.run(documents)
  assert np.ptp(ours) > 1e-2
  # Batches of 8 x 3 rows against 3 rows: documents meet other neighbours and paddings.
  assert max_abs_diff("8 devices vs 1 device", eight_devices["scores"], ours) <= 1e-5


def test_mesh_is_one_data_axis_over_every_device(eight_devices, one_device_scorer):
  assert eight_devices["mesh_axis_names"] == ["data"]
  assert eight_devices["mesh_devices"] == DEVICES
  assert eight_devices["row_sharding"] == [["data"], DEVICES]  # rows split over all eight
  assert all(rows % DEVICES == 0 for rows, _ in eight_devices["shapes"])
  mesh = one_device_scorer.runtime.mesh
  assert mesh.axis_names == ("data",) and mesh.devices.size == 1


def test_fused_attention_runs_on_each_device_share(eight_devices):
  if fused_attention.unavailable_reason() is not None:
    pytest.skip(f"fused attention cannot run here: {fused_attention.unavailable_reason()}")
  assert eight_devices["attention"] == "fused"
  # XLA cannot split a custom call; without shard_map every device would gather all rows.
  assert eight_devices["all_gathers"] == 0
  layers = 3  # the test checkpoint's
  for shape, rows in eight_devices["fused_call_rows"].items():
    assert rows == [int(shape.split("x")[0]) // DEVICES] * layers, shape


def test_no_compilation_after_warmup_on_eight_devices(eight_devices, documents):
  shapes = len(eight_devices["shapes"])
  assert shapes >= 3
  # The listener saw warm-up compile every shape, so silence afterwards means something.
  assert eight_devices["warmup_compilations"] >= shapes
  assert eight_devices["compiled_after_warmup"] == shapes
  assert eight_devices["compilations_after_warmup"] == 0
  assert eight_devices["compiled_at_end"] == shapes
  assert eight_devices["documents_scored"] > 10 * len(documents)


def test_no_compilation_after_warmup_on_one_device(checkpoint_dir, documents, caplog):
  scorer = load_runner(checkpoint_dir, RunnerConfig(**SCORER), precision="float32",
                       devices=jax.local_devices()[:1])
  compiled = lambda: [r for r in caplog.records if "Finished XLA compilation" in r.getMessage()]
  with jax.log_compiles(True), caplog.at_level(logging.WARNING):
    scorer.warmup()
    assert len(compiled()) >= len(scorer.shapes) == len(scorer._compiled)
    caplog.clear()
    lengths = set()
    for call in varied_calls(documents, 12, seed=6):
      scorer.run(call)
      lengths.update(len(d) for d in call)
    assert compiled() == [], [r.getMessage() for r in compiled()]
  assert len(scorer._compiled) == len(scorer.shapes)
  assert len(lengths) > 20  # the calls really varied
