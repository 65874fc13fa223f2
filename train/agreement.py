"""That every host, and a resumed run, trains on the very documents the others do.

Each host reads the whole corpus and builds the same batches from it (model/placement.py), so
hosts that read different files (a shard written while they listed the glob, a cache out of
date) would feed different rows into one step with nothing failing. A resumed run that matches
new shards would silently change the steps per epoch and every batch after the resume point.
Both are caught by a fingerprint of the data as read: document counts and a digest of texts
and labels, compared across hosts at start and against the checkpoint on resume.
"""
from __future__ import annotations

import hashlib

import jax
import numpy as np
from jax.experimental import multihost_utils

from train.data import Examples


def fingerprint(train: Examples, held_out: Examples) -> dict:
  """{"train": documents, "eval": documents, "sha256": digest of texts and labels, in order}."""
  digest = hashlib.sha256()
  for examples in (train, held_out):
    digest.update(len(examples.texts).to_bytes(8, "little"))
    for text in examples.texts:
      encoded = text.encode("utf-8")
      digest.update(len(encoded).to_bytes(8, "little") + encoded)
    digest.update(np.asarray(examples.labels, np.float32).tobytes())
  return {"train": len(train.texts), "eval": len(held_out.texts), "sha256": digest.hexdigest()}


def _as_arrays(data: dict) -> dict:
  return {"documents": np.asarray([data["train"], data["eval"]], np.int32),
          "sha256": np.frombuffer(bytes.fromhex(data["sha256"]), np.uint32)}


def check_hosts(data: dict) -> None:
  """Every host holds the same fingerprint; AssertionError with this host's otherwise, on
  every host (a collective: every host must call it)."""
  if jax.process_count() == 1:
    return
  multihost_utils.assert_equal(
      _as_arrays(data), f"the hosts read different training data (host {jax.process_index()}: "
                        f"{data['train']} + {data['eval']} documents, sha256 {data['sha256'][:12]}); "
                        "every host must match the same shards with the same contents")


def check_resume(data: dict, recorded: dict | None, checkpoint: str) -> None:
  """The data now is the data the checkpoint was trained on; ValueError saying how not."""
  if recorded == data:
    return
  if recorded is None:
    raise ValueError(f"{checkpoint} does not record which data it was trained on (made before "
                     "koedu checked this); use another --output to start afresh")
  raise ValueError(
      f"the data changed since {checkpoint} was saved: {recorded['train']} + {recorded['eval']} "
      f"documents (sha256 {recorded['sha256'][:12]}) then, {data['train']} + {data['eval']} "
      f"(sha256 {data['sha256'][:12]}) now. New or changed shards matching --data would change "
      "every batch after the resume point; restore the shards, or use another --output")
