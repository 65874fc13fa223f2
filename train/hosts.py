"""Whether this process is one host of several, so that `train.run` joins the others with
`jax.distributed.initialize()` before anything else touches JAX.

A multi-host slice needs it: without the distributed client each host trains alone on its own
chips, writing over the others' checkpoints, and Orbax's multi-host barriers have nothing to
synchronise through. It must not be called on a single host outside a TPU runtime (it would
wait for a coordinator), so it is decided from what the TPU runtime reports, read without
initialising any backend.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def tpu_hosts(environ=None) -> int:
  """Hosts (JAX processes) in this TPU slice or multislice, as its runtime reports them; 1
  outside a TPU runtime. JAX's own cluster detection reads the TPU VM's metadata server or a
  GKE pod's variables; if that fails, TPU_PROCESS_ADDRESSES / TPU_WORKER_HOSTNAMES (a
  comma-separated list, as GKE and koedu's Dataflow image set them) and MEGASCALE_NUM_SLICES."""
  environ = os.environ if environ is None else environ
  if environ is os.environ:
    try:
      from jax._src.clusters import cloud_tpu_cluster as tpu  # private: its detection is the reference
      for cluster in (tpu.GkeTpuCluster, tpu.GceTpuCluster):
        if cluster.is_env_present():
          return cluster.get_process_count()
    except Exception as err:  # moved in another JAX, or the metadata server did not answer
      log.warning("JAX's TPU cluster detection failed (%s); reading the TPU variables alone", err)
  names = environ.get("TPU_PROCESS_ADDRESSES") or environ.get("TPU_WORKER_HOSTNAMES") or ""
  hosts = len([name for name in names.split(",") if name.strip()])
  return max(hosts, 1) * int(environ.get("MEGASCALE_NUM_SLICES") or 1)


def should_initialize(distributed: bool, environ=None) -> bool:
  """--distributed, or a TPU runtime reporting several hosts."""
  return distributed or tpu_hosts(environ) > 1
