"""transformers/PyTorch, the reference every score of ours is held to, and shared test inputs."""
from __future__ import annotations

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
