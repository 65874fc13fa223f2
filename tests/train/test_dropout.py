"""Dropout: the checkpoint's rates, where transformers applies them, only in training passes,
and masks that follow the document (its key), not the batch or its padding."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model.config import ModelConfig
from model.runner import EncoderRunner, RunnerConfig
from model import runtime
from model.xlmr import XLMRobertaClassifier, dropout_rates

LENGTH = 24


def _model(**extra):
  cfg = ModelConfig.tiny(extra=tuple(sorted(extra.items())))
  rt = runtime.resolve(cfg, "float32", devices=jax.devices()[:1], training=True)
  return XLMRobertaClassifier(cfg, **rt.model_kwargs(), rngs=nnx.Rngs(3))


def _row(tokens: int, length: int = LENGTH):
  """One document of `tokens` tokens in a row of `length`."""
  ids = np.ones((1, length), np.int32)
  ids[0, :tokens] = np.arange(tokens) % 900 + 5
  segments = (np.arange(length) < tokens).astype(np.int32)[None]
  positions = np.where(segments, np.arange(length) + 2, 1).astype(np.int32)
  return ids, segments, positions, np.zeros((1, 1), np.int32)


@jax.jit
def _forward(graphdef, state, row, key):
  model = nnx.merge(graphdef, state)
  return model(*row, rngs=None if key is None else nnx.Rngs(dropout=key))[0, 0, 0]


def _score(model, row, key=None):
  graphdef, state = nnx.split(model)
  return float(_forward(graphdef, state, row, None if key is None else jax.random.key(key)))


def test_rates_come_from_the_checkpoint_as_transformers_reads_them():
  assert dropout_rates(ModelConfig.tiny()) == (0.1, 0.1, 0.1)  # XLMRobertaConfig's defaults
  cfg = ModelConfig.tiny(extra=(("attention_probs_dropout_prob", 0.0), ("hidden_dropout_prob", 0.2)))
  assert dropout_rates(cfg) == (0.2, 0.0, 0.2)  # the head falls back to hidden_dropout_prob
  cfg = ModelConfig.tiny(extra=(("classifier_dropout", 0.5), ("hidden_dropout_prob", 0.2)))
  assert dropout_rates(cfg) == (0.2, 0.1, 0.5)


def test_dropout_runs_only_when_a_call_passes_rngs():
  model, row = _model(), _row(17)
  plain = _score(model, row)
  assert _score(model, row) == plain
  assert _score(model, row, key=1) == _score(model, row, key=1) != plain
  assert _score(model, row, key=2) != _score(model, row, key=1)
  # No rates, no change: the explicit attention a training pass runs is batched_attention's math.
  still = _model(hidden_dropout_prob=0.0, attention_probs_dropout_prob=1e-9)
  np.testing.assert_allclose(_score(still, row, key=1), _score(still, row), rtol=1e-5)


def test_the_head_drops_before_out_proj():
  model = _model(classifier_dropout=1.0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  bias = float(model.head.out_proj.bias.get_value()[0])
  assert _score(model, _row(17), key=1) == pytest.approx(bias)
  assert _score(model, _row(17)) != pytest.approx(bias)


@pytest.mark.parametrize("extra", [{}, {"hidden_dropout_prob": 0.0}, {"attention_probs_dropout_prob": 0.0}])
def test_a_documents_masks_do_not_depend_on_its_padding(extra):
  model = _model(**extra)
  short, long = _row(17, LENGTH), _row(17, 2 * LENGTH)
  np.testing.assert_allclose(_score(model, long, key=4), _score(model, short, key=4), rtol=2e-6)
  assert _score(model, long, key=4) != _score(model, long, key=5)


def _draws_random_bits(lowered) -> bool:
  text = lowered.as_text()
  return "threefry" in text or "rng_bit_generator" in text


def test_scoring_draws_no_random_bits():
  from model.packing import max_documents_per_row
  model = _model()
  rt = runtime.resolve(model.config, "float32", attention="rows", devices=jax.devices()[:1])
  runner = EncoderRunner(model, rt, RunnerConfig(max_length=32, row_lengths=(32,), tokens_per_device=64))
  spec = jax.ShapeDtypeStruct((2, 32), jnp.int32, sharding=rt.rows)
  cls = jax.ShapeDtypeStruct((2, max_documents_per_row(32, True)), jnp.int32, sharding=rt.rows)
  assert not _draws_random_bits(runner._forward.lower(runner._state, spec, spec, spec, cls))
  # What the check sees in a training pass.
  graphdef, state = nnx.split(model)
  training = jax.jit(lambda state, *row: nnx.merge(graphdef, state)(*row, rngs=nnx.Rngs(dropout=0)))
  assert _draws_random_bits(training.lower(state, *_row(17)))
