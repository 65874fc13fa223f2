"""Freezing is an optimiser mask: the encoder keeps its bits, the head trains, and training the
head on cached features is the same as running the frozen model every step."""
from __future__ import annotations

import numpy as np

from model import checkpoint, convert
from model.config import ModelConfig
from train import base, optim
from train.config import TrainConfig
from train.loop import train_and_evaluate


def _exported(model_dir):
  cfg = checkpoint.read_config(model_dir)
  return convert.hf_to_nnx(checkpoint.read_hf_state(model_dir), cfg)


def _run(small_corpus, encoder_dir, output, **overrides):
  config = TrainConfig.tiny(small_corpus, str(output), encoder_dir, max_steps=3,
                            learning_rate=1e-2, warmup_ratio=0, **overrides)
  train_and_evaluate(config)
  return _exported(config.output)


def test_labels_freeze_everything_but_the_head_and_decay_no_bias_or_norm():
  from flax import nnx
  from model.xlmr import XLMRobertaClassifier
  import jax
  _, params = nnx.split(XLMRobertaClassifier(ModelConfig.tiny(), rngs=nnx.Rngs(0)), nnx.Param)
  paths = [optim.names(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  frozen = jax.tree.leaves(optim.freeze_labels(params, True))
  assert [l == optim.TRAIN for l in frozen] == [p[0] == "head" for p in paths]
  assert set(jax.tree.leaves(optim.freeze_labels(params, False))) == {optim.TRAIN}
  decay = jax.tree.leaves(optim.decay_mask(params))
  assert decay == [p[-1] in ("kernel", "embedding") for p in paths]


def test_frozen_training_of_the_full_model_leaves_the_encoder_bit_identical(
    small_corpus, encoder_dir, tmp_path):
  start = base.load(encoder_dir, seed=0)
  masked = _run(small_corpus, encoder_dir, tmp_path / "masked", cache_features=False)
  encoder = [p for p in start.params if p[0] != base.HEAD]
  assert len(encoder) > 20
  for path in encoder:
    assert np.array_equal(masked[path], start.params[path]), path
    assert masked[path].tobytes() == start.params[path].astype(np.float32).tobytes(), path
  for path in start.params:
    if path[0] == base.HEAD and path[-1] == "kernel":
      assert not np.allclose(masked[path], start.params[path]), f"{path} did not train"

  # Caching <s> features is only a shortcut for the same masked training.
  cached = _run(small_corpus, encoder_dir, tmp_path / "cached")
  for path in start.params:
    np.testing.assert_allclose(cached[path], masked[path], atol=2e-5, err_msg=str(path))


def test_a_frozen_encoder_run_every_step_has_no_backward_pass(small_corpus, encoder_dir):
  # Frozen but not cached: the encoder runs under stop_gradient, so its gradients are exactly
  # zero before the optimiser's mask, and XLA drops the backward pass through it.
  import json
  import jax
  from model import runtime
  from model.tokenize import DocumentTokenizer
  from model import placement
  from train import batches, steps
  config = TrainConfig.tiny(small_corpus, "-", encoder_dir, cache_features=False)
  start = base.load(encoder_dir, seed=0)
  rt = runtime.resolve(start.config, "float32", devices=jax.devices()[:1], training=True)
  graphdef, params = steps.split_params(convert.model_from_params(start.config, start.params,
                                                                  **rt.model_kwargs()), False)
  run = steps.Steps(graphdef, optim.optimizer(config, params, 10), rt, params, cached=False,
                    frozen=True, dropout=False)
  params = run.place(params)
  texts = [json.loads(line)["text"] for line in open(small_corpus, encoding="utf-8")][:32]
  ids = DocumentTokenizer(encoder_dir, 64)(texts).ids
  _, batch = next(batches.token_batches(ids, np.linspace(0, 5, 32, dtype=np.float32), np.arange(32), 32,
                                        config.lengths, 1))
  batch = placement.shard_rows(rt.mesh, batch)
  sums = run.accumulate(params, run.zeros(), batch, np.float32(32),
                        placement.replicate(rt.mesh, steps.run_key(0)), np.int32(0))
  grads = {optim.names(path): np.asarray(g) for path, g in jax.tree_util.tree_flatten_with_path(sums["grads"])[0]}
  assert all(not g.any() for path, g in grads.items() if path[0] != base.HEAD)
  assert all(g.any() for path, g in grads.items() if path[0] == base.HEAD and path[-1] == "kernel")
