"""transformers/PyTorch, the reference every score of ours is held to, and shared test inputs."""
from __future__ import annotations

import hashlib

import numpy as np

from tests.checkpoints import korean_sentences


def torch_classifier(model_dir: str):
  """XLMRobertaForSequenceClassification as users load it, in eval mode (dropout off)."""
  from transformers import AutoModelForSequenceClassification
  model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
  assert type(model).__name__ == "XLMRobertaForSequenceClassification"
  return model


def torch_scores(model, input_ids, attention_mask=None) -> np.ndarray:
  """The regression output for each row of a (padded) batch."""
  import torch
  ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.long)
  mask = None if attention_mask is None else torch.as_tensor(np.asarray(attention_mask), dtype=torch.long)
  with torch.no_grad():
    return model(input_ids=ids, attention_mask=mask).logits[:, 0].numpy()


def torch_document_scores(model, docs) -> np.ndarray:
  """One document per call, no padding at all: the plainest reference there is."""
  return np.concatenate([torch_scores(model, np.asarray(d)[None]) for d in docs])


def mixed_texts(seed: int = 0) -> list[str]:
  """Very short to several times max_length: empty, one word, sentences, long documents."""
  short = korean_sentences(9, seed=seed, min_words=1, max_words=12)
  medium = korean_sentences(5, seed=seed + 1, min_words=15, max_words=40)
  long = [" ".join(korean_sentences(6, seed=seed + 2 + i, min_words=20, max_words=40)) for i in range(3)]
  return ["", "광합성"] + short + medium + long


def hf_position_ids(input_ids: np.ndarray, pad_token_id: int) -> np.ndarray:
  """RoBERTa positions as transformers computes them: non-pad tokens count from pad_id + 1."""
  real = (input_ids != pad_token_id).astype(np.int32)
  return np.cumsum(real, axis=1) * real + pad_token_id


def hf_forward(model, input_ids, attention_mask) -> np.ndarray:
  """Our NNX model called as transformers is (one document per row, `<s>` first): logits
  (batch, labels)."""
  import jax.numpy as jnp
  input_ids = np.asarray(input_ids)
  positions = hf_position_ids(input_ids, model.config.pad_token_id)
  cls_index = np.zeros((input_ids.shape[0], 1), np.int32)
  return model(jnp.asarray(input_ids), jnp.asarray(attention_mask, jnp.int32),
               jnp.asarray(positions), jnp.asarray(cls_index))[:, 0]


def params_of(model) -> dict:
  """NNX path -> numpy array of every parameter of `model`."""
  from flax import nnx
  return {path: np.asarray(v.get_value()) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def file_digest(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(1 << 24):
      h.update(block)
  return h.hexdigest()
