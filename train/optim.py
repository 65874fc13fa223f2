"""The seed's optimiser as optax: AdamW, linear warm-up then cosine, and freezing as a mask.

Freezing is `multi_transform` with `set_to_zero` on every parameter outside the head, so a
frozen parameter gets an update of exactly zero and keeps its bits (tests/train/test_freeze.py).
Clipping and AdamW live inside the trainable branch, so frozen gradients neither count towards
the clipping norm nor take optimiser memory.
"""
from __future__ import annotations

import jax
import optax

from train.base import HEAD
from train.config import TrainConfig

TRAIN, FROZEN = "train", "frozen"
NO_DECAY = ("bias", "scale")  # HF Trainer decays neither biases nor LayerNorm weights


def names(path) -> tuple[str, ...]:
  """A pytree key path as plain names: ("layers", "0", "attention", "query", "kernel")."""
  out = []
  for key in path:
    name = getattr(key, "key", getattr(key, "name", getattr(key, "idx", None)))
    if name != "value":  # the field inside every nnx.Variable
      out.append(str(name))
  return tuple(out)


def freeze_labels(params, freeze_encoder: bool):
  """TRAIN for the head (and everything when the encoder trains), FROZEN for the rest."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: TRAIN if not freeze_encoder or names(path)[0] == HEAD else FROZEN, params)


def decay_mask(params):
  return jax.tree_util.tree_map_with_path(lambda path, _: names(path)[-1] not in NO_DECAY, params)


def schedule(config: TrainConfig, total_steps: int) -> optax.Schedule:
  """0 -> peak linearly over warmup_ratio of the steps, then cosine to 0, as transformers'
  get_cosine_schedule_with_warmup (the first step runs at learning rate 0 in both)."""
  warmup = int(round(config.warmup_ratio * total_steps))
  return optax.warmup_cosine_decay_schedule(0.0, config.peak_learning_rate, warmup, max(total_steps, warmup + 1),
                                            end_value=0.0)


def optimizer(config: TrainConfig, params, total_steps: int) -> optax.GradientTransformation:
  adamw = optax.adamw(schedule(config, total_steps), b1=config.b1, b2=config.b2, eps=config.eps,
                      weight_decay=config.weight_decay, mask=decay_mask)
  trainable = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), adamw) \
      if config.max_grad_norm else adamw
  return optax.multi_transform({TRAIN: trainable, FROZEN: optax.set_to_zero()},
                               freeze_labels(params, config.freeze_encoder))
