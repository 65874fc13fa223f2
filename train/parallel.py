"""Data parallelism over one mesh axis, "data", holding every device of every host.

Every host builds the same global batch on its CPU (reading and shuffling are deterministic and
cheap next to the model), and each device takes its rows from it. That keeps multi-host runs
free of any per-host data bookkeeping: a TPU slice runs the very program one host runs.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from model import runtime


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """The scorer's mesh (model/runtime.py) over every device of every host."""
  return runtime.make_mesh(devices or jax.devices())


def rows(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(runtime.DATA_AXIS))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def shard_rows(mesh, tree):
  """Host arrays (the same on every host) to global arrays split by their first axis."""
  sharding = rows(mesh)

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(put, tree)


def replicate(mesh, tree):
  sharding = replicated(mesh)

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(put, tree)


def to_host(x) -> np.ndarray:
  """A global array as numpy on every host."""
  if x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def scalar(x) -> float:
  """A replicated scalar as a float; float(x) refuses arrays spanning other hosts."""
  return float(np.asarray(x.addressable_data(0)))


def is_primary() -> bool:
  """The host that writes reports and the exported model (checkpoints are written by all)."""
  return jax.process_index() == 0
