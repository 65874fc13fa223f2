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

from model import packing


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
  """Token micro-batches of `rows` rows, one document per row: documents sorted by length, so
  that each pass pads to the shortest row length holding its longest document, and the fewest
  passes make a step. Laid out by the scorer's own packing (model/packing.py). `document` names
  each row's document, from which its dropout masks are drawn (train/steps.py)."""
  docs = np.asarray(sorted(docs, key=lambda d: -len(ids[d])), np.int64)
  assigned = []
  for start in range(0, len(docs), rows):
    longest = len(ids[docs[start]])
    length = next(l for l in lengths if l >= longest)
    assigned += [(length, [i]) for i in range(start, min(start + rows, len(docs)))]
  doc_ids = [ids[d] for d in docs]
  for batch in packing.make_batches(doc_ids, assigned, {l: [rows] for l in lengths}, pad_token_id, pack=False,
                                    share_tails=False):  # one length per pass, as sorted
    chunk = docs[batch.documents]
    row = batch.slots[0]
    label, weight = np.zeros(rows, np.float32), np.zeros(rows, np.float32)
    document = np.zeros(rows, np.int32)
    label[row], weight[row], document[row] = labels[chunk], 1, chunk
    yield chunk, {"input_ids": batch.input_ids, "segment_ids": batch.segment_ids,
                  "position_ids": batch.position_ids, "cls_index": batch.cls_index,
                  "label": label, "weight": weight, "document": document}
