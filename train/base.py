"""The model training starts from: a classifier to continue, or an encoder with a fresh head."""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

from model import checkpoint, convert
from model.config import ModelConfig

log = logging.getLogger(__name__)
HEAD = "head"


@dataclasses.dataclass
class Base:
  config: ModelConfig  # the checkpoint's, with num_labels = 1
  params: dict  # NNX path -> numpy array, head included
  fresh_head: bool  # the checkpoint had no head (encoder-only, like nlpai-lab/KoE5)


def fresh_head(cfg: ModelConfig, seed: int) -> dict:
  """The RoBERTa head as transformers initialises it (`_init_weights`): weights from
  N(0, initializer_range), biases zero. NNX kernels are (in, out)."""
  std = float(dict(cfg.extra).get("initializer_range", 0.02))
  rng = np.random.default_rng(seed)
  hidden = cfg.hidden_size
  return {
      (HEAD, "dense", "kernel"): rng.normal(0, std, (hidden, hidden)).astype(np.float32),
      (HEAD, "dense", "bias"): np.zeros(hidden, np.float32),
      (HEAD, "out_proj", "kernel"): rng.normal(0, std, (hidden, 1)).astype(np.float32),
      (HEAD, "out_proj", "bias"): np.zeros(1, np.float32),
  }


def load(model_dir: str, seed: int, allow_pickle: bool = False) -> Base:
  cfg = checkpoint.read_config(model_dir)
  state = checkpoint.read_hf_state(model_dir, allow_pickle)
  names = convert.normalize_hf_names(state)
  has_head = any(name.startswith(convert.HEAD_PREFIX) for name in names)
  if has_head and cfg.num_labels != 1:
    raise ValueError(f"{model_dir} is a classifier with num_labels={cfg.num_labels}; koedu trains "
                     "one regression output. Start from its encoder instead (drop the "
                     "classifier.* tensors) to put a fresh head on it.")
  # An encoder's config.json says nothing sensible about labels (transformers writes two by
  # default); the fresh head has the one regression output.
  cfg = dataclasses.replace(cfg, num_labels=1)
  params = convert.hf_to_nnx(state, cfg, require_head=False)
  if not has_head:
    params.update(fresh_head(cfg, seed))
    log.info("%s has no classification head: added a fresh one (seed %d)", model_dir, seed)
  return Base(cfg, params, fresh_head=not has_head)
