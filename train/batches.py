"""Which documents each step trains on, and the fixed-shape arrays they become.

The order is a pure function of (seed, epoch, step), so a resumed run sees exactly the batches
an uninterrupted one would. Every array has one of a few shapes (micro-batch rows x a row
length from the config) so XLA compiles a handful of programs; rows that only fill a shape
carry weight 0.
"""
from __future__ import annotations

import functools
import math

import numpy as np


def steps_per_epoch(num_documents: int, batch_size: int) -> int:
  return math.ceil(num_documents / batch_size)


@functools.lru_cache(maxsize=2)
def _epoch_order(num_documents: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_documents)


def step_documents(num_documents: int, batch_size: int, seed: int, epoch: int, step: int) -> np.ndarray:
  """Indices of the documents of `step` (0-based within `epoch`); the last batch may be short."""
  return _epoch_order(num_documents, seed, epoch)[step * batch_size:(step + 1) * batch_size]


def micro_rows(batch_size: int, device_batch_size: int | None, num_devices: int) -> int:
  """Rows of one forward/backward pass: a multiple of the device count."""
  per_device = device_batch_size or math.ceil(batch_size / num_devices)
  return per_device * num_devices


def feature_batches(features: np.ndarray, labels: np.ndarray, docs: np.ndarray, rows: int):
  """Cached-feature micro-batches: (documents, {features, label, weight}) of `rows` rows."""
  for start in range(0, len(docs), rows):
    chunk = docs[start:start + rows]
    pad = rows - len(chunk)
    weight = np.concatenate([np.ones(len(chunk), np.float32), np.zeros(pad, np.float32)])
    padded = np.concatenate([chunk, np.zeros(pad, chunk.dtype)])
    yield chunk, {"features": features[padded], "label": labels[padded], "weight": weight}


def token_batches(ids: list[np.ndarray], labels: np.ndarray, docs: np.ndarray, rows: int,
                  lengths: tuple[int, ...], pad_token_id: int):
  """Token micro-batches, one document per row: documents sorted by length so each pass pads
  to the shortest row length that holds its longest document."""
  docs = sorted(docs, key=lambda d: -len(ids[d]))
  for start in range(0, len(docs), rows):
    chunk = docs[start:start + rows]
    longest = max(len(ids[d]) for d in chunk)
    length = next(l for l in lengths if l >= longest)
    batch = {
        "input_ids": np.full((rows, length), pad_token_id, np.int32),
        "segment_ids": np.zeros((rows, length), np.int32),
        "position_ids": np.full((rows, length), pad_token_id, np.int32),
        "cls_index": np.zeros((rows, 1), np.int32),
        "label": np.zeros(rows, np.float32),
        "weight": np.zeros(rows, np.float32),
    }
    for r, doc in enumerate(chunk):
      n = len(ids[doc])
      batch["input_ids"][r, :n] = ids[doc]
      batch["segment_ids"][r, :n] = 1
      # RoBERTa positions count from pad_token_id + 1, as transformers computes them.
      batch["position_ids"][r, :n] = np.arange(pad_token_id + 1, pad_token_id + 1 + n)
      batch["label"][r] = labels[doc]
      batch["weight"][r] = 1
    yield chunk, batch
