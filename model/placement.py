"""Where arrays live: the device mesh, how batches and parameters are laid over it, and the
moves between host memory and devices. One module for the scorer (model/runner.py) and
training (train/), so that both place arrays the same way.

The scorer's mesh has one axis, "data", holding every device given: batches are split along
it, parameters replicated (inference holds one copy per device). Training's mesh is the same
on one slice; its matrices and their Adam moments are split along "data" too (FSDP,
`param_sharding`) and gathered where it computes. Every host passes the same host arrays and
each device takes its part, so a multi-host slice runs the very program one host runs.

Multislice (TPU slices joined by the data-center network, DCN) gives training a second axis,
"slice", outside "data": batches are split over both, parameters only within a slice (FSDP
over the fast interconnect) and replicated across slices (data parallel). The per-micro-batch
gathers then stay inside a slice, and only the step's one gradient reduction crosses DCN.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = "data"  # within a slice: batches, and training's parameters, are split along it
SLICE_AXIS = "slice"  # across slices (multislice training only): batches split, parameters replicated


def slices(devices) -> int:
  """How many TPU slices the devices span (devices of other kinds are one slice)."""
  return len({getattr(d, "slice_index", 0) for d in devices})


def make_mesh(devices, slices_: int | None = None) -> jax.sharding.Mesh:
  """Training's mesh over `devices`: ("data",) on one slice; ("slice", "data") over several,
  as the devices report (`slice_index`) or as `slices_` says (tests lay fake devices out so)."""
  devices = list(devices)
  n = slices_ or slices(devices)
  if n == 1:
    return data_mesh(devices)
  if len(devices) % n:
    raise ValueError(f"{len(devices)} devices cannot form {n} equal slices")
  if slices_ is None:  # real slices: each row of the mesh one slice, laid out for its interconnect
    from jax.experimental import mesh_utils
    grid = mesh_utils.create_hybrid_device_mesh((1, len(devices) // n), (n, 1), devices)
  else:
    grid = np.asarray(devices, dtype=object).reshape(n, len(devices) // n)
  return jax.sharding.Mesh(grid, (SLICE_AXIS, DATA_AXIS),
                           axis_types=(jax.sharding.AxisType.Auto,) * 2)


def data_mesh(devices) -> jax.sharding.Mesh:
  """The one-axis mesh: the scorer's (whose parameters are replicated, so nothing but the batch
  crosses devices), and training's on one slice."""
  devices = list(devices)
  # Auto axes: the batch is what is sharded, and XLA propagates it through the model.
  return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def rows(mesh) -> NamedSharding:
  """Arrays split by their first axis over every device (slice-major): batches."""
  return NamedSharding(mesh, P(tuple(mesh.axis_names) if len(mesh.axis_names) > 1 else DATA_AXIS))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_sharding(mesh, shape) -> NamedSharding:
  """Training's layout (FSDP): a matrix is split over "data" along its largest axis the
  slice's device count divides (XLM-R's word embeddings, 250002 rows, split along hidden); vectors and scalars
  (biases, LayerNorm, step counts: under 0.2% of XLM-R's parameters) stay whole, where
  gathering each would cost a collective for nothing. The rule reads the shape only, so Adam's
  moments land exactly where their parameters do."""
  n = mesh.shape[DATA_AXIS]  # within a slice: across slices every parameter is whole
  axes = [a for a, size in enumerate(shape) if size % n == 0] if len(shape) >= 2 and n > 1 else []
  if not axes:
    return replicated(mesh)
  axis = max(axes, key=lambda a: shape[a])
  return NamedSharding(mesh, P(*[DATA_AXIS if a == axis else None for a in range(len(shape))]))


def param_shardings(mesh, tree):
  """`param_sharding` for every leaf of a tree of arrays or ShapeDtypeStructs."""
  return jax.tree.map(lambda x: param_sharding(mesh, x.shape), tree)


def gathered(mesh, tree):
  """Inside a jitted function: every leaf whole on every device, where it is used. XLA turns
  this into all-gathers of the sharded parameters."""
  return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, replicated(mesh)), tree)


def place(tree, shardings):
  """Host arrays (the same on every host) to global arrays of `shardings` (a tree, or one)."""
  if isinstance(shardings, jax.sharding.Sharding):
    shardings = jax.tree.map(lambda _: shardings, tree)

  def put(x, sharding):
    if sharding.is_fully_addressable:  # one host: the plain path
      return jax.device_put(x, sharding)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(put, tree, shardings)


def shard_rows(mesh, tree):
  """Host arrays (the same on every host) to global arrays split by their first axis."""
  return place(tree, rows(mesh))


def replicate(mesh, tree):
  return place(tree, replicated(mesh))


def to_host(x: jax.Array) -> np.ndarray:
  """A global array as numpy on every host (a collective: every host must call it)."""
  if x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def scalar(x: jax.Array) -> float:
  """A replicated scalar as a float; float(x) refuses arrays spanning other hosts."""
  return float(np.asarray(x.addressable_data(0)))


def is_primary() -> bool:
  """The host that writes reports and the exported model (checkpoints are written by all)."""
  return jax.process_index() == 0
