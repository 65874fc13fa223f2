"""The frozen recipe's features are computed at the precision scoring will run at."""
from __future__ import annotations

import jax
import numpy as np

from model import placement
from train import prepare
from train.config import TrainConfig
from train.export import Output


def test_features_are_computed_at_the_scoring_precision(small_corpus, encoder_dir, tmp_path):
  mesh = placement.make_mesh(jax.devices()[:1])
  features = {}
  for dtype in ("auto", "bfloat16"):
    config = TrainConfig.tiny(small_corpus, str(tmp_path / dtype), encoder_dir, score_dtype=dtype, eval_size=24)
    prepared, _ = prepare.prepare(config, mesh, Output(config.output))
    features[dtype] = prepared.train_inputs
    # Training passes stay at --dtype; the head sees what scoring computes.
    assert prepared.precision["training"] == "float32"
    expected = "float32" if dtype == "auto" else dtype  # auto on CPU: scoring's fp32
    assert prepared.precision["scoring"] == prepared.precision["features"] == expected
    assert prepared.precision["evaluated"] == expected
  difference = np.abs(features["bfloat16"] - features["auto"])
  # bf16 features are the fp32 ones rounded along the way: close, and not the same.
  assert 0 < difference.max() < 0.1 * np.abs(features["auto"]).max()
