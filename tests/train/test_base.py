"""The base: a classifier is continued as it is; an encoder-only checkpoint gets a fresh head."""
from __future__ import annotations

import numpy as np

from model import checkpoint, convert
from train import base


def test_a_classifier_keeps_its_head(checkpoint_dir):
  start = base.load(checkpoint_dir, seed=0)
  saved = convert.hf_to_nnx(checkpoint.read_hf_state(checkpoint_dir), checkpoint.read_config(checkpoint_dir))
  assert not start.fresh_head and start.config.num_labels == 1
  for path, value in saved.items():
    assert np.array_equal(start.params[path], value), path


def test_an_encoder_gets_a_head_initialised_as_transformers_does(encoder_dir):
  start = base.load(encoder_dir, seed=0)
  assert start.fresh_head and start.config.num_labels == 1
  std = dict(start.config.extra)["initializer_range"]
  kernel = start.params[("head", "dense", "kernel")]
  assert kernel.shape == (start.config.hidden_size,) * 2 and abs(kernel.std() - std) < 0.1 * std
  assert not start.params[("head", "out_proj", "bias")].any()
  again, other = base.load(encoder_dir, seed=0), base.load(encoder_dir, seed=1)
  assert np.array_equal(again.params[("head", "dense", "kernel")], kernel)
  assert not np.array_equal(other.params[("head", "dense", "kernel")], kernel)
