"""The frozen encoder's `<s>` features, computed once per document.

With the encoder frozen and no dropout (fineweb-edu trains with dropout off), the head sees the
same features every epoch, so one encoder pass replaces `epochs` of them. Documents are packed
several to a row exactly as the scorer packs them (model/packing.py), so the head trains on the
features it will score from.
"""
from __future__ import annotations

import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from model import packing
from model.xlmr import XLMRobertaClassifier
from train import parallel

log = logging.getLogger(__name__)
SMALLEST_BATCH_FRACTION = 8  # also compile 1/2 .. 1/8 of a full batch, for the tail of each length


def encode(model: XLMRobertaClassifier, ids: list[np.ndarray], mesh, lengths: tuple[int, ...],
           tokens_per_device: int) -> np.ndarray:
  """(documents, hidden) float32: the final hidden state at each document's `<s>`."""
  hidden = model.config.hidden_size
  if not ids:
    return np.zeros((0, hidden), np.float32)
  devices = mesh.devices.size
  graphdef, state = nnx.split(model)
  state = parallel.replicate(mesh, state)

  @jax.jit
  def features(state, input_ids, segment_ids, position_ids, cls_index):
    encoder = nnx.merge(graphdef, state)
    states = encoder.encode(input_ids, segment_ids, position_ids)
    return jnp.take_along_axis(states, cls_index[:, :, None], axis=1).astype(jnp.float32)

  start = time.perf_counter()
  doc_lengths = np.fromiter((len(d) for d in ids), np.int64, len(ids))
  rows = packing.assign_rows(doc_lengths, lengths, pack=True)
  sizes = {l: packing.batch_sizes(max(1, tokens_per_device // l) * devices, devices,
                                  SMALLEST_BATCH_FRACTION) for l in lengths}
  out = np.empty((len(ids), hidden), np.float32)
  pad_token_id = model.config.pad_token_id
  pending = []
  for batch in packing.make_batches(ids, rows, sizes, pad_token_id, pack=True):
    arrays = parallel.shard_rows(mesh, (batch.input_ids, batch.segment_ids, batch.position_ids,
                                        batch.cls_index))
    # JAX dispatches asynchronously: fetch the previous batch while this one computes.
    pending.append((batch, features(state, *arrays)))
    if len(pending) > 1:
      done, result = pending.pop(0)
      out[done.documents] = parallel.to_host(result)[done.slots]
  for done, result in pending:
    out[done.documents] = parallel.to_host(result)[done.slots]
  log.info("encoded %d documents in %.1fs", len(ids), time.perf_counter() - start)
  return out
