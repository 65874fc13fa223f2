"""Attention as one fused CPU kernel (model/kernels/), an XLA custom call built on first use.

XLA's CPU backend runs attention as separate dots and softmax passes over every row's
(heads, length, length) scores in memory, at a quarter to a third of the machine's matmul
peak; at 512 tokens that was a third of the encoder's time for a tenth of its FLOPs. The kernel
computes scores, softmax and the weighted values for six queries at a time in cache, and skips
the keys of other documents in packed rows (docs/benchmarks.md has the figures).

It needs x86-64 with AVX-512F. The library is built once per source and jax version with the
local C++ compiler (`$CXX`, else `c++` or `g++`) into --kernel_cache_dir ($KOEDU_KERNEL_CACHE,
else ~/.cache/koedu/kernels: model/caches.py), and loaded from there afterwards: an image can ship a built library there
and no compiler. Where any of that is missing, `unavailable_reason()` says why and the scorer
runs XLA's attention instead. Inference only: the custom call has no gradient, and training
keeps XLA's attention.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import jaxlib
from jax.sharding import PartitionSpec as P

from model import caches

log = logging.getLogger(__name__)

KERNEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")
SOURCES = ("attention.h", "attention.cc")
TARGET = "koedu_fused_attention"
MAX_HEAD_DIM = 64  # kMaxHeadDim in attention.h
FLAGS = ("-O3", "-mavx512f", "-mfma", "-std=c++17", "-shared", "-fPIC", "-pthread")


def default_cache_dir() -> str:
  return caches.directory("kernels")


def compiler() -> str | None:
  return next((c for c in (os.environ.get("CXX"), "c++", "g++") if c and shutil.which(c)), None)


def cpu_has_avx512() -> bool:
  if platform.machine().lower() not in ("x86_64", "amd64"):
    return False
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      return any(line.startswith("flags") and " avx512f" in line for line in f)
  except OSError:
    return False


def library_path(cache_dir: str) -> str:
  """Where the library built from these sources, flags and jax version lives."""
  digest = hashlib.sha256()
  for name in SOURCES:
    with open(os.path.join(KERNEL_DIR, name), "rb") as f:
      digest.update(f.read())
  digest.update(repr((FLAGS, jax.__version__, jaxlib.__version__)).encode())
  return os.path.join(cache_dir, f"koedu_attention_{digest.hexdigest()[:16]}.so")


def build(cxx: str | None, cache_dir: str) -> str:
  """The shared library's path, compiling it with `cxx` unless it is already there."""
  target = library_path(cache_dir)
  if os.path.exists(target):
    return target
  if cxx is None:
    raise RuntimeError(f"no C++ compiler to build {target} (set $CXX, or install g++)")
  os.makedirs(cache_dir, exist_ok=True)
  # Built beside its final name and renamed into place, so workers sharing a cache directory
  # never load a half-written library.
  fd, partial = tempfile.mkstemp(suffix=".so", dir=cache_dir)
  os.close(fd)
  done = subprocess.run([cxx, *FLAGS, "-isystem", jax.ffi.include_dir(), os.path.join(KERNEL_DIR, "attention.cc"),
                         "-o", partial], capture_output=True, text=True)
  if done.returncode != 0:
    os.unlink(partial)
    raise RuntimeError(f"{cxx} could not build the fused attention kernel:\n{done.stderr[-2000:]}")
  os.replace(partial, target)
  log.info("built the fused attention kernel into %s", target)
  return target


@functools.cache
def unavailable_reason() -> str | None:
  """None once the kernel is built and registered with XLA; else why it cannot be."""
  if not cpu_has_avx512():
    return "this CPU has no AVX-512F"
  try:
    library = ctypes.CDLL(build(compiler(), default_cache_dir()))
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(library.KoeduFusedAttention), platform="cpu")
  except (OSError, RuntimeError, subprocess.SubprocessError) as e:
    return str(e)
  return None


def supports(head_dim: int, dtype) -> str | None:
  """None if the kernel can run a model of this head size and compute dtype; else why not."""
  if jnp.dtype(dtype) != jnp.float32:
    return f"the kernel computes in float32, not {jnp.dtype(dtype).name}"
  if head_dim > MAX_HEAD_DIM:
    return f"head_dim {head_dim} is over the kernel's {MAX_HEAD_DIM}"
  return unavailable_reason()


def fused_attention(qkv: jax.Array, segment_ids: jax.Array) -> jax.Array:
  """qkv (batch, length, 3, heads, head_dim) float32 -> (batch, length, heads, head_dim), on the
  rows this device holds."""
  reason = supports(qkv.shape[-1], qkv.dtype)
  if reason is not None:
    raise RuntimeError(f"fused attention cannot run here: {reason}")
  return jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(qkv.shape[:2] + qkv.shape[3:], jnp.float32))(
      qkv, segment_ids.astype(jnp.int32))


def per_device(mesh: jax.sharding.Mesh, axis: str):
  """The kernel run by each device of `mesh` on its own rows (split along `axis`): XLA cannot
  partition a custom call and would otherwise gather every row onto every device."""
  return jax.shard_map(fused_attention, mesh=mesh, in_specs=(P(axis), P(axis)), out_specs=P(axis))


if __name__ == "__main__":
  # Build ahead of time, e.g. into an image that ships no compiler:
  # KOEDU_KERNEL_CACHE=/opt/koedu/kernels python -m model.fused_attention
  print(build(compiler(), default_cache_dir()))
